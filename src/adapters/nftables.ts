// The nftables backend: our own tables (`ip docker-egress`, `ip6 docker-egress`, see core/nft.ts),
// read back as JSON (`nft -j`), replaced in one `nft -f` transaction. It reads other tables only to
// learn what runs before our chain, and never changes them. On a host that ran the iptables
// backend before, a plan also removes that backend's chain and jump (iptables-restore).
import { carriedCounts, type RuleCounter } from '../core/connections.js';
import { absentTable, NFT_BLOCKED_SET, NFT_CHAIN, nftCounters, nftDropText, nftFamilies, nftRuleText, nftRules, NFT_PRIORITY, NFT_TABLE, parseNftTable, renderNft, type NftFamily, type NftTableState } from '../core/nft.js';
import { parseFilterState, planFilter, type DropRule, type FilterState } from '../core/drops.js';
import { parseNatState, renderRemoval, type NatState, type SnatRule } from '../core/rules.js';
import { canonicalIpv6 } from '../core/address.js';
import type { Desired, FirewallBackend, FirewallPlan, FirewallState, ReadOptions, RuleCheck, Step } from './firewall.js';
import { Firewall } from './iptables.js';
import { nftCommand, nftJson, parseChains, readForeignChains, shadowOf, type NftItems } from './nft-hooks.js';
import { runProcess, runTransactions } from './run.js';

type NftState = FirewallState & {
	backend: 'nftables';
	tables: Record<NftFamily, NftTableState>;
	/** The iptables backend's chain and jumps, when asked for (leftovers), per family. */
	iptables?: { flavour: Firewall; nat: NatState; nat6: NatState; filter: FilterState; filter6: FilterState };
};

export class NftablesBackend implements FirewallBackend {
	readonly name = 'nftables' as const;
	private version = '';
	/** The first `nft -j list chains`, started by probe(); used by the first read. */
	private primed: Promise<NftItems> | undefined;
	/**
	 * The iptables backend left nothing (read once, or removed): later reads of this process (a
	 * watch) skip looking again, which costs two or three processes per reconcile.
	 */
	private noLeftovers = false;

	constructor(primed?: Promise<NftItems>) {
		this.primed = primed;
		primed?.catch(() => undefined);
	}

	/** Starts `nft -j list chains`: it answers whether nft works here, and the first read uses it. */
	static async probe(): Promise<NftItems> {
		return (await nftJson(['list', 'chains'])) ?? [];
	}

	/**
	 * Why this host's nft or kernel cannot hold our layout (concatenated interval sets need kernel
	 * 5.6 and nft 0.9.4), or undefined when it can: a check-mode load of a one-network table, made
	 * only where our table is not there already (where it is, the answer is plain).
	 */
	static async unsupported(chains: NftItems): Promise<string | undefined> {
		if (parseChains(chains).some((chain) => chain.table === NFT_TABLE && chain.name === NFT_CHAIN && chain.family === 'ip')) {
			return undefined;
		}

		const sample = renderNft([{ network: 'probe', subnet: '198.18.0.0/24', bridge: 'probe0', sourceIp: '198.18.1.1' }], ['ip'], { ip: false });
		const result = await runProcess(nftCommand(), ['-c', '-f', '-'], sample);
		return result.exitCode === 0 ? undefined : `nft -c rejects our table: ${result.stderr.trim().split('\n')[0] ?? ''}`;
	}

	describe(): string {
		return `nftables (tables ip/ip6 ${NFT_TABLE}, nat postrouting priority srcnat - ${100 - NFT_PRIORITY}${this.version ? `, nft ${this.version}` : ''})`;
	}

	async read(options: ReadOptions): Promise<NftState> {
		const families: NftFamily[] = options.ipv6 ? ['ip', 'ip6'] : ['ip'];
		const chainsText = this.primed ?? NftablesBackend.probe();
		this.primed = undefined;
		const leftovers = options.leftovers && !this.noLeftovers ? readIptablesLeftovers() : undefined;
		const tables = await Promise.all(families.map(async (family) => readTable(family)));
		const chains = parseChains(await chainsText);
		this.version ||= versionOf(await chainsText);
		const foreign = await readForeignChains(chains, NFT_PRIORITY, (chain) => chain.table === NFT_TABLE && (chain.family === 'ip' || chain.family === 'ip6'));
		const iptables = await leftovers;
		this.noLeftovers ||=
			iptables !== undefined && !renderRemoval(iptables.nat) && !renderRemoval(iptables.nat6) && !planFilter(iptables.filter, [], new Set()).changed && !planFilter(iptables.filter6, [], new Set()).changed;
		return {
			backend: 'nftables',
			foreign,
			tables: { ip: tables[0]!, ip6: tables[1] ?? absentTable },
			...(iptables ? { iptables } : {}),
		};
	}

	plan(state: FirewallState, desired: Desired, dockerBridges: ReadonlySet<string>): FirewallPlan {
		const { tables, iptables } = state as NftState;
		const wanted = [...desired.ipv4, ...desired.ipv6];
		const drops = desired.drops;
		// A damaged table serves nothing we can vouch for: its elements count as absent (added again).
		const actual = nftRules(Object.fromEntries(nftFamilies.filter((family) => tables[family].intact).map((family) => [family, tables[family]])));
		const actualKeys = new Set(actual.map((rule) => elementKey(rule)));
		const wantedKeys = new Set(wanted.map((rule) => elementKey(rule)));
		const added = wanted.filter((rule) => !actualKeys.has(elementKey(rule)));
		const unchanged = wanted.filter((rule) => actualKeys.has(elementKey(rule)));
		const removed = actual.filter((rule) => !wantedKeys.has(elementKey(rule)));
		const notes: string[] = [];
		const families = nftFamilies.filter((family) => {
			const blocked = drops.filter((rule) => familyOf(rule) === family);
			const want = wanted.some((rule) => familyOf(rule) === family) || blocked.length > 0;
			const table = tables[family];
			const damaged = table.exists && !table.intact;
			if (damaged && want) {
				notes.push(`rebuilt table ${family} ${NFT_TABLE} (${table.damage.join('; ')})`);
			}

			// Written by a version before connection counters: rewritten once, with them.
			const uncounted = want && table.exists && !damaged && !table.counters;
			if (uncounted) {
				notes.push(`rewrote table ${family} ${NFT_TABLE} with connection counters`);
			}

			const containers = wanted.some((rule) => rule.container && familyOf(rule) === family);
			return (want && (!table.exists || damaged)) || uncounted || (!want && table.exists) || familyChanged(family, added, removed) || dropsChanged(table, blocked, containers, dockerBridges);
		});
		const steps: Step[] = [];
		if (families.length > 0) {
			const present = Object.fromEntries(nftFamilies.map((family) => [family, tables[family].exists]));
			// The counts of the elements that stay are written back: a change elsewhere does not reset them.
			steps.push({ command: [nftCommand(), '-f', '-'], input: renderNft(wanted, families, present, drops, dockerBridges, carriedCounts(nftCounters(tables))) });
		}

		if (iptables) {
			for (const [family, nat] of [['ipv4', iptables.nat], ['ipv6', iptables.nat6]] as const) {
				const input = renderRemoval(nat);
				if (input) {
					steps.push({ command: iptables.flavour.restoreCommand(family), input });
					notes.push(`removed the iptables backend's ${family === 'ipv4' ? 'iptables' : 'ip6tables'} chain and jump (moved to nftables)`);
				}

				const filterRemoval = planFilter(family === 'ipv4' ? iptables.filter : iptables.filter6, [], dockerBridges);
				if (filterRemoval.changed) {
					steps.push({ command: iptables.flavour.restoreCommand(family), input: filterRemoval.input });
					notes.push(`removed the iptables backend's ${family === 'ipv4' ? 'iptables' : 'ip6tables'} filter chain and jump (moved to nftables)`);
				}
			}
		}

		return { backend: 'nftables', desired, added, removed, unchanged, notes, changed: steps.length > 0, steps };
	}

	async apply(plan: FirewallPlan): Promise<void> {
		// nftables first: during the change a network is served by one backend or both, never none.
		await runTransactions(plan.steps);

		if (plan.notes.some((note) => note.startsWith("removed the iptables backend's"))) {
			this.noLeftovers = true; // applied: nothing of the iptables backend's is left
		}
	}

	check(state: FirewallState, rules: SnatRule[], dockerBridges: ReadonlySet<string>): RuleCheck {
		const { tables, foreign } = state as NftState;
		for (const rule of rules) {
			const table = tables[familyOf(rule)];
			if (!table.exists) {
				return { status: 'missing', why: `table ${familyOf(rule)} ${NFT_TABLE} does not exist` };
			}

			if (!table.intact) {
				return { status: 'missing', why: `table ${familyOf(rule)} ${NFT_TABLE} was changed: ${table.damage.join('; ')}` };
			}

			if (rule.container) {
				const element = table.containers.find((candidate) => candidate.subnet === rule.subnet);
				if (!element || element.sourceIp !== normal(rule.sourceIp, rule)) {
					return { status: 'missing', why: `no element for ${rule.subnet.split('/')[0]!} -> ${rule.sourceIp} in map container_source` };
				}
			} else {
				const element = table.elements.find((candidate) => candidate.subnet === rule.subnet);
				if (!element || element.sourceIp !== normal(rule.sourceIp, rule) || element.bridge !== rule.bridge) {
					return { status: 'missing', why: `no element for ${rule.subnet} -> ${rule.sourceIp} (bridge ${rule.bridge})` };
				}
			}

			const by = shadowOf(foreign, { subnet: rule.subnet, bridge: rule.bridge, dockerBridges });
			if (by) {
				return { status: 'shadowed', by };
			}
		}

		return { status: 'active' };
	}

	checkDrops(state: FirewallState, drops: DropRule[]): string | undefined {
		const { tables } = state as NftState;
		for (const rule of drops) {
			const table = tables[familyOf(rule)];
			if (!table.exists || !table.intact) {
				return `table ${familyOf(rule)} ${NFT_TABLE} ${table.exists ? `was changed: ${table.damage.join('; ')}` : 'does not exist'}`;
			}

			if (!table.blocked.some((entry) => entry.subnet === rule.subnet)) {
				return `${rule.subnet} is not in set ${NFT_BLOCKED_SET}`;
			}
		}

		return undefined;
	}

	ruleTexts(rules: SnatRule[], drops: DropRule[] = []): string[] {
		return [...rules.flatMap((rule) => nftRuleText(rule)), ...drops.map((rule) => nftDropText(rule))];
	}

	counters(state: FirewallState): RuleCounter[] {
		return nftCounters((state as NftState).tables);
	}
}

/** The table's drops (or the bridges they exempt) are not what is wanted. */
function dropsChanged(table: NftTableState, drops: DropRule[], containers: boolean, dockerBridges: ReadonlySet<string>): boolean {
	const have = new Set(table.blocked.map((entry) => entry.subnet));
	if (drops.length !== table.blocked.length || drops.some((rule) => !have.has(rule.subnet))) {
		return true;
	}

	// The exempted bridges matter only while something is blocked, or containers have rules.
	return (drops.length > 0 || containers) && (table.bridges.length !== dockerBridges.size || table.bridges.some((bridge) => !dockerBridges.has(bridge)));
}

function familyOf(rule: { subnet: string }): NftFamily {
	return rule.subnet.includes(':') ? 'ip6' : 'ip';
}

function normal(address: string, rule: SnatRule): string {
	return familyOf(rule) === 'ip6' ? canonicalIpv6(address) : address;
}

/** Subnet, bridge and address: what the kernel holds for a rule (names are for people). */
function elementKey(rule: SnatRule): string {
	// A container's element holds no bridge: the docker_bridges set exempts every one.
	return [rule.container ? 'container' : 'network', rule.subnet, rule.container ? '' : rule.bridge, normal(rule.sourceIp, rule)].join(' ');
}

function familyChanged(family: NftFamily, added: SnatRule[], removed: SnatRule[]): boolean {
	return [...added, ...removed].some((rule) => familyOf(rule) === family);
}

async function readTable(family: NftFamily): Promise<NftTableState> {
	const items = await nftJson(['list', 'table', family, NFT_TABLE]);
	return items ? parseNftTable(items, family) : absentTable;
}

/** What the iptables backend left: its chain and jumps, both families (unreadable: none). */
async function readIptablesLeftovers(): Promise<{ flavour: Firewall; nat: NatState; nat6: NatState; filter: FilterState; filter6: FilterState }> {
	const firewall = await Firewall.detect();
	const empty = () => parseNatState('');
	const none = () => parseFilterState('');
	const [nat, nat6, filter, filter6] = await Promise.all([
		firewall.readNat().catch(empty),
		firewall.readNat('ipv6').catch(empty),
		firewall.readFilter().catch(none),
		firewall.readFilter('ipv6').catch(none),
	]);
	return { flavour: firewall, nat, nat6, filter, filter6 };
}

function versionOf(items: NftItems): string {
	const version = (items.find((item) => item['metainfo'])?.['metainfo'] as { version?: unknown } | undefined)?.version;
	return typeof version === 'string' ? `v${version}` : '';
}
