// The firewall behind one interface: two backends (nftables, iptables), fed by one desired state.
// A backend reads what the kernel holds of ours (and what runs before it), plans the change to
// the desired rules as plain values, applies a plan in one transaction per tool, and judges one
// network's rules: active, missing, or shadowed by something that NATs its traffic first.
import type { RuleCounter } from '../core/connections.js';
import type { DropRule } from '../core/drops.js';
import type { SnatRule } from '../core/rules.js';
import type { ForeignChain } from '../core/shadow.js';
import { CommandError, reason, UsageError } from '../errors.js';
import { debug } from '../log.js';
import { IptablesBackend } from './iptables.js';
import { NftablesBackend } from './nftables.js';

export type BackendName = 'nftables' | 'iptables';
export const backendNames: readonly BackendName[] = ['nftables', 'iptables'];
export const BACKEND_ENV = 'DOCKER_EGRESS_FIREWALL_BACKEND';

/** The rules every egress network asks for, per family, and the drops of those that fail closed (both families). */
export type Desired = { ipv4: SnatRule[]; ipv6: SnatRule[]; drops: DropRule[] };

/** One transaction: a command and the input it reads (iptables-restore or nft -f text). */
export type Step = { command: string[]; input: string };

export type FirewallPlan = {
	backend: BackendName;
	desired: Desired;
	added: SnatRule[];
	removed: SnatRule[];
	unchanged: SnatRule[];
	/** Other changes, one line each (a jump repaired, a foreign rule removed, the other backend's rules removed). */
	notes: string[];
	changed: boolean;
	steps: Step[];
};

export type RuleCheck = { status: 'active' } | { status: 'missing'; why: string } | { status: 'shadowed'; by: string };

/** What `read` found; only the backend that read it looks inside. */
export type FirewallState = { backend: BackendName; foreign: ForeignChain[] } & Record<string, unknown>;

export type ReadOptions = {
	/** Read the IPv6 half (ip6tables, ip6 table) too. */
	ipv6: boolean;
	/** Read the other backend's leftovers too, so a plan removes them (sync, watch). */
	leftovers: boolean;
};

export interface FirewallBackend {
	readonly name: BackendName;
	/** One line for `version` and `inspect`, e.g. "nftables (table ip docker-egress, nft v1.0.6)". */
	describe(): string;
	read(options: ReadOptions): Promise<FirewallState>;
	plan(state: FirewallState, desired: Desired, dockerBridges: ReadonlySet<string>): FirewallPlan;
	apply(plan: FirewallPlan): Promise<void>;
	/** The state of the rules of one network (both families). */
	check(state: FirewallState, rules: SnatRule[], dockerBridges: ReadonlySet<string>): RuleCheck;
	/** Why the drops of a network that fails closed do not hold, or undefined when they do. */
	checkDrops(state: FirewallState, drops: DropRule[]): string | undefined;
	/** The exact rule text that serves each rule (and each drop), as `inspect` shows it. */
	ruleTexts(rules: SnatRule[], drops?: DropRule[]): string[];
	/**
	 * Every rule of ours in `state` with its packet counter: the new connections it translated since
	 * it was written (a NAT rule sees only a connection's first packet). See core/connections.ts.
	 */
	counters(state: FirewallState): RuleCounter[];
}

/** The backend asked for: the --firewall-backend flag, then $DOCKER_EGRESS_FIREWALL_BACKEND, else auto. */
export function requestedBackend(flag: string | undefined, env = process.env): BackendName | undefined {
	const [value, source] = flag ? [flag, '--firewall-backend'] : [env[BACKEND_ENV], BACKEND_ENV];
	if (value === undefined || value === '' || value === 'auto') {
		return undefined;
	}

	if (!backendNames.includes(value as BackendName)) {
		throw new UsageError(`invalid ${source} ${JSON.stringify(value)}: use nftables, iptables or auto`);
	}

	return value as BackendName;
}

/**
 * The backend to use: the one asked for, else nftables wherever the `nft` tool and the kernel's
 * nf_tables answer (whatever backend Docker itself uses), else iptables.
 */
export async function selectBackend(requested: BackendName | undefined): Promise<FirewallBackend> {
	if (requested === 'iptables') {
		return IptablesBackend.detect();
	}

	const nft = NftablesBackend.probe(); // starts `nft -j list chains` now
	if (requested === 'nftables') {
		return new NftablesBackend(nft);
	}

	let why: string | undefined;
	try {
		why = await NftablesBackend.unsupported(await nft);
	} catch (error) {
		if (error instanceof CommandError && !nftUnavailable(error)) {
			return new NftablesBackend(nft); // nft is there but failed (no permission): say so on read
		}

		why = error instanceof CommandError && error.cause !== undefined ? 'no nft tool' : reason(error);
	}

	if (why === undefined) {
		return new NftablesBackend(nft);
	}

	debug(`firewall backend: iptables (nftables cannot serve here: ${why})`);
	return IptablesBackend.detect();
}

/** The nft tool is missing, or the kernel has no nf_tables. */
function nftUnavailable(error: CommandError): boolean {
	return error.cause !== undefined || /not supported|Operation not supported/i.test(error.stderr);
}
