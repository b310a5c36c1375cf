// What else hooks nat postrouting, read with nft: everyone else's NAT base chains that run at or
// before ours, with their tables, so that status can say when one of them NATs a network first.
// Read only; shared by both backends.
import { nftShadow, type ForeignChain, type Traffic } from '../core/shadow.js';
import { runCommand } from './run.js';

export type Chain = { family: string; table: string; name: string; type?: string; hook?: string; prio?: number };

/** The base and regular chains of `nft -j list chains` output. */
export function parseChains(text: string): Chain[] {
	const items = (JSON.parse(text) as { nftables?: Array<Record<string, unknown>> }).nftables ?? [];
	return items.flatMap((item) => (item['chain'] ? [item['chain'] as Chain] : []));
}

/**
 * Everyone else's nat postrouting base chains that run at or before `priority` (equal priorities
 * run in an order nft does not show: taken as ahead), with their tables' objects to analyse.
 */
export async function readForeignChains(chains: Chain[], priority: number, isOurs: (chain: Chain) => boolean): Promise<ForeignChain[]> {
	const ahead = chains.filter(
		(chain) => chain.type === 'nat' && chain.hook === 'postrouting' && typeof chain.prio === 'number' && chain.prio <= priority && ['ip', 'ip6', 'inet'].includes(chain.family) && !isOurs(chain),
	);
	const tables = [...new Set(ahead.map((chain) => `${chain.family} ${chain.table}`))];
	const listed = new Map(
		await Promise.all(
			tables.map(async (key) => {
				const [family, table] = key.split(' ') as [string, string];
				const text = await runCommand('nft', ['-j', 'list', 'table', family, table]).catch(() => '{"nftables":[]}');
				const items = (JSON.parse(text) as { nftables?: Array<Record<string, unknown>> }).nftables ?? [];
				return [key, items] as const;
			}),
		),
	);
	return ahead.map((chain) => ({ family: chain.family, table: chain.table, chain: chain.name, prio: chain.prio!, items: listed.get(`${chain.family} ${chain.table}`) ?? [] }));
}

/** The foreign chain ahead that can NAT this traffic first (families that see it), described. */
export function shadowOf(foreign: ForeignChain[], traffic: Traffic): string | undefined {
	const family = traffic.subnet.includes(':') ? 'ip6' : 'ip';
	for (const chain of foreign) {
		if (chain.family !== family && chain.family !== 'inet') {
			continue;
		}

		const by = nftShadow(chain, traffic);
		if (by) {
			return by;
		}
	}

	return undefined;
}
