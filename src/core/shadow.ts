// Whether something that runs before our rule can NAT a network's traffic ("shadowed"). The kernel
// runs the NAT chains of a hook in priority order, and the first one that binds a connection wins,
// so our SNAT counts only when nothing ahead of it can masquerade or SNAT the same packets. Pure:
// the rule sets come in as parsed values (nft JSON, iptables-save lines).
//
// The question asked of each rule is "can it match a packet from SUBNET, arriving from the
// network's BRIDGE, leaving the host?". Conditions we understand (source address, in and out
// interface, `fib saddr type local`, iptables `--src-type LOCAL`) can rule a rule out; anything
// else is taken to match (so an unknown rule ahead makes `shadowed`, never a false `active`).
import { parseIpv4Cidr, parseIpv6Cidr } from './address.js';
import { optionValue, tokenize } from './save-words.js';

/** The traffic of one of our rules. */
export type Traffic = {
	subnet: string;
	bridge: string;
	/** Every Docker bridge on the host: a packet leaving through one of them is not egress. */
	dockerBridges: ReadonlySet<string>;
};

// --- address ranges ------------------------------------------------------------------------------

type Range = { start: bigint; end: bigint; v6: boolean };

function range(text: string): Range | undefined {
	const withPrefix = text.includes('/') ? text : `${text}/${text.includes(':') ? 128 : 32}`;
	const v6 = withPrefix.includes(':');
	const cidr = v6 ? parseIpv6Cidr(withPrefix) : parseIpv4Cidr(withPrefix);
	return cidr ? { start: BigInt(cidr.start), end: BigInt(cidr.end), v6 } : undefined;
}

function overlaps(a: Range, b: Range): boolean {
	return a.v6 === b.v6 && a.start <= b.end && b.start <= a.end;
}

function contains(outer: Range, inner: Range): boolean {
	return outer.v6 === inner.v6 && outer.start <= inner.start && inner.end <= outer.end;
}

// --- nftables --------------------------------------------------------------------------------------

type Json = Record<string, unknown>;

/** A base chain of someone else's that runs at or before our priority, with its table's objects. */
export type ForeignChain = {
	family: string;
	table: string;
	chain: string;
	prio: number;
	/** Every object of that table (`nft -j list table` items: chains, rules, sets, maps). */
	items: Json[];
};

/** The first rule reachable from `start` that can NAT the traffic, described; or undefined. */
export function nftShadow(start: ForeignChain, traffic: Traffic): string | undefined {
	const rulesOf = new Map<string, Json[][]>();
	const named = new Map<string, unknown[]>();
	for (const item of start.items) {
		const rule = item['rule'] as Json | undefined;
		if (rule) {
			const list = rulesOf.get(String(rule['chain'])) ?? [];
			list.push((rule['expr'] as Json[] | undefined) ?? []);
			rulesOf.set(String(rule['chain']), list);
		}

		const set = (item['set'] ?? item['map']) as Json | undefined;
		if (set) {
			named.set(String(set['name']), (set['elem'] as unknown[] | undefined) ?? []);
		}
	}

	const seen = new Set<string>();
	const visit = (chain: string): string | undefined => {
		if (seen.has(chain)) {
			return undefined;
		}

		seen.add(chain);
		for (const expr of rulesOf.get(chain) ?? []) {
			const found = nftRule(expr, traffic, named, visit);
			if (found) {
				return `${start.family} ${start.table} chain ${chain} (priority ${start.prio}): ${found}`;
			}
		}

		return undefined;
	};

	return visit(start.chain);
}

/** What in one rule can NAT the traffic (or a description from a chain it jumps to). */
function nftRule(expr: Json[], traffic: Traffic, named: Map<string, unknown[]>, visit: (chain: string) => string | undefined): string | undefined {
	for (const statement of expr) {
		const [kind, value] = Object.entries(statement)[0] ?? [];
		const object = value as Json;
		if (kind === 'match') {
			if (!matchCanHold(object, traffic, named)) {
				return undefined;
			}
		} else if (kind === 'masquerade' || kind === 'snat') {
			return kind;
		} else if (kind === 'xt' && object['type'] === 'target' && natTargets.has(String(object['name']))) {
			return `${String(object['name'])} (an iptables-nft rule)`;
		} else if (kind === 'jump' || kind === 'goto') {
			const found = visit(String(object['target']));
			if (found) {
				return found;
			}
		} else if (kind === 'vmap') {
			for (const target of vmapTargets(object, traffic, named)) {
				const found = visit(target);
				if (found) {
					return found;
				}
			}
		}
	}

	return undefined;
}

/** iptables targets that can bind a NAT (seen in nft JSON as `xt` statements of iptables-nft rules). */
const natTargets = new Set(['MASQUERADE', 'SNAT', 'NETMAP']);

/** The chains a verdict map can send the traffic to. */
function vmapTargets(vmap: Json, traffic: Traffic, named: Map<string, unknown[]>): string[] {
	const key = interfaceKey(vmap['key']);
	const data = vmap['data'];
	const entries = (typeof data === 'string' && data.startsWith('@') ? named.get(data.slice(1)) : ((data as Json | undefined)?.['set'] as unknown[] | undefined)) ?? [];
	const targets: string[] = [];
	for (const entry of entries) {
		const [k, verdict] = entry as [unknown, Json];
		const target = ((verdict?.['jump'] ?? verdict?.['goto']) as Json | undefined)?.['target'];
		if (typeof target !== 'string') {
			continue;
		}

		const name = typeof k === 'string' ? k : undefined;
		if (key === 'in' && name !== undefined && !interfaceMatches(name, traffic.bridge)) {
			continue; // keyed by the input interface: only our bridge's entry applies
		}

		if (key === 'out' && name !== undefined && (traffic.dockerBridges.has(name) || name === traffic.bridge)) {
			continue; // traffic to another Docker network is not egress
		}

		targets.push(target);
	}

	return targets;
}

function interfaceKey(key: unknown): 'in' | 'out' | undefined {
	const meta = ((key as Json | undefined)?.['meta'] as Json | undefined)?.['key'];
	return meta === 'iifname' || meta === 'iif' ? 'in' : meta === 'oifname' || meta === 'oif' ? 'out' : undefined;
}

function interfaceMatches(pattern: string, name: string): boolean {
	return pattern.endsWith('*') ? name.startsWith(pattern.slice(0, -1)) : pattern === name;
}

/** False only when the match surely excludes the traffic. */
function matchCanHold(match: Json, traffic: Traffic, named: Map<string, unknown[]>): boolean {
	const op = String(match['op'] ?? '==');
	const negated = op === '!=';
	if (op !== '==' && op !== '!=' && op !== 'in') {
		return true;
	}

	const left = match['left'] as Json | undefined;
	const values = literalValues(match['right'], named);
	const payload = left?.['payload'] as Json | undefined;
	if (payload && payload['field'] === 'saddr' && (payload['protocol'] === 'ip' || payload['protocol'] === 'ip6')) {
		const ours = range(traffic.subnet);
		const ranges = values?.map((v) => range(v));
		if (!ours || !ranges || ranges.some((r) => r === undefined)) {
			return true;
		}

		const known = ranges as Range[];
		if ((payload['protocol'] === 'ip6') !== ours.v6) {
			return false;
		}

		return negated ? !known.some((r) => contains(r, ours)) : known.some((r) => overlaps(r, ours));
	}

	const key = interfaceKey(left);
	if (key && values) {
		if (key === 'in') {
			const hit = values.some((v) => interfaceMatches(v, traffic.bridge));
			return negated ? !hit : hit;
		}

		// Out: egress never leaves through a Docker bridge.
		return negated ? true : !values.every((v) => traffic.dockerBridges.has(v) || v === traffic.bridge);
	}

	const fib = left?.['fib'] as Json | undefined;
	if (fib && fib['result'] === 'type' && (fib['flags'] as unknown[] | undefined)?.includes('saddr') && !negated && values?.every((v) => v === 'local')) {
		return false; // from the host's own addresses: a container's never are
	}

	return true;
}

/** The literal values on the right of a match (address, prefix, set), or undefined if unknown. */
function literalValues(right: unknown, named: Map<string, unknown[]>): string[] | undefined {
	if (typeof right === 'string') {
		return right.startsWith('@') ? elementsAsText(named.get(right.slice(1))) : [right];
	}

	const object = right as Json | undefined;
	if (object?.['prefix']) {
		const prefix = object['prefix'] as Json;
		return [`${String(prefix['addr'])}/${String(prefix['len'])}`];
	}

	if (object?.['set']) {
		return elementsAsText(object['set'] as unknown[]);
	}

	return undefined;
}

function elementsAsText(elements: unknown[] | undefined): string[] | undefined {
	if (!elements) {
		return undefined;
	}

	const texts: string[] = [];
	for (const element of elements) {
		const value = (element as Json | undefined)?.['elem'] ? ((element as Json)['elem'] as Json)['val'] : element;
		const single = literalValues(value, new Map());
		if (!single) {
			return undefined;
		}

		texts.push(...single);
	}

	return texts;
}

// --- iptables ---------------------------------------------------------------------------------

/**
 * The first POSTROUTING rule above our jump (`ahead`, iptables-save lines) that can NAT the
 * traffic or end POSTROUTING before our jump is reached; jumps into other chains are followed.
 */
export function iptablesShadow(ahead: readonly string[], chains: ReadonlyMap<string, readonly string[]>, traffic: Traffic, ourChain: string): string | undefined {
	const seen = new Set<string>();
	const walk = (lines: readonly string[], top: boolean): string | undefined => {
		for (const line of lines) {
			const words = tokenize(line);
			if (!iptablesCanMatch(words, traffic)) {
				continue;
			}

			const target = optionValue(words, '-j') ?? optionValue(words, '-g');
			if (target === 'MASQUERADE' || target === 'SNAT') {
				return line;
			}

			if (target === 'ACCEPT' || (top && target === 'RETURN')) {
				return `${line} (ends POSTROUTING before our chain)`;
			}

			if (target && target !== ourChain && chains.has(target) && !seen.has(target)) {
				seen.add(target);
				const found = walk(chains.get(target)!, false);
				if (found) {
					return found;
				}
			}
		}

		return undefined;
	};

	return walk(ahead, true);
}

function iptablesCanMatch(words: string[], traffic: Traffic): boolean {
	const ours = range(traffic.subnet);
	for (let i = 0; i < words.length; i++) {
		const negated = words[i - 1] === '!';
		const word = words[i]!;
		const next = words[i + 1];
		if ((word === '-s' || word === '--source') && next !== undefined && ours) {
			const theirs = range(next);
			if (theirs && (negated ? contains(theirs, ours) : !overlaps(theirs, ours))) {
				return false;
			}
		} else if ((word === '-o' || word === '--out-interface') && next !== undefined) {
			if (!negated && (traffic.dockerBridges.has(next) || next === traffic.bridge)) {
				return false;
			}
		} else if (word === '--src-type' && next === 'LOCAL' && !negated) {
			return false;
		}
	}

	return true;
}
