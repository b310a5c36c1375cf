// Reading (and breaking) the sandbox's firewall the way an operator would, for assertions, on
// whichever backend the plugin under test uses:
//
// - nftables (the plugin's default wherever nft works): its own tables `ip docker-egress` and
//   `ip6 docker-egress`, a map subnet -> source address, a set subnet . bridge, and a nat
//   postrouting chain with two rules that use them. Read back with `nft -j list table`.
// - iptables ($DOCKER_EGRESS_FIREWALL_BACKEND=iptables): chain DOCKER-EGRESS in the nat table,
//   jumped to from POSTROUTING. Read back with iptables-save / ip6tables-save.
//
// A test file pins a backend by setting process.env.DOCKER_EGRESS_FIREWALL_BACKEND at its top
// (ava runs each file in a worker of its own, and sb.egress passes process.env through), so the
// helpers below and the plugin always agree on the backend.
//
// These read the kernel's state with the system's tools only; they share no code with src/, so
// a misreading in the plugin cannot hide itself here.
import type { Sandbox } from '../helpers/sandbox.js';

export type Backend = 'nftables' | 'iptables';

/** The backend the plugin under test uses in this test file (the plugin's own default here: nftables). */
export function firewallBackend(): Backend {
	const value = process.env['DOCKER_EGRESS_FIREWALL_BACKEND'] || 'nftables';
	if (value !== 'nftables' && value !== 'iptables') throw new Error(`DOCKER_EGRESS_FIREWALL_BACKEND=${value}: these tests know nftables and iptables`);
	return value;
}

/**
 * The real nft, by absolute path: sb.exec inherits PATH, and node_modules/.bin/nft (from
 * @vercel/nft, a build dependency) would shadow it when ava runs with node_modules/.bin on PATH.
 */
export const NFT = '/usr/sbin/nft';

export const NFT_TABLE = 'docker-egress';
export const NFT_CHAIN = 'postrouting';

/** One SNAT rule as the kernel holds it, whatever the backend. */
export type EgressRule = {
	subnet: string;
	/** The bridge the rule leaves alone (`! -o BRIDGE`, or the set element); undefined if none. */
	bridge: string | undefined;
	sourceIp: string;
	/** What was read, for messages (an iptables-save line, or the nft element). */
	text: string;
};

type Family = 4 | 6;

function familyOf(subnet: string): Family {
	return subnet.includes(':') ? 6 : 4;
}

// ---------------------------------------------------------------------------------------------
// iptables

/** `iptables-save` of a table, without comments and packet counters, so two reads compare. */
export async function saveTable(sb: Sandbox, table = 'nat', family: Family = 4): Promise<string> {
	const result = await sb.exec(family === 4 ? 'iptables-save' : 'ip6tables-save', ['-t', table]);
	return result.stdout
		.split('\n')
		.filter((line) => !line.startsWith('#'))
		.map((line) => line.replace(/\[\d+:\d+\]/, '[0:0]'))
		.join('\n');
}

/** The POSTROUTING rules of the nat table, in order (iptables-save lines). */
export async function postrouting(sb: Sandbox, family: Family = 4): Promise<string[]> {
	return (await saveTable(sb, 'nat', family)).split('\n').filter((line) => line.startsWith('-A POSTROUTING '));
}

/** The lines of chain DOCKER-EGRESS (iptables-save), in order. */
export async function iptablesChain(sb: Sandbox, family: Family = 4): Promise<string[]> {
	return (await saveTable(sb, 'nat', family)).split('\n').filter((line) => line.startsWith('-A DOCKER-EGRESS '));
}

/** Whether the nat table has chain DOCKER-EGRESS at all (declared, even if empty). */
export async function iptablesChainExists(sb: Sandbox, family: Family = 4): Promise<boolean> {
	return (await saveTable(sb, 'nat', family)).split('\n').includes(':DOCKER-EGRESS - [0:0]');
}

function parseIptablesRule(line: string): EgressRule | undefined {
	const subnet = / -s (\S+)/.exec(line)?.[1];
	const sourceIp = / --to-source (\S+)/.exec(line)?.[1];
	if (subnet === undefined || sourceIp === undefined) return undefined;
	// iptables-save prints a host subnet without its /32 (/128).
	const prefixed = subnet.includes('/') ? subnet : `${subnet}/${familyOf(subnet) === 4 ? 32 : 128}`;
	return { subnet: prefixed, bridge: / ! -o (\S+)/.exec(line)?.[1], sourceIp, text: line };
}

async function iptablesRules(sb: Sandbox, family: Family): Promise<EgressRule[]> {
	return (await iptablesChain(sb, family)).flatMap((line) => parseIptablesRule(line) ?? []);
}

// ---------------------------------------------------------------------------------------------
// nftables

type Json = Record<string, any>;

/** `nft -j list table FAMILY docker-egress` items, or undefined when the table does not exist. */
export async function nftTableItems(sb: Sandbox, family: Family = 4): Promise<Json[] | undefined> {
	const r = await sb.exec(NFT, ['-j', 'list', 'table', family === 4 ? 'ip' : 'ip6', NFT_TABLE], { reject: false });
	if (r.exitCode !== 0) {
		if (/No such file or directory/.test(r.stderr)) return undefined;
		throw new Error(`nft -j list table failed: ${r.stderr}`);
	}

	return (JSON.parse(r.stdout) as { nftables: Json[] }).nftables;
}

/** Our base chain and its rules' expressions, as nft prints them (undefined: no table). */
export async function nftChain(sb: Sandbox, family: Family = 4): Promise<{ chain: Json | undefined; rules: Json[][] } | undefined> {
	const items = await nftTableItems(sb, family);
	if (!items) return undefined;
	const chain = items.find((item) => item['chain']?.name === NFT_CHAIN)?.['chain'] as Json | undefined;
	const rules = items.filter((item) => item['rule']?.chain === NFT_CHAIN).map((item) => item['rule'].expr as Json[]);
	return { chain, rules };
}

/** The handle of our table: a rewrite (the table deleted and made again) gives it a new one. */
export async function nftTableHandle(sb: Sandbox, family: Family = 4): Promise<number | undefined> {
	const items = await nftTableItems(sb, family);
	return items?.find((item) => item['table'])?.['table'].handle as number | undefined;
}

/** A subnet as nft prints an interval key: {prefix: {addr, len}}, or a bare address for a host. */
function nftPrefix(raw: unknown, family: Family): string | undefined {
	const prefix = (raw as Json | undefined)?.['prefix'];
	if (prefix && typeof prefix.addr === 'string') return `${prefix.addr}/${String(prefix.len)}`;
	if (typeof raw === 'string') return `${raw}/${family === 4 ? 32 : 128}`;
	return undefined;
}

/** An element key, with or without the {elem: {val, comment}} wrapper nft adds for a comment. */
function nftKey(raw: unknown): unknown {
	return (raw as Json | undefined)?.['elem']?.val ?? raw;
}

/**
 * The rules our nft table serves: one per element of the source map, joined with the bridge set.
 * Only while the chain really translates through the map (a hooked nat chain whose rules include
 * `snat … to … saddr map @network_source`): a flushed or deleted chain serves no rule, whatever
 * the map still holds, just as a flushed DOCKER-EGRESS has no rule left.
 */
async function nftRules(sb: Sandbox, family: Family): Promise<EgressRule[]> {
	const items = await nftTableItems(sb, family);
	if (!items) return [];
	const chain = items.find((item) => item['chain']?.name === NFT_CHAIN)?.['chain'] as Json | undefined;
	const snats = items.filter((item) => item['rule']?.chain === NFT_CHAIN && JSON.stringify(item['rule'].expr).includes('"snat"') && JSON.stringify(item['rule'].expr).includes('"@network_source"'));
	if (chain?.['type'] !== 'nat' || chain['hook'] !== 'postrouting' || snats.length === 0) return [];

	const bridges = new Map<string, string>();
	for (const item of items) {
		if (item['set']?.name !== 'network_bridge') continue;
		for (const element of (item['set'].elem as unknown[] | undefined) ?? []) {
			const concat = (nftKey(element) as Json | undefined)?.['concat'] as unknown[] | undefined;
			const subnet = nftPrefix(concat?.[0], family);
			if (subnet !== undefined && typeof concat?.[1] === 'string') bridges.set(subnet, concat[1]);
		}
	}

	const rules: EgressRule[] = [];
	for (const item of items) {
		if (item['map']?.name !== 'network_source') continue;
		for (const element of (item['map'].elem as unknown[] | undefined) ?? []) {
			const [key, data] = element as [unknown, unknown];
			const subnet = nftPrefix(nftKey(key), family);
			if (subnet === undefined || typeof data !== 'string') continue;
			rules.push({ subnet, bridge: bridges.get(subnet), sourceIp: data, text: JSON.stringify(element) });
		}
	}

	return rules;
}

// ---------------------------------------------------------------------------------------------
// Both backends

/** The SNAT rules of the backend in use, both families, normalized. */
export async function egressRules(sb: Sandbox, backend = firewallBackend()): Promise<EgressRule[]> {
	const read = backend === 'nftables' ? nftRules : iptablesRules;
	const [v4, v6] = await Promise.all([read(sb, 4), read(sb, 6)]);
	return [...v4, ...v6];
}

/**
 * Everything the firewall holds that the plugin could have changed (both backends, both families;
 * no counters, no handles), so two reads compare: for "nothing changed" checks.
 */
export async function firewallSnapshot(sb: Sandbox): Promise<string> {
	const nftTable = async (family: 'ip' | 'ip6') => {
		const r = await sb.exec(NFT, ['list', 'table', family, NFT_TABLE], { reject: false });
		return r.exitCode === 0 ? r.stdout : `(no table ${family} ${NFT_TABLE})`;
	};

	const parts = await Promise.all([saveTable(sb, 'nat', 4), saveTable(sb, 'nat', 6), nftTable('ip'), nftTable('ip6')]);
	return parts.join('\n');
}

/** Every table's rules of both tools, for "nothing mentions this subnet" checks. */
export async function saveAll(sb: Sandbox): Promise<string> {
	const reads = await Promise.all([sb.exec('iptables-save', []), sb.exec('ip6tables-save', []), sb.exec(NFT, ['list', 'ruleset'])]);
	return reads.map((r) => r.stdout).join('\n');
}

/**
 * Removes every rule of ours, leaving the container in place, as an admin's flush would:
 * `iptables -t nat -F DOCKER-EGRESS` (the jump stays), or `nft flush chain ip docker-egress
 * postrouting` (the table, its map and set stay; the chain translates nothing).
 */
export async function flushEgressRules(sb: Sandbox, backend = firewallBackend()): Promise<void> {
	if (backend === 'iptables') {
		await sb.exec('iptables', ['-w', '-t', 'nat', '-F', 'DOCKER-EGRESS']);
	} else {
		await sb.exec(NFT, ['flush', 'chain', 'ip', NFT_TABLE, NFT_CHAIN]);
	}
}

/**
 * Removes all trace of our rules (whether or not there are any): the nft table (map and set included, so that a half-written
 * rewrite could not hide behind elements left from before), or, with iptables, the chain's rules.
 */
export async function deleteEgressTable(sb: Sandbox, backend = firewallBackend()): Promise<void> {
	if (backend === 'iptables') {
		await flushEgressRules(sb, backend);
	} else {
		// Declaring the table first makes the delete succeed whether or not it exists (one transaction).
		await sb.exec(NFT, ['-f', '-'], { input: `table ip ${NFT_TABLE} {}\ndelete table ip ${NFT_TABLE}\n` });
	}
}

/** Deletes the one rule of `subnet` by hand (the map and set elements with nftables). */
export async function deleteEgressRule(sb: Sandbox, subnet: string, backend = firewallBackend()): Promise<void> {
	const family = familyOf(subnet);
	const rule = (await egressRules(sb, backend)).find((candidate) => candidate.subnet === subnet);
	if (!rule) throw new Error(`no ${backend} rule for ${subnet} to delete`);
	if (backend === 'iptables') {
		// By its position in the chain: exact, whatever the rule's words.
		const position = (await iptablesChain(sb, family)).findIndex((line) => line === rule.text) + 1;
		await sb.exec(family === 4 ? 'iptables' : 'ip6tables', ['-w', '-t', 'nat', '-D', 'DOCKER-EGRESS', String(position)]);
		return;
	}

	const table = `${family === 4 ? 'ip' : 'ip6'} ${NFT_TABLE}`;
	const script = [`delete element ${table} network_source { ${subnet} }`];
	if (rule.bridge !== undefined) script.push(`delete element ${table} network_bridge { ${subnet} . "${rule.bridge}" }`);
	await sb.exec(NFT, ['-f', '-'], { input: `${script.join('\n')}\n` });
}

// ---------------------------------------------------------------------------------------------
// Docker and waiting

export async function networkNames(sb: Sandbox): Promise<string[]> {
	const result = await sb.docker(['network', 'ls', '--format', '{{.Name}}']);
	return result.stdout.split('\n').filter(Boolean).sort();
}

export async function subnetOf(sb: Sandbox, network: string): Promise<string> {
	const result = await sb.docker(['network', 'inspect', network, '--format', '{{range .IPAM.Config}}{{.Subnet}}{{end}}']);
	return result.stdout.trim();
}

export function sleep(ms: number): Promise<void> {
	return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `read` every 100 ms until `ok` holds; throws with the last value after `timeoutMs`. */
export async function eventually<T>(what: string, read: () => Promise<T>, ok: (value: T) => boolean, timeoutMs = 10_000): Promise<T> {
	const deadline = Date.now() + timeoutMs;
	for (;;) {
		const value = await read();
		if (ok(value)) return value;
		if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms; last seen:\n${JSON.stringify(value, null, 2)}`);
		await sleep(100);
	}
}

export function ruleFor(rules: EgressRule[], subnet: string, ip: string): boolean {
	return rules.some((rule) => rule.subnet === subnet && rule.sourceIp === ip);
}

export function rulesOf(rules: EgressRule[], subnet: string): EgressRule[] {
	return rules.filter((rule) => rule.subnet === subnet);
}

export async function waitForRule(sb: Sandbox, subnet: string, ip: string, timeoutMs = 10_000): Promise<void> {
	await eventually(`${firewallBackend()} rule ${subnet} -> ${ip}`, async () => egressRules(sb), (rules) => ruleFor(rules, subnet, ip), timeoutMs);
}

export async function waitForNoRule(sb: Sandbox, subnet: string, timeoutMs = 10_000): Promise<void> {
	await eventually(`no ${firewallBackend()} rule for ${subnet}`, async () => egressRules(sb), (rules) => rulesOf(rules, subnet).length === 0, timeoutMs);
}
