// The firewall layout as plain values: the SNAT rules egress networks ask for, what the nat
// table holds now (parsed from iptables-save), the plan between the two, and the
// iptables-restore text that carries the plan out in one transaction.
import { carriedCounts, counterKey, type RuleCounter } from './connections.js';
import { servesFamily, type EgressNetwork } from './network.js';
import { iptablesShadow } from './shadow.js';
import { optionValue, tokenize } from './save-words.js';

export { tokenize } from './save-words.js';

export const CHAIN = 'DOCKER-EGRESS';
export const COMMENT_PREFIX = 'docker-egress:';

export type SnatRule = {
	/** The network's name, for people (a rule read back from iptables has its tag here instead). */
	network: string;
	/**
	 * The Docker network's ID (desired rules). iptables tags the rule with its first 12
	 * characters: a comment is cut at 255 characters, so a long name would never read back.
	 */
	id?: string;
	subnet: string;
	bridge: string;
	sourceIp: string;
	/** A container's own address (a /32 or /128 looked up before the networks' subnets). */
	container?: boolean;
};

/**
 * What identifies the rule in its iptables comment: the short network ID, or for a rule tagged by
 * name by an older version, that name (still ours; it is rewritten once with the ID).
 */
export function ruleTag(rule: Pick<SnatRule, 'network' | 'id'>): string {
	return rule.id === undefined ? rule.network : rule.id.slice(0, 12);
}

/** iptables keeps at most 255 characters of a comment. */
const MAX_COMMENT = 255;

/**
 * The comment: `docker-egress:<short ID> <name>`. The ID identifies the rule; the name, cut to
 * what fits, is for people (and names the network in a report once the network is gone).
 */
export function ruleComment(rule: Pick<SnatRule, 'network' | 'id'>): string {
	if (rule.id === undefined) {
		return `${COMMENT_PREFIX}${rule.network}`;
	}

	const tagged = `${COMMENT_PREFIX}${ruleTag(rule)} `;
	return `${tagged}${rule.network.slice(0, MAX_COMMENT - tagged.length)}`;
}

/** The rule's arguments after `-A DOCKER-EGRESS`, as an argument vector. */
export function ruleArgs(rule: SnatRule): string[] {
	return ['-s', rule.subnet, '!', '-o', rule.bridge, '-m', 'comment', '--comment', ruleComment(rule), '-j', 'SNAT', '--to-source', rule.sourceIp];
}

/** The exact rule line, as iptables-restore takes it and `inspect` shows it. */
export function ruleText(rule: SnatRule): string {
	return ['-A', CHAIN, ...ruleArgs(rule)].map((arg) => quote(arg)).join(' ');
}

export function ruleKey(rule: SnatRule): string {
	return [rule.subnet, rule.bridge, rule.sourceIp, ruleTag(rule)].join(' ');
}

/**
 * One rule per subnet of every valid egress network, in a stable order (IPv6: for ip6tables):
 * containers' own addresses first, since they win over their network's.
 */
export function desiredRules(networks: EgressNetwork[], family: 'ipv4' | 'ipv6' = 'ipv4'): SnatRule[] {
	return networks
		.filter((network) => servesFamily(network, family))
		.flatMap((network) => {
			const tag = network.container ? { container: true } : {};
			return family === 'ipv4'
				? network.subnets.map((subnet) => ({ network: network.name, id: network.id, subnet, bridge: network.bridge, sourceIp: network.sourceIp, ...tag }))
				: network.sourceIpv6 === undefined
					? []
					: network.subnets6.map((subnet) => ({ network: network.name, id: network.id, subnet, bridge: network.bridge, sourceIp: network.sourceIpv6!, ...tag }));
		})
		.sort((a, b) => Number(b.container ?? false) - Number(a.container ?? false) || compare(a.network, b.network) || compare(ruleKey(a), ruleKey(b)));
}

export type NatState = {
	/** Whether our chain exists in the nat table. */
	chainExists: boolean;
	/** Rules found in our chain that we can read back. */
	rules: SnatRule[];
	/** Our rules' packet counters (new connections), when read with `iptables-save -c`. */
	counters: RuleCounter[];
	/** Lines in our chain that are not rules of ours (someone else's); they get removed. */
	foreign: string[];
	/** How many of our jumps (`-A POSTROUTING -j DOCKER-EGRESS`, no condition) POSTROUTING holds. */
	ownJumps: number;
	/** POSTROUTING lines above our first jump (all of them when there is none): what runs first. */
	ahead: string[];
	/** Jumps to our chain that carry conditions, anywhere: someone else's rules, never touched. */
	foreignJumps: string[];
	/** Every other chain's lines, for following jumps from the rules ahead. */
	chains: Map<string, string[]>;
};

/** Our jump, exactly: unconditional, at the top of POSTROUTING. Deleted only by this text. */
export const JUMP_SPEC = `-j ${CHAIN}`;

/**
 * Reads our chain and our jump out of `iptables-save -t nat` output; with `-c`, each line's
 * `[packets:bytes]` prefix gives our rules' counters and is otherwise ignored.
 */
export function parseNatState(save: string): NatState {
	const state: NatState = { chainExists: false, rules: [], counters: [], foreign: [], ownJumps: 0, ahead: [], foreignJumps: [], chains: new Map() };
	let inNat = false;
	for (const saved of save.split('\n')) {
		const counted = /^\[(\d+):(\d+)\] (?=-A )/.exec(saved);
		const line = counted ? saved.slice(counted[0].length) : saved;
		if (line.startsWith('*')) {
			inNat = line === '*nat';
			continue;
		}

		if (!inNat) {
			continue;
		}

		if (line.startsWith(`:${CHAIN} `)) {
			state.chainExists = true;
		} else if (line.startsWith(`-A ${CHAIN} `)) {
			const rule = parseRule(tokenize(line));
			if (rule) {
				state.rules.push(rule);
				if (counted) {
					state.counters.push({ subnet: rule.subnet, sourceIp: rule.sourceIp, packets: Number(counted[1]), bytes: Number(counted[2]) });
				}
			} else {
				state.foreign.push(line);
			}
		} else if (line.startsWith('-A ')) {
			const words = tokenize(line);
			const chain = words[1]!;
			const jumpsToUs = optionValue(words, '-j') === CHAIN || optionValue(words, '-g') === CHAIN;
			if (chain === 'POSTROUTING' && words.length === 4 && words[2] === '-j' && words[3] === CHAIN) {
				state.ownJumps++;
			} else if (jumpsToUs) {
				state.foreignJumps.push(line);
			}

			if (chain === 'POSTROUTING' && state.ownJumps === 0) {
				state.ahead.push(line);
			}

			const lines = state.chains.get(chain) ?? [];
			lines.push(line);
			state.chains.set(chain, lines);
		}
	}

	return state;
}

function parseRule(words: string[]): SnatRule | undefined {
	const subnet = optionValue(words, '-s');
	const bridgeIndex = words.indexOf('-o');
	const bridge = bridgeIndex > 0 && words[bridgeIndex - 1] === '!' ? words[bridgeIndex + 1] : undefined;
	const comment = optionValue(words, '--comment');
	const sourceIp = optionValue(words, '--to-source');
	if (!subnet || !bridge || !comment?.startsWith(COMMENT_PREFIX) || !sourceIp || optionValue(words, '-j') !== 'SNAT') {
		return undefined;
	}

	// `<short ID> <name>`, or a bare name from before rules were tagged by ID (names have no spaces).
	const text = comment.slice(COMMENT_PREFIX.length);
	const space = text.indexOf(' ');
	const tag = space === -1 ? { network: text } : { network: text.slice(space + 1), id: text.slice(0, space) };
	const rule: SnatRule = { ...tag, subnet, bridge, sourceIp };
	// Anything beyond what we write (another match, another option) makes it not ours.
	return words.length === ruleArgs(rule).length + 2 ? rule : undefined;
}

export type SyncPlan = {
	added: SnatRule[];
	removed: SnatRule[];
	unchanged: SnatRule[];
	foreign: string[];
	/** Our jump is missing, duplicated, or something above it can NAT our networks' traffic. */
	jumpRepair: boolean;
	/** How many of our jumps to delete (by their exact text) before inserting one at the top. */
	jumpDeletions: number;
	/** Why the jump is repaired (the rule ahead that shadows ours), for the report. */
	jumpReason?: string;
	/** The desired chain, in order. */
	desired: SnatRule[];
	/** The counts of the rules as read, written back for the rules that stay (iptables-restore --counters). */
	counts: ReturnType<typeof carriedCounts>;
	changed: boolean;
};

/**
 * The plan that makes our chain `desired`. The jump is moved to the top only when it must be:
 * missing, duplicated, or below a rule that can NAT (or bypass) one of our networks' traffic —
 * Docker inserts a MASQUERADE for every new network at the top, and those never concern ours.
 */
export function planSync(actual: NatState, desired: SnatRule[], dockerBridges: ReadonlySet<string> = new Set()): SyncPlan {
	const remaining = new Map<string, number>();
	for (const rule of actual.rules) {
		remaining.set(ruleKey(rule), (remaining.get(ruleKey(rule)) ?? 0) + 1);
	}

	const added: SnatRule[] = [];
	const unchanged: SnatRule[] = [];
	for (const rule of desired) {
		const count = remaining.get(ruleKey(rule)) ?? 0;
		if (count > 0) {
			remaining.set(ruleKey(rule), count - 1);
			unchanged.push(rule);
		} else {
			added.push(rule);
		}
	}

	const removed = actual.rules.filter((rule) => {
		const count = remaining.get(ruleKey(rule)) ?? 0;
		if (count > 0) {
			remaining.set(ruleKey(rule), count - 1);
			return true;
		}

		return false;
	});
	const wantChain = desired.length > 0 || actual.chainExists;
	const shadow = desired.map((rule) => jumpShadow(actual, rule, dockerBridges)).find((found) => found !== undefined);
	const jumpReason = !wantChain ? undefined : actual.ownJumps === 0 ? 'missing' : actual.ownJumps > 1 ? `${actual.ownJumps} jumps` : shadow;
	const jumpRepair = jumpReason !== undefined;
	const inOrder = unchanged.length === actual.rules.length && actual.rules.every((rule, i) => ruleKey(rule) === ruleKey(desired[i]!));
	const changed =
		added.length > 0 || removed.length > 0 || actual.foreign.length > 0 || jumpRepair || (desired.length > 0 && !actual.chainExists) || !inOrder;
	return {
		added,
		removed,
		unchanged,
		foreign: actual.foreign,
		jumpRepair,
		jumpDeletions: jumpRepair ? actual.ownJumps : 0,
		...(jumpReason === undefined ? {} : { jumpReason }),
		desired,
		counts: carriedCounts(actual.counters),
		changed,
	};
}

/** The rule above our jump that can NAT this rule's traffic first, if any. */
export function jumpShadow(actual: NatState, rule: SnatRule, dockerBridges: ReadonlySet<string>): string | undefined {
	return iptablesShadow(actual.ahead, actual.chains, { subnet: rule.subnet, bridge: rule.bridge, dockerBridges }, CHAIN);
}

/** Whether every rule the network asks for is in the chain, and our jump reaches it. */
export function isRuleActive(network: EgressNetwork, actual: NatState, family: 'ipv4' | 'ipv6' = 'ipv4'): boolean {
	const wanted = desiredRules([network], family);
	if (network.problem || (wanted.length > 0 && actual.ownJumps === 0)) {
		return false;
	}

	const present = new Set(actual.rules.map((rule) => ruleKey(rule)));
	return wanted.every((rule) => present.has(ruleKey(rule)));
}

/**
 * The iptables-restore --noflush input that makes the chain exactly `plan.desired` and puts the
 * jump on top, as one transaction. Declaring our chain flushes it; nothing else is flushed, and
 * only our own jump is deleted, by its exact text (never by position: positions move under us).
 */
export function renderRestore(plan: SyncPlan): string {
	const counted = (rule: SnatRule) => {
		const count = plan.counts.get(counterKey(rule));
		return count && count.packets > 0 ? `[${count.packets}:${count.bytes}] ` : '';
	};
	const lines = ['*nat', `:${CHAIN} - [0:0]`, ...plan.desired.map((rule) => `${counted(rule)}${ruleText(rule)}`)];
	if (plan.jumpRepair) {
		lines.push(...Array.from({ length: plan.jumpDeletions }, () => `-D POSTROUTING ${JUMP_SPEC}`), `-I POSTROUTING 1 ${JUMP_SPEC}`);
	}

	lines.push('COMMIT', '');
	return lines.join('\n');
}

/**
 * Removes everything of ours from the nat table (moving to the nftables backend): our jumps, and
 * our chain — which is only emptied when someone else's rule still jumps to it.
 */
export function renderRemoval(actual: NatState): string {
	const keptForOthers = actual.foreignJumps.length > 0 && actual.rules.length === 0 && actual.foreign.length === 0;
	if (actual.ownJumps === 0 && (!actual.chainExists || keptForOthers)) {
		return ''; // nothing of ours, or only the empty chain someone else's jump still needs
	}

	const lines = ['*nat', ...Array.from({ length: actual.ownJumps }, () => `-D POSTROUTING ${JUMP_SPEC}`)];
	if (actual.chainExists) {
		lines.push(`:${CHAIN} - [0:0]`, ...(actual.foreignJumps.length === 0 ? [`-X ${CHAIN}`] : []));
	}

	lines.push('COMMIT', '');
	return lines.join('\n');
}

export function quote(word: string): string {
	return /^[\w.:/!+-]+$/.test(word) ? word : `"${word.replaceAll('\\', '\\\\').replaceAll('"', '\\"')}"`;
}

function compare(a: string, b: string): number {
	return a < b ? -1 : a > b ? 1 : 0;
}
