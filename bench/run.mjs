#!/usr/bin/env node
// The benchmark suite of issue 5, items 1–4: start-up, sync at scale, event-to-rule latency in
// `watch`, and the memory of a `watch` over many network events; the two firewall backends side
// by side (bench/backends.mjs, no Docker); and per-container egress (issue 11): container start →
// its rule in watch, and sync with many labelled containers; and the cost of watch's metrics
// endpoint (issue 12): memory over the same churn with and without --metrics-address, idle CPU.
// Everything runs against the real-Docker sandbox of the
// tests (build/test/helpers/sandbox.js: a network namespace with its own dockerd and firewall), so
// no traffic and no rule ever touches the machine's own firewall.
//
//   make bench                       build, then the full run (about 45 minutes on 2 cores)
//   node bench/run.mjs --quick       small sizes, for trying the script out (about 2 minutes)
//   node bench/run.mjs --only startup,sync,latency,memory,metrics,backends,containers-latency,containers-sync
//                                    some sections only
//   node bench/run.mjs --backend iptables   the plugin's firewall backend (default nftables, the
//                                    plugin's own default): DOCKER_EGRESS_FIREWALL_BACKEND of
//                                    every plugin process; every row and the JSON name it
//
// Prints one table (markdown, so it pastes into the README) where every figure names what it was
// compared with in the same run, and writes the table and every raw figure to
// bench/results/latest.json (or --out FILE). No figure is asserted: the machine is shared and
// noisy, so these are measurements, not tests.
//
// Sizes and time budgets (each has a flag; defaults in DEFAULTS below): a section that cannot
// reach its size within its budget stops early and says so in the table ("capped"). The backends
// section runs `node bench/backends.mjs --sizes … --flows …` (--backends-sizes, --backends-flows)
// and prints its table under the main one. containers-latency: --containers-latency-n,
// --containers-latency-budget, --containers-baseline-every (a network creation every N starts, 0:
// none); containers-sync: --containers-sync-sizes, --containers-sync-budget, --containers-concurrency;
// metrics (the memory run twice, --memory-events/--memory-budget, the second with a scrape every
// --metrics-scrape S; then idle CPU): --metrics-idle S, --metrics-idle-rounds, --metrics-idle-scrape S,
// --metrics-scrape-cost-n.
import { spawn, execFileSync } from 'node:child_process';
import { chmodSync, copyFileSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync, readlinkSync, existsSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, '..');
const helpers = join(repo, 'build', 'test', 'helpers');
if (!existsSync(join(helpers, 'sandbox.js'))) {
	console.error('bench: build/test/helpers/sandbox.js is missing: run `make build` first (or `make bench`)');
	process.exit(2);
}
const { Sandbox, pluginBinary } = await import(join(helpers, 'sandbox.js'));
const { dockerCliPath, sandboxReason } = await import(join(helpers, 'prereqs.js'));
const { parseNftTable } = await import(join(repo, 'build', 'src', 'core', 'nft.js'));

// ---------------------------------------------------------------------------------------------
// Options

const DEFAULTS = {
	startupRuns: 30, // timed runs of each start-up command (after 3 warm-up runs each)
	startupNetworks: 10,
	syncSizes: [1, 10, 100, 500, 1000], // 500: the growth from 500 to 1000 is compared with 100 to 500
	syncBudgetS: 400, // creating networks for the sync section (1000 take about 300 s here); sizes beyond it are capped
	syncRepeats: 3, // timed syncs per case (median reported); no-change syncs get 5
	latencyN: 200, // single creations in watch
	latencyBudgetS: 360, // 200 lone creations, 1.1 s apart, take about 5 minutes
	burst: 100,
	memoryEvents: 10_000, // network events (a create and a destroy are two)
	memoryBudgetS: 600, // 10,000 events take about 8 minutes at ~20 events/s
	backendsSizes: [1, 100, 1000], // bench/backends.mjs --sizes
	backendsFlows: 20_000, // bench/backends.mjs --flows
	containersLatencyN: 200, // lone labelled-container starts in watch (issue 11)
	containersLatencyBudgetS: 1200, // one start, its rule, its removal and two 1.1 s pauses: about 3.8 s on a busy machine (+ a network every 4)
	containersBaselineEvery: 4, // one lone network creation (the baseline) every 4 container starts
	containersSyncSizes: [0, 1, 100, 500, 1000], // labelled running containers; 0 is the baseline
	containersSyncBudgetS: 600, // starting containers for containers-sync; sizes beyond it are capped
	containersConcurrency: 8, // container create + start calls in flight
	metricsScrapeMs: 1000, // metrics: the scrape period during the memory run with --metrics-address
	metricsIdleS: 60, // metrics: each idle window
	metricsSettleS: 5, // metrics: after watch started, before its idle window
	metricsIdleRounds: 2, // metrics: rounds of the three idle conditions
	metricsIdleScrapeMs: 15_000, // metrics: scrape period of the scraped idle condition (Prometheus' default)
	metricsScrapeCostN: 200, // metrics: scrapes back to back for the cost of one
};
const QUICK = {
	startupRuns: 5,
	startupNetworks: 10,
	syncSizes: [1, 10, 30],
	syncBudgetS: 60,
	syncRepeats: 2,
	latencyN: 5,
	latencyBudgetS: 20,
	burst: 10,
	memoryEvents: 200,
	memoryBudgetS: 30,
	backendsSizes: [1, 1000],
	backendsFlows: 5000,
	containersLatencyN: 20,
	containersLatencyBudgetS: 120,
	containersBaselineEvery: 4,
	containersSyncSizes: [0, 1, 10, 50],
	containersSyncBudgetS: 90,
	containersConcurrency: 8,
	metricsScrapeMs: 1000,
	metricsIdleS: 15,
	metricsSettleS: 5,
	metricsIdleRounds: 1,
	metricsIdleScrapeMs: 5000,
	metricsScrapeCostN: 50,
};

const SECTIONS = ['startup', 'sync', 'latency', 'memory', 'metrics', 'backends', 'containers-latency', 'containers-sync'];
const BACKENDS = ['nftables', 'iptables'];

function parseArgs(argv) {
	const opts = { ...DEFAULTS, only: SECTIONS, backend: 'nftables', out: join(here, 'results', 'latest.json') };
	for (let i = 0; i < argv.length; i++) {
		const arg = argv[i];
		const value = () => {
			const v = argv[++i];
			if (v === undefined) throw new Error(`${arg} needs a value`);
			return v;
		};
		switch (arg) {
			case '--quick': Object.assign(opts, QUICK); break;
			case '--only': opts.only = value().split(','); break;
			case '--backend': opts.backend = value(); break;
			case '--out': opts.out = resolve(value()); break;
			case '--startup-runs': opts.startupRuns = Number(value()); break;
			case '--sync-sizes': opts.syncSizes = value().split(',').map(Number); break;
			case '--sync-budget': opts.syncBudgetS = Number(value()); break;
			case '--latency-n': opts.latencyN = Number(value()); break;
			case '--latency-budget': opts.latencyBudgetS = Number(value()); break;
			case '--burst': opts.burst = Number(value()); break;
			case '--memory-events': opts.memoryEvents = Number(value()); break;
			case '--memory-budget': opts.memoryBudgetS = Number(value()); break;
			case '--backends-sizes': opts.backendsSizes = value().split(',').map(Number); break;
			case '--backends-flows': opts.backendsFlows = Number(value()); break;
			case '--containers-latency-n': opts.containersLatencyN = Number(value()); break;
			case '--containers-latency-budget': opts.containersLatencyBudgetS = Number(value()); break;
			case '--containers-baseline-every': opts.containersBaselineEvery = Number(value()); break;
			case '--containers-sync-sizes': opts.containersSyncSizes = value().split(',').map(Number); break;
			case '--containers-sync-budget': opts.containersSyncBudgetS = Number(value()); break;
			case '--containers-concurrency': opts.containersConcurrency = Number(value()); break;
			case '--metrics-scrape': opts.metricsScrapeMs = Number(value()) * 1000; break;
			case '--metrics-idle': opts.metricsIdleS = Number(value()); break;
			case '--metrics-idle-rounds': opts.metricsIdleRounds = Number(value()); break;
			case '--metrics-idle-scrape': opts.metricsIdleScrapeMs = Number(value()) * 1000; break;
			case '--metrics-scrape-cost-n': opts.metricsScrapeCostN = Number(value()); break;
			case '-h': case '--help':
				console.log(readFileSync(fileURLToPath(import.meta.url), 'utf8').split('\n').filter((l) => l.startsWith('//')).slice(0, 30).map((l) => l.slice(3)).join('\n'));
				process.exit(0);
				break;
			default: throw new Error(`unknown argument ${arg}`);
		}
	}
	for (const s of opts.only) if (!SECTIONS.includes(s)) throw new Error(`--only: unknown section ${s}`);
	if (!BACKENDS.includes(opts.backend)) throw new Error(`--backend: nftables or iptables, not ${opts.backend}`);
	return opts;
}

// ---------------------------------------------------------------------------------------------
// Small tools

/** The plugin's firewall backend in this run (--backend): set in every plugin process' environment. */
let BACKEND = 'nftables';
const BACKEND_ENV = 'DOCKER_EGRESS_FIREWALL_BACKEND';
const NFT = '/usr/sbin/nft'; // where the plugin looks first
const LABEL = 'docker-egress.source-ip';
const SOURCE_IP = '192.0.2.11';
const BIN = resolve(pluginBinary());
const DOCKER = dockerCliPath() ?? 'docker';

// Every process runs without these: this machine sets NODE_EXTRA_CA_CERTS, which makes Node 20
// read a CA bundle at every start (~40 ms) and would inflate the `node -e 0` floor (Node 22, the
// runtime inside the executable, reads it lazily).
const ENV_REMOVED = ['NODE_EXTRA_CA_CERTS', 'NODE_OPTIONS'];
const CLEAN_ENV = Object.fromEntries(Object.entries(process.env).filter(([k]) => !ENV_REMOVED.includes(k)));

const now = () => performance.now();
const round = (x, d = 1) => (x === undefined || x === null || Number.isNaN(x) ? null : Math.round(x * 10 ** d) / 10 ** d);
const log = (...a) => console.error(`[bench ${new Date().toISOString().slice(11, 19)}]`, ...a);

/** Nearest-rank percentile of a sample (p in 0..100). */
function pct(values, p) {
	if (values.length === 0) return null;
	const s = [...values].sort((a, b) => a - b);
	return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
}
const median = (v) => pct(v, 50);
const networks = (n) => `${n} network${n === 1 ? '' : 's'}`;
const signed = (x) => `${x >= 0 ? '+' : '−'}${Math.abs(round(x, 1))}`;
const stats = (v) => ({ n: v.length, median: round(median(v)), p90: round(pct(v, 90)), p99: round(pct(v, 99)), min: round(Math.min(...v)), max: round(Math.max(...v)) });

/** The i-th /26 of the benchmarking range 198.18.0.0/15 (2048 of them). */
function subnet26(i) {
	if (i < 0 || i >= 2048) throw new Error(`subnet index ${i} outside 198.18.0.0/15`);
	const n = (198 << 24 >>> 0) + (18 << 16) + i * 64;
	return `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}/26`;
}

/** Runs a process to its end; resolves to {ms, code, stdout, stderr}. Timing: spawn() to 'exit'. */
function run(cmd, args, { env, capture = false, input, timeoutMs } = {}) {
	return new Promise((resolvePromise, reject) => {
		const t0 = now();
		const child = spawn(cmd, args, {
			env: env ?? CLEAN_ENV,
			stdio: [input === undefined ? 'ignore' : 'pipe', capture ? 'pipe' : 'ignore', capture ? 'pipe' : 'ignore'],
		});
		let stdout = '';
		let stderr = '';
		if (capture) {
			child.stdout.on('data', (c) => (stdout += c));
			child.stderr.on('data', (c) => (stderr += c));
		}
		if (input !== undefined) child.stdin.end(input);
		const timer = timeoutMs === undefined ? undefined : setTimeout(() => child.kill('SIGKILL'), timeoutMs);
		child.on('error', reject);
		child.on('exit', (code, signal) => {
			clearTimeout(timer);
			const ms = now() - t0;
			const done = () => resolvePromise({ ms, code: code ?? signal, stdout, stderr });
			if (capture) child.on('close', done);
			else done();
		});
	});
}

async function mustRun(cmd, args, opts = {}) {
	const r = await run(cmd, args, { ...opts, capture: true });
	if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')}: exit ${r.code}\n${r.stderr}`);
	return r;
}

/** One Engine API call over the sandbox daemon's unix socket. */
function engine(sb, method, path, body) {
	return new Promise((resolvePromise, reject) => {
		const req = http.request({ socketPath: sb.socket, method, path, headers: { 'Content-Type': 'application/json' } }, (res) => {
			let data = '';
			res.setEncoding('utf8');
			res.on('data', (c) => (data += c));
			res.on('end', () => {
				if ((res.statusCode ?? 500) >= 300) return reject(new Error(`${method} ${path}: ${res.statusCode} ${data.trim()}`));
				resolvePromise(data ? JSON.parse(data) : undefined);
			});
		});
		req.on('error', reject);
		req.end(body === undefined ? undefined : JSON.stringify(body));
	});
}

/** Creates one labelled egress network (masquerade off) with an explicit /26; returns {name, id, subnet, bridge}. */
async function createNetwork(sb, name, index) {
	const subnet = subnet26(index);
	const r = await engine(sb, 'POST', '/networks/create', {
		Name: name,
		CheckDuplicate: true,
		Driver: 'bridge',
		Labels: { [LABEL]: SOURCE_IP },
		Options: { 'com.docker.network.bridge.enable_ip_masquerade': 'false' },
		IPAM: { Config: [{ Subnet: subnet }] },
	});
	return { name, id: r.Id, subnet, bridge: `br-${r.Id.slice(0, 12)}` };
}

const removeNetwork = (sb, id) => engine(sb, 'DELETE', `/networks/${id}`);

/** Runs jobs with `width` of them in flight; stops starting new ones after deadlineMs (performance.now()). */
async function pool(items, width, job, deadline = Infinity) {
	const results = [];
	let next = 0;
	await Promise.all(
		Array.from({ length: Math.min(width, items.length) }, async () => {
			while (next < items.length && now() < deadline) {
				const i = next++;
				results[i] = await job(items[i], i);
			}
		}),
	);
	return results.filter((r) => r !== undefined);
}

function pluginEnv(sb) {
	return { ...CLEAN_ENV, DOCKER_HOST: sb.dockerHost, DOCKER_CONFIG: sb.configDir, DOCKER_EGRESS_STATE_DIR: join(sb.dir, 'state'), [BACKEND_ENV]: BACKEND };
}

/** `docker-egress [global] egress ARGS` inside the sandbox netns, timed as one process (nsenter execs it). */
function egress(sb, args, { global = [], capture = false } = {}) {
	return run('nsenter', [`--net=${sb.nsPath}`, BIN, ...global, 'egress', ...args], { env: pluginEnv(sb), capture });
}

async function egressOk(sb, args, opts = {}) {
	const r = await egress(sb, args, { ...opts, capture: true });
	if (r.code !== 0) throw new Error(`egress ${args.join(' ')}: exit ${r.code}\n${r.stderr}`);
	return r;
}

const inNs = (sb, cmd, args, opts) => run('nsenter', [`--net=${sb.nsPath}`, cmd, ...args], opts);

/** The rules of an iptables chain in the sandbox's nat table, as iptables-save prints them. */
async function chainRules(sb, chain = 'DOCKER-EGRESS') {
	const r = await inNs(sb, 'iptables-save', ['-t', 'nat'], { capture: true });
	return r.stdout.split('\n').filter((l) => l.startsWith(`-A ${chain} `));
}

/**
 * The rules of ours in the kernel, whichever backend is in use, as [{subnet, name, sourceIp, bridge}]:
 * nftables: the elements of map `ip docker-egress network_source` (name from the element's comment,
 * bridge from set network_bridge; no table, no rules); iptables: the rules of chain DOCKER-EGRESS
 * (the containers' own rules among them: see ourKernelRules).
 */
const ourRules = async (sb) => (await ourKernelRules(sb)).networks;

/**
 * One read of our rules: {networks: as ourRules, containers: [{address: 'A.B.C.D/32', sourceIp, name}]}.
 * The containers' own rules (issue 11): nftables: the elements of map `ip docker-egress
 * container_source`; iptables: the rules of chain DOCKER-EGRESS whose source is a single address
 * (`-s A.B.C.D/32`, ahead of the networks' rules; they stay in `networks` too, as before).
 */
async function ourKernelRules(sb) {
	if (BACKEND === 'nftables') {
		const r = await inNs(sb, NFT, ['-j', 'list', 'table', 'ip', 'docker-egress'], { capture: true });
		if (r.code !== 0) {
			if (/No such file or directory/.test(r.stderr)) return { networks: [], containers: [] };
			throw new Error(`nft -j list table ip docker-egress: exit ${r.code}\n${r.stderr}`);
		}
		const table = parseNftTable(JSON.parse(r.stdout).nftables, 'ip');
		if (!table.intact) throw new Error(`table ip docker-egress is not as the plugin writes it: ${table.damage.join('; ')}`);
		return {
			networks: table.elements.map((e) => ({ subnet: e.subnet, name: e.network, sourceIp: e.sourceIp, bridge: e.bridge })),
			containers: table.containers.map((e) => ({ address: e.subnet, sourceIp: e.sourceIp, name: e.network })),
		};
	}
	const networks = (await chainRules(sb)).map((line) => ({
		subnet: /(?:^| )-s (\S+)/.exec(line)?.[1],
		name: /--comment "?docker-egress:([^" ]+)/.exec(line)?.[1],
		sourceIp: /--to-source (\S+)/.exec(line)?.[1],
		bridge: /! -o (\S+)/.exec(line)?.[1],
		line,
	}));
	const containers = networks.filter((r) => r.subnet?.endsWith('/32')).map((r) => ({ address: r.subnet, sourceIp: r.sourceIp, name: r.name }));
	return { networks, containers };
}

/** The rule of one network is in the kernel as the plugin writes it (subnet, bridge, address). */
const ruleOf = (rules, net) => rules.find((r) => r.subnet === net.subnet && r.bridge === net.bridge && r.sourceIp === SOURCE_IP);

/** The rule of one network as iptables arguments (for -C / -A), the way the plugin writes it. */
const ruleArgs = (net) => ['-s', net.subnet, '!', '-o', net.bridge, '-m', 'comment', '--comment', `docker-egress:${net.name}`, '-j', 'SNAT', '--to-source', SOURCE_IP];

function vmRss(pid) {
	const status = readFileSync(`/proc/${pid}/status`, 'utf8');
	const kb = (key) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status)?.[1]);
	// RssFile is mostly the executable's own code (the Node binary, shared with the page cache);
	// RssAnon is the process' own memory: heap, stacks, buffers.
	return { rssKiB: kb('VmRSS'), hwmKiB: kb('VmHWM'), anonKiB: kb('RssAnon'), fileKiB: kb('RssFile') };
}

async function withSandbox(name, fn, options = {}) {
	log(`${name}: starting a sandbox`);
	const t0 = now();
	const sb = await Sandbox.start(options);
	log(`${name}: sandbox ${sb.id} up in ${Math.round(now() - t0)} ms`);
	try {
		return await fn(sb);
	} finally {
		await sb.stop();
		log(`${name}: sandbox ${sb.id} stopped`);
	}
}

/** Starts `watch` in the sandbox; resolves once it logged `watch started`. */
async function startWatch(sb, extraGlobal = [], watchArgs = []) {
	const watch = sb.egress(['watch', '--interval', '5', '--log-format', 'json', ...watchArgs], { globalArgs: extraGlobal, env: { DOCKER_EGRESS_STATE_DIR: join(sb.dir, 'state'), [BACKEND_ENV]: BACKEND, ...Object.fromEntries(ENV_REMOVED.map((k) => [k, undefined])) } });
	const exe = readlinkSync(`/proc/${watch.pid}/exe`);
	const state = { watch, pid: watch.pid, exe, lines: [], listeners: new Set(), startedAt: undefined };
	let buf = '';
	watch.stderr.on('data', (chunk) => {
		const t = now();
		buf += chunk.toString();
		let nl;
		while ((nl = buf.indexOf('\n')) >= 0) {
			const line = buf.slice(0, nl);
			buf = buf.slice(nl + 1);
			let rec;
			try {
				rec = JSON.parse(line);
			} catch {
				rec = { msg: line };
			}
			rec.t = t;
			if (state.lines.length < 50_000) state.lines.push(rec);
			for (const l of state.listeners) l(rec);
		}
	});
	const deadline = now() + 30_000;
	while (!state.lines.some((l) => l.msg === 'watch started')) {
		if (watch.exitCode !== null || now() > deadline) throw new Error(`watch did not start: ${state.lines.map((l) => JSON.stringify(l)).join('\n')}`);
		await sleep(20);
	}
	// nsenter exec()s the plugin in place: the subprocess' pid is the plugin's (checked again here).
	state.exe = readlinkSync(`/proc/${watch.pid}/exe`);
	return state;
}

async function stopWatch(state) {
	state.watch.kill('SIGTERM');
	const r = await state.watch;
	return r.exitCode;
}

// ---------------------------------------------------------------------------------------------
// 1. Start-up

async function benchStartup(opts, table) {
	return withSandbox('startup', async (sb) => {
		const nets = await pool(Array.from({ length: opts.startupNetworks }, (_, i) => i), 4, (i) => createNetwork(sb, `bench_ls${i}`, 1500 + i));
		await egressOk(sb, ['sync']);
		const check = await egressOk(sb, ['ls', '-q']);
		const listed = check.stdout.split('\n').filter(Boolean).length;
		if (listed !== nets.length) throw new Error(`egress ls lists ${listed} networks, expected ${nets.length}`);
		sb.installPlugin();
		const viaCli = await mustRun('nsenter', [`--net=${sb.nsPath}`, DOCKER, '--config', sb.configDir, 'egress', 'ls', '-q'], { env: pluginEnv(sb) });
		if (viaCli.stdout.split('\n').filter(Boolean).length !== nets.length) throw new Error(`docker egress ls: ${viaCli.stdout}`);

		const seaNode = strippedRuntime(join(repo, '.cache', readdirNode()));
		const ns = `--net=${sb.nsPath}`;
		const commands = [
			{ key: 'node', label: '`node -e 0` (machine node ' + process.version + ')', cmd: process.execPath, args: ['-e', '0'] },
			...(existsSync(seaNode) ? [{ key: 'seaNode', label: '`node -e 0` (the Node ' + execFileSync(seaNode, ['--version']).toString().trim() + ' inside the executable)', cmd: seaNode, args: ['-e', '0'] }] : []),
			{ key: 'metadata', label: '`docker-egress docker-cli-plugin-metadata`', cmd: BIN, args: ['docker-cli-plugin-metadata'] },
			{ key: 'help', label: '`docker-egress egress --help` (the CLI loaded; no daemon, no iptables)', cmd: BIN, args: ['egress', '--help'] },
			{ key: 'nsenter', label: '`nsenter --net=… true` (the floor of the rows below)', cmd: 'nsenter', args: [ns, 'true'] },
			{ key: 'egressLs', label: `\`docker-egress egress ls\`, ${nets.length} networks (via nsenter)`, cmd: 'nsenter', args: [ns, BIN, 'egress', 'ls'], env: pluginEnv(sb) },
			{ key: 'dockerNetworkLs', label: '`docker network ls`, same daemon (via nsenter)', cmd: 'nsenter', args: [ns, DOCKER, 'network', 'ls'], env: pluginEnv(sb) },
			{ key: 'dockerEgressLs', label: '`docker egress ls` through the CLI (via nsenter)', cmd: 'nsenter', args: [ns, DOCKER, '--config', sb.configDir, 'egress', 'ls'], env: pluginEnv(sb) },
			{ key: 'completeCommands', label: '`docker-egress __complete egress \'\'` (command names; no daemon)', cmd: BIN, args: ['__complete', 'egress', ''] },
			{ key: 'completeNetworks', label: `\`docker-egress __complete egress rm ''\` (network names: asks Docker; via nsenter)`, cmd: 'nsenter', args: [ns, BIN, '__complete', 'egress', 'rm', ''], env: pluginEnv(sb) },
			{ key: 'dockerComplete', label: "`docker __complete egress rm ''` through the CLI (via nsenter)", cmd: 'nsenter', args: [ns, DOCKER, '--config', sb.configDir, '__complete', 'egress', 'rm', ''], env: pluginEnv(sb) },
		];
		const times = Object.fromEntries(commands.map((c) => [c.key, []]));
		// Round-robin, so that the machine's noise falls on every command alike.
		for (let round_ = 0; round_ < opts.startupRuns + 3; round_++) {
			for (const c of commands) {
				const r = await run(c.cmd, c.args, { env: c.env });
				if (r.code !== 0) throw new Error(`${c.label}: exit ${r.code}`);
				if (round_ >= 3) times[c.key].push(r.ms);
			}
		}
		const result = { backend: BACKEND, runs: opts.startupRuns, warmupRuns: 3, networks: nets.length, commands: {} };
		for (const c of commands) result.commands[c.key] = { label: c.label, ...stats(times[c.key]) };
		const size = statSync(BIN).size;
		result.executableBytes = size;
		result.executableMiB = round(size / 2 ** 20, 1);
		const base = result.commands.node.median;
		const ratio = (k) => round(result.commands[k].median / base, 2);
		result.ratios = { metadataVsNode: ratio('metadata'), egressLsVsNode: ratio('egressLs'), dockerEgressLsVsDockerNetworkLs: round(result.commands.dockerEgressLs.median / result.commands.dockerNetworkLs.median, 2) };
		if (result.commands.seaNode) {
			result.ratios.metadataVsSeaNode = round(result.commands.metadata.median / result.commands.seaNode.median, 2);
			result.ratios.egressLsVsSeaNode = round(result.commands.egressLs.median / result.commands.seaNode.median, 2);
		}
		result.targets = {
			metadata: { target: '≤ 1.2× node -e 0', ratio: result.ratios.metadataVsNode, met: result.ratios.metadataVsNode <= 1.2 },
			egressLs: { target: '≤ 2× node -e 0', ratio: result.ratios.egressLsVsNode, met: result.ratios.egressLsVsNode <= 2 },
		};

		const ms = (k) => `${result.commands[k].median} ms (p90 ${result.commands[k].p90})`;
		table.push(['start-up', result.commands.node.label, ms('node'), `median of ${opts.startupRuns}`, '']);
		if (result.commands.seaNode) table.push(['start-up', result.commands.seaNode.label, ms('seaNode'), `${round(result.commands.seaNode.median / base, 2)}× machine node`, '']);
		table.push(['start-up', result.commands.metadata.label, ms('metadata'), `${ratio('metadata')}× machine node${result.commands.seaNode ? `, ${result.ratios.metadataVsSeaNode}× Node inside` : ''}`, `≤ 1.2×: ${result.targets.metadata.met ? 'met' : 'missed'}`]);
		table.push(['start-up', result.commands.help.label, ms('help'), `${ratio('help')}× machine node`, '']);
		table.push(['start-up', result.commands.nsenter.label, ms('nsenter'), `${ratio('nsenter')}× machine node`, '']);
		table.push(['start-up', result.commands.egressLs.label, ms('egressLs'), `${ratio('egressLs')}× machine node${result.commands.seaNode ? `, ${result.ratios.egressLsVsSeaNode}× Node inside` : ''}`, `≤ 2×: ${result.targets.egressLs.met ? 'met' : 'missed'}`]);
		table.push(['start-up', result.commands.dockerNetworkLs.label, ms('dockerNetworkLs'), `${ratio('dockerNetworkLs')}× machine node`, '']);
		table.push(['start-up', result.commands.dockerEgressLs.label, ms('dockerEgressLs'), `${result.ratios.dockerEgressLsVsDockerNetworkLs}× docker network ls`, '']);
		table.push(['start-up', result.commands.completeCommands.label, ms('completeCommands'), `${ratio('completeCommands')}× machine node`, '']);
		table.push(['start-up', result.commands.completeNetworks.label, ms('completeNetworks'), `${round(result.commands.completeNetworks.median / result.commands.egressLs.median, 2)}× egress ls`, '']);
		table.push(['start-up', result.commands.dockerComplete.label, ms('dockerComplete'), `${round(result.commands.dockerComplete.median / result.commands.dockerNetworkLs.median, 2)}× docker network ls`, '']);
		table.push(['start-up', 'executable size', `${result.executableMiB} MiB`, `${size} bytes`, '']);
		return result;
	});
}

/**
 * The executable is made of a stripped copy of this Node binary (pkg/build.mjs): compare with the
 * same stripped copy, so that the floor is the runtime inside the executable, byte for byte
 * (bar the blob). Falls back to the binary as is without `strip`.
 */
function strippedRuntime(file) {
	if (!existsSync(file)) return file;
	const copy = join(os.tmpdir(), `docker-egress-bench-${basename(file)}`);
	try {
		copyFileSync(file, copy);
		chmodSync(copy, 0o755);
		execFileSync('strip', ['--strip-all', copy], { stdio: 'ignore' });
		return copy;
	} catch {
		return file;
	}
}

function readdirNode() {
	try {
		const version = /"version":\s*"([^"]+)"/.exec(readFileSync(join(repo, 'pkg', 'node-runtime.json'), 'utf8'))?.[1];
		return `node-v${version}`;
	} catch {
		return 'node-missing';
	}
}

// ---------------------------------------------------------------------------------------------
// 2. Sync at scale

async function benchSync(opts, table) {
	return withSandbox('sync', async (sb) => {
		const nets = []; // created, in order; network i uses subnet index i
		// The manual recipe writes its own iptables chain under the nftables backend: a chain named
		// DOCKER-EGRESS would be the iptables backend's leftover, which sync removes.
		const manualChain = BACKEND === 'iptables' ? 'DOCKER-EGRESS' : 'BENCH-MANUAL';
		const result = { backend: BACKEND, manualChain, levels: [], creation: [], cappedAt: undefined, budgetS: opts.syncBudgetS };
		const budgetEnd = now() + opts.syncBudgetS * 1000;
		let rate; // networks per second, measured on the latest batch
		const timeSync = async (global = []) => {
			const r = await egress(sb, ['sync'], { global, capture: true });
			if (r.code !== 0) throw new Error(`sync: exit ${r.code}\n${r.stderr}`);
			const summary = r.stdout.trim().split('\n').at(-1) ?? '';
			if (!summary.endsWith(` (${BACKEND})`)) throw new Error(`sync did not use the ${BACKEND} backend: ${summary}`);
			return r;
		};
		// "From empty": no rule of ours in the kernel (iptables: our chain flushed; nftables: our table deleted).
		const emptyOurs = () =>
			BACKEND === 'iptables'
				? mustRun('nsenter', [`--net=${sb.nsPath}`, 'iptables', '-t', 'nat', '-F', 'DOCKER-EGRESS'])
				: mustRun('nsenter', [`--net=${sb.nsPath}`, NFT, 'delete', 'table', 'ip', 'docker-egress']);
		if (manualChain !== 'DOCKER-EGRESS') await mustRun('nsenter', [`--net=${sb.nsPath}`, 'iptables', '-t', 'nat', '-N', manualChain]);
		const createUpTo = async (count) => {
			const todo = Array.from({ length: count - nets.length }, (_, k) => nets.length + k);
			if (todo.length === 0) return;
			const t0 = now();
			const made = await pool(todo, 4, (i) => createNetwork(sb, `bench_s${i}`, i), budgetEnd);
			made.sort((a, b) => Number(a.name.slice(7)) - Number(b.name.slice(7)));
			nets.push(...made);
			const s = (now() - t0) / 1000;
			rate = made.length / s;
			result.creation.push({ from: nets.length - made.length, to: nets.length, seconds: round(s, 1), perSecond: round(rate, 1) });
			log(`sync: created ${made.length} networks in ${round(s, 1)} s (${round(rate, 1)}/s), ${nets.length} in all`);
		};
		const manual = async (rules, note) => {
			// The manual recipe, as operators script it: one `iptables -C || iptables -A` pair per rule.
			const lines = rules.map((a) => `iptables -t nat -C ${manualChain} ${a.map(shq).join(' ')} 2>/dev/null || iptables -t nat -A ${manualChain} ${a.map(shq).join(' ')}`);
			const script = join(sb.dir, `manual-${note}.sh`);
			writeFileSync(script, `set -e\n${lines.join('\n')}\n`);
			const r = await inNs(sb, 'sh', [script], { capture: true, timeoutMs: MANUAL_TIMEOUT_S * 1000 });
			if (r.code === 'SIGKILL') return { ms: r.ms, stopped: true };
			if (r.code !== 0) throw new Error(`manual recipe: exit ${r.code}\n${r.stderr}`);
			return { ms: r.ms, stopped: false };
		};

		for (const size of opts.syncSizes) {
			// Networks are created until the size or the end of the budget, whichever comes first (dockerd
			// slows down as networks add up, so a projection from the first rates is no good).
			let target = size;
			await createUpTo(target - 1);
			if (nets.length < target - 1) {
				target = nets.length + 1;
				result.cappedAt = target;
			}
			await timeSync(); // the chain holds target-1 rules
			const level = { size: target, asked: size };
			// One network added (the last one): time the sync, then take it away again and repeat.
			const oneAdded = [];
			let last;
			for (let r = 0; r < opts.syncRepeats + 1; r++) {
				if (last) {
					await removeNetwork(sb, last.id);
					await timeSync();
				}
				last = await createNetwork(sb, `bench_s${target - 1}`, target - 1);
				if (r < opts.syncRepeats) {
					oneAdded.push((await timeSync()).ms);
				} else {
					// One more, with -D: how many writes (iptables-restore or nft -f runs), and how many rules
					// (nftables: map elements) they wrote.
					const d = await timeSync(['-D']);
					const lines = d.stderr.split('\n');
					const writes = BACKEND === 'iptables' ? /^debug: exec: ip6?tables-\w+-restore/ : /^debug: exec: \S*nft -f/;
					level.oneAddedRestores = lines.filter((l) => writes.test(l)).length;
					level.oneAddedRulesWritten =
						BACKEND === 'iptables'
							? lines.filter((l) => l.startsWith('-A DOCKER-EGRESS ')).length
							: lines.filter((l) => /^\s*elements = \{.* : /.test(l)).reduce((n, l) => n + (l.match(/ : /g)?.length ?? 0), 0);
					level.oneAddedOutput = d.stdout.trim().split('\n').at(-1);
				}
			}
			nets.push(last);
			const rules = await ourRules(sb);
			if (rules.length !== target) throw new Error(`expected ${target} rules (${BACKEND}), found ${rules.length}`);
			const absent = nets.slice(0, target).filter((n) => !ruleOf(rules, n));
			if (absent.length > 0) throw new Error(`no rule (${BACKEND}) for ${absent.map((n) => n.name).join(' ')}`);
			level.oneAddedMs = stats(oneAdded);
			// Nothing changed.
			const noChange = [];
			for (let r = 0; r < opts.syncRepeats + 2; r++) noChange.push((await timeSync()).ms);
			level.noChangeMs = stats(noChange);
			// From an empty chain.
			const fromEmpty = [];
			for (let r = 0; r < opts.syncRepeats; r++) {
				await emptyOurs();
				fromEmpty.push((await timeSync()).ms);
			}
			level.fromEmptyMs = stats(fromEmpty);
			// The manual recipe for the same rules: from an empty chain, then with nothing to do.
			const args = nets.slice(0, target).map(ruleArgs);
			await mustRun('nsenter', [`--net=${sb.nsPath}`, 'iptables', '-t', 'nat', '-F', manualChain]);
			const m1 = await manual(args, `empty-${target}`);
			level.manualFromEmptyMs = round(m1.ms, 1);
			const manualRules = await chainRules(sb, manualChain);
			if (m1.stopped) {
				level.manualFromEmptyStopped = { afterS: MANUAL_TIMEOUT_S, rulesDone: manualRules.length };
				// Complete the chain for the no-change run: the plugin's sync (iptables), or one restore.
				if (manualChain === 'DOCKER-EGRESS') await timeSync();
				else await mustRun('nsenter', [`--net=${sb.nsPath}`, 'iptables-restore', '-w', '--noflush'], { input: `*nat\n:${manualChain} - [0:0]\n${args.map((a) => `-A ${manualChain} ${a.join(' ')}`).join('\n')}\nCOMMIT\n` });
			} else if (manualRules.length !== target) {
				throw new Error(`manual recipe left ${manualRules.length} rules, expected ${target}`);
			}
			const m2 = await manual(args, `same-${target}`);
			level.manualNoChangeMs = round(m2.ms, 1);
			if (m2.stopped) level.manualNoChangeStopped = { afterS: MANUAL_TIMEOUT_S };
			level.manualProcesses = { fromEmpty: 2 * target, noChange: target };
			// iptables: the plugin agrees with the manual chain (same rules); nftables: its table is untouched.
			const after = await timeSync();
			level.pluginAfterManual = after.stdout.trim().split('\n').at(-1);
			result.levels.push(level);
			if (result.cappedAt !== undefined) break; // the budget is spent: no larger size
			log(`sync: ${target} networks: no change ${level.noChangeMs.median} ms, one added ${level.oneAddedMs.median} ms, from empty ${level.fromEmptyMs.median} ms; manual ${level.manualFromEmptyMs} / ${level.manualNoChangeMs} ms`);
		}
		const nsFloor = [];
		for (let r = 0; r < 10; r++) nsFloor.push((await run('nsenter', [`--net=${sb.nsPath}`, 'true'])).ms);
		result.nsenterFloorMs = stats(nsFloor);

		const manualWhat = BACKEND === 'iptables' ? 'manual' : `manual iptables (chain ${manualChain})`;
		const writeTool = BACKEND === 'iptables' ? 'iptables-restore' : 'nft -f';
		const written = BACKEND === 'iptables' ? 'rules' : 'map elements (the table is replaced whole)';
		const empty = BACKEND === 'iptables' ? 'from an empty chain' : 'from no table';
		for (const l of result.levels) {
			const n = l.size;
			const largest = l === result.levels.at(-1) && result.levels.length > 1;
			const capped = l.size !== l.asked ? ` (capped from ${l.asked})` : '';
			table.push(['sync', `no change, ${networks(n)}${capped}`, `${l.noChangeMs.median} ms`, `${manualWhat} \`-C\` per rule: ${l.manualNoChangeStopped ? `> ${MANUAL_TIMEOUT_S} s, stopped` : `${l.manualNoChangeMs} ms`} (${n} processes)`, largest ? `1000 networks well under 1 s: ${l.noChangeMs.median < 1000 ? 'met' : 'missed'}${n < 1000 ? ` (at ${n})` : ''}` : '']);
			table.push(['sync', `one network added, ${networks(n)} in all`, `${l.oneAddedMs.median} ms`, `${l.oneAddedRestores} ${writeTool} run(s), ${l.oneAddedRulesWritten} ${written} written`, `one rewrite: ${l.oneAddedRestores === 1 ? 'met' : 'missed'}`]);
			table.push(['sync', `${empty}, ${networks(n)}`, `${l.fromEmptyMs.median} ms`, `${manualWhat} \`-C\`/\`-A\` per rule: ${l.manualFromEmptyStopped ? `> ${MANUAL_TIMEOUT_S} s, stopped with ${l.manualFromEmptyStopped.rulesDone} of ${n} rules` : `${l.manualFromEmptyMs} ms`} (${2 * n} processes)`, '']);
		}
		// Growth: the extra cost of each extra network between consecutive sizes. Linear growth keeps
		// it constant; the last step (the largest sizes) is compared with the one before it.
		result.growth = [];
		for (let k = 1; k < result.levels.length; k++) {
			const [a, b] = [result.levels[k - 1], result.levels[k]];
			const per = (key) => round((b[key].median - a[key].median) / (b.size - a.size), 2);
			result.growth.push({ from: a.size, to: b.size, noChangeMsPerNetwork: per('noChangeMs'), fromEmptyMsPerNetwork: per('fromEmptyMs'), manualFromEmptyMsPerNetwork: round((b.manualFromEmptyMs - a.manualFromEmptyMs) / (b.size - a.size), 2) });
		}
		if (result.growth.length > 0) {
			const g = result.growth;
			// Superlinear: the last step's cost per network is over 1.5× the step before's, plus 0.2 ms for
			// noise (a 40 ms swing of a median over 200 networks). Only steps of 200 networks or more tell
			// anything: below that, the fixed cost's noise (±50 ms) swamps a cost of well under 1 ms each.
			const wide = g.filter((x) => x.to - x.from >= 200);
			const [prev, last] = [wide.at(-2), wide.at(-1)];
			const superlinear = (key) => prev !== undefined && last[key] > 1.5 * Math.max(prev[key], 0) + 0.2;
			result.linear = prev === undefined ? null : !superlinear('noChangeMsPerNetwork') && !superlinear('fromEmptyMsPerNetwork');
			const steps = g.map((x) => `${x.from}→${x.to}: ${x.noChangeMsPerNetwork} / ${x.fromEmptyMsPerNetwork}`).join('; ');
			const shown = last ?? g.at(-1);
			table.push(['sync', 'cost of each extra network (no change / from empty)', `${shown.noChangeMsPerNetwork} / ${shown.fromEmptyMsPerNetwork} ms (${shown.from}→${shown.to})`, `${steps} ms; manual recipe from empty: ${g.map((x) => x.manualFromEmptyMsPerNetwork).join(' / ')} ms`, prev ? `≤ linear: ${result.linear ? 'met' : 'missed'} (${last.from}→${last.to} vs ${prev.from}→${prev.to})` : '']);
		}
		table.push(['sync', 'creating networks (Engine API, 4 in flight)', result.creation.map((c) => `${c.perSecond}/s`).join(', '), result.creation.map((c) => `${c.from}→${c.to}`).join(', '), result.cappedAt ? `capped at ${result.cappedAt} (budget ${opts.syncBudgetS} s)` : '']);
		return result;
	});
}

/** The manual recipe is stopped after this long (its figure then reads "> N s"). */
const MANUAL_TIMEOUT_S = 150;

const shq = (s) => (/^[\w./:!=@%+,-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`);

// ---------------------------------------------------------------------------------------------
// 3. Event-to-rule latency in watch

/**
 * Kernel notifications of the sandbox's firewall, from `nft monitor` in its netns: no polling, so no
 * CPU taken from watch. waitFor(subnet) resolves to when our process read the notification of the
 * commit that brought the subnet's rule.
 *
 * iptables backend: the monitor prints every rule as the transaction that adds it commits; the time
 * is that of the first `add rule ip nat DOCKER-EGRESS … ip saddr SUBNET …` line.
 *
 * nftables backend: the plugin replaces its table whole in one `nft -f` (declare, delete, declare
 * with every element), and the kernel announces the table, its map and every element again at each
 * commit. But `nft monitor` of nftables 1.0.6 dies (SIGSEGV) printing the first element of set
 * network_bridge (a concatenation with intervals), in text and JSON, filtered to elements or not,
 * so it would see one commit at most. So the monitor reports tables only (`nft monitor new tables`:
 * one `add table ip docker-egress` per commit) and every such line is followed by one read of our
 * map (`nft -j list table ip docker-egress`); a subnet first found by a read is dated to the latest
 * commit notification received when that read returned. Each lone creation below is one commit,
 * whose notification starts the read that finds it; in a burst, a read that races a later commit
 * can date a subnet a little late, never early.
 *
 * Containers' own rules (issue 11) are keyed by their address ('A.B.C.D/32'). An address comes and
 * goes (Docker hands it to the next container), so every commit (nftables: every read, dated as
 * above) in which a key is present is kept: waitAppear(key, since) resolves to the first at or after
 * `since`. The caller makes sure the key was absent at `since` (it waits for the previous holder's
 * rule to be gone): the first commit after it that holds the key is the one that added it.
 */
async function kernelMonitor(sb) {
	const tablesOnly = BACKEND === 'nftables';
	const child = spawn('nsenter', [`--net=${sb.nsPath}`, 'stdbuf', '-oL', NFT, 'monitor', ...(tablesOnly ? ['new', 'tables'] : [])], { stdio: ['ignore', 'pipe', 'pipe'] });
	const seen = new Map();
	const appearances = new Map(); // key -> [times of the commits that held it]
	const appeared = (key, t) => {
		if (!seen.has(key)) seen.set(key, t);
		const times = appearances.get(key);
		if (!times) appearances.set(key, [t]);
		else if (times.at(-1) !== t) times.push(t);
	};
	const readMs = [];
	let commits = 0;
	let lastCommit;
	let reading = false;
	let again = false;
	let readError;
	const readOurs = async () => {
		if (reading) {
			again = true;
			return;
		}
		reading = true;
		try {
			do {
				again = false;
				const t0 = now();
				const { networks: rules, containers } = await ourKernelRules(sb);
				readMs.push(now() - t0);
				for (const r of rules) appeared(r.subnet, lastCommit);
				for (const c of containers) appeared(c.address, lastCommit);
			} while (again);
		} catch (error) {
			readError = error;
		} finally {
			reading = false;
		}
	};
	let ready = false;
	let buf = '';
	let stderr = '';
	child.stderr.on('data', (c) => (stderr += c));
	child.stdout.on('data', (chunk) => {
		const t = now();
		buf += chunk.toString();
		let nl;
		while ((nl = buf.indexOf('\n')) >= 0) {
			const line = buf.slice(0, nl);
			buf = buf.slice(nl + 1);
			if (line.includes('bench-ready')) ready = true;
			if (tablesOnly) {
				if (line.trim() === 'add table ip docker-egress') {
					commits++;
					lastCommit = t;
					void readOurs();
				}
			} else {
				// Every write adds the whole chain again: each `add rule` line is an appearance.
				const m = /^add rule ip nat DOCKER-EGRESS .*\bip saddr (\S+) /.exec(line);
				if (m) appeared(m[1].includes('/') ? m[1] : `${m[1]}/32`, t);
			}
		}
	});
	// Ready once it reports a table we add (and remove) ourselves.
	const deadline = now() + 10_000;
	await mustRun('nsenter', [`--net=${sb.nsPath}`, 'sleep', '0.2']);
	await mustRun('nsenter', [`--net=${sb.nsPath}`, NFT, 'add', 'table', 'ip', 'bench-ready']);
	while (!ready) {
		if (child.exitCode !== null || now() > deadline) {
			child.kill();
			throw new Error(`nft monitor did not start: ${stderr}`);
		}
		await sleep(5);
	}
	await mustRun('nsenter', [`--net=${sb.nsPath}`, NFT, 'delete', 'table', 'ip', 'bench-ready']);
	return {
		seen,
		method: tablesOnly
			? '`nft monitor new tables` (kernel notification of each commit of our table), then one read of the map per commit'
			: '`nft monitor` (kernel notification of each rule on commit)',
		stats: () => (tablesOnly ? { commits, readsMs: stats(readMs) } : {}),
		async waitFor(subnet, t0, timeoutMs = 15_000) {
			while (!seen.has(subnet)) {
				if (readError) throw readError;
				if (child.exitCode !== null) throw new Error(`nft monitor ended (${child.exitCode ?? child.signalCode}): ${stderr}`);
				if (now() - t0 > timeoutMs) throw new Error(`rule for ${subnet} not added within ${timeoutMs} ms`);
				await sleep(1);
			}
			return seen.get(subnet);
		},
		async waitAppear(key, since, timeoutMs = 15_000) {
			const t0 = now();
			for (;;) {
				const t = appearances.get(key)?.find((x) => x >= since);
				if (t !== undefined) return t;
				if (readError) throw readError;
				if (child.exitCode !== null) throw new Error(`nft monitor ended (${child.exitCode ?? child.signalCode}): ${stderr}`);
				if (now() - t0 > timeoutMs) throw new Error(`rule for ${key} did not appear within ${timeoutMs} ms`);
				await sleep(1);
			}
		},
		stop() {
			child.kill();
		},
	};
}

function hasNft() {
	try {
		execFileSync('nft', ['--version'], { stdio: 'ignore' });
		return true;
	} catch {
		return false;
	}
}

async function benchLatency(opts, table) {
	return withSandbox('latency', async (sb) => {
		const result = { backend: BACKEND, asked: opts.latencyN, budgetS: opts.latencyBudgetS };
		const w = await startWatch(sb);
		result.watchExe = w.exe;
		if (BACKEND === 'nftables' && !hasNft()) throw new Error('the nftables backend needs nft');
		const monitor = hasNft() ? await kernelMonitor(sb) : undefined;
		result.method = monitor ? monitor.method : 'polling `iptables -t nat -C` (nft missing)';
		try {
			const check = (net) => inNs(sb, 'iptables', ['-t', 'nat', '-C', 'DOCKER-EGRESS', ...ruleArgs(net)]);
			const present = async (net) => (BACKEND === 'iptables' ? (await check(net)).code === 0 : ruleOf(await ourRules(sb), net) !== undefined);
			// Without nft: a loop of `iptables -t nat -C` processes (whose own cost is reported).
			const pollCosts = [];
			const waitRule = async (net, t0, timeoutMs = 15_000) => {
				if (monitor) return monitor.waitFor(net.subnet, t0, timeoutMs);
				for (;;) {
					const r = await check(net);
					pollCosts.push(r.ms);
					if (r.code === 0) return now();
					if (now() - t0 > timeoutMs) throw new Error(`rule of ${net.name} not present after ${timeoutMs} ms`);
					await sleep(2);
				}
			};
			const logTime = (name) => w.lines.find((l) => l.msg === 'rule added' && l.network === name)?.t;

			const latencies = [];
			const logLatencies = [];
			const deadline = now() + opts.latencyBudgetS * 1000;
			let index = 1100;
			for (let i = 0; i < opts.latencyN && now() < deadline; i++) {
				const name = `bench_l${i}`;
				const net = await createNetwork(sb, name, index++);
				const t0 = now(); // the create call has returned
				const t = await waitRule(net, t0);
				latencies.push(t - t0);
				// And it is really there, as iptables (`-C`) or nft (our map and set) sees it.
				if (!(await present(net))) throw new Error(`rule of ${name} reported but not found in the kernel (${BACKEND})`);
				for (let k = 0; k < 50 && logTime(name) === undefined; k++) await sleep(10);
				const tl = logTime(name);
				if (tl !== undefined) logLatencies.push(tl - t0);
				// Let watch leave its burst mode (an event-driven reconcile less than 1 s ago widens
				// the coalescing window to 400 ms): each creation here is a lone one.
				await sleep(1100);
			}
			result.single = { ...stats(latencies), samples: latencies.map((x) => round(x, 1)) };
			result.singleLogLine = stats(logLatencies);
			if (!monitor) result.pollCostMs = stats(pollCosts);
			log(`latency: ${latencies.length} single creations: p50 ${result.single.median} ms, p99 ${result.single.p99} ms`);

			// A burst: all created at once (every request in flight together), then until every rule is there.
			await sleep(1500);
			const tb0 = now();
			let lastReturned = 0;
			let firstReturned = Infinity;
			const made = await Promise.all(
				Array.from({ length: opts.burst }, async (_, k) => {
					const n = await createNetwork(sb, `bench_b${k}`, 1400 + k);
					lastReturned = Math.max(lastReturned, now());
					firstReturned = Math.min(firstReturned, now());
					return n;
				}),
			);
			const seenAt = await Promise.all(made.map((n) => waitRule(n, tb0, 120_000)));
			const tAll = Math.max(...seenAt);
			const rules = await ourRules(sb);
			const missing = made.filter((n) => !ruleOf(rules, n)).map((n) => n.name);
			if (missing.length > 0) throw new Error(`burst: no rule for ${missing.join(' ')}`);
			const addedLines = w.lines.filter((l) => l.msg === 'rule added' && String(l.network).startsWith('bench_b'));
			// One reconcile logs all its `rule added` lines at once: count the groups (gaps > 20 ms).
			const ts = addedLines.map((l) => l.t).sort((x, y) => x - y);
			const reconciles = ts.filter((t, k) => k === 0 || t - ts[k - 1] > 20).length;
			result.burst = {
				networks: opts.burst,
				fromFirstCallMs: round(tAll - tb0, 1),
				fromLastCreateReturnedMs: round(tAll - lastReturned, 1),
				creationSpanMs: round(lastReturned - tb0, 1),
				firstCreateReturnedMs: round(firstReturned - tb0, 1),
				reconcilesThatAddedRules: reconciles,
			};
			log(`latency: burst of ${opts.burst}: all rules ${result.burst.fromFirstCallMs} ms after the first call, ${result.burst.fromLastCreateReturnedMs} ms after the last create returned`);
		} finally {
			if (monitor) result.monitor = monitor.stats();
			monitor?.stop();
			result.watchExit = await stopWatch(w);
		}
		const s = result.single;
		const capped = s.n < opts.latencyN ? ` (capped from ${opts.latencyN}: ${opts.latencyBudgetS} s budget)` : '';
		const how = !monitor
			? `polled with \`iptables -C\` (one check ${result.pollCostMs.median} ms)`
			: BACKEND === 'nftables'
				? `commit seen by \`nft monitor new tables\`, confirmed by one read of the map (${result.monitor.commits} commits; one read ${result.monitor.readsMs.median} ms)`
				: 'seen by `nft monitor`';
		table.push(['watch latency', `create returned → rule in kernel, ${s.n} lone creations${capped}`, `p50 ${s.median} ms, p99 ${s.p99} ms (max ${s.max})`, `${how}; watch's own "rule added" log line: p50 ${result.singleLogLine.median}, p99 ${result.singleLogLine.p99} ms`, `p99 < 250 ms: ${s.p99 < 250 ? 'met' : 'missed'}`]);
		const b = result.burst;
		table.push(['watch latency', `burst of ${b.networks} created at once: all rules in kernel`, `${b.fromFirstCallMs} ms after the first call`, `the creates took ${b.creationSpanMs} ms (dockerd); last rule ${b.fromLastCreateReturnedMs} ms after the last create returned; rules added in ${b.reconcilesThatAddedRules} reconciles`, '']);
		return result;
	});
}

// ---------------------------------------------------------------------------------------------
// 3b. Per-container egress (issue 11): container start → its rule, and sync with many containers

const CONTAINER_LABEL = 'docker-egress.source-ip';
const CONTAINER_SOURCE_IP = '192.0.2.12';
/** The containers' network: a plain user-defined bridge (no egress label), 4094 addresses. */
const CONTAINER_SUBNET = '198.19.192.0/20';
/** Creating containers stops (the size is capped) when the machine has less memory than this left. */
const MIN_FREE_BYTES = 4 * 2 ** 30;

/** A plain bridge network for the containers (no label of ours: the containers' own labels are the rules). */
async function createContainerNetwork(sb, name) {
	const r = await engine(sb, 'POST', '/networks/create', { Name: name, CheckDuplicate: true, Driver: 'bridge', IPAM: { Config: [{ Subnet: CONTAINER_SUBNET }] } });
	return { name, id: r.Id };
}

/**
 * `docker run -d --label docker-egress.source-ip=192.0.2.12 --network NET egress-probe:latest sleep 3600`
 * through the Engine API (create, then start: what the CLI does). Returns {id, name, createMs, startMs, started}
 * where `started` is performance.now() when the start call returned.
 */
async function runLabelled(sb, name, network) {
	const t0 = now();
	const c = await engine(sb, 'POST', `/containers/create?name=${encodeURIComponent(name)}`, {
		Image: 'egress-probe:latest',
		Cmd: ['sleep', '3600'],
		Labels: { [CONTAINER_LABEL]: CONTAINER_SOURCE_IP },
		HostConfig: { NetworkMode: network },
	});
	const t1 = now();
	await engine(sb, 'POST', `/containers/${c.Id}/start`);
	const started = now();
	return { id: c.Id, name, createMs: t1 - t0, startMs: started - t1, started };
}

async function containerAddress(sb, id, network) {
	const info = await engine(sb, 'GET', `/containers/${id}/json`);
	const ip = info.NetworkSettings?.Networks?.[network]?.IPAddress;
	if (!ip) throw new Error(`container ${id.slice(0, 12)} has no address on ${network}`);
	return `${ip}/32`;
}

const removeContainer = (sb, id) => engine(sb, 'DELETE', `/containers/${id}?force=true`);

/** Polls our rules (every 50 ms) until `gone(rules)` holds; the time it took. */
async function waitKernel(sb, gone, what, timeoutMs = 15_000) {
	const t0 = now();
	for (;;) {
		if (gone(await ourKernelRules(sb))) return now() - t0;
		if (now() - t0 > timeoutMs) throw new Error(`${what} after ${timeoutMs} ms`);
		await sleep(50);
	}
}

/**
 * The daemon's `start` events of containers: id -> the event's time on our performance.now() clock
 * (timeNano is the daemon's wall clock, on the same machine as ours).
 */
function containerStartEvents(sb) {
	const times = new Map();
	const filters = encodeURIComponent(JSON.stringify({ type: ['container'], event: ['start'] }));
	const req = http.request({ socketPath: sb.socket, method: 'GET', path: `/events?filters=${filters}` }, (res) => {
		res.setEncoding('utf8');
		let buf = '';
		res.on('data', (c) => {
			buf += c;
			let nl;
			while ((nl = buf.indexOf('\n')) >= 0) {
				const line = buf.slice(0, nl);
				buf = buf.slice(nl + 1);
				try {
					const e = JSON.parse(line);
					if (e.Action === 'start' && e.id) times.set(e.id, Number(e.timeNano) / 1e6 - performance.timeOrigin);
				} catch {}
			}
		});
	});
	req.on('error', () => {});
	req.end();
	return { times, stop: () => req.destroy() };
}

async function benchContainersLatency(opts, table) {
	return withSandbox('containers-latency', async (sb) => {
		if (!hasNft()) throw new Error('containers-latency reads the kernel through `nft monitor`: nft is missing');
		const result = { backend: BACKEND, asked: opts.containersLatencyN, budgetS: opts.containersLatencyBudgetS, baselineEvery: opts.containersBaselineEvery, image: 'egress-probe:latest', sourceIp: CONTAINER_SOURCE_IP };
		const net = await createContainerNetwork(sb, 'bench_cnet');
		const events = containerStartEvents(sb);
		const w = await startWatch(sb);
		result.watchExe = w.exe;
		const monitor = await kernelMonitor(sb);
		result.method = monitor.method;
		const logTime = (key, value, after) => w.lines.find((l) => l.msg === 'rule added' && l[key] === value && l.t >= after)?.t;
		const fromStart = []; // start call returned → rule in kernel
		const fromEvent = []; // the daemon's start event → rule in kernel
		const logLine = []; // start call returned → watch's "rule added" line
		const createMs = [];
		const startMs = [];
		const goneMs = []; // container removed → its rule gone (polled)
		const netLatencies = []; // baseline: network create returned → rule in kernel
		const netLogLine = [];
		const samples = [];
		try {
			const deadline = now() + opts.containersLatencyBudgetS * 1000;
			await sleep(1100);
			let netIndex = 1100;
			for (let i = 0; i < opts.containersLatencyN && now() < deadline; i++) {
				// The baseline, interleaved: one lone network creation every `baselineEvery` container starts.
				if (opts.containersBaselineEvery > 0 && i % opts.containersBaselineEvery === 0) {
					const before = now();
					const n = await createNetwork(sb, `bench_cl${netIndex}`, netIndex);
					netIndex++;
					const t0 = now();
					const t = await monitor.waitAppear(n.subnet, before);
					netLatencies.push(t - t0);
					for (let k = 0; k < 50 && logTime('network', n.name, before) === undefined; k++) await sleep(10);
					const tl = logTime('network', n.name, before);
					if (tl !== undefined) netLogLine.push(tl - t0);
					await sleep(1100);
					await removeNetwork(sb, n.id);
					await waitKernel(sb, (r) => !r.networks.some((x) => x.subnet === n.subnet), `rule of ${n.name} still there`);
					await sleep(1100);
				}
				const before = now();
				const c = await runLabelled(sb, `bench_c${i}`, net.name);
				const address = await containerAddress(sb, c.id, net.name);
				const t = await monitor.waitAppear(address, before).catch(async (error) => {
					const kernel = await ourKernelRules(sb).catch((e) => String(e));
					const lines = w.lines.filter((l) => l.t >= before - 3000).map((l) => JSON.stringify(l));
					throw new Error(`${error.message}; in the kernel: ${JSON.stringify(kernel)}; watch since: ${lines.join(' ')}`);
				});
				createMs.push(c.createMs);
				startMs.push(c.startMs);
				fromStart.push(t - c.started);
				const te = events.times.get(c.id);
				if (te !== undefined) fromEvent.push(t - te);
				const rules = await ourKernelRules(sb);
				const rule = rules.containers.find((x) => x.address === address);
				if (!rule || rule.sourceIp !== CONTAINER_SOURCE_IP) throw new Error(`rule of ${c.name} (${address}) reported but not in the kernel as written (${BACKEND}): ${JSON.stringify(rule)}`);
				for (let k = 0; k < 50 && logTime('network', c.name, before) === undefined; k++) await sleep(10);
				const tl = logTime('network', c.name, before);
				if (tl !== undefined) logLine.push(tl - c.started);
				samples.push({ address, startReturnedToRuleMs: round(t - c.started, 1), eventToRuleMs: te === undefined ? null : round(t - te, 1), startCallMs: round(c.startMs, 1) });
				// Lone starts: watch leaves its burst mode (1 s after an event-driven reconcile) before the
				// removal, and again before the next start.
				await sleep(1100);
				const tr = now();
				await removeContainer(sb, c.id);
				await waitKernel(sb, (r) => !r.containers.some((x) => x.address === address), `rule of ${c.name} (${address}) still there after its removal`);
				goneMs.push(now() - tr);
				await sleep(1100);
				if ((i + 1) % 20 === 0) log(`containers-latency: ${i + 1} starts: p50 ${round(median(fromStart))} ms, p99 ${round(pct(fromStart, 99))} ms; networks p50 ${round(median(netLatencies))} ms`);
			}
		} finally {
			result.monitor = monitor.stats();
			monitor.stop();
			events.stop();
			result.watchExit = await stopWatch(w);
		}
		result.single = { ...stats(fromStart), samples };
		result.fromEvent = stats(fromEvent);
		result.logLine = stats(logLine);
		result.createCallMs = stats(createMs);
		result.startCallMs = stats(startMs);
		result.removedToGoneMs = stats(goneMs);
		result.baseline = { ...stats(netLatencies), samples: netLatencies.map((x) => round(x, 1)), logLine: stats(netLogLine) };
		result.errorLogLines = w.lines.filter((l) => l.level === 'error').length;
		log(`containers-latency: ${fromStart.length} lone starts: p50 ${result.single.median} ms, p99 ${result.single.p99} ms; baseline ${netLatencies.length} networks: p50 ${result.baseline.median}, p99 ${result.baseline.p99} ms`);
		const s = result.single;
		const capped = s.n < opts.containersLatencyN ? ` (capped from ${opts.containersLatencyN}: ${opts.containersLatencyBudgetS} s budget)` : '';
		const how = BACKEND === 'nftables' ? `commit seen by \`nft monitor new tables\`, then one read of map container_source (one read ${result.monitor.readsMs?.median} ms)` : 'rule seen by `nft monitor`';
		table.push(['containers latency', `start call returned → container's rule in kernel, ${s.n} lone starts${capped}`, `p50 ${s.median} ms, p99 ${s.p99} ms (max ${s.max})`, `${how}; from the daemon's \`start\` event: p50 ${result.fromEvent.median}, p99 ${result.fromEvent.p99} ms; watch's "rule added" line: p50 ${result.logLine.median}, p99 ${result.logLine.p99} ms; the start call itself: p50 ${result.startCallMs.median} ms`, `issue 11: p99 < 250 ms: ${s.p99 < 250 ? 'met' : 'missed'}`]);
		const b = result.baseline;
		if (b.n > 0) table.push(['containers latency', `baseline: network create returned → rule in kernel, ${b.n} lone creations (interleaved, same watch)`, `p50 ${b.median} ms, p99 ${b.p99} ms (max ${b.max})`, `containers vs networks: p50 ${round(s.median / b.median, 2)}×, p99 ${round(s.p99 / b.p99, 2)}×; removal → rule gone (polled every 50 ms): containers p50 ${result.removedToGoneMs.median} ms`, '']);
		return result;
	});
}

async function benchContainersSync(opts, table) {
	return withSandbox('containers-sync', async (sb) => {
		const result = { backend: BACKEND, levels: [], creation: [], cappedAt: undefined, cappedBy: undefined, budgetS: opts.containersSyncBudgetS, concurrency: opts.containersConcurrency, freeAtStartGiB: round(os.freemem() / 2 ** 30, 1) };
		const net = await createContainerNetwork(sb, 'bench_csync');
		const made = []; // {id, name}
		const budgetEnd = now() + opts.containersSyncBudgetS * 1000;
		const timeSync = async () => {
			const r = await egress(sb, ['sync'], { capture: true });
			if (r.code !== 0) throw new Error(`sync: exit ${r.code}\n${r.stderr}`);
			const summary = r.stdout.trim().split('\n').at(-1) ?? '';
			if (!summary.endsWith(` (${BACKEND})`)) throw new Error(`sync did not use the ${BACKEND} backend: ${summary}`);
			return r;
		};
		const emptyOurs = () =>
			BACKEND === 'iptables'
				? mustRun('nsenter', [`--net=${sb.nsPath}`, 'iptables', '-t', 'nat', '-F', 'DOCKER-EGRESS'])
				: mustRun('nsenter', [`--net=${sb.nsPath}`, NFT, '-f', '-'], { input: 'table ip docker-egress {}\ndelete table ip docker-egress\n' });
		let lowMemory = false;
		const createUpTo = async (count) => {
			const todo = Array.from({ length: count - made.length }, (_, k) => made.length + k);
			if (todo.length === 0) return;
			const t0 = now();
			const batch = await pool(todo, opts.containersConcurrency, async (i) => {
				if (lowMemory || os.freemem() < MIN_FREE_BYTES) {
					lowMemory = true;
					return undefined;
				}
				const c = await runLabelled(sb, `bench_cs${i}`, net.name);
				return { id: c.id, name: c.name };
			}, budgetEnd);
			made.push(...batch);
			const s = (now() - t0) / 1000;
			result.creation.push({ from: made.length - batch.length, to: made.length, seconds: round(s, 1), perSecond: round(batch.length / s, 1), freeGiB: round(os.freemem() / 2 ** 30, 1) });
			log(`containers-sync: started ${batch.length} containers in ${round(s, 1)} s (${round(batch.length / s, 1)}/s), ${made.length} in all; ${round(os.freemem() / 2 ** 30, 1)} GiB free`);
		};
		try {
			for (const size of opts.containersSyncSizes) {
				await createUpTo(size);
				let target = size;
				if (made.length < size) {
					target = made.length;
					result.cappedAt = target;
					result.cappedBy = lowMemory ? `less than ${MIN_FREE_BYTES / 2 ** 30} GiB of memory free` : `budget ${opts.containersSyncBudgetS} s`;
				}
				const level = { size: target, asked: size };
				// The sync that applies the containers just started (the first apply of this batch).
				level.batchAppliedMs = round((await timeSync()).ms, 1);
				const kernel = await ourKernelRules(sb);
				if (kernel.containers.length !== target) throw new Error(`expected ${target} container rules (${BACKEND}), found ${kernel.containers.length}`);
				if (kernel.containers.some((c) => c.sourceIp !== CONTAINER_SOURCE_IP)) throw new Error('a container rule with another source address');
				// Interleaved (no change, from empty, no change, …), after 2 s for the batch to settle, so
				// that neither case gets the quieter end of the machine's load.
				await sleep(2000);
				const noChange = [];
				const fromEmpty = [];
				for (let r = 0; r < opts.syncRepeats + 2; r++) {
					noChange.push((await timeSync()).ms);
					if (r < opts.syncRepeats) {
						await emptyOurs();
						fromEmpty.push((await timeSync()).ms);
					}
				}
				level.noChangeMs = stats(noChange);
				level.fromEmptyMs = stats(fromEmpty);
				const after = await ourKernelRules(sb);
				if (after.containers.length !== target) throw new Error(`after sync from empty: expected ${target} container rules, found ${after.containers.length}`);
				level.freeGiB = round(os.freemem() / 2 ** 30, 1);
				result.levels.push(level);
				log(`containers-sync: ${target} containers: no change ${level.noChangeMs.median} ms, from empty ${level.fromEmptyMs.median} ms, batch applied ${level.batchAppliedMs} ms`);
				if (result.cappedAt !== undefined) break;
			}
		} finally {
			// Removed here, 8 at a time: the sandbox's own teardown gives `docker rm -f` 60 s in all.
			const t0 = now();
			await pool(made, 8, (c) => removeContainer(sb, c.id).then(() => true, () => true));
			log(`containers-sync: removed ${made.length} containers in ${round((now() - t0) / 1000, 1)} s`);
		}
		const base = result.levels.find((l) => l.size === 0);
		const empty = BACKEND === 'iptables' ? 'from an empty chain' : 'from no table';
		const containers = (n) => `${n} labelled container${n === 1 ? '' : 's'}`;
		for (const l of result.levels) {
			const capped = l.size !== l.asked ? ` (capped from ${l.asked}: ${result.cappedBy})` : '';
			const largest = l === result.levels.at(-1) && l.size > 0;
			const vs = base && l !== base ? `${signed(l.noChangeMs.median - base.noChangeMs.median)} ms vs 0 containers (${round(l.noChangeMs.median / base.noChangeMs.median, 2)}×)` : l === base ? 'the baseline: the containers\' network, no labelled container' : '';
			table.push(['containers sync', `no change, ${containers(l.size)}${capped}`, `${l.noChangeMs.median} ms`, vs, largest ? `issue 11: 1000 containers < 1 s: ${l.noChangeMs.median < 1000 && l.fromEmptyMs.median < 1000 ? 'met' : 'missed'}${l.size < 1000 ? ` (at ${l.size})` : ''}` : '']);
			table.push(['containers sync', `${empty}, ${containers(l.size)}`, `${l.fromEmptyMs.median} ms`, `${base && l !== base ? `${signed(l.fromEmptyMs.median - base.fromEmptyMs.median)} ms vs 0 containers; ` : ''}the sync right after the batch was started: ${l.batchAppliedMs} ms`, '']);
		}
		result.growth = [];
		const withContainers = result.levels.filter((l) => l.size > 0);
		for (let k = 1; k < withContainers.length; k++) {
			const [a, b] = [withContainers[k - 1], withContainers[k]];
			const per = (key) => round((b[key].median - a[key].median) / (b.size - a.size), 3);
			result.growth.push({ from: a.size, to: b.size, noChangeMsPerContainer: per('noChangeMs'), fromEmptyMsPerContainer: per('fromEmptyMs'), noChangeRatio: round(b.noChangeMs.median / a.noChangeMs.median, 2), fromEmptyRatio: round(b.fromEmptyMs.median / a.fromEmptyMs.median, 2) });
		}
		if (result.growth.length > 0) {
			const g = result.growth;
			// As for networks: superlinear when the last wide step costs over 1.5× per container the step
			// before it, plus 0.2 ms for noise.
			const wide = g.filter((x) => x.to - x.from >= 200);
			const [prev, last] = [wide.at(-2), wide.at(-1)];
			const superlinear = (key) => prev !== undefined && last[key] > 1.5 * Math.max(prev[key], 0) + 0.2;
			result.linear = prev === undefined ? null : !superlinear('noChangeMsPerContainer') && !superlinear('fromEmptyMsPerContainer');
			const shown = last ?? g.at(-1);
			const steps = g.map((x) => `${x.from}→${x.to}: ${x.noChangeMsPerContainer} / ${x.fromEmptyMsPerContainer} ms (time ×${x.noChangeRatio} / ×${x.fromEmptyRatio} for ×${round(x.to / x.from, 1)} containers)`).join('; ');
			table.push(['containers sync', 'cost of each extra container (no change / from empty)', `${shown.noChangeMsPerContainer} / ${shown.fromEmptyMsPerContainer} ms (${shown.from}→${shown.to})`, steps, prev ? `linear: ${result.linear ? 'met' : 'missed'} (${last.from}→${last.to} vs ${prev.from}→${prev.to})` : '']);
		}
		const mem = result.creation.length > 0 && made.length > 0 ? ` (about ${round(((result.freeAtStartGiB - result.creation.at(-1).freeGiB) * 1024) / made.length, 1)} MiB of the machine's memory each)` : '';
		table.push(['containers sync', `starting labelled containers (Engine API create + start, ${opts.containersConcurrency} in flight)`, result.creation.map((c) => `${c.perSecond}/s`).join(', '), `${result.creation.map((c) => `${c.from}→${c.to}`).join(', ')}${mem}`, result.cappedAt !== undefined ? `capped at ${result.cappedAt} (${result.cappedBy})` : '']);
		return result;
	});
}

// ---------------------------------------------------------------------------------------------
// 4. Memory of watch over many events

// dockerd's own iptables work (isolation chains, a DOCKER rule per bridge) makes a create/destroy
// pair take about 0.3 s on 2 cores; without it dockerd manages about 15 pairs a second, enough for
// 10,000 events in the budget. What watch does per event is the same either way: it gets the
// events, reconciles, and adds and removes its rules.
const MEMORY_DOCKERD_ARGS = ['--iptables=false'];

async function benchMemory(opts, table) {
	const result = await memoryRun(opts);
	table.push(memoryRow(opts, result));
	return result;
}

/**
 * One run of the memory section on a fresh sandbox. metrics: watch also serves
 * --metrics-address 127.0.0.1:<free port>, and a scraper in the sandbox's netns fetches /metrics
 * every opts.metricsScrapeMs throughout (the metrics section).
 */
async function memoryRun(opts, { metrics = false } = {}) {
	const tag = metrics ? 'memory+metrics' : 'memory';
	return withSandbox(tag, async (sb) => {
		const result = { backend: BACKEND, metrics, asked: opts.memoryEvents, budgetS: opts.memoryBudgetS, dockerdArgs: MEMORY_DOCKERD_ARGS, samples: [] };
		// Count the daemon's network events ourselves, on the same stream watch subscribes to.
		let events = 0;
		const filters = encodeURIComponent(JSON.stringify({ type: ['network'] }));
		const evReq = http.request({ socketPath: sb.socket, method: 'GET', path: `/events?filters=${filters}` }, (res) => {
			res.setEncoding('utf8');
			let buf = '';
			res.on('data', (c) => {
				buf += c;
				let nl;
				while ((nl = buf.indexOf('\n')) >= 0) {
					const line = buf.slice(0, nl);
					buf = buf.slice(nl + 1);
					try {
						const e = JSON.parse(line);
						if (e.Action === 'create' || e.Action === 'destroy') events++;
					} catch {}
				}
			});
		});
		evReq.on('error', () => {});
		evReq.end();
		const address = metrics ? `127.0.0.1:${await freePort(sb)}` : undefined;
		const w = await startWatch(sb, [], metrics ? ['--metrics-address', address] : []);
		result.watchExe = w.exe;
		let scraper;
		try {
			if (metrics) {
				result.metricsAddress = address;
				scraper = startScraper(sb, `http://${address}/metrics`, opts.metricsScrapeMs);
				result.scrapeEveryMs = opts.metricsScrapeMs;
			}
			await sleep(2000);
			const t0 = now();
			const sample = (phase) => {
				const m = vmRss(w.pid);
				const s = { phase, s: round((now() - t0) / 1000, 1), events, rssMiB: round(m.rssKiB / 1024, 1), hwmMiB: round(m.hwmKiB / 1024, 1), anonMiB: round(m.anonKiB / 1024, 1), fileMiB: round(m.fileKiB / 1024, 1) };
				result.samples.push(s);
				return s;
			};
			result.start = sample('start');
			log(`${tag}: watch pid ${w.pid} (${w.exe}) RSS ${result.start.rssMiB} MiB at start`);
			const deadline = t0 + opts.memoryBudgetS * 1000;
			let nextSample = now() + 10_000;
			const width = 4; // clients creating and removing networks at once
			let pairs = 0;
			await Promise.all(
				Array.from({ length: width }, async (_, worker) => {
					for (let j = 0; events < opts.memoryEvents && now() < deadline; j++) {
						const net = await createNetwork(sb, `bench_m${worker}_${j}`, 1600 + worker);
						await removeNetwork(sb, net.id);
						pairs++;
						if (now() >= nextSample) {
							nextSample = now() + 10_000;
							const s = sample('events');
							log(`${tag}: ${s.events} events, RSS ${s.rssMiB} MiB`);
						}
					}
				}),
			);
			const churnS = (now() - t0) / 1000;
			// Let watch drain the last burst, then wait for our rules to be gone and quiet.
			for (let i = 0; i < 100; i++) {
				if ((await ourRules(sb)).length === 0) break;
				await sleep(100);
			}
			await sleep(3000);
			result.end = sample('end');
			result.events = events;
			result.pairs = pairs;
			result.churnSeconds = round(churnS, 1);
			result.eventsPerSecond = round(events / churnS, 1);
			result.watchCpuSeconds = round(cpuTicks(w.pid) / clockTicks(), 1);
			result.ruleLogLines = w.lines.filter((l) => l.msg === 'rule added' || l.msg === 'rule removed').length;
			result.errorLogLines = w.lines.filter((l) => l.level === 'error').length;
			const mid = result.samples.filter((s) => s.phase === 'events');
			const half = mid.slice(Math.floor(mid.length / 2));
			result.secondHalfSlopeMiBPer1000Events = half.length >= 2 ? round(((half.at(-1).rssMiB - half[0].rssMiB) / (half.at(-1).events - half[0].events || 1)) * 1000, 2) : null;
			log(`${tag}: ${events} events in ${result.churnSeconds} s; RSS ${result.start.rssMiB} → ${result.end.rssMiB} MiB (peak ${result.end.hwmMiB}); anonymous ${result.start.anonMiB} → ${result.end.anonMiB} MiB`);
		} finally {
			evReq.destroy();
			if (scraper) result.scrapes = await scraper.stop();
			result.watchExit = await stopWatch(w);
		}
		if (result.scrapes) log(`${tag}: ${result.scrapes.ok} scrapes answered 200 (${result.scrapes.failed} failed), median ${result.scrapes.ms?.median} ms; last docker_egress_docker_events_total ${result.scrapes.lastEventsTotal}`);
		// Flat: over the second half of the events (V8's heap first grows to its working size), RSS
		// grows by at most 10 % (or 5 MiB).
		const warm = result.samples.find((x) => x.events >= result.events / 2) ?? result.end;
		result.warm = warm;
		result.flat = result.end.rssMiB - warm.rssMiB <= Math.max(5, 0.1 * warm.rssMiB);
		return result;
	}, { dockerdArgs: MEMORY_DOCKERD_ARGS });
}

function memoryRow(opts, result) {
	const warm = result.warm;
	const capped = result.events < opts.memoryEvents ? ` (capped from ${opts.memoryEvents}: ${opts.memoryBudgetS} s budget)` : '';
	const pick = result.samples.filter((_, k, all) => all.length <= 8 || k % Math.ceil(all.length / 7) === 0 || k === all.length - 1);
	const along = pick.map((x) => `${x.rssMiB} MiB@${x.events}`).join(', ');
	return ['watch memory', `RSS after ${result.events} network events${capped}`, `${result.end.rssMiB} MiB (peak ${result.end.hwmMiB})`, `at start ${result.start.rssMiB} MiB; ${along} (MiB@events); anonymous memory (RssAnon: heap, buffers) ${result.start.anonMiB} → ${result.end.anonMiB} MiB, the rest is the executable's code pages (RssFile ${result.start.fileMiB} → ${result.end.fileMiB} MiB); ${result.eventsPerSecond} events/s, watch used ${result.watchCpuSeconds} s CPU; dockerd --iptables=false`, `flat over the second half: ${result.flat ? 'yes' : 'no'} (${signed(result.end.rssMiB - warm.rssMiB)} MiB since event ${warm.events}; ${signed(result.end.rssMiB - result.start.rssMiB)} MiB since start)`];
}

// ---------------------------------------------------------------------------------------------
// 4b. The metrics endpoint (issue 12): watch's memory over the same churn with and without
// --metrics-address (a scrape every second throughout), and its idle CPU with and without it.

/** A TCP port free on 127.0.0.1 inside the sandbox's netns (bound to port 0 there, then closed). */
async function freePort(sb) {
	const r = await inNs(sb, process.execPath, ['-e', "const s=require('net').createServer().listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})"], { capture: true });
	const port = Number(r.stdout.trim());
	if (r.code !== 0 || !Number.isInteger(port) || port <= 0) throw new Error(`no free port in the sandbox: ${r.stderr}`);
	return port;
}

// The scraper: a Node process in the sandbox's netns (nsenter execs it) that GETs the URL every
// INTERVAL ms (fixed rate; 0: back to back) COUNT times (0: until SIGTERM), and prints one JSON line
// per scrape: HTTP status, bytes, ms, the value of docker_egress_docker_events_total.
const SCRAPER = `
const http = require('node:http');
const [url, intervalMs, count] = [process.argv[1], Number(process.argv[2]), Number(process.argv[3])];
let n = 0;
const t0 = performance.now();
process.on('SIGTERM', () => process.exit(0));
function scrape() {
	const ts = performance.now();
	const done = (status, body) => {
		const m = /^docker_egress_docker_events_total(?:\\{[^}]*\\})? (\\S+)$/m.exec(body);
		process.stdout.write(JSON.stringify({ status, bytes: body.length, ms: performance.now() - ts, events: m ? Number(m[1]) : null }) + '\\n');
		n++;
		if (count > 0 && n >= count) return process.exit(0);
		const next = intervalMs > 0 ? t0 + n * intervalMs - performance.now() : 0;
		setTimeout(scrape, Math.max(0, next));
	};
	http.get(url, { agent: false }, (res) => {
		let body = '';
		res.setEncoding('utf8');
		res.on('data', (c) => (body += c));
		res.on('end', () => done(res.statusCode, body));
	}).on('error', (e) => done(String(e.code || e.message), ''));
}
scrape();
`;

/** Starts the scraper; {done: resolves to its figures when it exits, stop(): SIGTERM, then the figures}. */
function startScraper(sb, url, intervalMs, count = 0) {
	const child = spawn('nsenter', [`--net=${sb.nsPath}`, process.execPath, '-e', SCRAPER, url, String(intervalMs), String(count)], { env: CLEAN_ENV, stdio: ['ignore', 'pipe', 'pipe'] });
	const scrapes = [];
	let buf = '';
	let stderr = '';
	child.stdout.on('data', (c) => {
		buf += c;
		let nl;
		while ((nl = buf.indexOf('\n')) >= 0) {
			try {
				scrapes.push(JSON.parse(buf.slice(0, nl)));
			} catch {}
			buf = buf.slice(nl + 1);
		}
	});
	child.stderr.on('data', (c) => (stderr += c));
	const done = new Promise((resolvePromise) => child.on('close', () => {
		const ok = scrapes.filter((x) => x.status === 200);
		resolvePromise({
			pid: child.pid,
			ok: ok.length,
			failed: scrapes.length - ok.length,
			failures: [...new Set(scrapes.filter((x) => x.status !== 200).map((x) => String(x.status)))],
			ms: ok.length > 0 ? stats(ok.map((x) => x.ms)) : null,
			bytes: ok.length > 0 ? { first: ok[0].bytes, last: ok.at(-1).bytes } : null,
			lastEventsTotal: ok.at(-1)?.events ?? null,
			stderr: stderr.trim().slice(0, 500) || undefined,
		});
	}));
	return {
		done,
		stop: async () => {
			if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
			return done;
		},
	};
}

/**
 * Idle CPU of watch (one labelled network, --interval 5, the default): CPU ticks of the plugin
 * process (utime + stime, /proc/PID/stat) over opts.metricsIdleS of idle, after
 * opts.metricsSettleS for its first reconcile; three conditions, each its own watch: without
 * --metrics-address, with it and never scraped, with it and scraped every opts.metricsIdleScrapeMs.
 * opts.metricsIdleRounds rounds, the order reversed every other round. After the unscraped window
 * of each round, opts.metricsScrapeCostN scrapes back to back give the CPU cost of one scrape.
 */
async function idleCpu(opts) {
	return withSandbox('metrics-idle', async (sb) => {
		const hz = clockTicks();
		await createNetwork(sb, 'bench_idle', 1700);
		const conditions = [
			{ name: 'off', metrics: false },
			{ name: 'on', metrics: true },
			{ name: 'scraped', metrics: true, scrapeMs: opts.metricsIdleScrapeMs },
		];
		const windows = [];
		const scrapeCost = [];
		for (let round_ = 0; round_ < opts.metricsIdleRounds; round_++) {
			for (const c of round_ % 2 === 0 ? conditions : [...conditions].reverse()) {
				const address = c.metrics ? `127.0.0.1:${await freePort(sb)}` : undefined;
				const url = `http://${address}/metrics`;
				const w = await startWatch(sb, [], c.metrics ? ['--metrics-address', address] : []);
				let scraper;
				try {
					await sleep(opts.metricsSettleS * 1000);
					if (c.scrapeMs) scraper = startScraper(sb, url, c.scrapeMs);
					const k0 = cpuTicks(w.pid);
					const c0 = childTicks(w.pid);
					const m0 = vmRss(w.pid);
					const lines0 = w.lines.length;
					const ts = now();
					await sleep(opts.metricsIdleS * 1000);
					const k1 = cpuTicks(w.pid);
					const c1 = childTicks(w.pid);
					const m1 = vmRss(w.pid);
					const seconds = (now() - ts) / 1000;
					const win = {
						round: round_, condition: c.name, seconds: round(seconds, 1), ticks: k1 - k0, cpuMs: round(((k1 - k0) / hz) * 1000, 0), childTicks: c1 - c0,
						rssMiB: [round(m0.rssKiB / 1024, 1), round(m1.rssKiB / 1024, 1)], anonMiB: [round(m0.anonKiB / 1024, 1), round(m1.anonKiB / 1024, 1)],
						logLines: w.lines.length - lines0,
					};
					if (scraper) win.scrapes = await scraper.stop();
					scraper = undefined;
					windows.push(win);
					log(`metrics-idle: round ${round_ + 1}, ${c.name}: ${win.ticks} ticks (${win.cpuMs} ms CPU) in ${win.seconds} s; RSS ${win.rssMiB.join(' → ')} MiB${win.scrapes ? `; ${win.scrapes.ok} scrapes` : ''}`);
					if (c.name === 'on' && opts.metricsScrapeCostN > 0) {
						const j0 = cpuTicks(w.pid);
						const t = now();
						const r = await startScraper(sb, url, 0, opts.metricsScrapeCostN).done;
						const j1 = cpuTicks(w.pid);
						const cost = { round: round_, scrapes: r.ok, failed: r.failed, seconds: round((now() - t) / 1000, 2), ticks: j1 - j0, cpuMsPerScrape: r.ok > 0 ? round(((j1 - j0) / hz) * 1000 / r.ok, 2) : null, ms: r.ms, bytes: r.bytes, rssAfterMiB: round(vmRss(w.pid).rssKiB / 1024, 1) };
						scrapeCost.push(cost);
						log(`metrics-idle: ${cost.scrapes} scrapes back to back: ${cost.ticks} ticks, ${cost.cpuMsPerScrape} ms CPU each, ${r.ms?.median} ms each (median)`);
					}
				} finally {
					if (scraper) await scraper.stop();
					await stopWatch(w);
				}
			}
		}
		const by = Object.fromEntries(conditions.map((c) => {
			const ws = windows.filter((x) => x.condition === c.name);
			return [c.name, { ticks: ws.map((x) => x.ticks), medianTicks: median(ws.map((x) => x.ticks)), childTicks: ws.map((x) => x.childTicks), medianChildTicks: median(ws.map((x) => x.childTicks)), cpuMsPerMinute: round(median(ws.map((x) => (x.cpuMs / x.seconds) * 60)), 0), rssMiB: median(ws.map((x) => x.rssMiB[1])), anonMiB: median(ws.map((x) => x.anonMiB[1])) }];
		}));
		return { clockTicksPerSecond: hz, idleSeconds: opts.metricsIdleS, settleSeconds: opts.metricsSettleS, rounds: opts.metricsIdleRounds, scrapeEveryMs: opts.metricsIdleScrapeMs, windows, byCondition: by, scrapeCost };
	});
}

async function benchMetrics(opts, table) {
	const result = { backend: BACKEND };
	// The same churn twice, each on a fresh sandbox: without the endpoint first, then with it.
	result.memoryWithout = await memoryRun(opts, { metrics: false });
	result.memoryWith = await memoryRun(opts, { metrics: true });
	const a = result.memoryWithout;
	const b = result.memoryWith;
	table.push(memoryRow(opts, a));
	const rowWith = memoryRow(opts, b);
	rowWith[1] = `${rowWith[1]}, with --metrics-address and a scrape every ${opts.metricsScrapeMs / 1000} s`;
	rowWith[3] = `${b.scrapes.ok} scrapes answered 200, ${b.scrapes.failed} failed${b.scrapes.failures.length ? ` (${b.scrapes.failures.join(', ')})` : ''}, median ${b.scrapes.ms?.median} ms, ${b.scrapes.bytes?.last} bytes; last docker_events_total ${b.scrapes.lastEventsTotal}; ${rowWith[3]}`;
	table.push(rowWith);
	const d = (k) => signed(b[k].rssMiB - a[k].rssMiB);
	table.push(['watch memory', 'with metrics − without (same run)', `end ${d('end')} MiB, peak ${signed(b.end.hwmMiB - a.end.hwmMiB)} MiB`, `start ${a.start.rssMiB} / ${b.start.rssMiB} MiB, end ${a.end.rssMiB} / ${b.end.rssMiB}, peak ${a.end.hwmMiB} / ${b.end.hwmMiB}, RssAnon at end ${a.end.anonMiB} / ${b.end.anonMiB} MiB (without / with); growth over the second half ${signed(a.end.rssMiB - a.warm.rssMiB)} / ${signed(b.end.rssMiB - b.warm.rssMiB)} MiB; CPU ${a.watchCpuSeconds} / ${b.watchCpuSeconds} s for ${a.events} / ${b.events} events`, `issue 12: flat with metrics: ${b.flat ? 'yes' : 'no'}`]);
	result.idle = await idleCpu(opts);
	const i = result.idle;
	const c = i.byCondition;
	const fmt = (x) => `${x.medianTicks} ticks (${x.cpuMsPerMinute} ms CPU/min)`;
	table.push(['watch idle CPU', `1 network, ${i.idleSeconds} s idle, median of ${i.rounds}: without / with --metrics-address / with, scraped every ${i.scrapeEveryMs / 1000} s`, `${c.off.medianTicks} / ${c.on.medianTicks} / ${c.scraped.medianTicks} ticks`, `${fmt(c.off)} / ${fmt(c.on)} / ${fmt(c.scraped)}; every window: ${i.windows.map((w) => `${w.condition} ${w.ticks}`).join(', ')} (1 tick = ${1000 / i.clockTicksPerSecond} ms); its children (nft, ip, …) ${c.off.medianChildTicks} / ${c.on.medianChildTicks} / ${c.scraped.medianChildTicks} ticks; RSS at the end ${c.off.rssMiB} / ${c.on.rssMiB} / ${c.scraped.rssMiB} MiB`, 'issue 12: no measurable idle CPU']);
	if (i.scrapeCost.length > 0) {
		const per = i.scrapeCost.map((x) => x.cpuMsPerScrape);
		const s0 = i.scrapeCost[0];
		table.push(['watch idle CPU', `one scrape of /metrics (${s0.scrapes} back to back, idle watch)`, `${median(per)} ms CPU`, `per round ${per.join(', ')} ms; answered in ${s0.ms?.median} ms (median, p90 ${s0.ms?.p90}); ${s0.bytes?.last} bytes`, '']);
	}
	return result;
}

// ---------------------------------------------------------------------------------------------
// 5. The two firewall backends side by side (bench/backends.mjs: a namespace of its own, no Docker)

async function benchBackends(opts, table) {
	const script = join(here, 'backends.mjs');
	const out = join(os.tmpdir(), `docker-egress-bench-backends-${process.pid}.json`);
	const args = [script, '--sizes', opts.backendsSizes.join(','), '--flows', String(opts.backendsFlows), '--out', out];
	log(`backends: node ${args.map((a) => relativeToRepo(a)).join(' ')}`);
	const r = await run(process.execPath, args, { capture: true, timeoutMs: 30 * 60_000 });
	if (r.code !== 0) throw new Error(`bench/backends.mjs: exit ${r.code}\n${r.stderr}`);
	const result = JSON.parse(readFileSync(out, 'utf8'));
	rmSync(out, { force: true });
	result.backend = 'both'; // side by side, whatever --backend says
	result.seconds = round(r.ms / 1000, 1);
	result.sizes = opts.backendsSizes;
	result.tableMarkdown = r.stdout.trim();
	// One row per size in the main table too; the full table is printed under it.
	for (const row of result.rows) {
		const n = row.networks;
		const us = (x) => round(x, 1);
		table.push([
			'backends',
			`${networks(n)}: a new flow's NAT lookup (µs), nftables / iptables`,
			`${us(row.nftables.lookupUs)} / ${us(row.iptables.lookupUs)} µs`,
			`per flow ${us(row.nftables.usPerFlow)} / ${us(row.iptables.usPerFlow)} µs, with no rule ${us(row.baselineUsPerFlow)} µs; one write (nft -f / iptables-restore) ${us(row.nftables.applyMs)} / ${us(row.iptables.applyMs)} ms; one read (nft -j list / iptables-save) ${us(row.nftables.readMs)} / ${us(row.iptables.readMs)} ms`,
			'',
		]);
	}
	log(`backends: ${result.rows.length} sizes in ${result.seconds} s`);
	return result;
}

const relativeToRepo = (p) => (p.startsWith(`${repo}/`) ? p.slice(repo.length + 1) : p);

function cpuTicks(pid) {
	const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
	return Number(fields[11]) + Number(fields[12]);
}

/** CPU ticks of the reaped children of a process (cutime + cstime: the nft, ip, conntrack it ran). */
function childTicks(pid) {
	const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
	return Number(fields[13]) + Number(fields[14]);
}

function clockTicks() {
	try {
		return Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;
	} catch {
		return 100;
	}
}

// ---------------------------------------------------------------------------------------------

function machine() {
	const sh = (cmd, args) => {
		try {
			return execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim();
		} catch {
			return undefined;
		}
	};
	let os_ = undefined;
	try {
		os_ = /^PRETTY_NAME="?([^"\n]+)"?/m.exec(readFileSync('/etc/os-release', 'utf8'))?.[1];
	} catch {}
	return {
		cpu: os.cpus()[0]?.model,
		cpus: os.cpus().length,
		memoryGiB: round(os.totalmem() / 2 ** 30, 1),
		os: os_,
		kernel: os.release(),
		node: process.version,
		docker: sh('dockerd', ['--version']),
		iptables: sh('iptables', ['--version']),
		nft: sh(NFT, ['--version']),
		loadAverageAtStart: os.loadavg().map((x) => round(x, 2)),
		commit: sh('git', ['-C', repo, 'rev-parse', '--short', 'HEAD']),
		dirty: (sh('git', ['-C', repo, 'status', '--porcelain', '--untracked-files=no', 'src', 'pkg']) ?? '') !== '',
	};
}

function printTable(table) {
	const header = ['', 'measure', 'figure', 'compared with (same run)', 'target (issue 5 unless named)'];
	const rows = [header, header.map(() => '---'), ...table];
	const widths = header.map((_, c) => Math.max(...rows.map((r) => String(r[c] ?? '').length)));
	return rows.map((r) => `| ${r.map((cell, c) => String(cell ?? '').padEnd(widths[c])).join(' | ')} |`).join('\n').replace(/\| -+ /g, (m) => `| ${'-'.repeat(m.length - 3)} `);
}

async function main() {
	const opts = parseArgs(process.argv.slice(2));
	BACKEND = opts.backend;
	const docker = opts.only.some((s) => s !== 'backends'); // the backends section needs no Docker
	const reason = docker ? await sandboxReason() : process.getuid?.() === 0 ? undefined : 'needs root';
	if (reason) {
		console.error(`bench: no real-Docker sandbox here: ${reason}`);
		process.exit(2);
	}
	if (!existsSync(BIN)) {
		console.error(`bench: ${BIN} is missing: run \`make build\` first (or \`make bench\`)`);
		process.exit(2);
	}
	const t0 = now();
	const out = { startedAt: new Date().toISOString(), backend: BACKEND, machine: machine(), options: opts, binary: BIN, envRemoved: ENV_REMOVED, sections: {}, errors: {} };
	const table = [];
	const sections = { startup: benchStartup, sync: benchSync, latency: benchLatency, memory: benchMemory, metrics: benchMetrics, backends: benchBackends, 'containers-latency': benchContainersLatency, 'containers-sync': benchContainersSync };
	// sync and containers-sync last of the Docker sections: the kernel takes a while to clean up
	// after their thousand bridges and veths; backends after them, in a namespace of its own.
	for (const name of ['startup', 'latency', 'containers-latency', 'memory', 'metrics', 'sync', 'containers-sync', 'backends']) {
		if (!opts.only.includes(name)) continue;
		const ts = now();
		const firstRow = table.length;
		try {
			out.sections[name] = await sections[name](opts, table);
		} catch (error) {
			log(`${name} failed: ${error.stack ?? error}`);
			out.errors[name] = String(error.message ?? error);
			table.push([name, 'FAILED', String(error.message ?? error).split('\n')[0], '', '']);
		}
		// Every row names the backend it measured (backends: both, whatever --backend says).
		for (const row of table.slice(firstRow)) row[0] = `${row[0]} (${name === 'backends' ? 'both' : BACKEND})`;
		log(`${name}: ${round((now() - ts) / 1000, 1)} s`);
	}
	out.durationS = round((now() - t0) / 1000, 1);
	out.machine.loadAverageAtEnd = os.loadavg().map((x) => round(x, 2));
	out.table = table;
	const text = printTable(table);
	out.tableMarkdown = text;
	mkdirSync(dirname(opts.out), { recursive: true });
	writeFileSync(opts.out, `${JSON.stringify(out, null, '\t')}\n`);
	const m = out.machine;
	console.log(`\ndocker egress benchmarks, firewall backend ${BACKEND} — ${out.startedAt}, ${m.cpus} × ${m.cpu}, ${m.memoryGiB} GiB, ${m.os}, kernel ${m.kernel}, ${m.docker}, ${m.iptables}, ${m.nft}, commit ${m.commit}${m.dirty ? ' (+ uncommitted changes)' : ''}; ${out.durationS} s\n`);
	console.log(text);
	const b = out.sections.backends;
	if (b) console.log(`\nThe two firewall backends side by side (bench/backends.mjs --sizes ${b.sizes.join(',')} --flows ${b.flows}; own namespace, no Docker; medians of 5):\n\n${b.tableMarkdown}`);
	console.log(`\nwritten to ${opts.out}`);
	if (Object.keys(out.errors).length > 0) process.exitCode = 1;
}

await main();
