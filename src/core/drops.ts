// Fail closed, as plain values: the drops for networks whose source address cannot be served (not
// on the host now, unusable, no way out), and the iptables layout that carries them. While a
// network is blocked, its traffic leaves the host from no address at all — not Docker's
// MASQUERADE address, not its own private one. Traffic to other containers (out through a Docker
// bridge) and to the host itself (never forwarded) is not touched.
//
// iptables (filter table, each family):
//   :DOCKER-EGRESS - [0:0]
//   -A DOCKER-EGRESS -o <docker bridge> -j RETURN                 # one per Docker bridge
//   -A DOCKER-EGRESS -s <subnet> -m comment --comment "docker-egress:<id> <name>" -j DROP
//   -I DOCKER-USER 1 -j DOCKER-EGRESS                             # FORWARD where there is no DOCKER-USER
// The chain and its jump exist only while some network is blocked. DOCKER-USER is the chain Docker
// keeps for its users ahead of its own rules, and never flushes; our jump goes first in it.
import { cidr6Contains, cidrContains, parseIpv4Cidr, parseIpv6Cidr } from './address.js';
import { blocksFamily, type EgressNetwork } from './network.js';
import { CHAIN, quote, ruleComment, ruleTag, COMMENT_PREFIX } from './rules.js';
import { optionValue, tokenize } from './save-words.js';

/** Outbound traffic of a subnet dropped, except out through a Docker bridge. */
export type DropRule = { network: string; id?: string; subnet: string; bridge: string };

export const USER_CHAIN = 'DOCKER-USER';

/** One drop per subnet of each blocked family of each network, in a stable order. */
export function desiredDrops(networks: EgressNetwork[], family: 'ipv4' | 'ipv6' = 'ipv4'): DropRule[] {
	const drops = (entries: EgressNetwork[]) =>
		entries
			.filter((network) => blocksFamily(network, family))
			.flatMap((network) => (family === 'ipv4' ? network.subnets : network.subnets6).map((subnet) => ({ network: network.name, id: network.id, subnet, bridge: network.bridge })))
			.sort((a, b) => compare(a.network, b.network) || compare(a.subnet, b.subnet));
	const ofNetworks = drops(networks.filter((network) => !network.container));
	// A container's address inside a subnet dropped already needs no drop of its own (nor may it
	// have one: intervals of one nft set cannot overlap).
	const ofContainers = drops(networks.filter((network) => network.container)).filter((rule) => !ofNetworks.some((drop) => within(rule.subnet, drop.subnet)));
	return [...ofNetworks, ...ofContainers];
}

function within(address: string, subnet: string): boolean {
	const [ip] = address.split('/');
	if (address.includes(':')) {
		const cidr = parseIpv6Cidr(subnet);
		return cidr !== undefined && cidr6Contains(cidr, ip!);
	}

	const cidr = parseIpv4Cidr(subnet);
	return cidr !== undefined && cidrContains(cidr, ip!);
}

export function dropKey(rule: DropRule): string {
	return `${rule.subnet} ${ruleTag(rule)}`;
}

export function dropArgs(rule: DropRule): string[] {
	return ['-s', rule.subnet, '-m', 'comment', '--comment', ruleComment(rule), '-j', 'DROP'];
}

export function dropText(rule: DropRule): string {
	return ['-A', CHAIN, ...dropArgs(rule)].map((word) => quote(word)).join(' ');
}

function returnText(bridge: string): string {
	return ['-A', CHAIN, '-o', bridge, '-j', 'RETURN'].map((word) => quote(word)).join(' ');
}

export type FilterState = {
	chainExists: boolean;
	/** Our drops read back. */
	drops: DropRule[];
	/** Every line of our chain, tokenized, in order (to compare with what we would write). */
	lines: string[][];
	/** Where our jump belongs: DOCKER-USER when it exists, else FORWARD. */
	parent: string;
	/** Our unconditional jumps, by chain (DOCKER-USER, FORWARD). */
	ownJumps: Map<string, number>;
	/** Our jump is the first rule of DOCKER-USER, or in FORWARD below nothing but Docker's jump to DOCKER-USER. */
	jumpFirst: boolean;
	/** Jumps to our chain with conditions: someone else's; the chain is kept (emptied) for them. */
	foreignJumps: number;
};

/** Reads our filter chain and jump out of `iptables-save -t filter` output. */
export function parseFilterState(save: string): FilterState {
	const state: FilterState = { chainExists: false, drops: [], lines: [], parent: 'FORWARD', ownJumps: new Map(), jumpFirst: false, foreignJumps: 0 };
	const firstRules = new Map<string, string[][]>();
	let inFilter = false;
	for (const line of save.split('\n')) {
		if (line.startsWith('*')) {
			inFilter = line === '*filter';
			continue;
		}

		if (!inFilter) {
			continue;
		}

		if (line.startsWith(`:${CHAIN} `)) {
			state.chainExists = true;
		} else if (line.startsWith(`:${USER_CHAIN} `)) {
			state.parent = USER_CHAIN;
		} else if (line.startsWith('-A ')) {
			const words = tokenize(line);
			const chain = words[1]!;
			if (chain === CHAIN) {
				state.lines.push(words);
				const drop = parseDrop(words);
				if (drop) {
					state.drops.push(drop);
				}

				continue;
			}

			const rules = firstRules.get(chain) ?? [];
			rules.push(words);
			firstRules.set(chain, rules);
			if (words.length === 4 && words[2] === '-j' && words[3] === CHAIN) {
				state.ownJumps.set(chain, (state.ownJumps.get(chain) ?? 0) + 1);
			} else if (optionValue(words, '-j') === CHAIN || optionValue(words, '-g') === CHAIN) {
				state.foreignJumps++;
			}
		}
	}

	const isOurJump = (words: string[]) => words.length === 4 && words[2] === '-j' && words[3] === CHAIN;
	const rules = firstRules.get(state.parent) ?? [];
	const firstOther = rules.findIndex((words) => !(state.parent === 'FORWARD' && words.length === 4 && words[3] === USER_CHAIN));
	state.jumpFirst = firstOther !== -1 && isOurJump(rules[firstOther]!);
	return state;
}

function parseDrop(words: string[]): DropRule | undefined {
	const subnet = optionValue(words, '-s');
	const comment = optionValue(words, '--comment');
	if (!subnet || !comment?.startsWith(COMMENT_PREFIX) || optionValue(words, '-j') !== 'DROP' || words.length !== dropArgs({ network: '', subnet, bridge: '' }).length + 2) {
		return undefined;
	}

	const text = comment.slice(COMMENT_PREFIX.length);
	const space = text.indexOf(' ');
	return space === -1 ? { network: text, subnet, bridge: '' } : { network: text.slice(space + 1), id: text.slice(0, space), subnet, bridge: '' };
}

export type FilterPlan = { changed: boolean; input: string; added: DropRule[]; removed: DropRule[]; jumpRepair: boolean };

/**
 * The iptables-restore --noflush input that makes our filter chain exactly the drops (after a
 * RETURN per Docker bridge) with our jump first, or removes chain and jumps when nothing is blocked.
 */
export function planFilter(actual: FilterState, drops: DropRule[], dockerBridges: ReadonlySet<string>): FilterPlan {
	const actualKeys = new Set(actual.drops.map((rule) => dropKey(rule)));
	const wantedKeys = new Set(drops.map((rule) => dropKey(rule)));
	const added = drops.filter((rule) => !actualKeys.has(dropKey(rule)));
	const removed = actual.drops.filter((rule) => !wantedKeys.has(dropKey(rule)));
	const jumps = [...actual.ownJumps.values()].reduce((a, b) => a + b, 0);
	const deletions = [...actual.ownJumps].flatMap(([chain, count]) => Array.from({ length: count }, () => `-D ${chain} -j ${CHAIN}`));
	if (drops.length === 0) {
		if (jumps === 0 && (!actual.chainExists || (actual.foreignJumps > 0 && actual.lines.length === 0))) {
			return { changed: false, input: '', added, removed, jumpRepair: false };
		}

		const lines = ['*filter', ...deletions];
		if (actual.chainExists) {
			lines.push(`:${CHAIN} - [0:0]`, ...(actual.foreignJumps === 0 ? [`-X ${CHAIN}`] : []));
		}

		return { changed: true, input: [...lines, 'COMMIT', ''].join('\n'), added, removed, jumpRepair: false };
	}

	const wantedLines = [...[...dockerBridges].sort().map((bridge) => returnText(bridge)), ...drops.map((rule) => dropText(rule))];
	const same = actual.chainExists && wantedLines.length === actual.lines.length && wantedLines.every((line, i) => JSON.stringify(tokenize(line)) === JSON.stringify(actual.lines[i]));
	const jumpRepair = jumps !== 1 || !actual.jumpFirst;
	if (same && !jumpRepair) {
		return { changed: false, input: '', added, removed, jumpRepair };
	}

	const lines = ['*filter', `:${CHAIN} - [0:0]`, ...wantedLines];
	if (jumpRepair) {
		lines.push(...deletions, `-I ${actual.parent} 1 -j ${CHAIN}`);
	}

	return { changed: true, input: [...lines, 'COMMIT', ''].join('\n'), added, removed, jumpRepair };
}

/**
 * The filter changes around the nat change: drops that come go in `before` it; drops that go are
 * removed only `after` it, once their networks have their SNAT rules again — so no network is ever
 * without both (Docker's MASQUERADE would take it). Each is one iptables-restore transaction.
 */
export function planFilterSteps(actual: FilterState, drops: DropRule[], dockerBridges: ReadonlySet<string>): { before?: FilterPlan; after?: FilterPlan } {
	const wanted = new Set(drops.map((rule) => dropKey(rule)));
	const leaving = actual.drops.filter((rule) => !wanted.has(dropKey(rule)));
	if (leaving.length === 0) {
		const plan = planFilter(actual, drops, dockerBridges);
		return plan.changed ? { before: plan } : {};
	}

	const union = [...drops, ...leaving];
	const before = planFilter(actual, union, dockerBridges);
	const lines = [...[...dockerBridges].sort().map((bridge) => returnText(bridge)), ...union.map((rule) => dropText(rule))].map((line) => tokenize(line));
	const between: FilterState = { ...actual, chainExists: true, drops: union, lines, ownJumps: new Map([[actual.parent, 1]]), jumpFirst: true };
	const after = planFilter(between, drops, dockerBridges);
	return { ...(before.changed ? { before } : {}), ...(after.changed ? { after } : {}) };
}

/** Why a blocked network's drops do not hold (undefined when they do). */
export function filterDropsMissing(actual: FilterState, drops: DropRule[], tool: string): string | undefined {
	if (drops.length === 0) {
		return undefined;
	}

	const present = new Set(actual.drops.map((rule) => dropKey(rule)));
	const missing = drops.find((rule) => !present.has(dropKey(rule)));
	if (missing) {
		return `no drop for ${missing.subnet} in ${tool} filter chain ${CHAIN}`;
	}

	if ((actual.ownJumps.get(actual.parent) ?? 0) === 0 || !actual.jumpFirst) {
		return `the jump to ${CHAIN} is not first in ${tool} filter ${actual.parent}`;
	}

	return undefined;
}

function compare(a: string, b: string): number {
	return a < b ? -1 : a > b ? 1 : 0;
}
