// The iptables backend: the nat table, through the same iptables flavour (nft or legacy) that
// dockerd uses, read with iptables-save, changed only with one `iptables-restore --noflush`
// transaction per family.
import { readFileSync } from 'node:fs';
import { nftFamilies, NFT_TABLE, renderNft, type NftFamily } from '../core/nft.js';
import { CHAIN, jumpShadow, parseNatState, planSync, renderRestore, ruleKey, ruleText, type NatState, type SnatRule } from '../core/rules.js';
import type { RuleCounter } from '../core/connections.js';
import type { Desired, FirewallBackend, FirewallPlan, FirewallState, ReadOptions, RuleCheck, Step } from './firewall.js';
import { dropText, filterDropsMissing, parseFilterState, planFilterSteps, type DropRule, type FilterState } from '../core/drops.js';
import { nftCommand, nftJson, parseChains, readForeignChains, shadowOf } from './nft-hooks.js';
import { debug } from '../log.js';
import { runCommand, runTransactions } from './run.js';

export type Flavour = 'nft' | 'legacy';
export type Family = 'ipv4' | 'ipv6';

export class Firewall {
	/** The IPv4 nat table as read while detecting the flavour, served to the first readNat(). */
	private primed: string | undefined;

	constructor(
		readonly flavour: Flavour,
		primed?: string,
	) {
		this.primed = primed;
	}

	/**
	 * Picks the flavour whose nat table holds Docker's chains; without any, the one the
	 * `iptables` command on PATH is. DOCKER_EGRESS_IPTABLES=nft|legacy overrides.
	 */
	static async detect(env = process.env): Promise<Firewall> {
		const forced = env['DOCKER_EGRESS_IPTABLES'];
		if (forced === 'nft' || forced === 'legacy') {
			return new Firewall(forced);
		}

		// Reading a legacy table creates it, so legacy is read only where it is in use already.
		const flavours: Flavour[] = legacyTablesInUse() ? ['nft', 'legacy'] : ['nft'];
		const saves = await Promise.all(flavours.map(async (flavour) => readSave(flavour).catch(() => '')));
		const withDocker = flavours.filter((_, i) => /^:DOCKER /m.test(saves[i]!));
		if (withDocker.length === 1) {
			return new Firewall(withDocker[0]!, saves[flavours.indexOf(withDocker[0]!)]);
		}

		const version = await runCommand('iptables', ['--version']).catch(() => '');
		const flavour: Flavour = version.includes('legacy') ? 'legacy' : 'nft';
		debug(`iptables flavour: ${flavour} (no single flavour holds Docker's chains)`);
		return new Firewall(flavour);
	}

	async readNat(family: Family = 'ipv4'): Promise<NatState> {
		if (family === 'ipv4' && this.primed !== undefined) {
			const text = this.primed;
			this.primed = undefined;
			return parseNatState(text);
		}

		return parseNatState(await readSave(this.flavour, family));
	}

	/** Our filter chain (fail-closed drops) and its jump. */
	async readFilter(family: Family = 'ipv4'): Promise<FilterState> {
		return parseFilterState(await readSave(this.flavour, family, 'filter'));
	}

	/** The command line that applies restore input (shown by --dry-run); `counters`: the input sets rule counters (`[packets:bytes]`). */
	restoreCommand(family: Family = 'ipv4', counters = false): string[] {
		return [`${family === 'ipv4' ? 'iptables' : 'ip6tables'}-${this.flavour}-restore`, '-w', ...(counters ? ['--counters'] : []), '--noflush'];
	}

	async restore(input: string, family: Family = 'ipv4'): Promise<void> {
		const [file, ...args] = this.restoreCommand(family);
		debug(`iptables-restore input:\n${input}`);
		await runCommand(file!, args, input);
	}
}

function legacyTablesInUse(): boolean {
	try {
		return readFileSync('/proc/net/ip_tables_names', 'utf8').trim() !== '';
	} catch {
		return false;
	}
}

/** The nat table is read with its counters (`-c`): our rules' packets are the connections they translated. */
async function readSave(flavour: Flavour, family: Family = 'ipv4', table: 'nat' | 'filter' = 'nat'): Promise<string> {
	return runCommand(`${family === 'ipv4' ? 'iptables' : 'ip6tables'}-${flavour}-save`, table === 'nat' ? ['-c', '-t', table] : ['-t', table]);
}

type IptablesState = FirewallState & {
	backend: 'iptables';
	nat: NatState;
	nat6: NatState;
	/** The filter table's fail-closed chain, per family. */
	filter: FilterState;
	filter6: FilterState;
	/** Why ip6tables could not be read (an error only where a network egresses over IPv6). */
	nat6Error?: Error;
	/** Our nftables tables, when asked for (leftovers of the nftables backend). */
	nftTables?: NftFamily[];
};

/**
 * The iptables backend: one chain of ours in the nat table (DOCKER-EGRESS), jumped to from the
 * top of POSTROUTING, rewritten with one `iptables-restore --noflush` per family, in the flavour
 * dockerd uses. Used where nft is not available, or when asked for.
 */
export class IptablesBackend implements FirewallBackend {
	readonly name = 'iptables' as const;

	constructor(readonly firewall: Firewall) {}

	static async detect(): Promise<IptablesBackend> {
		return new IptablesBackend(await Firewall.detect());
	}

	describe(): string {
		return `iptables (${this.firewall.flavour} flavour, chain ${CHAIN} in the nat table)`;
	}

	async read(options: ReadOptions): Promise<IptablesState> {
		// nft shows what else hooks nat postrouting (Docker 29's nftables tables, firewalld, …);
		// where nft is missing, nothing but iptables can be there.
		const chains = nftJson(['list', 'chains']).catch(() => undefined);
		let nat6Error: Error | undefined;
		const [nat, nat6, filter, filter6, chainsText] = await Promise.all([
			this.firewall.readNat(),
			options.ipv6
				? this.firewall.readNat('ipv6').catch((error: unknown) => {
						nat6Error = error as Error; // only an error where a network egresses over IPv6
						debug(`ip6tables nat table not readable: ${nat6Error.message}`);
						return parseNatState('');
					})
				: parseNatState(''),
			this.firewall.readFilter(),
			options.ipv6 ? this.firewall.readFilter('ipv6').catch(() => parseFilterState('')) : parseFilterState(''),
			chains,
		]);
		const all = parseChains(chainsText ?? []);
		// With the nft flavour, the `nat` tables are iptables' own: what is above the jump is read
		// from iptables-save. Our own nftables table, if one is left, runs first (priority 90) and is
		// analysed like anyone else's: until a sync removes it, it may be what NATs the traffic.
		const isOurs = (chain: { family: string; table: string }) => this.firewall.flavour === 'nft' && chain.table === 'nat' && (chain.family === 'ip' || chain.family === 'ip6');
		const foreign = await readForeignChains(all, IPTABLES_NAT_PRIORITY, isOurs);
		const nftTables = options.leftovers ? nftFamilies.filter((family) => all.some((chain) => chain.family === family && chain.table === NFT_TABLE)) : undefined;
		return { backend: 'iptables', foreign, nat, nat6, filter, filter6, ...(nat6Error ? { nat6Error } : {}), ...(nftTables ? { nftTables } : {}) };
	}

	plan(state: FirewallState, desired: Desired, dockerBridges: ReadonlySet<string>): FirewallPlan {
		const { nat, nat6, filter, filter6, nftTables, nat6Error } = state as IptablesState;
		const drops6 = desired.drops.filter((rule) => rule.subnet.includes(':'));
		if (nat6Error && (desired.ipv6.length > 0 || drops6.length > 0)) {
			throw nat6Error; // IPv6 egress needs ip6tables
		}

		const plans = [planSync(nat, desired.ipv4, dockerBridges), planSync(nat6, desired.ipv6, dockerBridges)] as const;
		const notes: string[] = [];
		const steps: Step[] = [];
		for (const [i, plan] of plans.entries()) {
			const family = i === 0 ? 'ipv4' : 'ipv6';
			const tool = i === 0 ? 'iptables' : 'ip6tables';
			notes.push(...plan.foreign.map((line) => `removed foreign rule from ${CHAIN} (${tool}): ${line}`));
			if (plan.jumpRepair) {
				notes.push(`repaired jump to ${CHAIN} at the top of nat POSTROUTING (${tool}: ${plan.jumpReason ?? 'missing'})`);
			}

			if (plan.changed) {
				// The rules that stay keep their counts (connections translated): a change elsewhere does not reset them.
				const input = renderRestore(plan);
				steps.push({ command: this.firewall.restoreCommand(family, /^\[\d+:\d+\] -A /m.test(input)), input });
			}
		}

		// Fail closed: new drops go in before the nat change, drops that go are removed after it, so a
		// network is never without both its SNAT rule and its drop.
		const filters = [
			['ipv4', filter, planFilterSteps(filter, desired.drops.filter((rule) => !rule.subnet.includes(':')), dockerBridges)],
			['ipv6', filter6, planFilterSteps(filter6, drops6, dockerBridges)],
		] as const;
		for (const [family, actual, { before, after }] of filters) {
			if (before) {
				steps.unshift({ command: this.firewall.restoreCommand(family), input: before.input });
			}

			if (after) {
				steps.push({ command: this.firewall.restoreCommand(family), input: after.input });
			}

			if (before?.jumpRepair && actual.chainExists) {
				notes.push(`repaired jump to ${CHAIN} at the top of ${family === 'ipv4' ? 'iptables' : 'ip6tables'} filter ${actual.parent}`);
			}
		}

		if (nftTables && nftTables.length > 0) {
			steps.push({ command: [nftCommand(), '-f', '-'], input: renderNft([], nftTables) });
			notes.push(`removed the nftables backend's tables (${nftTables.map((family) => `${family} ${NFT_TABLE}`).join(', ')}; moved to iptables)`);
		}

		return {
			backend: 'iptables',
			desired,
			added: [...plans[0].added, ...plans[1].added],
			removed: [...plans[0].removed, ...plans[1].removed],
			unchanged: [...plans[0].unchanged, ...plans[1].unchanged],
			notes,
			changed: steps.length > 0,
			steps,
		};
	}

	async apply(plan: FirewallPlan): Promise<void> {
		await runTransactions(plan.steps);
	}

	check(state: FirewallState, rules: SnatRule[], dockerBridges: ReadonlySet<string>): RuleCheck {
		const { nat, nat6, foreign } = state as IptablesState;
		for (const rule of rules) {
			const table = rule.subnet.includes(':') ? nat6 : nat;
			const tool = rule.subnet.includes(':') ? 'ip6tables' : 'iptables';
			if (!table.rules.some((candidate) => ruleKey(candidate) === ruleKey(rule))) {
				return { status: 'missing', why: `no rule for ${rule.subnet} in ${tool} chain ${CHAIN}` };
			}

			if (table.ownJumps === 0) {
				return { status: 'missing', why: `no jump to ${CHAIN} in ${tool} nat POSTROUTING` };
			}

			const above = jumpShadow(table, rule, dockerBridges);
			if (above) {
				return { status: 'shadowed', by: `${tool} nat POSTROUTING, above our jump: ${above}` };
			}

			const by = shadowOf(foreign, { subnet: rule.subnet, bridge: rule.bridge, dockerBridges });
			if (by) {
				return { status: 'shadowed', by };
			}
		}

		return { status: 'active' };
	}

	checkDrops(state: FirewallState, drops: DropRule[]): string | undefined {
		const { filter, filter6 } = state as IptablesState;
		return (
			filterDropsMissing(filter, drops.filter((rule) => !rule.subnet.includes(':')), 'iptables') ??
			filterDropsMissing(filter6, drops.filter((rule) => rule.subnet.includes(':')), 'ip6tables')
		);
	}

	ruleTexts(rules: SnatRule[], drops: DropRule[] = []): string[] {
		return [...rules.map((rule) => ruleText(rule)), ...drops.map((rule) => `-t filter ${dropText(rule)}`)];
	}

	counters(state: FirewallState): RuleCounter[] {
		const { nat, nat6 } = state as IptablesState;
		return [...nat.counters, ...nat6.counters];
	}
}

/** iptables' nat POSTROUTING runs at NF_IP_PRI_NAT_SRC (srcnat, 100), legacy and nft alike. */
const IPTABLES_NAT_PRIORITY = 100;
