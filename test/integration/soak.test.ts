// The fault soak of issue 10: `docker egress watch` under a random (seeded) sequence of faults —
// a source address leaving the uplink and coming back, dockerd SIGSTOPped then SIGCONTed, daemon
// restarts, our rules flushed, our table (iptables: jump and chain) deleted, concurrent creates and
// removals of other egress networks — while a prober asks the echo server every second which
// source each egress network egresses from, and checks that the rules of someone else's are all
// still there. The invariant and its one exception: soak-record.ts.
//
// The upstream has a route back to the container subnets (10.77.0.0/16 via 192.0.2.1), so a packet
// leaking with its private address is answered (Docker 20.10), and it records every private source
// that reaches its port 80 in a set of its own (the witness), read and emptied after each round of
// probes: Docker 28 and 29 drop the answer to a leaked private address on its way back to the
// container (raw PREROUTING: no direct access to a container from outside), so only the echo server
// sees those leaks. Probes run in the container's network namespace (nsenter by the container's
// PID, the host's static busybox nc), so they need no daemon and go on while it is stopped or
// restarting; PIDs are refreshed whenever the daemon answers, and a PID is only used while it still
// has the network namespace it had (never a reused PID's).
//
// Knobs (environment): SOAK_SECONDS (default 75: the seconds of faults; the test stays ~2 min),
// SOAK_SEED (replay a sequence; the seed is always printed), SOAK_FAULTS (a comma list of
// address,stop,restart,flush,delete,churn; default all), SOAK_INTERVAL (watch --interval, default
// 2), SOAK_HEAL_SECONDS (default 30), SOAK_EXPOSURE_SECONDS, SOAK_STRICT=1, SOAK_VERBOSE=1 (each
// fault and breach on the console as it happens). E.g. an hour by hand:
//   SOAK_SECONDS=3600 SOAK_VERBOSE=1 node_modules/.bin/ava build/test/integration/soak.test.js
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import anyTest from 'ava';
import { execa } from 'execa';
import { findExecutable } from '../helpers/prereqs.js';
import { PRIMARY_ADDRESS, PROBE_IMAGE, useSandbox, type Sandbox } from '../helpers/sandbox.js';
import { NFT, deleteEgressTable, egressRules, firewallBackend, flushEgressRules, saveTable, sleep } from './firewall.js';
import { egress, labelledNetwork, startWatch } from './watch-helpers.js';
import { Random, SoakRecord, soakSettings, type Episode, type ProbedNetwork } from './soak-record.js';

const { test, sandbox } = useSandbox(anyTest);
const settings = soakSettings();
const backend = firewallBackend();

const NETWORKS: ProbedNetwork[] = [
	{ name: 'z_soak_a', subnet: '10.77.1.0/24', sourceIp: '192.0.2.11', masquerade: false, how: 'egress create' },
	{ name: 'z_soak_b', subnet: '10.77.2.0/24', sourceIp: '192.0.2.12', masquerade: false, how: 'egress create' },
	{ name: 'z_soak_c', subnet: '10.77.3.0/24', sourceIp: '192.0.2.13', masquerade: true, how: 'label' },
	{ name: 'z_soak_d', subnet: '10.77.4.0/24', sourceIp: '192.0.2.12', masquerade: false, how: 'label' },
];
/** The uplink's addresses a fault may take away (never the primary: its removal takes the others). */
const REMOVABLE = ['192.0.2.11', '192.0.2.12', '192.0.2.13'];
const UPLINK = 'eg-h';
const PROBE_PERIOD_MS = 1_000;

/** Someone else's rules (iptables-save words) and nft table: none may disappear. */
const ADMIN_NAT = ['-A', 'POSTROUTING', '-s', '198.18.0.0/15', '-o', UPLINK, '-j', 'MASQUERADE'];
const ADMIN_FILTER = ['-A', 'INPUT', '-s', '198.51.100.99/32', '-p', 'tcp', '-m', 'tcp', '--dport', '9999', '-j', 'DROP'];
const ADMIN_NFT = `table ip admin {
	chain input {
		type filter hook input priority filter; policy accept;
		ip saddr 198.51.100.98 tcp dport 9998 drop
	}
}
`;

const containerOf = (network: ProbedNetwork) => network.name.replace(/^z_/, '');

/** In the echo server's namespace: every private source that opens a connection to it. */
const WITNESS = `table ip soak_witness {
	set private_sources {
		type ipv4_addr
		flags dynamic
	}

	chain prerouting {
		type filter hook prerouting priority raw; policy accept;
		ip saddr 10.77.0.0/16 tcp dport 80 add @private_sources { ip saddr }
	}
}
`;

/** The private sources the echo server saw since the last call (read, then exactly those deleted). */
async function witnessed(sb: Sandbox): Promise<string[]> {
	const r = await sb.execUpstream(NFT, ['-j', 'list', 'set', 'ip', 'soak_witness', 'private_sources'], { timeout: 5_000 });
	const items = (JSON.parse(r.stdout) as { nftables: { set?: { elem?: unknown[] } }[] }).nftables;
	const addresses = (items.find((item) => item.set)?.set?.elem ?? []).filter((e): e is string => typeof e === 'string');
	if (addresses.length > 0) {
		await sb.execUpstream(NFT, ['-f', '-'], { input: `delete element ip soak_witness private_sources { ${addresses.join(', ')} }\n`, timeout: 5_000 });
	}
	return addresses;
}

function networkOf(address: string): ProbedNetwork | undefined {
	return NETWORKS.find((n) => address.startsWith(n.subnet.replace(/0\/24$/, '')));
}

function dockerdPid(sb: Sandbox): number {
	const pid = Number(readFileSync(join(sb.dir, 'dockerd.pid'), 'utf8').trim());
	if (!Number.isInteger(pid) || pid <= 1) throw new Error(`no dockerd pid in ${sb.dir}/dockerd.pid`);
	return pid;
}

function netnsInode(pid: number): number | undefined {
	try {
		return statSync(`/proc/${pid}/ns/net`).ino;
	} catch {
		return undefined;
	}
}

/** Where each probe container runs: its PID and network namespace, known while the daemon answers. */
class Containers {
	private readonly known = new Map<string, { pid: number; netns: number }>();
	private readonly hostNetns: number;
	stale = true;

	constructor(private readonly sb: Sandbox) {
		this.hostNetns = statSync(sb.nsPath).ino;
	}

	/** Asks the daemon (briefly: it may be stopped); keeps what it knew when it does not answer. */
	async refresh(): Promise<boolean> {
		const names = NETWORKS.map(containerOf);
		const r = await this.sb.docker(['inspect', '-f', '{{.Name}} {{.State.Pid}}', ...names], { reject: false, timeout: 3_000 });
		if (r.timedOut || !r.stdout) return false;
		for (const line of r.stdout.split('\n')) {
			const [name, pidText] = line.trim().replace(/^\//, '').split(' ');
			const pid = Number(pidText);
			if (!name) continue;
			const netns = pid > 0 ? netnsInode(pid) : undefined;
			if (netns === undefined || netns === this.hostNetns) this.known.delete(name);
			else this.known.set(name, { pid, netns });
		}
		this.stale = r.exitCode !== 0 || names.some((name) => !this.known.has(name));
		return true;
	}

	/** The container's PID if it still lives in the namespace it had (a reused PID is never probed from). */
	pid(name: string): number | undefined {
		const entry = this.known.get(name);
		if (!entry) return undefined;
		if (netnsInode(entry.pid) !== entry.netns) {
			this.known.delete(name);
			this.stale = true;
			return undefined;
		}
		return entry.pid;
	}
}

/** Which source the echo server sees from inside the container's network namespace (no daemon needed). */
async function probeFrom(sb: Sandbox, containers: Containers, network: ProbedNetwork): Promise<{ seen?: string; note?: string }> {
	const pid = containers.pid(containerOf(network));
	if (pid === undefined) return { note: 'container not running (or not known yet)' };
	const r = await execa('nsenter', [`--net=/proc/${pid}/ns/net`, findExecutable('busybox') ?? 'busybox', 'nc', '-w', '2', sb.echoAddress, '80'], {
		input: 'GET /cgi-bin/ip HTTP/1.0\r\n\r\n',
		reject: false,
		timeout: 6_000,
	});
	const last = r.stdout.trim().split('\n').at(-1)?.trim() ?? '';
	if (/^\d+\.\d+\.\d+\.\d+$/.test(last)) return { seen: last };
	return { note: r.exitCode === 0 ? `answer without an address: ${JSON.stringify(r.stdout.slice(0, 80))}` : `nc exit ${String(r.exitCode)}` };
}

/** The admin rules that are gone (an unreadable firewall is reported, not counted as gone). */
async function missingAdminRules(sb: Sandbox, record: SoakRecord, nftSnapshot: string): Promise<string[]> {
	const read = (cmd: string, args: string[]) => sb.exec(cmd, args, { reject: false, timeout: 5_000 });
	const [nat, filter, nft] = await Promise.all([read('iptables-save', ['-t', 'nat']), read('iptables-save', ['-t', 'filter']), read(NFT, ['list', 'table', 'ip', 'admin'])]);
	const missing: string[] = [];
	const lines = (text: string) => text.split('\n').map((line) => line.trim());
	if (nat.exitCode !== 0 || filter.exitCode !== 0) record.problem(`iptables-save failed: ${nat.stderr || filter.stderr}`);
	else {
		if (!lines(nat.stdout).includes(ADMIN_NAT.join(' '))) missing.push(`nat ${ADMIN_NAT.join(' ')}`);
		if (!lines(filter.stdout).includes(ADMIN_FILTER.join(' '))) missing.push(`filter ${ADMIN_FILTER.join(' ')}`);
	}
	if (nft.exitCode !== 0 && !/No such file or directory/.test(nft.stderr)) record.problem(`nft list table ip admin failed: ${nft.stderr}`);
	else if (nft.stdout !== nftSnapshot) missing.push(`table ip admin (now: ${JSON.stringify(nft.stdout)})`);
	return missing;
}

/** Whether our rules are in the firewall (with nftables: a table whose chain SNATs through its map). */
async function ourRulesPresent(sb: Sandbox): Promise<boolean> {
	if (backend === 'nftables') return (await egressRules(sb)).length > 0;
	const nat = await saveTable(sb, 'nat');
	const lines = nat.split('\n');
	return lines.some((line) => line.startsWith('-A POSTROUTING ') && line.endsWith(' -j DOCKER-EGRESS')) && lines.some((line) => line.startsWith('-A DOCKER-EGRESS '));
}

/** Our rules all gone, the hard way: the nft table, or the jump and the chain. */
async function deleteOurs(sb: Sandbox): Promise<void> {
	if (backend === 'nftables') {
		await deleteEgressTable(sb);
		return;
	}
	await sb.exec('iptables', ['-w', '-t', 'nat', '-D', 'POSTROUTING', '-j', 'DOCKER-EGRESS'], { reject: false });
	await sb.exec('iptables', ['-w', '-t', 'nat', '-F', 'DOCKER-EGRESS'], { reject: false });
	await sb.exec('iptables', ['-w', '-t', 'nat', '-X', 'DOCKER-EGRESS'], { reject: false });
}

function firstLine(text: string): string {
	return text.trim().split('\n')[0]?.slice(0, 160) ?? '';
}

test.serial('fault soak: every egress network egresses from its own address or not at all, whatever is injected, and heals', async (t) => {
	t.timeout(180_000 + settings.faultMs + settings.healMs);
	const sb = sandbox();
	const rng = new Random(settings.seed);
	console.log(`fault soak: seed ${settings.seed} (replay with SOAK_SEED=${settings.seed}), faults ${settings.kinds.join(',')}`);

	// Nothing the soak did may outlive it: SIGCONT, addresses back (the sandbox goes after that).
	let frozen: number | undefined;
	const removed = new Set<string>();
	t.teardown(async () => {
		if (frozen !== undefined) process.kill(frozen, 'SIGCONT');
		for (const address of removed) await sb.exec('ip', ['addr', 'add', `${address}/24`, 'dev', UPLINK], { reject: false });
	});

	// --- Setup: a route back for leaks, the admins' rules, the networks and their containers.
	await sb.execUpstream('ip', ['route', 'add', '10.77.0.0/16', 'via', PRIMARY_ADDRESS]);
	await sb.execUpstream(NFT, ['-f', '-'], { input: WITNESS });
	await sb.exec('iptables', ['-w', '-t', 'nat', ...ADMIN_NAT]);
	await sb.exec('iptables', ['-w', '-t', 'filter', ...ADMIN_FILTER]);
	await sb.exec(NFT, ['-f', '-'], { input: ADMIN_NFT });
	const nftSnapshot = (await sb.exec(NFT, ['list', 'table', 'ip', 'admin'])).stdout;

	for (const n of NETWORKS) {
		if (n.how === 'egress create') {
			const r = await egress(sb, ['create', n.name, '--source-ip', n.sourceIp, '--subnet', n.subnet]);
			t.is(r.exitCode, 0, r.stderr);
		} else if (n.masquerade) {
			await sb.docker(['network', 'create', '--label', `docker-egress.source-ip=${n.sourceIp}`, '--subnet', n.subnet, n.name]);
		} else {
			await labelledNetwork(sb, n.name, n.subnet, n.sourceIp);
		}
		// busybox sh as PID 1: it must exit on SIGTERM by itself, or each daemon stop waits for the kill.
		await sb.docker(['run', '-d', '--restart', 'always', '--name', containerOf(n), '--network', n.name, PROBE_IMAGE, 'sh', '-c', 'trap "exit 0" TERM; sleep 1000000 & wait']);
	}

	const watch = await startWatch(t, sb, { interval: String(settings.interval) });
	const containers = new Containers(sb);
	const record = new SoakRecord(settings, NETWORKS, PRIMARY_ADDRESS, (line) => console.log(line));
	await containers.refresh();
	const ready = Date.now() + 30_000;
	for (const n of NETWORKS) {
		let seen: string | undefined;
		while ((seen = (await probeFrom(sb, containers, n)).seen) !== n.sourceIp && Date.now() < ready) await sleep(500);
		t.is(seen, n.sourceIp, `before any fault, ${n.name} egresses from ${n.sourceIp}`);
	}
	t.deepEqual(await missingAdminRules(sb, record, nftSnapshot), [], 'the admin rules are in place');
	t.deepEqual(await witnessed(sb), [], 'no private source reached the echo server before any fault');

	// --- The prober: every network every second, and the admin rules; PIDs refreshed as the daemon allows.
	let daemonBusy = false;
	let probing = true;
	let lastWitness = record.now();
	const prober = (async () => {
		while (probing) {
			const round = Date.now();
			await Promise.all([
				...NETWORKS.map(async (n) => {
					const start = record.now();
					const { seen, note } = await probeFrom(sb, containers, n);
					record.add({ network: n.name, start, end: record.now(), seen, ...(note ? { note } : {}) });
				}),
				(async () => record.adminCheck(await missingAdminRules(sb, record, nftSnapshot)))(),
				(async () => {
					const start = record.now();
					record.rulesRead(start, await ourRulesPresent(sb).catch(() => false));
				})(),
			]);
			// What the echo server saw that no answer told: a private source (probes of this round are done).
			const since = lastWitness;
			lastWitness = record.now();
			for (const address of await witnessed(sb)) {
				const n = networkOf(address);
				if (!n) record.problem(`the echo server saw ${address}, in no probed network`);
				else if (!record.judged.some((j) => j.network === n.name && j.seen === address && j.end >= since)) {
					record.add({ network: n.name, start: since, end: lastWitness, seen: address, witness: true });
				}
			}
			if (!watch.running) {
				record.problem(`watch exited: ${watch.stderr.slice(-2_000)}`);
				return;
			}
			await sleep(Math.max(0, PROBE_PERIOD_MS - (Date.now() - round)));
		}
	})();
	const refresher = (async () => {
		let last = 0;
		while (probing) {
			if (!daemonBusy && (containers.stale || Date.now() - last > 3_000)) {
				await containers.refresh();
				last = Date.now();
			}
			await sleep(250);
		}
	})();

	// --- The injector: one fault every 2 to 5 s; address and daemon faults last a while.
	const pending: Promise<void>[] = [];
	/** Ends `episode` after `ms` with `undo` (which may say how it went); it ends even if undo fails. */
	const later = (episode: Episode, ms: number, undo: () => Promise<string | void>) => {
		pending.push(
			(async () => {
				await sleep(ms);
				try {
					record.finish(episode, (await undo()) ?? undefined);
				} catch (error) {
					record.finish(episode, `failed: ${String(error)}`);
					record.problem(`ending ${episode.kind} (${episode.what}) failed: ${String(error)}`);
				}
			})(),
		);
	};
	/** Runs an instant fault between the begin and the end of its episode (ended even if it throws). */
	const instant = async (episode: Episode, run: () => Promise<unknown>) => {
		try {
			await run();
		} finally {
			record.finish(episode);
		}
	};
	const extras = { created: [] as string[], labelled: [] as string[], next: 0 };
	const churnOne = async (labelled: boolean, draw: number): Promise<string> => {
		const pool = labelled ? extras.labelled : extras.created;
		if (pool.length < 2 && (draw < 0.6 || pool.length === 0)) {
			const n = extras.next++;
			const name = `z_soak_${labelled ? 'y' : 'x'}${n}`;
			const subnet = `10.77.${(labelled ? 150 : 100) + (n % 50)}.0/24`;
			const ip = REMOVABLE[n % REMOVABLE.length]!;
			pool.push(name);
			const r = labelled
				? await sb.docker(['network', 'create', '--label', `docker-egress.source-ip=${ip}`, '--subnet', subnet, name], { reject: false, timeout: 30_000 })
				: await egress(sb, ['create', name, '--source-ip', ip, '--subnet', subnet], { timeout: 30_000 });
			return `${labelled ? 'docker network create --label' : 'egress create'} ${name} ${subnet} -> ${ip}: ${r.exitCode === 0 ? 'ok' : `exit ${String(r.exitCode)} ${firstLine(r.stderr)}`}`;
		}
		const name = pool.shift()!;
		const r = labelled ? await sb.docker(['network', 'rm', name], { reject: false, timeout: 30_000 }) : await egress(sb, ['rm', name], { timeout: 30_000 });
		return `${labelled ? 'docker network rm' : 'egress rm'} ${name}: ${r.exitCode === 0 ? 'ok' : `exit ${String(r.exitCode)} ${firstLine(r.stderr)}`}`;
	};

	const inject = async (kind: (typeof settings.kinds)[number], draws: number[]): Promise<void> => {
		const [d1 = 0, d2 = 0, d3 = 0] = draws;
		switch (kind) {
			case 'address': {
				const present = REMOVABLE.filter((a) => !removed.has(a));
				if (present.length === 0) return;
				const address = present[Math.floor(d1 * present.length)]!;
				const ms = 3_000 + Math.floor(d2 * 9_000);
				const episode = record.begin('address', `ip addr del ${address}/24 dev ${UPLINK}, back after ${(ms / 1000).toFixed(1)} s`, { address });
				removed.add(address);
				try {
					await sb.exec('ip', ['addr', 'del', `${address}/24`, 'dev', UPLINK]);
				} catch (error) {
					removed.delete(address);
					record.finish(episode, 'ip addr del failed');
					throw error;
				}
				later(episode, ms, async () => {
					await sb.exec('ip', ['addr', 'add', `${address}/24`, 'dev', UPLINK]);
					removed.delete(address);
				});
				return;
			}
			case 'stop': {
				if (daemonBusy) return;
				daemonBusy = true;
				const ms = 2_000 + Math.floor(d1 * 6_000);
				const pid = dockerdPid(sb);
				const episode = record.begin('stop', `dockerd (${pid}) SIGSTOP, SIGCONT after ${(ms / 1000).toFixed(1)} s`);
				frozen = pid;
				process.kill(pid, 'SIGSTOP');
				later(episode, ms, async () => {
					process.kill(pid, 'SIGCONT');
					frozen = undefined;
					daemonBusy = false;
					containers.stale = true;
				});
				return;
			}
			case 'restart': {
				if (daemonBusy) return;
				daemonBusy = true;
				const episode = record.begin('restart', 'dockerd restarted (containers stop, come back by their restart policy)');
				later(episode, 0, async () => {
					try {
						await sb.restartDockerd();
					} finally {
						daemonBusy = false;
						containers.stale = true;
					}
				});
				return;
			}
			case 'flush': {
				const episode = record.begin('flush', backend === 'nftables' ? 'nft flush chain ip docker-egress postrouting' : 'iptables -t nat -F DOCKER-EGRESS');
				await instant(episode, () => flushEgressRules(sb));
				return;
			}
			case 'delete': {
				const episode = record.begin('delete', backend === 'nftables' ? 'nft delete table ip docker-egress' : 'iptables: jump and chain DOCKER-EGRESS deleted');
				await instant(episode, () => deleteOurs(sb));
				return;
			}
			case 'churn': {
				if (daemonBusy) return;
				const episode: Episode = record.begin('churn', d3 < 0.5 ? 'an egress create/rm and a labelled network create/rm at once' : 'an egress create/rm');
				later(episode, 0, async () => {
					const results = await Promise.all([churnOne(false, d1), ...(d3 < 0.5 ? [churnOne(true, d2)] : [])]);
					episode.notes.push(...results);
				});
				return;
			}
		}
	};

	try {
		while (record.now() < settings.faultMs) {
			// A fixed number of draws a step, so that a skipped fault does not shift the sequence.
			const kind = settings.kinds[Math.floor(rng.next() * settings.kinds.length)]!;
			const draws = [rng.next(), rng.next(), rng.next()];
			const gap = 2_000 + Math.floor(rng.next() * 3_000);
			try {
				await inject(kind, draws);
			} catch (error) {
				record.problem(`injecting ${kind} failed: ${String(error)}`);
			}
			await sleep(gap);
		}
		await Promise.all(pending);
		// Pending undos may have queued more (none do today); wait for every episode to end.
		while (!record.quiet()) await sleep(100);

		// --- The final heal: every network back on its own address within the bound.
		const quietAt = record.lastFaultEnd();
		while (record.unhealedSince(quietAt).length > 0 && record.now() - quietAt < settings.healMs && watch.running) await sleep(250);
	} finally {
		probing = false;
		await prober;
		await refresher;
	}

	const unhealed = record.unhealedSince(record.lastFaultEnd());
	const levels = new Map<string, number>();
	for (const line of watch.lines) if (line.level !== 'info') levels.set(`${line.level}: ${line.msg}`, (levels.get(`${line.level}: ${line.msg}`) ?? 0) + 1);
	t.log(record.report());
	t.log(`watch's warnings and errors: ${[...levels].map(([k, n]) => `${k} ×${n}`).join(', ') || 'none'}`);

	t.true(watch.running, `watch stopped during the soak:\n${watch.stderr.slice(-3_000)}`);
	const stopped = await watch.stop();
	t.is(stopped.exitCode, 0, `watch's exit after SIGTERM\n${stopped.stderr.slice(-2_000)}`);
	t.deepEqual(record.breachLines(), [], `the invariant was breached (seed ${settings.seed}): a network egressed from an address not its own`);
	t.deepEqual(
		unhealed.map((n) => `${n.name}: last seen ${JSON.stringify(record.judged.filter((j) => j.network === n.name).at(-1)?.seen ?? 'nothing')}`),
		[],
		`networks not egressing from their own address ${settings.healMs / 1000} s after the last fault (seed ${settings.seed})`,
	);
	t.deepEqual(record.adminMissing.map((m) => `${SoakRecord.at(m.at)} ${m.missing.join('; ')}`), [], "someone else's rules disappeared");
	t.deepEqual(record.problems, [], 'the soak itself ran into trouble');
	t.deepEqual(await missingAdminRules(sb, record, nftSnapshot), [], 'the admin rules are all there at the end');
	for (const n of NETWORKS) t.true(record.judged.some((j) => j.network === n.name && j.verdict === 'own'), `${n.name} was probed`);
});
