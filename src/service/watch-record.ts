// What `watch` has done and what it last saw, as plain values kept up to date as it goes: the
// source of /metrics and /healthz (service/metrics.ts). Nothing here reads anything: watch hands
// in what its reconciles and drift checks already read, so a scrape costs no extra work.
import type { FirewallBackend, FirewallState } from '../adapters/firewall.js';
import { connectionsOf } from '../core/connections.js';
import type { EgressNetwork } from '../core/network.js';
import { desiredRules } from '../core/rules.js';
import type { RoutingPlan } from '../core/routing.js';
import { ruleStatus, type RuleStatus } from './status.js';

/** Why a reconcile failed, a bounded set (a metric label): the daemon, the firewall tools, the policy file, anything else. */
export type FailureReason = 'daemon' | 'firewall' | 'policies' | 'other';
export const failureReasons: readonly FailureReason[] = ['daemon', 'firewall', 'policies', 'other'];

/** Why a reconcile ran: `host` is an address or route change, `firewall` a rule change the kernel reported. */
export type Trigger = 'start' | 'events' | 'drift' | 'daemon-back' | 'sighup' | 'host' | 'firewall';
export const triggers: readonly Trigger[] = ['start', 'events', 'drift', 'daemon-back', 'sighup', 'host', 'firewall'];

/** One egress network or container entry as last seen: its status, and its connections per source address. */
export type ServedEntry = {
	network: string;
	/** The container's name, for a container's own egress address. */
	container?: string;
	status: RuleStatus;
	/** New connections translated per source address (its rules' counters), where a rule with a counter is in place. */
	connections: Array<{ sourceIp: string; count: number }>;
};

/** What a reconcile or drift check last read, kept as it is (references, no copies). */
export type Seen = {
	backend: FirewallBackend;
	firewall: FirewallState;
	routing: RoutingPlan;
	networks: EgressNetwork[];
	bridges: ReadonlySet<string>;
};

export type SyncListener = (trigger: Trigger, seconds: number) => void;

export class WatchRecord {
	/** The firewall backend in use, once known. */
	backend = '';
	lastSuccessAt: number | undefined;
	lastFailure: { at: number; reason: FailureReason; message: string } | undefined;
	/** Since when the daemon is gone or does not answer (undefined: it answers, or has not been asked yet). */
	daemonDown: { since: number; how: 'gone' | 'not answering'; error: string } | undefined;
	/** The daemon answered at least once. */
	daemonSeen = false;
	dockerEvents = 0;
	driftRepairs = 0;
	readonly failures: Record<FailureReason, number> = { daemon: 0, firewall: 0, policies: 0, other: 0 };
	/**
	 * The egress networks (and container entries) of the last reconcile, and the firewall and
	 * routing as last read: what they hold is worked out only when asked for (served()).
	 */
	seen: Seen | undefined;
	private readonly listeners: SyncListener[] = [];

	constructor(private readonly now: () => number = Date.now) {}

	onSync(listener: SyncListener): void {
		this.listeners.push(listener);
	}

	/** A reconcile ran (whether it succeeded or not): its duration. */
	private timed(trigger: Trigger, seconds: number): void {
		for (const listener of this.listeners) {
			listener(trigger, seconds);
		}
	}

	synced(trigger: Trigger, seconds: number): void {
		this.timed(trigger, seconds);
		this.lastSuccessAt = this.now();
		this.lastFailure = undefined;
	}

	/**
	 * A drift check found the rules as the last reconcile left them, with the daemon answering: they
	 * are known to be right now (unless the last reconcile failed, which only a reconcile can undo).
	 */
	verified(): void {
		if (!this.lastFailure && !this.daemonDown) {
			this.lastSuccessAt = this.now();
		}
	}

	failed(trigger: Trigger, seconds: number | undefined, reason: FailureReason, message: string): void {
		if (seconds !== undefined) {
			this.timed(trigger, seconds);
		}

		this.failures[reason]++;
		this.lastFailure = { at: this.now(), reason, message };
	}

	daemonUp(): void {
		this.daemonSeen = true;
		this.daemonDown = undefined;
	}

	daemonUnavailable(how: 'gone' | 'not answering', error: string): void {
		if (this.daemonDown?.how !== how) {
			this.daemonDown = { since: this.daemonDown?.since ?? this.now(), how, error };
		}
	}

	/** 200 "ok" while the last reconcile succeeded and the daemon answers; else one line saying why not. */
	health(): { ok: true } | { ok: false; reason: string } {
		if (this.daemonDown) {
			const { since, how, error } = this.daemonDown;
			return { ok: false, reason: `daemon ${how === 'gone' ? 'unreachable' : 'not answering'} since ${iso(since)}: ${oneLine(error)}` };
		}

		if (this.lastFailure) {
			const { at, reason, message } = this.lastFailure;
			return { ok: false, reason: `last reconcile failed at ${iso(at)} (${reason}): ${oneLine(message)}` };
		}

		if (this.lastSuccessAt === undefined) {
			return { ok: false, reason: 'starting: no reconcile has finished yet' };
		}

		return { ok: true };
	}
}

/**
 * Each egress network and container entry as last seen (its status as `ls` would say, its
 * connections per source address), and how many rules of ours are in place per family.
 */
export function served(seen: Seen): { entries: ServedEntry[]; rules: { ipv4: number; ipv6: number } } {
	const { backend, firewall, routing, networks, bridges } = seen;
	const counters = backend.counters(firewall);
	const entries = networks.map((network): ServedEntry => {
		const ipv4 = desiredRules([network]);
		const ipv6 = desiredRules([network], 'ipv6');
		const status = ruleStatus(network, network.problem ? undefined : backend.check(firewall, [...ipv4, ...ipv6], bridges), routing);
		const connections = (
			[
				[ipv4, network.sourceIp],
				[ipv6, network.sourceIpv6],
			] as const
		).flatMap(([rules, sourceIp]) => {
			const count = network.problem || sourceIp === undefined ? undefined : connectionsOf(rules, counters);
			return count === undefined ? [] : [{ sourceIp: sourceIp!, count }];
		});
		return network.container
			? { network: network.container.network, container: network.name, status, connections }
			: { network: network.name, status, connections };
	});
	const ipv6 = counters.filter((counter) => counter.subnet.includes(':')).length;
	return { entries, rules: { ipv4: counters.length - ipv6, ipv6 } };
}

function iso(ms: number): string {
	return new Date(ms).toISOString();
}

function oneLine(text: string): string {
	const line = text.replaceAll(/\s*\n\s*/g, ' ').replaceAll(/[\u0000-\u001F\u007F-\u009F]/g, '?');
	return line.length > 300 ? `${line.slice(0, 299)}…` : line;
}
