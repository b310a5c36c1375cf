// Helpers for the per-container egress tests (issue 11: `docker-egress.source-ip` on a container):
// long-running containers, probing the echo server from INSIDE a running container (what that
// container itself gets, not a throwaway one on its network), `docker egress ps` rows, and "does any
// rule of ours still name this container" reads of the firewall and the policy routing.
//
// Like ./firewall.ts these read the kernel and Docker with the system's tools only.
import type { Sandbox } from '../helpers/sandbox.js';
import { PROBE_IMAGE } from '../helpers/sandbox.js';
import { NFT, firewallBackend } from './firewall.js';
import { egress } from './watch-helpers.js';

/** PID 1 that exits at once on SIGTERM (a bare `sleep` as PID 1 would make `docker stop` wait 10 s). */
const IDLE = ['sh', '-c', 'trap "exit 0" TERM INT; while true; do sleep 1; done'];

export type RunOptions = {
	network?: string;
	/** docker-egress.* labels, e.g. {'source-ip': '192.0.2.12', via: '198.51.100.254'}. */
	egressLabels?: Record<string, string>;
	/** Other labels (k=v). */
	labels?: Record<string, string>;
	ip?: string;
	/** Extra `docker run` arguments before the image. */
	extra?: string[];
	/** The container's command (default: idle until stopped). */
	cmd?: string[];
};

/** `docker run -d` of the probe image; returns the full container ID. */
export async function runContainer(sb: Sandbox, name: string, opts: RunOptions = {}): Promise<string> {
	const args = ['run', '-d', '--name', name];
	if (opts.network !== undefined) args.push('--network', opts.network);
	if (opts.ip !== undefined) args.push('--ip', opts.ip);
	for (const [key, value] of Object.entries(opts.egressLabels ?? {})) args.push('--label', `docker-egress.${key}=${value}`);
	for (const [key, value] of Object.entries(opts.labels ?? {})) args.push('--label', `${key}=${value}`);
	args.push(...(opts.extra ?? []), PROBE_IMAGE, ...(opts.cmd ?? IDLE));
	const r = await sb.docker(args, { timeout: 60_000 });
	return r.stdout.trim();
}

export async function removeContainers(sb: Sandbox, ...names: string[]): Promise<void> {
	if (names.length > 0) await sb.docker(['rm', '-f', ...names], { reject: false, timeout: 60_000 });
}

/**
 * The source address the echo server sees from inside the running container `name`
 * (`docker exec`), or undefined when nothing answers within `timeoutSeconds`.
 */
export async function probeFrom(sb: Sandbox, name: string, opts: { family?: 4 | 6; timeoutSeconds?: number } = {}): Promise<string | undefined> {
	const target = opts.family === 6 ? sb.echoAddress6 : sb.echoAddress;
	if (target === undefined) throw new Error(`sandbox ${sb.id} has no IPv6 echo server`);
	const script = `printf "GET /cgi-bin/ip HTTP/1.0\\r\\n\\r\\n" | timeout ${opts.timeoutSeconds ?? 5} nc ${target} 80 | tail -1`;
	const r = await sb.docker(['exec', name, 'sh', '-c', script], { reject: false, timeout: 60_000 });
	const seen = r.stdout.trim();
	return seen || undefined;
}

/** Fetches http://HOST:PORT/cgi-bin/ip from inside `name` (a server of ours that answers with the peer address). */
export async function fetchFrom(sb: Sandbox, name: string, host: string, port: number): Promise<string | undefined> {
	const script = `printf "GET /cgi-bin/ip HTTP/1.0\\r\\n\\r\\n" | timeout 5 nc ${host} ${port} | tail -1`;
	const r = await sb.docker(['exec', name, 'sh', '-c', script], { reject: false, timeout: 60_000 });
	// busybox httpd on a dual-stack socket writes an IPv4 peer as "[::ffff:a.b.c.d]".
	return r.stdout.trim().replace(/^\[(?:::ffff:)?(.*)\]$/, '$1') || undefined;
}

/** A container command: a busybox httpd on :PORT whose /cgi-bin/ip answers with the caller's address. */
export function peerEchoServer(port: number): string[] {
	const cgi = '#!/bin/sh\\necho "Content-Type: text/plain"\\necho\\necho "$REMOTE_ADDR"\\n';
	return ['sh', '-c', `mkdir -p /www/cgi-bin && printf '${cgi}' >/www/cgi-bin/ip && chmod +x /www/cgi-bin/ip && exec busybox httpd -f -p 0.0.0.0:${port} -h /www`];
}

export type ContainerNet = { IPAddress: string; GlobalIPv6Address: string };

/** The container's endpoints: network name -> addresses (`docker inspect`). */
export async function networksOf(sb: Sandbox, name: string): Promise<Record<string, ContainerNet>> {
	const r = await sb.docker(['inspect', '--format', '{{json .NetworkSettings.Networks}}', name]);
	return JSON.parse(r.stdout) as Record<string, ContainerNet>;
}

export async function addressOn(sb: Sandbox, name: string, network: string): Promise<string> {
	const net = (await networksOf(sb, name))[network];
	if (!net?.IPAddress) throw new Error(`container ${name} has no IPv4 address on ${network}`);
	return net.IPAddress;
}

export async function fullId(sb: Sandbox, name: string): Promise<string> {
	return (await sb.docker(['inspect', '--format', '{{.Id}}', name])).stdout.trim();
}

/** One row of `docker egress ps --format json`. */
export type PsRow = { ID: string; Name: string; Network: string; Address: string; SourceIP: string; Status: string; StatusReason?: string };

/** `docker egress ps --format json [...args]`: the rows, and the raw result for messages. */
export async function psRows(sb: Sandbox, args: string[] = []): Promise<PsRow[]> {
	const r = await egress(sb, ['ps', '--format', 'json', ...args]);
	if (r.exitCode !== 0) throw new Error(`egress ps ${args.join(' ')} failed (exit ${r.exitCode}): ${r.stderr}`);
	return r.stdout
		.split('\n')
		.filter((line) => line.trim())
		.map((line) => JSON.parse(line) as PsRow);
}

export function rowsOf(rows: PsRow[], name: string): PsRow[] {
	return rows.filter((row) => row.Name === name || row.Name === `/${name}`);
}

/**
 * Everything our firewall holds, as text: with nftables both of our tables (`nft -j list table
 * ip|ip6 docker-egress`, elements and comments included), with iptables every DOCKER-EGRESS* chain
 * line of every table (nat and filter, both families).
 */
export async function ourFirewallText(sb: Sandbox): Promise<string> {
	if (firewallBackend() === 'nftables') {
		const reads = await Promise.all(['ip', 'ip6'].map((family) => sb.exec(NFT, ['-j', 'list', 'table', family, 'docker-egress'], { reject: false })));
		return reads.map((r) => (r.exitCode === 0 ? r.stdout : '')).join('\n');
	}
	const reads = await Promise.all([sb.exec('iptables-save', []), sb.exec('ip6tables-save', [])]);
	return reads
		.flatMap((r) => r.stdout.split('\n'))
		.filter((line) => /^-A DOCKER-EGRESS/.test(line) || / -j DOCKER-EGRESS/.test(line))
		.join('\n');
}

/** Our policy routing (rules and routes tagged proto 211), both families. */
export async function ourRoutingText(sb: Sandbox): Promise<string> {
	const reads = await Promise.all([
		sb.exec('ip', ['-4', 'rule', 'show']),
		sb.exec('ip', ['-6', 'rule', 'show']),
		sb.exec('ip', ['-4', 'route', 'show', 'table', 'all', 'proto', '211']),
		sb.exec('ip', ['-6', 'route', 'show', 'table', 'all', 'proto', '211']),
	]);
	return reads
		.flatMap((r) => r.stdout.split('\n'))
		.filter((line) => line.includes('proto 211') || /^\S/.test(line))
		.join('\n');
}

/** Whether `text` names the address as a whole token (10.79.1.5 is not in 10.79.1.50 or 10.79.1.5x). */
export function mentionsAddress(text: string, address: string): boolean {
	const pattern = address.includes(':') ? /[^0-9a-fA-F:]+/ : /[^0-9.]+/;
	return text.split(pattern).some((token) => token.toLowerCase() === address.toLowerCase());
}

/** What of `names` (container names, IDs, addresses) our firewall still names. */
export async function firewallNames(sb: Sandbox, what: { names?: string[]; addresses?: string[] }): Promise<string[]> {
	const text = await ourFirewallText(sb);
	// A name as a whole word: ct_a is not named by a rule of ct_a_2.
	const named = (name: string) => new RegExp(`(?<![\\w.-])${name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}(?![\\w.-])`).test(text);
	return [...(what.names ?? []).filter(named), ...(what.addresses ?? []).filter((address) => mentionsAddress(text, address))];
}

/** `docker egress sync` (with this file's state dir). */
export async function sync(sb: Sandbox): Promise<Awaited<ReturnType<typeof egress>>> {
	return egress(sb, ['sync']);
}

/**
 * Removes every rule of ours, whatever chains the container rules live in: with nftables both of
 * our tables, with iptables every DOCKER-EGRESS* chain of the nat table is flushed (the jumps stay).
 */
export async function dropAllOurRules(sb: Sandbox): Promise<void> {
	if (firewallBackend() === 'nftables') {
		for (const family of ['ip', 'ip6']) {
			await sb.exec(NFT, ['-f', '-'], { input: `table ${family} docker-egress {}\ndelete table ${family} docker-egress\n` });
		}
		return;
	}
	for (const tool of ['iptables', 'ip6tables'] as const) {
		const save = (await sb.exec(`${tool}-save`, ['-t', 'nat'])).stdout;
		for (const m of save.matchAll(/^:(DOCKER-EGRESS\S*) /gm)) await sb.exec(tool, ['-w', '-t', 'nat', '-F', m[1]!]);
	}
}
