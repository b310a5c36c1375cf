#!/usr/bin/env node
// The two firewall backends side by side, in a network namespace of its own (no Docker needed):
// for N egress networks, what a new connection costs in the kernel (the NAT lookup of its first
// packet), what one full rewrite of our rules costs (nft -f / iptables-restore), and what reading
// them back costs (nft -j list table / iptables-save). Rules are rendered by the plugin's own code
// (build/src/core), so this measures exactly what the plugin writes.
//
//   node bench/backends.mjs [--sizes 1,100,1000] [--flows 20000] [--out FILE]   (as root, after make build)
//   node bench/run.mjs --only backends   the same as a section of the suite (its table and JSON included)
//
// Per-flow cost: a UDP socket bound to an address of the LAST network's subnet (the worst case for
// a linear chain) sends one datagram to each of F destination ports (F new conntrack entries, each
// NATed once) out of a veth interface (this kernel has no dummy driver); the time per datagram
// minus the same with no NAT rule at all is the cost of finding the rule. Medians of 5 runs; no figure is asserted.
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';

import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const { renderNft } = await import(join(repo, 'build/src/core/nft.js'));
const { parseNatState, planSync, renderRestore } = await import(join(repo, 'build/src/core/rules.js'));

const args = process.argv.slice(2);
const option = (name, fallback) => {
	const i = args.indexOf(`--${name}`);
	return i === -1 ? fallback : args[i + 1];
};
const sizes = option('sizes', '1,100,1000').split(',').map(Number);
const flows = Number(option('flows', '20000'));
const out = option('out', join(repo, 'bench/results/backends.json'));
const NFT = '/usr/sbin/nft';

if (process.getuid?.() !== 0) {
	console.error('bench/backends: needs root (it makes a network namespace)');
	process.exit(2);
}

const ns = `egb-${randomBytes(3).toString('hex')}`;
const inNs = (cmd, cmdArgs, input) => {
	const r = spawnSync('nsenter', [`--net=/var/run/netns/${ns}`, cmd, ...cmdArgs], { input, encoding: 'utf8' });
	if (r.status !== 0) throw new Error(`${cmd} ${cmdArgs.join(' ')}: ${r.stderr}`);
	return r.stdout;
};

function rules(n) {
	return Array.from({ length: n }, (_, i) => ({ network: `z_bench_${i}`, subnet: `10.${100 + Math.floor(i / 256)}.${i % 256}.0/24`, bridge: `zb${i}`, sourceIp: '192.0.2.11' }));
}

function median(values) {
	const sorted = [...values].sort((a, b) => a - b);
	return sorted[Math.floor(sorted.length / 2)];
}

function timeMs(fn, runs = 5) {
	return median(
		Array.from({ length: runs }, () => {
			const start = process.hrtime.bigint();
			fn();
			return Number(process.hrtime.bigint() - start) / 1e6;
		}),
	);
}

function clear() {
	inNs(NFT, ['flush', 'ruleset']);
}

function applyNft(list) {
	inNs(NFT, ['-f', '-'], renderNft(list));
}

function applyIptables(list) {
	inNs('iptables-nft-restore', ['-w', '--noflush'], renderRestore(planSync(parseNatState(''), list)));
}

/** µs per new flow from `source` (sent inside the namespace by a child node process). */
function flowCostUs(source) {
	const script = `
		const dgram = require('node:dgram');
		const s = dgram.createSocket('udp4');
		s.bind({ address: ${JSON.stringify(source)}, port: 40000 }, async () => {
			const payload = Buffer.from('x');
			const start = process.hrtime.bigint();
			for (let port = 1; port <= ${flows}; port++) {
				await new Promise((done) => s.send(payload, port, '198.18.0.1', done));
			}
			console.log(Number(process.hrtime.bigint() - start) / 1e3 / ${flows});
			s.close();
		});`;
	const runs = [];
	for (let i = 0; i < 5; i++) {
		inNs('conntrack', ['-F']);
		runs.push(Number(inNs(process.execPath, ['-e', script]).trim()));
	}

	return median(runs);
}

const results = { machine: { cpus: execFileSync('nproc').toString().trim(), kernel: execFileSync('uname', ['-r']).toString().trim() }, flows, rows: [] };
execFileSync('ip', ['netns', 'add', ns]);
try {
	inNs('ip', ['link', 'set', 'lo', 'up']);
	inNs('ip', ['link', 'add', 'up0', 'type', 'veth', 'peer', 'name', 'up0p']);
	inNs('ip', ['link', 'set', 'up0p', 'up']);
	inNs('ip', ['addr', 'add', '192.0.2.11/24', 'dev', 'up0']);
	inNs('ip', ['link', 'set', 'up0', 'up']);
	inNs('ip', ['route', 'add', 'default', 'dev', 'up0']);
	// A static neighbour: without one, datagrams queue for ARP and the sender blocks.
	inNs('ip', ['neigh', 'add', '198.18.0.1', 'lladdr', '02:00:00:00:00:01', 'dev', 'up0']);
	inNs('ip', ['link', 'add', 'src0', 'type', 'veth', 'peer', 'name', 'src0p']);
	inNs('ip', ['link', 'set', 'src0p', 'up']);
	inNs('ip', ['link', 'set', 'src0', 'up']);
	for (const n of sizes) {
		const list = rules(n);
		const last = list.at(-1).subnet.replace('.0/24', '.1');
		inNs('ip', ['addr', 'flush', 'dev', 'src0']);
		inNs('ip', ['addr', 'add', `${last}/24`, 'dev', 'src0']);
		clear();
		// Conntrack with NAT but no rule of ours: the baseline.
		inNs(NFT, ['-f', '-'], 'table ip base {\n\tchain p {\n\t\ttype nat hook postrouting priority 200; policy accept;\n\t}\n}\n');
		const baseline = flowCostUs(last);
		clear();
		const nftApply = timeMs(() => applyNft(list));
		const nftRead = timeMs(() => inNs(NFT, ['-j', 'list', 'table', 'ip', 'docker-egress']));
		const nftFlow = flowCostUs(last);
		clear();
		const iptApply = timeMs(() => applyIptables(list));
		const iptRead = timeMs(() => inNs('iptables-nft-save', ['-t', 'nat']));
		const iptFlow = flowCostUs(last);
		clear();
		const row = {
			networks: n,
			baselineUsPerFlow: baseline,
			nftables: { applyMs: nftApply, readMs: nftRead, usPerFlow: nftFlow, lookupUs: Math.max(0, nftFlow - baseline) },
			iptables: { applyMs: iptApply, readMs: iptRead, usPerFlow: iptFlow, lookupUs: Math.max(0, iptFlow - baseline) },
		};
		results.rows.push(row);
		console.error(JSON.stringify(row));
	}
} finally {
	spawnSync('ip', ['netns', 'del', ns]);
}

const f = (x) => x.toFixed(x < 10 ? 2 : 0);
const lines = [
	`| networks | nft -f (ms) | iptables-restore (ms) | nft -j list (ms) | iptables-save (ms) | new flow, nftables (µs) | new flow, iptables (µs) | no rule (µs) |`,
	'|---:|---:|---:|---:|---:|---:|---:|---:|',
	...results.rows.map((r) => `| ${r.networks} | ${f(r.nftables.applyMs)} | ${f(r.iptables.applyMs)} | ${f(r.nftables.readMs)} | ${f(r.iptables.readMs)} | ${f(r.nftables.usPerFlow)} | ${f(r.iptables.usPerFlow)} | ${f(r.baselineUsPerFlow)} |`),
];
console.log(lines.join('\n'));
mkdirSync(dirname(out), { recursive: true });
writeFileSync(out, `${JSON.stringify({ ...results, table: lines }, null, 2)}\n`);

