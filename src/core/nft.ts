// The nftables layout as plain values: our own tables (`ip docker-egress`, `ip6 docker-egress`),
// what they hold now (parsed from `nft -j list table`), and the `nft -f` text that replaces them
// in one transaction. Nothing here reads or writes another table.
//
//   table ip docker-egress {
//     map network_source { type ipv4_addr : ipv4_addr; flags interval; counter; elements = { SUBNET : SOURCE, … } }
//     set network_bridge { type ipv4_addr . ifname; flags interval; elements = { SUBNET . "BRIDGE", … } }
//     chain postrouting {
//       type nat hook postrouting priority srcnat - 10; policy accept;
//       ip saddr . oifname @network_bridge return       # traffic that stays on the network's bridge
//       snat ip to ip saddr map @network_source         # one lookup, however many networks
//     }
//     # only while some network fails closed (its source address cannot be served, core/drops.ts):
//     set network_blocked { type ipv4_addr; flags interval; elements = { SUBNET comment "NAME", … } }
//     set docker_bridges { type ifname; elements = { "BRIDGE", … } }   # every Docker bridge
//     chain forward {
//       type filter hook forward priority filter - 10; policy accept;
//       oifname @docker_bridges return                  # to other containers: not egress
//       ip saddr @network_blocked drop                  # leaves the host from no address at all
//     }
//   }
//
// Both source maps carry a counter per element: the nat chain sees only the first packet of a
// connection, so an element's packets are the new connections it translated since the table was
// written (every rewrite starts them at zero; rewrites happen only on change).
//
// The base chain runs before every NAT chain at `srcnat` (100): Docker's masquerade (iptables, legacy
// or nft, and Docker 29's own `docker-bridges` tables), and anyone else's. The first NAT binding of a
// connection wins, so our SNAT is the one that counts.
import { canonicalIpv6 } from './address.js';
import { counterKey, type RuleCounter } from './connections.js';
import type { DropRule } from './drops.js';
import type { SnatRule } from './rules.js';

export const NFT_TABLE = 'docker-egress';
export const NFT_CHAIN = 'postrouting';
export const NFT_SOURCE_MAP = 'network_source';
export const NFT_BRIDGE_SET = 'network_bridge';
/** srcnat - 10: before every NAT chain registered at srcnat. */
export const NFT_PRIORITY = 90;
export const NFT_CONTAINER_MAP = 'container_source';
export const NFT_FORWARD_CHAIN = 'forward';
export const NFT_BLOCKED_SET = 'network_blocked';
export const NFT_BRIDGES_SET = 'docker_bridges';
/** filter - 10: before Docker's filter chains (and anyone's at `filter`) accept the traffic; a drop is final anyway. */
export const NFT_FORWARD_PRIORITY = -10;
const TABLE_COMMENT = 'docker-egress: egress source addresses; managed by docker egress, do not edit';
/** nft's limit for comments (NFT_USERDATA_MAXLEN is 256 bytes with its header): names are for people. */
const COMMENT_MAX = 120;

export type NftFamily = 'ip' | 'ip6';
export const nftFamilies: readonly NftFamily[] = ['ip', 'ip6'];

/** One element of the source map: a subnet and the address it egresses from (and its counter's packets: new connections). */
export type NftElement = { subnet: string; sourceIp: string; bridge?: string; network?: string; packets?: number; bytes?: number };

/** Counts to write back, by counterKey (see core/connections.ts carriedCounts). */
export type CarriedCounts = ReadonlyMap<string, { packets: number; bytes: number }>;

/** What one of our tables holds now. */
export type NftTableState = {
	exists: boolean;
	/** The map's elements, joined with the bridge of the same subnet from the set. */
	elements: NftElement[];
	/** The container map's elements (addresses as /32 or /128), when the table has that map. */
	containers: NftElement[];
	/** Subnets whose traffic is dropped (fail closed), with the network's name from the comment. */
	blocked: Array<{ subnet: string; network?: string }>;
	/** The Docker bridges the drop exempts. */
	bridges: string[];
	/** The table is exactly our layout (the chain, its hook and priority, the two rules, nothing else). */
	intact: boolean;
	/**
	 * Its source maps count connections (the `counter` flag): false for a table written before they
	 * did, which the next reconcile rewrites once (not damage: it serves its networks all the same).
	 */
	counters: boolean;
	/** What is not as we wrote it, for logs and sync reports. */
	damage: string[];
};

export const absentTable: NftTableState = { exists: false, elements: [], containers: [], blocked: [], bridges: [], intact: true, counters: false, damage: [] };

function familyOf(rule: { subnet: string }): NftFamily {
	return rule.subnet.includes(':') ? 'ip6' : 'ip';
}

/**
 * `nft -f` input that replaces our table of each family with one holding `rules` and `drops`
 * (drops exempt traffic out through `bridges`), or removes it. Elements found in `counts` get their
 * counter back (`counter packets N bytes M`): a rewrite keeps the counts of the rules it keeps.
 */
export function renderNft(
	rules: SnatRule[],
	families: readonly NftFamily[] = nftFamilies,
	present: Partial<Record<NftFamily, boolean>> = {},
	drops: DropRule[] = [],
	bridges: Iterable<string> = [],
	counts: CarriedCounts = new Map(),
): string {
	const lines: string[] = [];
	for (const family of families) {
		const mine = rules.filter((rule) => familyOf(rule) === family);
		const blocked = drops.filter((rule) => familyOf(rule) === family);
		// `table … {}` first: declaring a table that exists is a no-op, so the delete never fails and
		// the whole file is one transaction (the moby nftables template).
		if (mine.length === 0 && blocked.length === 0) {
			if (present[family] !== false) {
				lines.push(`table ${family} ${NFT_TABLE} {}`, `delete table ${family} ${NFT_TABLE}`);
			}

			continue;
		}

		lines.push(
			`table ${family} ${NFT_TABLE} {}`,
			`delete table ${family} ${NFT_TABLE}`,
			...tableText(
				family,
				mine.filter((rule) => !rule.container),
				mine.filter((rule) => rule.container),
				blocked,
				[...bridges].sort(),
				counts,
			),
		);
	}

	return lines.length === 0 ? '' : `${lines.join('\n')}\n`;
}

function tableText(family: NftFamily, rules: SnatRule[], containers: SnatRule[], drops: DropRule[], bridges: string[], counts: CarriedCounts): string[] {
	const addr = family === 'ip' ? 'ipv4_addr' : 'ipv6_addr';
	const counter = (rule: SnatRule) => {
		const count = counts.get(counterKey(rule));
		return count && count.packets > 0 ? ` counter packets ${count.packets} bytes ${count.bytes}` : '';
	};
	const proto = family === 'ip' ? 'ip' : 'ip6';
	const elements = (items: string[]) => (items.length === 0 ? [] : [`\t\telements = { ${items.join(', ')} }`]);
	const bridgeSet =
		drops.length === 0 && containers.length === 0 ? [] : [`\tset ${NFT_BRIDGES_SET} {`, '\t\ttype ifname', ...elements(bridges.map((bridge) => quote(bridge))), '\t}'];
	const containerMap =
		containers.length === 0
			? []
			: [
					`\tmap ${NFT_CONTAINER_MAP} {`,
					`\t\ttype ${addr} : ${addr}`,
					'\t\tcounter',
					...elements(containers.map((rule) => `${rule.subnet.split('/')[0]!}${counter(rule)} comment ${quote(comment(rule.network))} : ${rule.sourceIp}`)),
					'\t}',
				];
	// Containers first: traffic to any Docker bridge (other containers) is not egress; a container's own address wins over its network's.
	const containerRules = containers.length === 0 ? [] : [`\t\toifname @${NFT_BRIDGES_SET} return`, `\t\tsnat ${proto} to ${proto} saddr map @${NFT_CONTAINER_MAP}`];
	const failClosed =
		drops.length === 0
			? []
			: [
					`\tset ${NFT_BLOCKED_SET} {`,
					`\t\ttype ${addr}`,
					'\t\tflags interval',
					...elements(drops.map((rule) => `${rule.subnet} comment ${quote(comment(rule.network))}`)),
					'\t}',
					`\tchain ${NFT_FORWARD_CHAIN} {`,
					`\t\ttype filter hook forward priority filter - ${-NFT_FORWARD_PRIORITY}; policy accept;`,
					`\t\toifname @${NFT_BRIDGES_SET} return`,
					`\t\t${proto} saddr @${NFT_BLOCKED_SET} drop`,
					'\t}',
				];
	return [
		`table ${family} ${NFT_TABLE} {`,
		`\tcomment ${quote(TABLE_COMMENT)}`,
		`\tmap ${NFT_SOURCE_MAP} {`,
		`\t\ttype ${addr} : ${addr}`,
		'\t\tflags interval',
		'\t\tcounter',
		...elements(rules.map((rule) => `${rule.subnet}${counter(rule)} comment ${quote(comment(rule.network))} : ${rule.sourceIp}`)),
		'\t}',
		`\tset ${NFT_BRIDGE_SET} {`,
		`\t\ttype ${addr} . ifname`,
		'\t\tflags interval',
		...elements(rules.map((rule) => `${rule.subnet} . ${quote(rule.bridge)}`)),
		'\t}',
		...containerMap,
		...bridgeSet,
		`\tchain ${NFT_CHAIN} {`,
		`\t\ttype nat hook postrouting priority srcnat - ${100 - NFT_PRIORITY}; policy accept;`,
		...containerRules,
		`\t\t${proto} saddr . oifname @${NFT_BRIDGE_SET} return`,
		`\t\tsnat ${proto} to ${proto} saddr map @${NFT_SOURCE_MAP}`,
		'\t}',
		...failClosed,
		'}',
	];
}

/** The statement that fails one subnet closed, as nft would take it (shown by `inspect`). */
export function nftDropText(rule: DropRule): string {
	return `element ${familyOf(rule)} ${NFT_TABLE} ${NFT_BLOCKED_SET} { ${rule.subnet} }`;
}

/** The statements that serve one rule, as nft would take them (shown by `inspect`). */
export function nftRuleText(rule: SnatRule): string[] {
	const family = familyOf(rule);
	if (rule.container) {
		return [`element ${family} ${NFT_TABLE} ${NFT_CONTAINER_MAP} { ${rule.subnet.split('/')[0]!} : ${rule.sourceIp} }`];
	}

	return [
		`element ${family} ${NFT_TABLE} ${NFT_SOURCE_MAP} { ${rule.subnet} : ${rule.sourceIp} }`,
		`element ${family} ${NFT_TABLE} ${NFT_BRIDGE_SET} { ${rule.subnet} . ${quote(rule.bridge)} }`,
	];
}

function comment(network: string): string {
	// Network names are Docker's ([a-zA-Z0-9][a-zA-Z0-9_.-]*), but policies name networks too:
	// keep only what needs no escaping, and cut to nft's limit.
	return network.replaceAll(/[^\w.:/+-]/g, '_').slice(0, COMMENT_MAX);
}

/** nft strings are double-quoted and cannot hold a double quote or a newline. */
function quote(text: string): string {
	return `"${text.replaceAll(/["\\\n\r]/g, '_')}"`;
}

// --- reading back: `nft -j list table FAMILY docker-egress` ---------------------------------------

type Json = Record<string, unknown>;

/** Parses `nft -j list table` output (its `nftables` items) of one of our tables. */
export function parseNftTable(items: Json[], family: NftFamily): NftTableState {
	const damage: string[] = [];
	const sources = new Map<string, NftElement>();
	const bridges = new Map<string, string>();
	let chain: Json | undefined;
	let forward: Json | undefined;
	const rules: Json[] = [];
	const forwardRules: Json[] = [];
	const blocked: Array<{ subnet: string; network?: string }> = [];
	const containers: NftElement[] = [];
	let containerMap = false;
	const counted: boolean[] = [];
	let bridgeNames: string[] | undefined;
	let blockedSet = false;
	for (const item of items) {
		const [kind, value] = Object.entries(item)[0] ?? [];
		const object = value as Json;
		if (kind === 'metainfo' || kind === 'table') {
			continue;
		}

		if (kind === 'map' && object['name'] === NFT_SOURCE_MAP) {
			counted.push(hasCounter(object));
			for (const element of (object['elem'] as unknown[] | undefined) ?? []) {
				const [key, data] = element as [unknown, unknown];
				const { value: subnet, comment: name, counted: count } = elementValue(key);
				const parsed = { subnet: prefixText(subnet, family), sourceIp: addressText(data, family), ...(name === undefined ? {} : { network: name }), ...count };
				if (parsed.subnet === undefined || parsed.sourceIp === undefined) {
					damage.push(`unreadable element in map ${NFT_SOURCE_MAP}: ${JSON.stringify(element)}`);
				} else {
					sources.set(parsed.subnet, parsed as NftElement);
				}
			}
		} else if (kind === 'set' && object['name'] === NFT_BRIDGE_SET) {
			for (const element of (object['elem'] as unknown[] | undefined) ?? []) {
				const { value } = elementValue(element);
				const concat = (value as Json | undefined)?.['concat'] as unknown[] | undefined;
				const subnet = concat && prefixText(concat[0], family);
				if (!subnet || typeof concat?.[1] !== 'string') {
					damage.push(`unreadable element in set ${NFT_BRIDGE_SET}: ${JSON.stringify(element)}`);
				} else {
					bridges.set(subnet, concat[1]);
				}
			}
		} else if (kind === 'map' && object['name'] === NFT_CONTAINER_MAP) {
			containerMap = true;
			counted.push(hasCounter(object));
			for (const element of (object['elem'] as unknown[] | undefined) ?? []) {
				const [key, data] = element as [unknown, unknown];
				const { value: address, comment: name, counted: count } = elementValue(key);
				const parsed = { subnet: prefixText(address, family), sourceIp: addressText(data, family), ...(name === undefined ? {} : { network: name }), ...count };
				if (parsed.subnet === undefined || parsed.sourceIp === undefined) {
					damage.push(`unreadable element in map ${NFT_CONTAINER_MAP}: ${JSON.stringify(element)}`);
				} else {
					containers.push(parsed as NftElement);
				}
			}
		} else if (kind === 'set' && object['name'] === NFT_BLOCKED_SET) {
			blockedSet = true;
			for (const element of (object['elem'] as unknown[] | undefined) ?? []) {
				const { value, comment: name } = elementValue(element);
				const subnet = prefixText(value, family);
				if (subnet === undefined) {
					damage.push(`unreadable element in set ${NFT_BLOCKED_SET}: ${JSON.stringify(element)}`);
				} else {
					blocked.push({ subnet, ...(name === undefined ? {} : { network: name }) });
				}
			}
		} else if (kind === 'set' && object['name'] === NFT_BRIDGES_SET) {
			bridgeNames = ((object['elem'] as unknown[] | undefined) ?? []).filter((element): element is string => typeof element === 'string');
		} else if (kind === 'chain' && object['name'] === NFT_CHAIN) {
			chain = object;
		} else if (kind === 'chain' && object['name'] === NFT_FORWARD_CHAIN) {
			forward = object;
		} else if (kind === 'rule' && object['chain'] === NFT_CHAIN) {
			rules.push(object);
		} else if (kind === 'rule' && object['chain'] === NFT_FORWARD_CHAIN) {
			forwardRules.push(object);
		} else {
			damage.push(`${String(kind)} ${String(object['name'] ?? object['chain'] ?? '')} is not ours`.trim());
		}
	}

	if (!chain) {
		damage.push(`chain ${NFT_CHAIN} is missing`);
	} else if (chain['type'] !== 'nat' || chain['hook'] !== 'postrouting' || chain['prio'] !== NFT_PRIORITY || chain['policy'] !== 'accept') {
		damage.push(`chain ${NFT_CHAIN} is not a nat postrouting chain at priority ${NFT_PRIORITY}`);
	}

	const shapes = rules.map((rule) => ruleShape(rule['expr'] as Json[] | undefined, family));
	const expected = containerMap ? ['bridges-return', 'container-snat', 'bridge-return', 'snat-map'] : ['bridge-return', 'snat-map'];
	if (shapes.length !== expected.length || shapes.some((shape, i) => shape !== expected[i])) {
		damage.push(`chain ${NFT_CHAIN} does not hold exactly our ${expected.length === 2 ? 'two' : 'four'} rules (found: ${shapes.join(', ') || 'none'})`);
	}

	if (containerMap && !bridgeNames) {
		damage.push(`set ${NFT_BRIDGES_SET} is missing`);
	}

	if (forward || blockedSet) {
		if (!forward || !blockedSet || !bridgeNames) {
			damage.push(`the fail-closed layout is incomplete (chain ${NFT_FORWARD_CHAIN}, sets ${NFT_BLOCKED_SET} and ${NFT_BRIDGES_SET})`);
		} else if (forward['type'] !== 'filter' || forward['hook'] !== 'forward' || forward['prio'] !== NFT_FORWARD_PRIORITY || forward['policy'] !== 'accept') {
			damage.push(`chain ${NFT_FORWARD_CHAIN} is not a filter forward chain at priority ${NFT_FORWARD_PRIORITY}`);
		}

		const forwardShapes = forwardRules.map((rule) => forwardShape(rule['expr'] as Json[] | undefined, family));
		if (forwardShapes.length !== 2 || forwardShapes[0] !== 'bridges-return' || forwardShapes[1] !== 'blocked-drop') {
			damage.push(`chain ${NFT_FORWARD_CHAIN} does not hold exactly our two rules (found: ${forwardShapes.join(', ') || 'none'})`);
		}
	}

	const elements = [...sources.values()].map((element) => {
		const bridge = bridges.get(element.subnet);
		return bridge === undefined ? element : { ...element, bridge };
	});
	for (const subnet of bridges.keys()) {
		if (!sources.has(subnet)) {
			damage.push(`${subnet} is in set ${NFT_BRIDGE_SET} but not in map ${NFT_SOURCE_MAP}`);
		}
	}

	const counters = counted.length > 0 && counted.every(Boolean);
	return { exists: true, elements, containers, blocked, bridges: bridgeNames ?? [], intact: damage.length === 0, counters, damage };
}

/** Which of the forward chain's two rules this is, by structure. */
function forwardShape(expr: Json[] | undefined, family: NftFamily): string {
	const statements = expr ?? [];
	const match = statements[0]?.['match'] as Json | undefined;
	const left = match?.['left'] as Json | undefined;
	if (statements.length === 2 && match?.['op'] === '==') {
		const meta = left?.['meta'] as Json | undefined;
		if ('return' in statements[1]! && meta?.['key'] === 'oifname' && match['right'] === `@${NFT_BRIDGES_SET}`) {
			return 'bridges-return';
		}

		const payload = left?.['payload'] as Json | undefined;
		if ('drop' in statements[1]! && payload?.['protocol'] === (family === 'ip' ? 'ip' : 'ip6') && payload['field'] === 'saddr' && match['right'] === `@${NFT_BLOCKED_SET}`) {
			return 'blocked-drop';
		}
	}

	return `other rule ${JSON.stringify(statements).slice(0, 200)}`;
}

function elementValue(raw: unknown): { value: unknown; comment?: string; counted?: { packets: number; bytes: number } } {
	const wrapped = (raw as Json | undefined)?.['elem'] as Json | undefined;
	if (wrapped) {
		const counter = wrapped['counter'] as Json | undefined;
		const { packets, bytes } = counter ?? {};
		return {
			value: wrapped['val'],
			...(typeof wrapped['comment'] === 'string' ? { comment: wrapped['comment'] } : {}),
			...(typeof packets === 'number' ? { counted: { packets, bytes: typeof bytes === 'number' ? bytes : 0 } } : {}),
		};
	}

	return { value: raw };
}

/** A map declared with `counter`: nft -j shows it as `"stmt": [{"counter": null}]`. */
function hasCounter(map: Json): boolean {
	const statements = map['stmt'];
	return Array.isArray(statements) && statements.some((statement) => statement !== null && typeof statement === 'object' && 'counter' in statement);
}

/** A subnet as nft prints an interval key: {prefix: {addr, len}}, or a bare address for a /32 or /128. */
function prefixText(raw: unknown, family: NftFamily): string | undefined {
	const prefix = (raw as Json | undefined)?.['prefix'] as { addr?: unknown; len?: unknown } | undefined;
	if (prefix && typeof prefix.addr === 'string' && typeof prefix.len === 'number') {
		return `${canonical(prefix.addr, family)}/${prefix.len}`;
	}

	if (typeof raw === 'string') {
		return `${canonical(raw, family)}/${family === 'ip' ? 32 : 128}`;
	}

	return undefined; // a range: we never write one
}

function addressText(raw: unknown, family: NftFamily): string | undefined {
	return typeof raw === 'string' ? canonical(raw, family) : undefined;
}

function canonical(address: string, family: NftFamily): string {
	return family === 'ip6' ? canonicalIpv6(address) : address;
}

/**
 * Which of our two rules this is, judged by structure (keys a newer nft adds, such as a family or
 * flags, do not matter; a different match, statement or set does).
 */
function ruleShape(expr: Json[] | undefined, family: NftFamily): string {
	const proto = family === 'ip' ? 'ip' : 'ip6';
	const statements = expr ?? [];
	const isSaddr = (value: unknown) => {
		const payload = (value as Json | undefined)?.['payload'] as Json | undefined;
		return payload?.['protocol'] === proto && payload['field'] === 'saddr';
	};
	if (statements.length === 2 && 'return' in statements[1]!) {
		const match = statements[0]!['match'] as Json | undefined;
		const oif = (match?.['left'] as Json | undefined)?.['meta'] as Json | undefined;
		if (match?.['op'] === '==' && match['right'] === `@${NFT_BRIDGES_SET}` && oif?.['key'] === 'oifname') {
			return 'bridges-return';
		}

		const concat = (match?.['left'] as Json | undefined)?.['concat'] as unknown[] | undefined;
		const meta = (concat?.[1] as Json | undefined)?.['meta'] as Json | undefined;
		if (match?.['op'] === '==' && match['right'] === `@${NFT_BRIDGE_SET}` && concat?.length === 2 && isSaddr(concat[0]) && meta?.['key'] === 'oifname') {
			return 'bridge-return';
		}
	}

	if (statements.length === 1) {
		const map = (((statements[0]!['snat'] as Json | undefined)?.['addr'] as Json | undefined)?.['map']) as Json | undefined;
		if (map && isSaddr(map['key']) && map['data'] === `@${NFT_SOURCE_MAP}`) {
			return 'snat-map';
		}

		if (map && isSaddr(map['key']) && map['data'] === `@${NFT_CONTAINER_MAP}`) {
			return 'container-snat';
		}
	}

	return `other rule ${JSON.stringify(statements).slice(0, 200)}`;
}

/** The rules our tables serve now, as SnatRules (network from the element's comment, or '?'). */
export function nftRules(tables: Partial<Record<NftFamily, NftTableState>>): SnatRule[] {
	return nftFamilies.flatMap((family) => [
		...(tables[family]?.containers ?? []).map((element) => ({ network: element.network ?? '?', subnet: element.subnet, bridge: '', sourceIp: element.sourceIp, container: true })),
		...(tables[family]?.elements ?? []).map((element) => ({ network: element.network ?? '?', subnet: element.subnet, bridge: element.bridge ?? '', sourceIp: element.sourceIp })),
	]);
}

/** Every element of our source maps with its counter (new connections since the table was written). */
export function nftCounters(tables: Partial<Record<NftFamily, NftTableState>>): RuleCounter[] {
	return nftFamilies.flatMap((family) =>
		[...(tables[family]?.containers ?? []), ...(tables[family]?.elements ?? [])].map((element) => ({
			subnet: element.subnet,
			sourceIp: element.sourceIp,
			...(element.packets === undefined ? {} : { packets: element.packets, bytes: element.bytes ?? 0 }),
		})),
	);
}
