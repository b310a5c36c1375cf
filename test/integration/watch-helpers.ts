// Helpers for the `docker egress watch` tests (watch.test.ts on the backend in use, and
// iptables.test.ts pinned to iptables): a running watch with its log parsed as it arrives, and the
// SIGKILL-mid-apply scenario, which both backends must pass.
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import type { ExecutionContext } from 'ava';
import type { Run, Sandbox } from '../helpers/sandbox.js';
import { type Backend, deleteEgressTable, egressRules, eventually, nftTableHandle, ruleFor, sleep } from './firewall.js';

export function stateDir(sb: Sandbox): string {
	return join(sb.dir, 'state');
}

/** The plugin with this file's state dir in the environment (protects the machine's own). */
export function egress(sb: Sandbox, args: string[], opts: Parameters<Sandbox['egress']>[1] = {}): Run {
	return sb.egress(args, { ...opts, env: { DOCKER_EGRESS_STATE_DIR: stateDir(sb), ...opts.env } });
}

export type LogLine = { time: string; level: string; msg: string; [field: string]: unknown };

/** A running `docker-egress egress watch`, with its stderr parsed line by line as it arrives. */
export class Watch {
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

export type WatchOptions = { interval?: string; format?: 'json' | 'text'; waitStarted?: boolean; viaCli?: boolean; extraArgs?: string[] };

/** Starts watch (stopped by t.teardown) and, unless told otherwise, waits for `watch started`. */
export async function startWatch(t: ExecutionContext, sb: Sandbox, options: WatchOptions = {}): Promise<Watch> {
	const format = options.format ?? 'json';
	const args = ['watch', '--interval', options.interval ?? '0.5', '--log-format', format, '--state-dir', stateDir(sb), ...(options.extraArgs ?? [])];
	const watch = new Watch(egress(sb, args, { viaCli: options.viaCli ?? false }), format === 'json');
	t.teardown(async () => {
		await watch.stop();
	});
	if (options.waitStarted ?? true) await watch.waitFor('watch started', {}, 30_000);
	return watch;
}

/** `docker network create` with the label, masquerade off and an explicit subnet. */
export async function labelledNetwork(sb: Sandbox, name: string, subnet: string, label: string): Promise<void> {
	await sb.docker([
		'network', 'create',
		'--label', `docker-egress.source-ip=${label}`,
		'--opt', 'com.docker.network.bridge.enable_ip_masquerade=false',
		'--subnet', subnet,
		name,
	]);
}

export function commOf(pid: number): string {
	try {
		const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
		return stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
	} catch {
		return '';
	}
}

/** PIDs of the children of `pid` (from /proc/<pid>/task/<tid>/children: cheap enough to poll). */
export function childrenOf(pid: number): number[] {
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

/**
 * What changes when our rules are rewritten (and only then): with iptables the packet counter of
 * the rule for `subnet` (a rewrite of the chain resets it), with nftables the handle of our table
 * (every change replaces the table, which then gets a new handle).
 */
export async function rewriteMark(sb: Sandbox, backend: Backend, subnet: string): Promise<string | undefined> {
	if (backend === 'nftables') {
		const handle = await nftTableHandle(sb);
		return handle === undefined ? undefined : `table handle ${handle}`;
	}

	const save = (await sb.exec('iptables-save', ['-c', '-t', 'nat'])).stdout;
	const line = save.split('\n').find((l) => l.includes('-A DOCKER-EGRESS ') && l.includes(` -s ${subnet} `));
	return line?.match(/^\[(\d+:\d+)\]/)?.[1];
}

/**
 * Whether `pid` is the firewall tool applying a transaction: iptables-restore, or `nft -f` (not one
 * of the `nft -j list` reads that come before it, which a SIGKILL would interrupt harmlessly).
 */
function isApplyChild(backend: Backend, pid: number): boolean {
	const comm = commOf(pid);
	if (backend === 'iptables') return /^iptables.*(restor|-re$)/.test(comm);
	if (comm !== 'nft') return false;
	try {
		return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').includes('-f');
	} catch {
		return false;
	}
}

/**
 * SIGKILL while watch applies a large change: the rules are old or new, never half-written (one
 * nft -f, or one iptables-restore, is one transaction); the next start converges. `keep` is a
 * network that must keep egressing through all of it.
 */
export async function sigkillMidApply(t: ExecutionContext, sb: Sandbox, backend: Backend, keep: { name: string; subnet: string; ip: string }): Promise<void> {
	const tool = backend === 'nftables' ? 'nft -f' : 'iptables-restore';
	const count = 60;
	const bulk = Array.from({ length: count }, (_, i) => ({ name: `z_bulk_${String(i + 1).padStart(2, '0')}`, subnet: `10.200.${i + 1}.0/24` }));
	const bulkIp = '192.0.2.13';
	t.teardown(async () => {
		await sb.docker(['network', 'rm', ...bulk.map((n) => n.name)], { reject: false, timeout: 120_000 });
	});
	for (let i = 0; i < bulk.length; i += 10) {
		await Promise.all(bulk.slice(i, i + 10).map((n) => labelledNetwork(sb, n.name, n.subnet, bulkIp)));
	}
	const bulkRules = async () => (await egressRules(sb, backend)).filter((rule) => rule.subnet.startsWith('10.200.')).length;

	const rounds: string[] = [];
	let caughtRounds = 0;
	for (let round = 1; round <= 8; round++) {
		// All of ours gone (with nftables the whole table: no elements left from before that could
		// hide a half-written map), so that watch has all 61 rules to write.
		await deleteEgressTable(sb, backend);
		t.is(await bulkRules(), 0);
		const watch = await startWatch(t, sb, { waitStarted: false });
		let when: string;
		if (round > 4) {
			// The most hostile moment: while its firewall child is running (if we catch it before
			// the write is done and "watch started" is logged).
			const deadline = Date.now() + 15_000;
			const applying = () => childrenOf(watch.pid).filter((pid) => isApplyChild(backend, pid));
			let caught = false;
			while (!caught && Date.now() < deadline && watch.running && watch.find('watch started').length === 0) {
				caught = applying().length > 0;
				if (!caught) await new Promise((resolve) => setImmediate(resolve));
			}
			if (caught) caughtRounds++;
			when = caught ? `with its ${tool} running, ${Date.now() - watch.startedAt} ms in` : `${Date.now() - watch.startedAt} ms in (no ${tool} child seen)`;
		} else {
			const delay = Math.floor(Math.random() * 2_500);
			await sleep(delay);
			when = `${delay} ms in`;
		}
		t.true(watch.running, `watch exited by itself before the SIGKILL (round ${round}):\n${watch.stderr}`);
		await watch.stop('SIGKILL');
		const seen = [await bulkRules()];
		await sleep(1_000); // an orphaned child may still finish: still all or nothing
		seen.push(await bulkRules());
		rounds.push(`round ${round}: SIGKILL ${when}: ${seen.join(' then ')} rules`);
		for (const n of seen) t.true(n === 0 || n === count, `a half-written rule set: ${n} of ${count} rules (${when})`);
	}
	t.log(`${backend}: ${tool} child caught in ${caughtRounds} of 4 rounds\n${rounds.join('\n')}`);

	const watch = await startWatch(t, sb, { waitStarted: false });
	await watch.waitFor('watch started', {}, 60_000);
	await eventually('all bulk rules', bulkRules, (n) => n === count, 30_000);
	const rules = await egressRules(sb, backend);
	for (const n of bulk) t.true(ruleFor(rules, n.subnet, bulkIp), `rule for ${n.name}`);
	t.is(await sb.probe('z_bulk_37'), bulkIp);
	t.is(await sb.probe(keep.name), keep.ip);

	// And the other way round: all of them removed at once while watch runs.
	await sb.docker(['network', 'rm', ...bulk.map((n) => n.name)], { timeout: 120_000 });
	await eventually('no bulk rules', bulkRules, (n) => n === 0, 30_000);
	t.true(ruleFor(await egressRules(sb, backend), keep.subnet, keep.ip));
	t.true(watch.running);
	await watch.stop();
}
