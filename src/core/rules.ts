// The firewall layout as plain values: the SNAT rules egress networks ask for, what the nat
// table holds now (parsed from iptables-save), the plan between the two, and the
// iptables-restore text that carries the plan out in one transaction.
import type { EgressNetwork } from './network.js';

export const CHAIN = 'DOCKER-EGRESS';
export const COMMENT_PREFIX = 'docker-egress:';

export type SnatRule = {
	network: string;
	subnet: string;
	bridge: string;
	sourceIp: string;
};

/** The rule's arguments after `-A DOCKER-EGRESS`, as an argument vector. */
export function ruleArgs(rule: SnatRule): string[] {
	return ['-s', rule.subnet, '!', '-o', rule.bridge, '-m', 'comment', '--comment', `${COMMENT_PREFIX}${rule.network}`, '-j', 'SNAT', '--to-source', rule.sourceIp];
}

/** The exact rule line, as iptables-restore takes it and `inspect` shows it. */
export function ruleText(rule: SnatRule): string {
	return ['-A', CHAIN, ...ruleArgs(rule)].map((arg) => quote(arg)).join(' ');
}

export function ruleKey(rule: SnatRule): string {
	return [rule.subnet, rule.bridge, rule.sourceIp, rule.network].join(' ');
}

/** One rule per subnet of every valid egress network, in a stable order (IPv6: for ip6tables). */
export function desiredRules(networks: EgressNetwork[], family: 'ipv4' | 'ipv6' = 'ipv4'): SnatRule[] {
	return networks
		.filter((network) => !network.problem)
		.flatMap((network) =>
			family === 'ipv4'
				? network.subnets.map((subnet) => ({ network: network.name, subnet, bridge: network.bridge, sourceIp: network.sourceIp }))
				: network.sourceIpv6 === undefined
					? []
					: network.subnets6.map((subnet) => ({ network: network.name, subnet, bridge: network.bridge, sourceIp: network.sourceIpv6! })),
		)
		.sort((a, b) => compare(a.network, b.network) || compare(ruleKey(a), ruleKey(b)));
}

export type NatState = {
	/** Whether our chain exists in the nat table. */
	chainExists: boolean;
	/** Rules found in our chain that we can read back. */
	rules: SnatRule[];
	/** Lines in our chain that are not rules of ours (someone else's); they get removed. */
	foreign: string[];
	/** 1-based positions in POSTROUTING of rules that jump to our chain. */
	jumpPositions: number[];
};

/** Reads our chain and our jump out of `iptables-save -t nat` output. */
export function parseNatState(save: string): NatState {
	const state: NatState = { chainExists: false, rules: [], foreign: [], jumpPositions: [] };
	let inNat = false;
	let postrouting = 0;
	for (const line of save.split('\n')) {
		if (line.startsWith('*')) {
			inNat = line === '*nat';
			continue;
		}

		if (!inNat) {
			continue;
		}

		if (line.startsWith(`:${CHAIN} `)) {
			state.chainExists = true;
		} else if (line.startsWith('-A POSTROUTING ')) {
			postrouting++;
			const words = tokenize(line);
			if (optionValue(words, '-j') === CHAIN) {
				state.jumpPositions.push(postrouting);
			}
		} else if (line.startsWith(`-A ${CHAIN} `)) {
			const rule = parseRule(tokenize(line));
			if (rule) {
				state.rules.push(rule);
			} else {
				state.foreign.push(line);
			}
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

	const rule: SnatRule = { network: comment.slice(COMMENT_PREFIX.length), subnet, bridge, sourceIp };
	// Anything beyond what we write (another match, another option) makes it not ours.
	return words.length === ruleArgs(rule).length + 2 ? rule : undefined;
}

export type SyncPlan = {
	added: SnatRule[];
	removed: SnatRule[];
	unchanged: SnatRule[];
	foreign: string[];
	/** The jump to our chain is missing, duplicated, or not the first rule of POSTROUTING. */
	jumpRepair: boolean;
	/** Positions of existing jumps to delete (highest first) before inserting ours at the top. */
	jumpDeletions: number[];
	/** The desired chain, in order. */
	desired: SnatRule[];
	changed: boolean;
};

export function planSync(actual: NatState, desired: SnatRule[]): SyncPlan {
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
	const jumpOk = actual.jumpPositions.length === 1 && actual.jumpPositions[0] === 1;
	const jumpRepair = wantChain && !jumpOk;
	const inOrder = unchanged.length === actual.rules.length && actual.rules.every((rule, i) => ruleKey(rule) === ruleKey(desired[i]!));
	const changed =
		added.length > 0 || removed.length > 0 || actual.foreign.length > 0 || jumpRepair || (desired.length > 0 && !actual.chainExists) || !inOrder;
	return {
		added,
		removed,
		unchanged,
		foreign: actual.foreign,
		jumpRepair,
		jumpDeletions: jumpRepair ? [...actual.jumpPositions].sort((a, b) => b - a) : [],
		desired,
		changed,
	};
}

/** Whether every rule the network asks for is in the chain and the chain is reached first. */
export function isRuleActive(network: EgressNetwork, actual: NatState, family: 'ipv4' | 'ipv6' = 'ipv4'): boolean {
	const wanted = desiredRules([network], family);
	if (network.problem || (wanted.length > 0 && actual.jumpPositions[0] !== 1)) {
		return false;
	}

	const present = new Set(actual.rules.map((rule) => ruleKey(rule)));
	return wanted.every((rule) => present.has(ruleKey(rule)));
}

/**
 * The iptables-restore --noflush input that makes the chain exactly `plan.desired` and puts the
 * jump on top, as one transaction. Declaring our chain flushes it; nothing else is flushed.
 */
export function renderRestore(plan: SyncPlan): string {
	const lines = ['*nat', `:${CHAIN} - [0:0]`, ...plan.desired.map((rule) => ruleText(rule))];
	if (plan.jumpRepair) {
		lines.push(...plan.jumpDeletions.map((position) => `-D POSTROUTING ${position}`), `-I POSTROUTING 1 -j ${CHAIN}`);
	}

	lines.push('COMMIT', '');
	return lines.join('\n');
}

/** Splits an iptables-save line into words, honouring double quotes. */
export function tokenize(line: string): string[] {
	const words: string[] = [];
	let word = '';
	let inWord = false;
	let quoted = false;
	for (let i = 0; i < line.length; i++) {
		const char = line[i]!;
		if (quoted) {
			if (char === '\\' && i + 1 < line.length) {
				word += line[++i];
			} else if (char === '"') {
				quoted = false;
			} else {
				word += char;
			}
		} else if (char === '"') {
			quoted = true;
			inWord = true;
		} else if (char === ' ' || char === '\t') {
			if (inWord) {
				words.push(word);
			}

			word = '';
			inWord = false;
		} else {
			word += char;
			inWord = true;
		}
	}

	if (inWord) {
		words.push(word);
	}

	return words;
}

function optionValue(words: string[], option: string): string | undefined {
	const index = words.indexOf(option);
	return index === -1 ? undefined : words[index + 1];
}

function quote(word: string): string {
	return /^[\w.:/!+-]+$/.test(word) ? word : `"${word.replaceAll('\\', '\\\\').replaceAll('"', '\\"')}"`;
}

function compare(a: string, b: string): number {
	return a < b ? -1 : a > b ? 1 : 0;
}
