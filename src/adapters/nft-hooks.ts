// What else hooks nat postrouting, read with nft: everyone else's NAT base chains that run at or
// before ours, with their tables, so that status can say when one of them NATs a network first.
// Read only; shared by both backends.
import { nftShadow, type ForeignChain, type Traffic } from '../core/shadow.js';
import { existsSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { CommandError } from '../errors.js';
import { runProcess } from './run.js';

export type NftItems = Array<Record<string, unknown>>;

/**
 * The nft tool: $DOCKER_EGRESS_NFT, else the first of the system's sbin directories that has it,
 * else `nft` on PATH. Not PATH first: a development PATH holds node_modules/.bin, where ava's
 * dependency @vercel/nft installs a command of the same name.
 */
export function nftCommand(env = process.env): string {
	const forced = env['DOCKER_EGRESS_NFT'];
	if (forced) {
		return forced;
	}

	nftPath ??= ['/usr/sbin/nft', '/sbin/nft', '/usr/local/sbin/nft'].find((path) => existsSync(path)) ?? 'nft';
	return nftPath;
}

let nftPath: string | undefined;

/**
 * `nft -j ARGS`, parsed. A listing that races a ruleset change can come back empty with exit
 * status 0 (the kernel interrupts the dump): read again, a few times, before calling it an error.
 * Resolves to undefined when nft says the object does not exist (only asked of `list table`).
 */
export async function nftJson(args: string[]): Promise<NftItems | undefined> {
	const nft = nftCommand();
	const line = [nft, '-j', ...args].join(' ');
	for (let attempt = 1; ; attempt++) {
		const result = await runProcess(nft, ['-j', ...args]);
		if (result.exitCode !== 0 && args[1] === 'table' && /No such file or directory/.test(result.stderr)) {
			return undefined;
		}

		if (result.exitCode !== 0) {
			throw new CommandError(line, result.stderr || `exit status ${String(result.exitCode)}`);
		}

		try {
			return (JSON.parse(result.stdout) as { nftables?: NftItems }).nftables ?? [];
		} catch (error) {
			if (attempt >= 5) {
				throw new CommandError(line, `no JSON in its output (${result.stdout.length} bytes): ${(error as Error).message}`);
			}
		}

		await sleep(10 * attempt);
	}
}

export type Chain = { family: string; table: string; name: string; type?: string; hook?: string; prio?: number };

/** The base and regular chains of `nft -j list chains` output. */
export function parseChains(items: NftItems): Chain[] {
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
				const items = (await nftJson(['list', 'table', family, table])) ?? [];
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
