// The controller behind `docker egress watch`. It never acts on one event alone: every trigger
// (start, a burst of Docker network events, an address or route of the host that came or went,
// drift found by a check, the daemon coming back) runs the same full reconcile as `sync`.
// Triggers are coalesced, and reconciles never overlap. The drift check only reads the firewall
// backend's rules and compares them with what the last reconcile wrote; it rewrites nothing when
// nothing changed. It runs every interval, and within 50 ms of a rule change the kernel reports
// (`nft monitor`), so a flush is repaired at once, and our own writes cost one read, not a loop.
// While the daemon is away — or there but not answering (hung, SIGSTOPped) — drift is repaired
// from those last rules, so a firewall reload cannot cost egress during an outage. Every call to the daemon has a
// deadline, and each reconcile first pings the daemon with a short one, so no repair waits on a
// daemon that does not answer.
import { setTimeout as sleep } from 'node:timers/promises';
import { DockerClient } from '../adapters/docker.js';
import { addressMonitor, firewallMonitor, runMonitor, type MonitorSpec } from '../adapters/host-monitor.js';
import { RULES_LOCK, acquireLock } from '../adapters/lock.js';
import { applyRouting, readRouting } from '../adapters/routing.js';
import { desiredRouting, diffRouting, isEmptyDiff, routingCommands, type RoutingPlan } from '../core/routing.js';
import type { Desired, FirewallBackend, FirewallPlan } from '../adapters/firewall.js';
import type { EgressNetwork } from '../core/network.js';
import { StateFileError } from '../adapters/policy-store.js';
import { CommandError, DaemonNotAnsweringError, DaemonUnreachableError, DockerApiError, InterruptedError, reason } from '../errors.js';
import type { Context } from './context.js';
import type { Logger } from './logger.js';
import { reconcile, type DockerSnapshot, type SyncResult } from './reconcile.js';
import { WatchRecord, type FailureReason, type Trigger } from './watch-record.js';

export type WatchOptions = {
	/** Drift check period, ms. */
	intervalMs: number;
	/** Quiet time before acting on a lone event, ms (default 20). */
	debounceMs?: number;
	/** Quiet time before acting on an address or route change, ms (default 250). */
	hostDebounceMs?: number;
	/** Quiet time that ends a burst of events, ms (default 400). */
	burstDebounceMs?: number;
	/** Longest a trigger waits while events keep coming, ms (default 500; 1000 in a burst). */
	maxDelayMs?: number;
	/** Backoff cap while the daemon is away, ms. */
	maxBackoffMs?: number;
	/** Deadline of the ping before each reconcile, ms (default 2000): how long a hung daemon delays a repair. */
	pingTimeoutMs?: number;
};

/** Quiet time after a reported rule change before the drift check reads the rules, ms. */
const FIREWALL_CHECK_DELAY_MS = 50;

export class Watcher {
	private desired: Desired | undefined;
	/** Docker's state as last read: with the host's as it is now, it serves while the daemon does not answer. */
	private snapshot: DockerSnapshot | undefined;
	private bridges = new Set<string>();
	private desiredRoutes: RoutingPlan | undefined;
	private client: DockerClient | undefined;
	private daemonLost = false;
	/** The daemon is connected but missed a deadline; cleared by the next answer. */
	private notAnswering = false;
	private readonly skipped = new Map<string, string>();
	private running: Promise<void> | undefined;
	private pending: Trigger | undefined;
	private debounce: NodeJS.Timeout | undefined;
	private firstRequestAt = 0;
	private lastEventReconcileAt = 0;
	/** The last reconcile changed the firewall or routing. */
	private lastApplied = false;
	/** A drift check asked for by a rule change: due, running, and asked for again meanwhile. */
	private checkTimer: NodeJS.Timeout | undefined;
	private checking: Promise<void> | undefined;
	private checkAgain = false;
	/** A ping asked for by /healthz or /metrics, shared by the requests that arrive meanwhile. */
	private probing: Promise<void> | undefined;
	private probedAt = 0;

	constructor(
		private readonly context: Context,
		private readonly log: Logger,
		private readonly options: WatchOptions,
		/** What it did and saw, for /metrics and /healthz. */
		readonly record = new WatchRecord(),
	) {}

	/** Runs until the context's signal aborts. */
	async run(): Promise<void> {
		const { signal } = this.context;
		const drift = this.driftLoop();
		const monitors = this.followHost();
		let started = false;
		let backoff = 250;
		while (!signal.aborted) {
			const connection = new AbortController();
			const stop = () => {
				connection.abort();
			};

			signal.addEventListener('abort', stop, { once: true });
			try {
				this.client = await DockerClient.connect(this.context.endpoint, { ping: true, signal });
				const events = this.client.networkEvents(connection.signal);
				const first = events.next(); // subscribe before reconciling: no event falls in between
				this.record.daemonUp();
				if (this.daemonLost || this.notAnswering) {
					this.daemonLost = false;
					this.notAnswering = false;
					this.log.info('daemon back', { endpoint: this.context.endpoint.host });
				}

				await this.reconcileNow(started ? 'daemon-back' : 'start');
				if (!started) {
					started = true;
					const firewall = await this.context.firewall();
					this.record.backend = firewall.name;
					this.log.info('watch started', { endpoint: this.context.endpoint.host, interval_s: this.options.intervalMs / 1000, networks: this.desired?.ipv4.length ?? 0, firewall: firewall.name, follows: follows(firewall) });
				}

				backoff = 250;
				for (let next = await first; !next.done; next = await events.next()) {
					this.log.debug('docker event', { action: next.value.action, network: next.value.network });
					this.record.dockerEvents++;
					this.request('events');
				}
			} catch (error) {
				if (signal.aborted) {
					break;
				}

				if (error instanceof DaemonUnreachableError) {
					this.client = undefined;
					this.record.daemonUnavailable('gone', reason(error));
					if (!this.daemonLost) {
						this.daemonLost = true;
						this.log.warn('daemon lost', { endpoint: this.context.endpoint.host, error: reason(error), retry: 'with backoff up to 10 s' });
					}
				} else {
					this.log.error('reconcile failed', { error: reason(error) });
				}

				await sleep(backoff, undefined, { signal }).catch(() => undefined);
				backoff = Math.min(backoff * 2, this.options.maxBackoffMs ?? 10_000);
			} finally {
				signal.removeEventListener('abort', stop);
				connection.abort();
			}
		}

		clearTimeout(this.debounce);
		clearTimeout(this.checkTimer);
		await Promise.all([drift, this.running, this.checking, ...monitors]);
	}

	/**
	 * The host's own notifications, as child processes that end with watch: an address or route
	 * change reconciles (as a Docker event does), a rule change of our tables runs the drift check.
	 * A monitor that fails is said once per spell and started again with backoff; changes it may
	 * have missed meanwhile are looked at when it is back.
	 */
	private followHost(): Array<Promise<void>> {
		const follow = async (spec: MonitorSpec, react: () => void) =>
			runMonitor(spec, {
				signal: this.context.signal,
				onChange: (line) => {
					this.log.debug('host event', { monitor: spec.name, line: line.slice(0, 200) });
					react();
				},
				onRestart: react,
				onFailure: (why, repeated) => {
					this.log[repeated ? 'debug' : 'warn']('host monitor failed', { monitor: spec.name, error: why });
				},
			});

		const firewall = async () => {
			const spec = firewallMonitor(await this.context.firewall());
			if (spec) {
				await follow(spec, () => {
					this.requestCheck();
				});
			}
		};

		return [
			follow(addressMonitor(), () => {
				this.request('host');
			}),
			firewall().catch((error: unknown) => {
				this.log.debug('no firewall monitor', { error: reason(error) }); // no backend: reconciles say why
			}),
		];
	}

	/** A rule changed: check for drift soon. Changes made while a check reads make it read again. */
	private requestCheck(): void {
		if (this.checking) {
			this.checkAgain = true;
			return;
		}

		this.checkTimer ??= setTimeout(() => {
			this.checkTimer = undefined;
			void this.checkSoon();
		}, FIREWALL_CHECK_DELAY_MS);
	}

	private async checkSoon(): Promise<void> {
		if (this.checking) {
			this.checkAgain = true;
			return;
		}

		this.checking = (async () => {
			do {
				this.checkAgain = false;
				await this.running; // a reconcile writing now: read what it wrote
				if (!this.pending) {
					await this.checkDrift('firewall'); // a pending reconcile does more than this check
				}
			} while (this.checkAgain && !this.context.signal.aborted);
		})();
		try {
			await this.checking;
		} finally {
			this.checking = undefined;
		}
	}

	/** SIGHUP: re-read the policies (every reconcile reads them afresh) and reconcile now. */
	reload(): void {
		this.log.info('reload', { trigger: 'sighup' });
		this.request('sighup');
	}

	/**
	 * Coalesces triggers, and never runs two reconciles at once. A lone event is acted on after
	 * 20 ms of quiet: Docker reports a network once it is fully set up (its own iptables rules
	 * included), and events that arrive together (`docker compose up`) still share a reconcile.
	 * Within a burst — an event-driven reconcile ended less than a second ago — the window grows
	 * to 400 ms of quiet (at most 1 s), since Docker creates networks one at a time and a burst of
	 * 50 reaches us over seconds. An address or route change waits for 250 ms of quiet (at most
	 * 1 s): a new network's bridge brings its address and route before Docker's event about it,
	 * and both are then one reconcile, said to be for the event.
	 */
	private request(trigger: Trigger): void {
		const now = Date.now();
		if (!this.pending) {
			this.pending = trigger;
			this.firstRequestAt = now;
		} else if (this.pending === 'host' && trigger === 'events') {
			this.pending = 'events';
		}

		const inBurst = now - this.lastEventReconcileAt < 1000;
		const host = trigger === 'host';
		const quiet = inBurst ? (this.options.burstDebounceMs ?? 400) : host ? (this.options.hostDebounceMs ?? 250) : (this.options.debounceMs ?? 20);
		const longest = (this.options.maxDelayMs ?? 500) * (inBurst || host ? 2 : 1);
		const due = Math.min(now + quiet, this.firstRequestAt + longest);
		clearTimeout(this.debounce);
		this.debounce = setTimeout(() => {
			void this.drain();
		}, Math.max(0, due - now));
	}

	private async drain(): Promise<void> {
		if (this.running) {
			return; // the running one drains again when it ends
		}

		while (this.pending && !this.context.signal.aborted) {
			const trigger = this.pending;
			this.pending = undefined;
			this.lastApplied = false;
			this.running = this.reconcileNow(trigger).catch((error: unknown) => {
				if (!(error instanceof InterruptedError && this.context.signal.aborted)) {
					this.log.error('reconcile failed', { trigger, error: reason(error) });
				}
			});
			await this.running;
			this.running = undefined;
			// Only a reconcile that changed something starts a burst window: a container's `connect`
			// (nothing to do yet) must not hold back the `start` that follows it by the burst's quiet time.
			if ((trigger === 'events' || trigger === 'host') && this.lastApplied) {
				this.lastEventReconcileAt = Date.now();
			}
		}
	}

	private async driftLoop(): Promise<void> {
		const { signal } = this.context;
		while (!signal.aborted) {
			await sleep(this.options.intervalMs, undefined, { signal }).catch(() => undefined);
			if (signal.aborted || !this.desired || this.running || this.pending) {
				continue;
			}

			if (this.notAnswering) {
				// Each reconcile pings first: this one repairs from the last rules while the daemon
				// still does not answer, and says "daemon back" once it does.
				this.pending = 'daemon-back';
				await this.drain();
				continue;
			}

			await this.checkDrift('drift');
		}
	}

	/** Reads the rules and routing, and reconciles (as `trigger`) when they are not what we wrote. */
	private async checkDrift(trigger: Trigger): Promise<void> {
		const desired = this.desired;
		if (!desired || this.context.signal.aborted) {
			return;
		}

		try {
			const backend = await this.context.firewall();
			const [state, routing] = await Promise.all([backend.read({ ipv6: desired.ipv6.length > 0 || desired.drops.some((rule) => rule.subnet.includes(':')), leftovers: false }), readRouting()]);
			this.record.seen = this.record.seen && { ...this.record.seen, backend, firewall: state, routing };
			if (backend.plan(state, desired, this.bridges).changed || !isEmptyDiff(diffRouting(routing, this.desiredRoutes ?? { rules: [], routes: [] }))) {
				this.pending ??= trigger;
				await this.drain();
			} else if (!this.daemonLost && !this.notAnswering) {
				this.record.verified();
			}
		} catch (error) {
			this.log.error('drift check failed', { trigger, error: reason(error) });
			this.record.failed(trigger, undefined, failureReason(error), `drift check: ${reason(error)}`);
		}
	}

	private async reconcileNow(trigger: Trigger): Promise<void> {
		const answering = await this.daemonAnswers(); // before the lock: nothing waits behind this ping
		const lock = await acquireLock(RULES_LOCK, { signal: this.context.signal, what: 'changing rules' });
		const startedAt = performance.now();
		const seconds = () => (performance.now() - startedAt) / 1000;
		try {
			const failure = await this.reconcileLocked(trigger, answering);
			if (failure) {
				this.record.failed(trigger, seconds(), failure.reason, failure.message);
			} else {
				this.record.synced(trigger, seconds());
			}
		} catch (error) {
			if (!(error instanceof InterruptedError && this.context.signal.aborted)) {
				this.record.failed(trigger, seconds(), failureReason(error), reason(error));
			}

			throw error;
		} finally {
			await lock.release();
		}
	}

	/** One reconcile, under the rules lock; what made it fail when it did not throw (the daemon, the policy file). */
	private async reconcileLocked(trigger: Trigger, answering: boolean): Promise<{ reason: FailureReason; message: string } | undefined> {
		if (!this.client || !answering) {
			if (await this.repairFromLastChain(trigger)) {
				this.countRepair(trigger);
			}

			return { reason: 'daemon', message: `the daemon is ${this.notAnswering ? 'not answering' : 'unreachable'}: rules kept from its last state` };
		}

		const client = this.client;
		let result: SyncResult;
		try {
			result = await reconcile({ ...this.context, docker: async () => client });
		} catch (error) {
			if (error instanceof DaemonUnreachableError) {
				if (await this.repairFromLastChain(trigger)) {
					this.countRepair(trigger);
				}

				if (error instanceof DaemonNotAnsweringError) {
					this.markNotAnswering(error); // said once; the drift loop takes it from here
					return { reason: 'daemon', message: reason(error) };
				}
			}

			throw error;
		}

		this.desired = result.plan.desired;
		this.bridges = result.dockerBridges;
		this.desiredRoutes = desiredRouting(result.networks);
		this.lastApplied = result.applied;
		this.snapshot = { networks: result.dockerNetworks, containers: result.containers, ...(result.node ? { node: result.node } : {}) };
		this.remember(result);
		if (result.applied) {
			this.countRepair(trigger);
		}

		this.log.debug('reconciled', { trigger, changed: result.plan.changed, rules: result.plan.desired.ipv4.length + result.plan.desired.ipv6.length });
		this.report(result.plan, trigger, result.applied);
		this.reportRouting(result.routingCommands, trigger, result.applied);
		this.reportSkipped(result);
		if (result.policyError) {
			// Labelled networks and the last good policies were served all the same.
			this.log.error('policies unreadable', { error: result.policyError.message, trigger });
			return { reason: 'policies', message: `policies unreadable: ${result.policyError.message}` };
		}

		return undefined;
	}

	/**
	 * What /metrics shows comes from the last read of the firewall: a reconcile that wrote nothing
	 * read it as it is; one that wrote asks for a drift check, which reads it back (with `nft
	 * monitor`, our own write asks for the same check anyway).
	 */
	private remember(result: SyncResult): void {
		this.record.seen = { backend: result.backend, firewall: result.firewall, routing: result.routing, networks: result.networks, bridges: result.dockerBridges };
		if (result.applied) {
			this.requestCheck();
		}
	}

	/** A reconcile for drift (a check, or a rule change the kernel reported) that changed something: a repair. */
	private countRepair(trigger: Trigger): void {
		if (trigger === 'drift' || trigger === 'firewall') {
			this.record.driftRepairs++;
		}
	}

	/**
	 * Asks the daemon whether it answers (at most once a second, shared by concurrent callers), for
	 * /healthz and /metrics: a hung daemon is found without waiting for a trigger. The first answer
	 * after a spell without one runs the full reconcile, as any "daemon back" does.
	 */
	async probeDaemon(): Promise<void> {
		if (this.probing) {
			return this.probing;
		}

		if (Date.now() - this.probedAt < 1000 || !this.client || this.daemonLost || this.context.signal.aborted) {
			return;
		}

		this.probing = (async () => {
			const wasDown = this.notAnswering;
			try {
				if ((await this.daemonAnswers()) && wasDown) {
					this.request('daemon-back');
				}
			} catch (error) {
				this.log.debug('daemon probe failed', { error: reason(error) });
			} finally {
				this.probedAt = Date.now();
				this.probing = undefined;
			}
		})();
		return this.probing;
	}

	/**
	 * Whether the daemon answers a ping within pingTimeoutMs. A missed deadline starts the "not
	 * answering" spell (one log line); the first answer after one ends it ("daemon back"). Other
	 * failures (the daemon is gone) are the main loop's to report.
	 */
	private async daemonAnswers(): Promise<boolean> {
		const client = this.client;
		if (!client) {
			return false;
		}

		try {
			await client.ping(this.options.pingTimeoutMs ?? 2000);
		} catch (error) {
			if (error instanceof DaemonNotAnsweringError) {
				this.markNotAnswering(error);
				return false;
			}

			if (error instanceof DaemonUnreachableError) {
				return false;
			}

			throw error;
		}

		if (this.client === client) {
			this.record.daemonUp();
			if (this.notAnswering) {
				this.notAnswering = false;
				this.log.info('daemon back', { endpoint: this.context.endpoint.host });
			}
		}

		return true;
	}

	private markNotAnswering(error: DaemonNotAnsweringError): void {
		if (!this.daemonLost) {
			this.record.daemonUnavailable('not answering', reason(error));
		}

		if (!this.notAnswering && !this.daemonLost) {
			this.notAnswering = true;
			this.log.warn('daemon not answering', { endpoint: this.context.endpoint.host, error: reason(error), repair: 'from the last rules until it answers' });
		}
	}

	/** The daemon is away: put back the chain we last wrote, if the firewall lost it. Whether it changed anything. */
	private async repairFromLastChain(trigger: Trigger): Promise<boolean> {
		if (!this.desired) {
			return false;
		}

		if (this.snapshot) {
			// Docker's state as last read, the host's as it is now: a source address that came back
			// (or left) while the daemon does not answer is served (or fails closed) at once.
			const result = await reconcile(this.context, { snapshot: this.snapshot });
			this.desired = result.plan.desired;
			this.desiredRoutes = desiredRouting(result.networks);
			this.report(result.plan, trigger, result.applied);
			this.reportRouting(result.routingCommands, trigger, result.applied);
			this.reportSkipped(result);
			this.remember(result);
			return result.applied;
		}

		const backend = await this.context.firewall();
		const plan = backend.plan(await backend.read({ ipv6: this.desired.ipv6.length > 0 || this.desired.drops.some((rule) => rule.subnet.includes(':')), leftovers: false }), this.desired, this.bridges);
		if (plan.changed) {
			await backend.apply(plan);
			this.report(plan, trigger, true);
		}

		const diff = diffRouting(await readRouting(), this.desiredRoutes ?? { rules: [], routes: [] });
		if (!isEmptyDiff(diff)) {
			await applyRouting(diff);
			this.reportRouting(routingCommands(diff), trigger, true);
		}

		return plan.changed || !isEmptyDiff(diff);
	}

	private reportRouting(commands: string[][], trigger: Trigger, applied: boolean): void {
		if (applied) {
			for (const args of commands) {
				this.log.info('routing changed', { command: `ip ${args.join(' ')}`, trigger });
			}
		}
	}

	private report(plan: FirewallPlan, trigger: Trigger, applied: boolean): void {
		if (!applied) {
			return;
		}

		for (const rule of plan.added) {
			this.log.info('rule added', { network: rule.network, subnet: rule.subnet, source_ip: rule.sourceIp, bridge: rule.bridge, trigger });
		}

		for (const rule of plan.removed) {
			this.log.info('rule removed', { network: rule.network, subnet: rule.subnet, source_ip: rule.sourceIp, trigger });
		}

		for (const note of plan.notes) {
			this.log.info('firewall repaired', { change: note, backend: plan.backend, trigger });
		}
	}

	/**
	 * Each invalid network is logged once per problem, not on every reconcile; a network that fails
	 * closed (its source cannot be served: its traffic is dropped) says so, and says when it is served again.
	 */
	private reportSkipped(result: SyncResult): void {
		const key = (network: EgressNetwork) => (network.container ? `container ${network.id} ${network.container.networkId}` : `network ${network.name}`);
		const fields = (network: EgressNetwork) => (network.container ? { container: network.name, network: network.container.network } : { network: network.name });
		const now = new Map(result.networks.filter((network) => network.problem).map((network) => [key(network), network]));
		for (const [name, network] of now) {
			if (this.skipped.get(name) !== network.problem) {
				if (network.blocked) {
					this.log.warn(network.container ? 'container fails closed' : 'network fails closed', { ...fields(network), status: network.sourceMissing ? 'source-missing' : 'invalid', problem: network.problem!, dropped: [network.blocked.ipv4 ? 'ipv4' : '', network.blocked.ipv6 ? 'ipv6' : ''].filter(Boolean).join(',') });
				} else {
					this.log.warn(network.container ? 'container skipped' : 'network skipped', { ...fields(network), problem: network.problem! });
				}
			}
		}

		for (const name of this.skipped.keys()) {
			const network = result.networks.find((candidate) => key(candidate) === name);
			if (network && !network.problem) {
				this.log.info(network.container ? 'container served again' : 'network served again', { ...fields(network), source_ip: network.sourceIp });
			}
		}

		this.skipped.clear();
		for (const [name, network] of now) {
			this.skipped.set(name, network.problem!);
		}
	}
}

function follows(backend: FirewallBackend): string {
	return firewallMonitor(backend) ? 'docker events, addresses and routes, firewall rule changes' : 'docker events, addresses and routes (no firewall notifications with iptables-legacy: drift check every interval)';
}

/** The bounded reason of a failed reconcile (a metric label). */
function failureReason(error: unknown): FailureReason {
	if (error instanceof DaemonUnreachableError || error instanceof DockerApiError) {
		return 'daemon';
	}

	if (error instanceof CommandError) {
		return 'firewall';
	}

	return error instanceof StateFileError ? 'policies' : 'other';
}
