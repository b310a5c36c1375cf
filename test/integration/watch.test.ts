// `docker egress watch`: the controller that keeps every egress rule right while it runs — networks
// made by others (plain `docker network create --label …`), rules and the jump removed by someone
// else, a daemon restart, a bad label, a SIGKILL in the middle of a large write — and that stops
// cleanly on SIGTERM/SIGINT, leaving the rules in place. Every positive claim about egress is
// proved by the upstream echo server (sb.probe).
//
// Every command gets an explicit state dir under the sandbox (never the machine's
// /var/lib/docker-egress): --state-dir where the contract has it, DOCKER_EGRESS_STATE_DIR always.
import { closeSync, openSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import anyTest, { type ExecutionContext } from 'ava';
import { execa, type ResultPromise } from 'execa';
import { useSandbox, type Run, type Sandbox } from '../helpers/sandbox.js';
import { egressRules, eventually, postrouting, ruleFor, sleep, waitForNoRule, waitForRule } from './firewall.js';

// A dockerd this file started itself (the daemon-restart test). The sandbox only knows the one it
// started, so this one must be stopped here (else the sandbox's teardown SIGKILLs it).
// That test is the file's last one and stops it in its teardown; this hook is a fallback.
let restartedDockerd: ResultPromise | undefined;
async function stopRestartedDockerd(): Promise<void> {
	if (restartedDockerd?.pid !== undefined && restartedDockerd.exitCode === null && restartedDockerd.signalCode === null) {
		restartedDockerd.kill('SIGTERM');
		const timer = setTimeout(() => restartedDockerd?.kill('SIGKILL'), 20_000);
		await restartedDockerd.catch(() => undefined);
		clearTimeout(timer);
	}
}
anyTest.after.always('stop the dockerd restarted by a test', stopRestartedDockerd);

const { test, sandbox } = useSandbox(anyTest);

const JUMP = '-A POSTROUTING -j DOCKER-EGRESS';
const KEEP = { name: 'z_keep', subnet: '10.70.0.0/24', ip: '192.0.2.11' };

// ---------------------------------------------------------------------------------------------
// Helpers

function stateDir(sb: Sandbox): string {
	return join(sb.dir, 'state');
}

/** The plugin with this file's state dir in the environment (protects the machine's own). */
function egress(sb: Sandbox, args: string[], opts: Parameters<Sandbox['egress']>[1] = {}): Run {
	return sb.egress(args, { ...opts, env: { DOCKER_EGRESS_STATE_DIR: stateDir(sb), ...opts.env } });
}

type LogLine = { time: string; level: string; msg: string; [field: string]: unknown };

/** A running `docker-egress egress watch`, with its stderr parsed line by line as it arrives. */
class Watch {
	readonly lines: LogLine[] = [];
	/** Lines that were not JSON objects with time/level/msg (for --log-format json). */
	readonly unparsed: string[] = [];
	stderr = '';
	readonly startedAt = Date.now();
	private partial = '';
	private readonly listeners = new Set<() => void>();
	private result: Promise<Awaited<Run>> | undefined;

	constructor(
		readonly proc: Run,
		readonly json: boolean,
	) {
		proc.stderr!.on('data', (chunk: Buffer) => {
			const text = chunk.toString();
			this.stderr += text;
			this.partial += text;
			const lines = this.partial.split('\n');
			this.partial = lines.pop() ?? '';
			for (const line of lines) this.take(line);
			this.notify();
		});
		void proc.then(
			() => this.notify(),
			() => this.notify(),
		);
	}

	private take(line: string): void {
		if (!line.trim()) return;
		if (!this.json) return;
		try {
			const parsed = JSON.parse(line) as unknown;
			if (
				parsed !== null &&
				typeof parsed === 'object' &&
				typeof (parsed as LogLine).time === 'string' &&
				typeof (parsed as LogLine).level === 'string' &&
				typeof (parsed as LogLine).msg === 'string'
			) {
				this.lines.push(parsed as LogLine);
				return;
			}
		} catch {
			// not JSON
		}
		this.unparsed.push(line);
	}

	private notify(): void {
		for (const listener of [...this.listeners]) listener();
	}

	get running(): boolean {
		return this.proc.exitCode === null && this.proc.signalCode === null;
	}

	get pid(): number {
		return this.proc.pid!;
	}

	/** Log lines with this msg (and these fields). */
	find(msg: string, fields: Record<string, unknown> = {}): LogLine[] {
		return this.lines.filter((line) => line.msg === msg && Object.entries(fields).every(([k, v]) => line[k] === v));
	}

	/** Resolves once `check` holds (re-checked on every stderr chunk); rejects on timeout or exit. */
	async until(what: string, check: () => boolean, timeoutMs = 15_000): Promise<void> {
		if (check()) return;
		await new Promise<void>((resolve, reject) => {
			const done = (error?: Error) => {
				clearTimeout(timer);
				this.listeners.delete(listener);
				if (error) reject(error);
				else resolve();
			};
			const listener = () => {
				if (check()) done();
				else if (!this.running) done(new Error(`watch exited (${this.describeExit()}) before ${what}; stderr:\n${this.stderr}`));
			};
			const timer = setTimeout(() => done(new Error(`no ${what} within ${timeoutMs} ms; watch stderr so far:\n${this.stderr}`)), timeoutMs);
			this.listeners.add(listener);
			listener();
		});
	}

	/** Waits for a log line with this msg (and fields) and returns it. */
	async waitFor(msg: string, fields: Record<string, unknown> = {}, timeoutMs = 15_000): Promise<LogLine> {
		const what = `log line ${JSON.stringify({ msg, ...fields })}`;
		if (this.json) {
			await this.until(what, () => this.find(msg, fields).length > 0, timeoutMs);
			return this.find(msg, fields)[0]!;
		}
		await this.until(what, () => this.stderr.includes(msg), timeoutMs);
		return { time: '', level: '', msg };
	}

	private describeExit(): string {
		return `exit code ${String(this.proc.exitCode)}, signal ${String(this.proc.signalCode)}`;
	}

	/** Sends `signal` (once) and waits for the exit; SIGKILL if SIGTERM/SIGINT is ignored for 10 s. */
	stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<Awaited<Run>> {
		this.result ??= (async () => {
			if (this.running) this.proc.kill(signal);
			const timer = setTimeout(() => this.proc.kill('SIGKILL'), 10_000);
			try {
				return await this.proc;
			} finally {
				clearTimeout(timer);
			}
		})();
		return this.result;
	}
}

type WatchOptions = { interval?: string; format?: 'json' | 'text'; waitStarted?: boolean; viaCli?: boolean };

/** Starts watch (stopped by t.teardown) and, unless told otherwise, waits for `watch started`. */
async function startWatch(t: ExecutionContext, sb: Sandbox, options: WatchOptions = {}): Promise<Watch> {
	const format = options.format ?? 'json';
	const args = ['watch', '--interval', options.interval ?? '0.5', '--log-format', format, '--state-dir', stateDir(sb)];
	const watch = new Watch(egress(sb, args, { viaCli: options.viaCli ?? false }), format === 'json');
	t.teardown(async () => {
		await watch.stop();
	});
	if (options.waitStarted ?? true) await watch.waitFor('watch started', {}, 30_000);
	return watch;
}

/** `docker network create` with the label, masquerade off and an explicit subnet. */
async function labelledNetwork(sb: Sandbox, name: string, subnet: string, label: string): Promise<void> {
	await sb.docker([
		'network', 'create',
		'--label', `docker-egress.source-ip=${label}`,
		'--opt', 'com.docker.network.bridge.enable_ip_masquerade=false',
		'--subnet', subnet,
		name,
	]);
}

/** The packet counter of our rule for `subnet` (`iptables-save -c`): a rewrite of the chain resets it. */
async function ruleCounter(sb: Sandbox, subnet: string): Promise<string | undefined> {
	const save = (await sb.exec('iptables-save', ['-c', '-t', 'nat'])).stdout;
	const line = save.split('\n').find((l) => l.includes('-A DOCKER-EGRESS ') && l.includes(` -s ${subnet} `));
	return line?.match(/^\[(\d+:\d+)\]/)?.[1];
}

function alive(pid: number): boolean {
	try {
		const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
		return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
	} catch {
		return false;
	}
}

/** Stops the sandbox's dockerd (SIGTERM by its pidfile) and waits until it is gone. */
async function stopDockerd(sb: Sandbox): Promise<void> {
	const pid = Number(readFileSync(join(sb.dir, 'dockerd.pid'), 'utf8').trim());
	if (!Number.isInteger(pid) || pid <= 1) throw new Error(`bad dockerd pidfile in ${sb.dir}`);
	process.kill(pid, 'SIGTERM');
	const deadline = Date.now() + 30_000;
	while (alive(pid)) {
		if (Date.now() > deadline) {
			process.kill(pid, 'SIGKILL');
			throw new Error(`dockerd ${pid} did not stop within 30 s of SIGTERM`);
		}
		await sleep(50);
	}
}

/**
 * Starts dockerd again as test/helpers/sandbox.ts does (same namespace, config, data and exec roots,
 * socket, log), and waits until it answers. Only its pidfile differs, so that the sandbox's own
 * teardown does not mistake it for the dockerd it started.
 */
async function startDockerd(sb: Sandbox): Promise<void> {
	const log = openSync(sb.dockerdLog, 'a') as 3;
	try {
		restartedDockerd = execa(
			'nsenter',
			[
				`--net=${sb.nsPath}`,
				'dockerd',
				'--config-file', join(sb.dir, 'daemon.json'),
				'--data-root', join(sb.dir, 'data'),
				'--exec-root', join(sb.dir, 'exec'),
				'--pidfile', join(sb.dir, 'dockerd-restarted.pid'),
				'--host', sb.dockerHost,
				'--shutdown-timeout', '3',
			],
			{ stdin: 'ignore', stdout: log, stderr: log, reject: false, cleanup: false },
		);
	} finally {
		closeSync(log);
	}
	void restartedDockerd.catch(() => undefined);
	const deadline = Date.now() + 60_000;
	for (;;) {
		if (restartedDockerd.exitCode !== null || restartedDockerd.signalCode !== null) throw new Error('restarted dockerd exited during start-up');
		const r = await sb.docker(['version', '--format', '{{.Server.Version}}'], { reject: false, timeout: 10_000 });
		if (r.exitCode === 0) return;
		if (Date.now() > deadline) throw new Error(`restarted dockerd did not answer: ${r.stderr}`);
		await sleep(100);
	}
}

function commOf(pid: number): string {
	try {
		const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
		return stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
	} catch {
		return '';
	}
}

/** PIDs of the children of `pid` (from /proc/<pid>/task/<tid>/children: cheap enough to poll). */
function childrenOf(pid: number): number[] {
	const found: number[] = [];
	try {
		for (const tid of readdirSync(`/proc/${pid}/task`)) {
			const text = readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8');
			found.push(...text.split(' ').filter(Boolean).map(Number));
		}
	} catch {
		// gone
	}
	return found;
}

// ---------------------------------------------------------------------------------------------
// Tests (serial: they share one Docker host and its firewall)

test.serial('setup: one labelled egress network, in place before watch', async (t) => {
	const sb = sandbox();
	await labelledNetwork(sb, KEEP.name, KEEP.subnet, KEEP.ip);
	const sync = await egress(sb, ['sync', '--state-dir', stateDir(sb)]);
	t.is(sync.exitCode, 0, sync.stderr);
	t.is(await sb.probe(KEEP.name), KEEP.ip);
});

test.serial('watch logs JSON lines to stderr, says "watch started", and a second watch is refused', async (t) => {
	const sb = sandbox();
	const watch = await startWatch(t, sb);
	const started = watch.find('watch started')[0]!;
	t.false(Number.isNaN(Date.parse(started.time)), `time is a timestamp: ${started.time}`);
	t.is(started.level, 'info');

	const before = Date.now();
	const second = await egress(sb, ['watch', '--interval', '0.5', '--state-dir', stateDir(sb)], { timeout: 20_000 });
	t.log(`second watch: exit ${String(second.exitCode)} after ${Date.now() - before} ms; stderr: ${second.stderr.trim()}`);
	t.false(second.timedOut, 'the second watch must exit by itself');
	t.not(second.exitCode, 0);
	t.regex(second.stderr, /another docker egress watch is already running/);
	t.true(Date.now() - before < 10_000, 'refused promptly');
	t.true(watch.running, 'the first watch keeps running');

	// The first one still works.
	await sb.exec('iptables', ['-t', 'nat', '-F', 'DOCKER-EGRESS']);
	await waitForRule(sb, KEEP.subnet, KEEP.ip);
	t.is(await sb.probe(KEEP.name), KEEP.ip);

	const r = await watch.stop();
	t.is(r.exitCode, 0, r.stderr);
	t.deepEqual(watch.unparsed, [], 'every stderr line is a JSON object with time, level and msg');
	t.is(r.stdout, '', 'logs go to stderr, not stdout');
});

test.serial('a network created with plain docker network create --label while watch runs gets its rule from the event; rm removes it', async (t) => {
	const sb = sandbox();
	// A long interval: within the 5 s below only the event stream can explain the rule.
	const watch = await startWatch(t, sb, { interval: '60' });
	const net = { name: 'z_w_event', subnet: '10.70.1.0/24', ip: '192.0.2.13' };
	await labelledNetwork(sb, net.name, net.subnet, net.ip);
	t.teardown(async () => {
		await sb.docker(['network', 'rm', net.name], { reject: false });
	});
	await waitForRule(sb, net.subnet, net.ip, 5_000);
	const added = await watch.waitFor('rule added', { network: net.name }, 5_000);
	t.like(added, { level: 'info', network: net.name, subnet: net.subnet, source_ip: net.ip });
	t.truthy(added['trigger'], 'rule added says what triggered it');
	t.log(`trigger of an event-driven add: ${JSON.stringify(added['trigger'])}`);
	t.is(await sb.probe(net.name), net.ip);

	await sb.docker(['network', 'rm', net.name]);
	await waitForNoRule(sb, net.subnet, 5_000);
	const removed = await watch.waitFor('rule removed', { network: net.name }, 5_000);
	t.like(removed, { network: net.name, subnet: net.subnet, source_ip: net.ip });
	t.truthy(removed['trigger']);
	t.true(ruleFor(await egressRules(sb), KEEP.subnet, KEEP.ip), 'the other network keeps its rule');
	t.is(await sb.probe(KEEP.name), KEEP.ip);
	t.true(watch.running);
});

test.serial('self-healing: a flushed chain is restored within the interval', async (t) => {
	const sb = sandbox();
	const watch = await startWatch(t, sb);
	await sb.exec('iptables', ['-t', 'nat', '-F', 'DOCKER-EGRESS']);
	await waitForRule(sb, KEEP.subnet, KEEP.ip);
	t.is(await sb.probe(KEEP.name), KEEP.ip);
	const added = await watch.waitFor('rule added', { network: KEEP.name });
	t.like(added, { subnet: KEEP.subnet, source_ip: KEEP.ip });
	t.log(`trigger of a drift repair: ${JSON.stringify(added['trigger'])}`);
});

test.serial('self-healing: a deleted jump is put back on top within the interval', async (t) => {
	const sb = sandbox();
	const watch = await startWatch(t, sb);
	await sb.exec('iptables', ['-t', 'nat', '-D', 'POSTROUTING', '-j', 'DOCKER-EGRESS']);
	const rules = await eventually('jump back on top', () => postrouting(sb), (r) => r[0] === JUMP);
	t.is(rules.filter((line) => line.includes('DOCKER-EGRESS')).length, 1);
	await watch.waitFor('jump repaired');
	t.is(await sb.probe(KEEP.name), KEEP.ip);
});

test.serial('self-healing: a MASQUERADE inserted above the jump is overtaken within the interval, and left in place', async (t) => {
	const sb = sandbox();
	const masquerade = ['-t', 'nat', '-I', 'POSTROUTING', '1', '-s', KEEP.subnet, '-j', 'MASQUERADE'];
	const watch = await startWatch(t, sb);
	await sb.exec('iptables', masquerade);
	t.teardown(async () => {
		await sb.exec('iptables', ['-t', 'nat', '-D', 'POSTROUTING', '-s', KEEP.subnet, '-j', 'MASQUERADE'], { reject: false });
	});
	const rules = await eventually('jump back on top', () => postrouting(sb), (r) => r[0] === JUMP);
	t.is(rules.filter((line) => line.includes('DOCKER-EGRESS')).length, 1, 'exactly one jump');
	t.true(rules.includes(`-A POSTROUTING -s ${KEEP.subnet} -j MASQUERADE`), 'a rule watch did not create is left alone');
	await watch.waitFor('jump repaired');
	t.is(await sb.probe(KEEP.name), KEEP.ip);
});

test.serial('idle drift checks log nothing and do not rewrite the chain', async (t) => {
	const sb = sandbox();
	const watch = await startWatch(t, sb);
	t.is(await sb.probe(KEEP.name), KEEP.ip); // counts a packet on our rule
	// Let the probe's network events settle, then watch six intervals go by.
	await sleep(1_500);
	const linesBefore = watch.lines.length;
	const counter = await ruleCounter(sb, KEEP.subnet);
	t.truthy(counter);
	t.not(counter, '0:0', 'the probe went through our rule');
	await sleep(3_000);
	t.is(await ruleCounter(sb, KEEP.subnet), counter, 'counters not reset: the chain was not rewritten');
	t.deepEqual(watch.lines.slice(linesBefore), [], 'no log line for an idle drift check');
	t.true(watch.running);
});

test.serial('SIGTERM: exit 0 within a second or two, "watch stopped", rules stay in place', async (t) => {
	const sb = sandbox();
	const watch = await startWatch(t, sb);
	const before = Date.now();
	const r = await watch.stop('SIGTERM');
	const took = Date.now() - before;
	t.log(`SIGTERM to exit: ${took} ms`);
	t.is(r.exitCode, 0, r.stderr);
	t.true(took < 2_500, `exited ${took} ms after SIGTERM`);
	t.truthy(watch.find('watch stopped')[0], r.stderr);
	t.true(ruleFor(await egressRules(sb), KEEP.subnet, KEEP.ip));
	t.is((await postrouting(sb))[0], JUMP);
	t.is(await sb.probe(KEEP.name), KEEP.ip, 'egress keeps working while watch is down');
});

test.serial('SIGINT (text log format): exit 0 within a second or two, "watch stopped", rules stay in place', async (t) => {
	const sb = sandbox();
	const watch = await startWatch(t, sb, { format: 'text' });
	t.notRegex(watch.stderr.trim().split('\n')[0] ?? '', /^\{/, 'text, not JSON');
	const before = Date.now();
	const r = await watch.stop('SIGINT');
	const took = Date.now() - before;
	t.log(`SIGINT to exit: ${took} ms; stderr:\n${r.stderr}`);
	t.is(r.exitCode, 0, r.stderr);
	t.true(took < 2_500, `exited ${took} ms after SIGINT`);
	t.regex(r.stderr, /watch stopped/);
	t.true(ruleFor(await egressRules(sb), KEEP.subnet, KEEP.ip));
	t.is(await sb.probe(KEEP.name), KEEP.ip);
});

test.serial('under the docker CLI: SIGTERM to the CLI closes the plugin socket, and watch stops cleanly (exit 0, rules in place)', async (t) => {
	const sb = sandbox();
	const watch = await startWatch(t, sb, { viaCli: true });
	const before = Date.now();
	const r = await watch.stop('SIGTERM'); // to the docker CLI, which does not forward it
	const took = Date.now() - before;
	t.log(`SIGTERM to the CLI to exit: ${took} ms; exit ${String(r.exitCode)}`);
	t.is(r.exitCode, 0, r.stderr);
	t.true(took < 2_500, `exited ${took} ms after SIGTERM`);
	t.truthy(watch.find('watch stopped')[0], r.stderr);
	// The plugin itself is gone too (not left behind by the CLI): its watch lock is free again.
	const again = await startWatch(t, sb);
	t.is((await again.stop()).exitCode, 0);
	t.true(ruleFor(await egressRules(sb), KEEP.subnet, KEEP.ip));
	t.is(await sb.probe(KEEP.name), KEEP.ip);
});

test.serial('a network labelled docker-egress.source-ip=banana: logged once, skipped; watch and the other networks carry on', async (t) => {
	const sb = sandbox();
	const watch = await startWatch(t, sb);
	const bad = { name: 'z_w_banana', subnet: '10.70.4.0/24' };
	const good = { name: 'z_w_good', subnet: '10.70.5.0/24', ip: '192.0.2.12' };
	t.teardown(async () => {
		await sb.docker(['network', 'rm', bad.name, good.name], { reject: false });
	});
	await labelledNetwork(sb, bad.name, bad.subnet, 'banana');
	const skipped = await watch.waitFor('network skipped', { network: bad.name }, 10_000);
	t.is(skipped.level, 'warn');
	t.truthy(skipped['problem']);
	t.log(`problem: ${JSON.stringify(skipped['problem'])}`);

	// A network that appears after it still gets its rule; the one that was there keeps it.
	await labelledNetwork(sb, good.name, good.subnet, good.ip);
	await waitForRule(sb, good.subnet, good.ip);
	t.is(await sb.probe(good.name), good.ip);
	t.is(await sb.probe(KEEP.name), KEEP.ip);

	// More reconciles (a flush, events, many drift checks) do not repeat the warning.
	await sb.exec('iptables', ['-t', 'nat', '-F', 'DOCKER-EGRESS']);
	await waitForRule(sb, good.subnet, good.ip);
	await waitForRule(sb, KEEP.subnet, KEEP.ip);
	await sleep(2_000);
	t.is(watch.find('network skipped', { network: bad.name }).length, 1, watch.stderr);
	t.false((await egressRules(sb)).some((line) => line.includes(bad.subnet)), 'no rule for the bad network');
	t.true(watch.running);
});

test.serial('SIGKILL while applying a large change: the chain is old or new, never half-written; the next start converges', async (t) => {
	t.timeout(600_000);
	const sb = sandbox();
	const count = 60;
	const bulk = Array.from({ length: count }, (_, i) => ({ name: `z_bulk_${String(i + 1).padStart(2, '0')}`, subnet: `10.200.${i + 1}.0/24` }));
	const bulkIp = '192.0.2.13';
	t.teardown(async () => {
		await sb.docker(['network', 'rm', ...bulk.map((n) => n.name)], { reject: false, timeout: 120_000 });
	});
	for (let i = 0; i < bulk.length; i += 10) {
		await Promise.all(bulk.slice(i, i + 10).map((n) => labelledNetwork(sb, n.name, n.subnet, bulkIp)));
	}
	const bulkRules = async () => (await egressRules(sb)).filter((line) => line.includes(' -s 10.200.')).length;

	const rounds: string[] = [];
	for (let round = 1; round <= 8; round++) {
		await sb.exec('iptables', ['-t', 'nat', '-F', 'DOCKER-EGRESS']);
		t.is(await bulkRules(), 0);
		const watch = await startWatch(t, sb, { waitStarted: false });
		let when: string;
		if (round > 4) {
			// The most hostile moment: while its iptables-restore child is running (if we catch it
			// before the write is done and "watch started" is logged).
			const deadline = Date.now() + 15_000;
			const restoring = () => childrenOf(watch.pid).filter((pid) => /^iptables.*(restor|-re$)/.test(commOf(pid)));
			let caught = false;
			while (!caught && Date.now() < deadline && watch.running && watch.find('watch started').length === 0) {
				caught = restoring().length > 0;
				if (!caught) await new Promise((resolve) => setImmediate(resolve));
			}
			when = caught ? `with its iptables-restore running, ${Date.now() - watch.startedAt} ms in` : `${Date.now() - watch.startedAt} ms in (no iptables-restore child seen)`;
		} else {
			const delay = Math.floor(Math.random() * 2_500);
			await sleep(delay);
			when = `${delay} ms in`;
		}
		t.true(watch.running, `watch exited by itself before the SIGKILL (round ${round}):\n${watch.stderr}`);
		await watch.stop('SIGKILL');
		const seen = [await bulkRules()];
		await sleep(1_000); // an orphaned iptables-restore may still finish: still all or nothing
		seen.push(await bulkRules());
		rounds.push(`round ${round}: SIGKILL ${when}: ${seen.join(' then ')} rules`);
		for (const n of seen) t.true(n === 0 || n === count, `a half-written chain: ${n} of ${count} rules (${when})`);
	}
	t.log(rounds.join('\n'));

	const watch = await startWatch(t, sb, { waitStarted: false });
	await watch.waitFor('watch started', {}, 60_000);
	await eventually('all bulk rules', bulkRules, (n) => n === count, 30_000);
	const rules = await egressRules(sb);
	for (const n of bulk) t.true(ruleFor(rules, n.subnet, bulkIp), `rule for ${n.name}`);
	t.is(await sb.probe('z_bulk_37'), bulkIp);
	t.is(await sb.probe(KEEP.name), KEEP.ip);

	// And the other way round: all of them removed at once while watch runs.
	await sb.docker(['network', 'rm', ...bulk.map((n) => n.name)], { timeout: 120_000 });
	await eventually('no bulk rules', bulkRules, (n) => n === 0, 30_000);
	t.true(ruleFor(await egressRules(sb), KEEP.subnet, KEEP.ip));
	t.true(watch.running);
});

test.serial('dockerd restarts while watch runs: watch survives, logs "daemon lost" once and "daemon back", and a new network gets its rule', async (t) => {
	t.timeout(180_000);
	const sb = sandbox();
	// A long interval: what follows the restart is due to the reconnect, not the periodic check.
	const watch = await startWatch(t, sb, { interval: '60' });
	t.teardown(stopRestartedDockerd);

	await stopDockerd(sb);
	const lost = await watch.waitFor('daemon lost', {}, 20_000);
	t.is(lost.level, 'warn');
	await sleep(4_000); // several reconnection attempts while the daemon is away
	t.true(watch.running, 'watch survives the daemon going away');
	await startDockerd(sb);
	await watch.waitFor('daemon back', {}, 60_000);
	t.is(watch.find('daemon lost').length, 1, `"daemon lost" once per outage:\n${watch.stderr}`);
	t.is(watch.find('daemon back').length, 1);

	// A full reconcile after the daemon came back, and the event stream is live again.
	// (Docker re-creates the default bridge on start and inserts its MASQUERADE at the top of
	// POSTROUTING; only the reconcile after "daemon back" can put the jump first again here.)
	await waitForRule(sb, KEEP.subnet, KEEP.ip, 5_000);
	await eventually('the jump first again', () => postrouting(sb), (rules) => rules[0] === JUMP, 5_000);
	t.is(await sb.probe(KEEP.name), KEEP.ip);
	const net = { name: 'z_w_after', subnet: '10.70.3.0/24', ip: '192.0.2.12' };
	await labelledNetwork(sb, net.name, net.subnet, net.ip);
	t.teardown(async () => {
		await sb.docker(['network', 'rm', net.name], { reject: false });
	});
	await waitForRule(sb, net.subnet, net.ip, 5_000);
	t.is(await sb.probe(net.name), net.ip);
	t.true(watch.running);
});
