// A real, isolated Docker host for integration tests (recipe: /work/shared/docs/sandbox.md).
//
// Each Sandbox owns, under a unique 6-character id:
//   - netns `egh-<id>`: the Docker host. Uplink `eg-h` with 192.0.2.1/24 (primary), .11, .12, .13
//     (plus options.extraHostAddresses), default route via 192.0.2.254. A dockerd of its own runs
//     here with its state in /tmp/eg-<id>/ and its socket at /tmp/eg-<id>/docker.sock.
//   - netns `egu-<id>`: the upstream, 192.0.2.254/24 on `eg-u`, running a busybox httpd whose
//     http://192.0.2.254/cgi-bin/ip answers with the source address it saw (REMOTE_ADDR).
//   - the image `egress-probe:latest` (static busybox: sh, nc, timeout, tail, sleep, cat, ip).
// Interfaces are created directly inside their namespaces, so their names never clash between
// sandboxes running at once (ava runs test files in parallel).
//
// Typical test file (one sandbox shared by the file's tests):
//
//   import anyTest from 'ava';
//   import {useSandbox} from '../helpers/sandbox.js';
//
//   const {test, sandbox} = useSandbox(anyTest);   // before: start, after.always: stop
//
//   test.serial('create gives the chosen source IP', async t => {
//     const sb = sandbox();
//     const r = await sb.egress(['create', 'z_a', '--source-ip', '192.0.2.12']);
//     t.is(r.exitCode, 0, r.stderr);
//     t.is(await sb.probe('z_a'), '192.0.2.12');
//   });
//
// ALWAYS register tests with the `test` returned by useSandbox (not ava's): when the machine lacks
// the prerequisites (root, dockerd, iptables, busybox-static, nsenter, ip — see ./prereqs.ts) it
// turns every test of the file into a skipped one with a loud warning, or, when $CI is set, makes
// the file fail with the reason. Tests of one file share one Docker host and run concurrently
// unless declared with `test.serial`: use serial tests (or distinct names/subnets) for anything that
// changes networks or iptables.
//
// A sandbox per test instead:   const sb = await Sandbox.forTest(t);   (stopped by t.teardown)
// (register such tests with `realDockerTest(anyTest)` from ./prereqs.ts for the same skip policy).
//
// API (all commands get argument arrays, never a shell string; all run inside netns egh-<id>):
//   Sandbox.start({extraHostAddresses?})  -> Promise<Sandbox>  (cleans up after itself on failure)
//   sb.id, sb.hostNs, sb.upstreamNs, sb.nsPath, sb.upstreamNsPath, sb.dir, sb.socket,
//   sb.dockerHost ('unix://…'), sb.configDir (DOCKER_CONFIG of docker()/egress()), sb.uplink ('eg-h'),
//   sb.hostAddresses, sb.dockerdLog (path)
//   sb.docker(args, opts?)        docker CLI, -H <sandbox> (DOCKER_CONFIG=sb.configDir)
//   sb.exec(cmd, args, opts?)     anything, e.g. sb.exec('iptables-save', ['-t', 'nat'])
//   sb.execUpstream(cmd, args, opts?)  the same in the upstream namespace
//   sb.probe(network)             -> source address the upstream saw from a container on `network`
//   sb.egress(args, {env?, reject?, viaCli?, configDir?, globalArgs?, input?, timeout?})
//                                 the plugin under test ($DOCKER_EGRESS_BIN or <repo>/dist/docker-egress),
//                                 directly (`docker-egress [globalArgs] egress …`) or through the real
//                                 CLI (`docker --config <configDir> [globalArgs] egress …`); DOCKER_HOST
//                                 and DOCKER_CONFIG are set (override or unset them with env: {X: undefined})
//   sb.installPlugin(configDir?)  links <configDir>/cli-plugins/docker-egress to the plugin binary
//   sb.stop()                     idempotent; removes containers, dockerd (+containerd, shims), httpd,
//                                 mounts, both namespaces and the temp dir
// docker(), exec(), execUpstream() and egress() return the execa subprocess (await it for the result;
// keep it to signal a long-running `egress watch`). docker()/exec() reject on failure unless
// {reject: false}; egress() defaults to reject: false.
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
	chmodSync,
	closeSync,
	copyFileSync,
	existsSync,
	lstatSync,
	mkdirSync,
	openSync,
	readFileSync,
	readdirSync,
	readlinkSync,
	rmdirSync,
	rmSync,
	statSync,
	symlinkSync,
	unlinkSync,
	writeFileSync,
} from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa, execaSync, type ResultPromise } from 'execa';
import type { ExecutionContext, TestFn } from 'ava';
import { dockerCliPath, findExecutable, gateRealDocker } from './prereqs.js';

/** Repository root: this file is compiled to <repo>/build/test/helpers/sandbox.js. */
export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

/** The plugin binary under test. */
export function pluginBinary(): string {
	return process.env.DOCKER_EGRESS_BIN ?? join(repoRoot, 'dist', 'docker-egress');
}

export const UPSTREAM_ADDRESS = '192.0.2.254';
export const PRIMARY_ADDRESS = '192.0.2.1';
export const HOST_ADDRESSES = ['192.0.2.1', '192.0.2.11', '192.0.2.12', '192.0.2.13'] as const;
export const PROBE_IMAGE = 'egress-probe:latest';
const UPLINK = 'eg-h';
const UPSTREAM_LINK = 'eg-u';
const PROBE_TOOLS = ['sh', 'nc', 'timeout', 'tail', 'sleep', 'cat', 'ip'];
const PROBE_SCRIPT = 'printf "GET /cgi-bin/ip HTTP/1.0\\r\\n\\r\\n" | timeout 5 nc 192.0.2.254 80 | tail -1';

export interface SandboxOptions {
	/** More addresses for the uplink, e.g. '192.0.2.20' (→ /24), '198.51.100.7' (→ /32, routed back by the upstream) or '192.0.2.30/24'. */
	extraHostAddresses?: string[];
	/** How long to wait for dockerd to answer (default 60 s). */
	startTimeoutMs?: number;
}

/** Options of docker() / exec() / execUpstream(). */
export interface RunOptions {
	/** Throw on a non-zero exit (default true). */
	reject?: boolean;
	/** Extra environment (merged into process.env; a value of undefined removes the variable). */
	env?: Record<string, string | undefined>;
	/** Standard input. */
	input?: string;
	/** Kill after this many ms. */
	timeout?: number;
	cwd?: string;
}

export interface EgressOptions {
	env?: Record<string, string | undefined>;
	/** Default false: inspect exitCode/stderr yourself. */
	reject?: boolean;
	/** Run through the real Docker CLI (`docker --config <configDir> egress …`) instead of directly. */
	viaCli?: boolean;
	/** Docker config dir (DOCKER_CONFIG / --config); default sb.configDir. */
	configDir?: string;
	/** Docker global flags placed before the word `egress` (e.g. ['-H', 'unix:///…'], ['--context', 'x']). */
	globalArgs?: string[];
	input?: string;
	timeout?: number;
}

/** What the execa subprocesses returned by the helpers resolve to. */
type ExecOpts = {
	reject: boolean;
	env: Record<string, string | undefined>;
	input?: string;
	timeout?: number;
	cwd?: string;
};
export type Run = ResultPromise<ExecOpts>;
/** A long-running subprocess we started (dockerd, httpd). */
type Background = Pick<ChildProcess, 'pid' | 'exitCode' | 'signalCode'> & Promise<unknown>;

export class Sandbox {
	readonly id: string;
	readonly hostNs: string;
	readonly upstreamNs: string;
	readonly nsPath: string;
	readonly upstreamNsPath: string;
	readonly dir: string;
	readonly socket: string;
	readonly dockerHost: string;
	readonly configDir: string;
	readonly dockerdLog: string;
	readonly uplink = UPLINK;
	readonly hostAddresses: string[];

	private readonly options: SandboxOptions;
	private readonly nsIds = new Set<string>();
	private readonly createdNs: string[] = [];
	private dockerd: Background | undefined;
	private dockerdPid: number | undefined;
	private httpd: Background | undefined;
	private httpdPid: number | undefined;
	private stopping: Promise<void> | undefined;
	private readonly exitHandler = () => {
		try {
			this.cleanupSync();
		} catch (error) {
			console.error(String(error));
		}
	};

	private constructor(id: string, options: SandboxOptions) {
		this.id = id;
		this.options = options;
		this.hostNs = `egh-${id}`;
		this.upstreamNs = `egu-${id}`;
		this.nsPath = `/var/run/netns/${this.hostNs}`;
		this.upstreamNsPath = `/var/run/netns/${this.upstreamNs}`;
		this.dir = `/tmp/eg-${id}`;
		this.socket = `${this.dir}/docker.sock`;
		this.dockerHost = `unix://${this.socket}`;
		this.configDir = `${this.dir}/config`;
		this.dockerdLog = `${this.dir}/dockerd.log`;
		this.hostAddresses = [...HOST_ADDRESSES, ...(options.extraHostAddresses ?? []).map((a) => a.split('/')[0]!)];
	}

	/** Start a fresh sandbox; on failure everything already made is removed again. */
	static async start(options: SandboxOptions = {}): Promise<Sandbox> {
		const sb = Sandbox.reserve(options);
		process.on('exit', sb.exitHandler);
		try {
			await sb.setUp();
		} catch (error) {
			await sb.stop().catch((cleanupError: unknown) => {
				console.warn(`sandbox ${sb.id}: cleanup after a failed start failed too: ${String(cleanupError)}`);
			});
			throw error;
		}
		return sb;
	}

	/** A sandbox for one test, stopped by t.teardown. */
	static async forTest(t: ExecutionContext<any>, options: SandboxOptions = {}): Promise<Sandbox> {
		const sb = await Sandbox.start(options);
		t.teardown(() => sb.stop());
		return sb;
	}

	/** Pick an unused id; the exclusive mkdir of /tmp/eg-<id> is the reservation. */
	private static reserve(options: SandboxOptions): Sandbox {
		for (let attempt = 0; attempt < 20; attempt++) {
			const id = randomId();
			if (existsSync(`/var/run/netns/egh-${id}`) || existsSync(`/var/run/netns/egu-${id}`)) continue;
			try {
				mkdirSync(`/tmp/eg-${id}`, { mode: 0o700 });
			} catch (error) {
				if ((error as NodeJS.ErrnoException).code === 'EEXIST') continue;
				throw error;
			}
			return new Sandbox(id, options);
		}
		throw new Error('could not find an unused sandbox id');
	}

	private async setUp(): Promise<void> {
		// Namespaces and the link between them.
		for (const ns of [this.hostNs, this.upstreamNs]) {
			await run('ip', ['netns', 'add', ns]);
			this.createdNs.push(ns);
			// /proc/<pid>/ns/net of a process in that namespace reads "net:[<inode>]".
			this.nsIds.add(`net:[${statSync(`/var/run/netns/${ns}`).ino}]`);
		}
		const h = ['-n', this.hostNs];
		const u = ['-n', this.upstreamNs];
		await run('ip', [...h, 'link', 'set', 'lo', 'up']);
		await run('ip', [...u, 'link', 'set', 'lo', 'up']);
		await run('ip', ['link', 'add', UPLINK, 'netns', this.hostNs, 'type', 'veth', 'peer', 'name', UPSTREAM_LINK, 'netns', this.upstreamNs]);
		for (const a of HOST_ADDRESSES) await run('ip', [...h, 'addr', 'add', `${a}/24`, 'dev', UPLINK]);
		const upstreamRoutes: string[] = [];
		for (const raw of this.options.extraHostAddresses ?? []) {
			const { cidr, routeBack } = extraAddress(raw);
			const v6 = cidr.includes(':');
			await run('ip', [...h, ...(v6 ? ['-6'] : []), 'addr', 'add', cidr, 'dev', UPLINK, ...(v6 ? ['nodad'] : [])]);
			if (routeBack) upstreamRoutes.push(routeBack);
		}
		await run('ip', [...h, 'link', 'set', UPLINK, 'up']);
		await run('ip', [...u, 'addr', 'add', `${UPSTREAM_ADDRESS}/24`, 'dev', UPSTREAM_LINK]);
		await run('ip', [...u, 'link', 'set', UPSTREAM_LINK, 'up']);
		await run('ip', [...h, 'route', 'add', 'default', 'via', UPSTREAM_ADDRESS]);
		for (const dest of upstreamRoutes) await run('ip', [...u, 'route', 'add', dest, 'via', PRIMARY_ADDRESS]);

		// Echo server upstream.
		const www = join(this.dir, 'www');
		mkdirSync(join(www, 'cgi-bin'), { recursive: true });
		writeFileSync(join(www, 'cgi-bin', 'ip'), '#!/bin/sh\necho "Content-Type: text/plain"\necho\necho "$REMOTE_ADDR"\n');
		chmodSync(join(www, 'cgi-bin', 'ip'), 0o755);
		const busybox = findExecutable('busybox') ?? 'busybox';
		this.httpd = execa('nsenter', [`--net=${this.upstreamNsPath}`, busybox, 'httpd', '-f', '-p', `${UPSTREAM_ADDRESS}:80`, '-h', www], {
			stdio: 'ignore',
			reject: false,
			cleanup: false,
		});
		this.httpdPid = this.httpd.pid;
		void this.httpd.catch(() => undefined);

		// dockerd in the host namespace, with its own everything.
		mkdirSync(this.configDir, { recursive: true });
		writeFileSync(join(this.dir, 'daemon.json'), '{}\n');
		// dockerd writes straight into the log file (no pipe through this process, which may exit first).
		// execa's types only accept literal fd numbers, hence the cast.
		const log = openSync(this.dockerdLog, 'a') as 3;
		try {
			this.dockerd = execa(
				'nsenter',
				[
					`--net=${this.nsPath}`,
					'dockerd',
					'--config-file', join(this.dir, 'daemon.json'),
					'--data-root', join(this.dir, 'data'),
					'--exec-root', join(this.dir, 'exec'),
					'--pidfile', join(this.dir, 'dockerd.pid'),
					'--host', this.dockerHost,
					'--shutdown-timeout', '3',
				],
				{ stdin: 'ignore', stdout: log, stderr: log, reject: false, cleanup: false },
			);
		} finally {
			closeSync(log);
		}
		this.dockerdPid = this.dockerd.pid;
		let dockerdExited = false;
		void this.dockerd.finally(() => {
			dockerdExited = true;
		});

		await this.waitForEchoServer();

		const deadline = Date.now() + (this.options.startTimeoutMs ?? 60_000);
		for (;;) {
			if (dockerdExited) throw new Error(`dockerd of sandbox ${this.id} exited during start-up\n${this.logTail()}`);
			const r = await this.docker(['version', '--format', '{{.Server.Version}}'], { reject: false, timeout: 10_000 });
			if (r.exitCode === 0) break;
			if (Date.now() > deadline) {
				throw new Error(`dockerd of sandbox ${this.id} did not answer on ${this.dockerHost}: ${r.stderr.trim()}\n${this.logTail()}`);
			}
			await sleep(100);
		}

		// Probe image without a registry: static busybox.
		const img = join(this.dir, 'img');
		mkdirSync(join(img, 'bin'), { recursive: true });
		copyFileSync(busybox, join(img, 'bin', 'busybox'));
		chmodSync(join(img, 'bin', 'busybox'), 0o755);
		for (const tool of PROBE_TOOLS) symlinkSync('busybox', join(img, 'bin', tool));
		await execa('tar', ['-C', img, '-c', '.']).pipe(
			'nsenter',
			[`--net=${this.nsPath}`, dockerCli(), '-H', this.dockerHost, 'import', '--change', 'CMD ["sh"]', '-', PROBE_IMAGE],
			{ env: { DOCKER_CONFIG: this.configDir }, timeout: 60_000 },
		);
		rmSync(img, { recursive: true, force: true });
	}

	private async waitForEchoServer(): Promise<void> {
		const deadline = Date.now() + 10_000;
		let last = '';
		for (;;) {
			// (static busybox wget segfaults without /etc files; nc works)
			const r = await this.exec('busybox', ['nc', '-w', '3', UPSTREAM_ADDRESS, '80'], {
				reject: false,
				timeout: 5_000,
				input: 'GET /cgi-bin/ip HTTP/1.0\r\n\r\n',
			});
			if (r.exitCode === 0 && r.stdout.trim().split('\n').at(-1)?.trim() === PRIMARY_ADDRESS) return;
			last = `exit ${r.exitCode}, stdout ${JSON.stringify(r.stdout)}, stderr ${JSON.stringify(r.stderr)}`;
			if (Date.now() > deadline) throw new Error(`echo server of sandbox ${this.id} did not answer: ${last}`);
			await sleep(100);
		}
	}

	/** The Docker CLI against this sandbox's daemon. */
	docker(args: string[], opts: RunOptions = {}): Run {
		return this.exec(dockerCli(), ['-H', this.dockerHost, ...args], {
			...opts,
			env: { DOCKER_CONFIG: this.configDir, ...opts.env },
		});
	}

	/** Any command inside the Docker host's namespace. */
	exec(cmd: string, args: string[], opts: RunOptions = {}): Run {
		return execa('nsenter', [`--net=${this.nsPath}`, cmd, ...args], execOptions(opts, true));
	}

	/** Any command inside the upstream namespace. */
	execUpstream(cmd: string, args: string[], opts: RunOptions = {}): Run {
		return execa('nsenter', [`--net=${this.upstreamNsPath}`, cmd, ...args], execOptions(opts, true));
	}

	/** The source address the upstream echo server sees from a container on `network`. */
	async probe(network: string): Promise<string> {
		const r = await this.docker(['run', '--rm', '--network', network, PROBE_IMAGE, 'sh', '-c', PROBE_SCRIPT], {
			reject: false,
			timeout: 60_000,
		});
		const seen = r.stdout.trim();
		if (!seen) {
			throw new Error(
				`probe on network ${network} got no answer (exit ${r.exitCode})\nstdout: ${r.stdout}\nstderr: ${r.stderr}`,
			);
		}
		return seen;
	}

	/** Link <configDir>/cli-plugins/docker-egress to the plugin binary. */
	installPlugin(configDir: string = this.configDir): string {
		const bin = requirePluginBinary();
		const pluginDir = join(configDir, 'cli-plugins');
		mkdirSync(pluginDir, { recursive: true });
		const link = join(pluginDir, 'docker-egress');
		try {
			const st = lstatSync(link);
			if (st.isSymbolicLink() && readlinkSync(link) === bin) return link;
			unlinkSync(link);
		} catch (error) {
			if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
		}
		symlinkSync(bin, link);
		return link;
	}

	/** The plugin under test, inside the host namespace, talking to this sandbox's daemon. */
	egress(args: string[], opts: EgressOptions = {}): Run {
		const configDir = opts.configDir ?? this.configDir;
		const global = opts.globalArgs ?? [];
		const runOpts: RunOptions = {
			reject: opts.reject ?? false,
			env: { DOCKER_HOST: this.dockerHost, DOCKER_CONFIG: configDir, ...opts.env },
			...(opts.input !== undefined ? { input: opts.input } : {}),
			...(opts.timeout !== undefined ? { timeout: opts.timeout } : {}),
		};
		if (opts.viaCli) {
			this.installPlugin(configDir);
			return this.exec(dockerCli(), ['--config', configDir, ...global, 'egress', ...args], runOpts);
		}
		return this.exec(requirePluginBinary(), [...global, 'egress', ...args], runOpts);
	}

	/** Tear everything down. Safe to call more than once (and after a failed start). */
	stop(): Promise<void> {
		this.stopping ??= this.doStop();
		return this.stopping;
	}

	private async doStop(): Promise<void> {
		// Remove containers first: a graceful daemon shutdown would wait for each to stop.
		if (this.dockerd && running(this.dockerd) && existsSync(this.socket)) {
			const ps = await this.docker(['ps', '-aq'], { reject: false, timeout: 10_000 });
			const ids = ps.exitCode === 0 ? ps.stdout.split('\n').filter(Boolean) : [];
			if (ids.length > 0) await this.docker(['rm', '-f', ...ids], { reject: false, timeout: 60_000 });
		}
		if (this.dockerdPid !== undefined) {
			const pidFromFile = readPidFile(join(this.dir, 'dockerd.pid'));
			if (pidFromFile !== undefined && pidFromFile !== this.dockerdPid) {
				console.warn(`sandbox ${this.id}: pidfile says ${pidFromFile}, started ${this.dockerdPid}; stopping the one started`);
			}
			await stopProcess(this.dockerd, this.dockerdPid, 20_000);
		}
		if (this.httpdPid !== undefined) await stopProcess(this.httpd, this.httpdPid, 5_000);
		this.cleanupSync();
	}

	/** The synchronous part of stop(); also the last-resort handler on process exit. */
	private cleanupSync(): void {
		process.off('exit', this.exitHandler);
		const problems: string[] = [];
		// Anything still alive that belongs to this sandbox: dockerd / httpd if they survived, an
		// orphaned containerd or shim, container processes. Identified by namespace, root or
		// command line (all unique to this sandbox), ended by PID.
		for (const [child, pid] of [
			[this.dockerd, this.dockerdPid],
			[this.httpd, this.httpdPid],
		] as const) {
			if (child && pid !== undefined && running(child)) kill(pid, 'SIGKILL');
		}
		const containers = this.containerIds();
		let leftovers = this.ownProcesses(containers);
		for (const pid of leftovers) kill(pid, 'SIGKILL');
		const deadline = Date.now() + 10_000;
		while (leftovers.length > 0 && Date.now() < deadline) {
			sleepSync(50);
			leftovers = this.ownProcesses(containers);
		}
		if (leftovers.length > 0) problems.push(`processes still alive: ${leftovers.join(', ')}`);
		// cgroups of containers whose daemon could not remove them (it was killed).
		for (const dir of containerCgroups(containers)) safe(() => rmdirSync(dir));

		// Mounts under our directory (data-root bind mount, overlays, container netns files).
		for (const mountPoint of mountsUnder(this.dir)) {
			const r = execaSync('umount', [mountPoint], { reject: false });
			if (r.exitCode !== 0) {
				const lazy = execaSync('umount', ['-l', mountPoint], { reject: false });
				if (lazy.exitCode !== 0) problems.push(`umount ${mountPoint}: ${String(lazy.stderr).trim()}`);
			}
		}

		for (const ns of this.createdNs.splice(0)) {
			if (!existsSync(`/var/run/netns/${ns}`)) continue;
			const r = execaSync('ip', ['netns', 'del', ns], { reject: false });
			if (r.exitCode !== 0) problems.push(`ip netns del ${ns}: ${String(r.stderr).trim()}`);
		}

		try {
			rmSync(this.dir, { recursive: true, force: true, maxRetries: 3 });
		} catch (error) {
			problems.push(`rm -r ${this.dir}: ${String(error)}`);
		}
		if (problems.length > 0) throw new Error(`sandbox ${this.id} teardown left things behind:\n  ${problems.join('\n  ')}`);
	}

	/** IDs of the containers this sandbox's daemon knows (its data-root, even with the daemon dead). */
	private containerIds(): string[] {
		return (safe(() => readdirSync(join(this.dir, 'data', 'containers'))) ?? []).filter((n) => /^[0-9a-f]{64}$/.test(n));
	}

	/**
	 * Live processes of this sandbox: in one of its namespaces (dockerd, containerd, shims, httpd,
	 * commands run with exec()), rooted in or naming its directory, or in the cgroup of one of its
	 * containers (container processes; their /proc/<pid>/root reads "/").
	 */
	private ownProcesses(containers: string[]): number[] {
		const found: number[] = [];
		const prefix = `${this.dir}/`;
		for (const entry of readdirSync('/proc')) {
			if (!/^\d+$/.test(entry)) continue;
			const pid = Number(entry);
			if (pid === process.pid) continue;
			try {
				const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
				if (stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) === 'Z') continue;
				const ns = safe(() => readlinkSync(`/proc/${pid}/ns/net`));
				const root = safe(() => readlinkSync(`/proc/${pid}/root`));
				const cmdline = safe(() => readFileSync(`/proc/${pid}/cmdline`, 'utf8')) ?? '';
				const cgroup = containers.length > 0 ? (safe(() => readFileSync(`/proc/${pid}/cgroup`, 'utf8')) ?? '') : '';
				if (
					containers.some((id) => cgroup.includes(id)) ||
					(ns !== undefined && this.nsIds.has(ns)) ||
					(root !== undefined && (root === this.dir || root.startsWith(prefix))) ||
					cmdline.split('\0').some((arg) => arg === this.dir || arg.includes(prefix))
				) {
					found.push(pid);
				}
			} catch {
				// gone already
			}
		}
		return found;
	}

	private logTail(lines = 40): string {
		const text = safe(() => readFileSync(this.dockerdLog, 'utf8')) ?? '(no dockerd.log)';
		const useful = text.split('\n').filter((l) => l && !l.includes('module=grpc'));
		return `--- last lines of ${this.dockerdLog} ---\n${useful.slice(-lines).join('\n')}`;
	}
}

/**
 * One sandbox for a test file: registers before (start) and after.always (stop) hooks, and returns
 * the `test` function to register the file's tests with (skipping or failing them when the machine
 * cannot run a sandbox; see ./prereqs.ts) plus `sandbox()`, the running Sandbox.
 */
export function useSandbox<Context = unknown>(
	anyTest: TestFn<Context>,
	options: SandboxOptions = {},
): { test: TestFn<Context>; sandbox: () => Sandbox } {
	const gate = gateRealDocker(anyTest);
	let sb: Sandbox | undefined;
	if (gate.mode === 'run') {
		gate.test.before('start Docker sandbox', async () => {
			sb = await Sandbox.start(options);
		});
		gate.test.after.always('stop Docker sandbox', async () => {
			await sb?.stop();
		});
	}
	return {
		test: gate.test,
		sandbox: () => {
			if (!sb) {
				throw new Error(
					gate.reason
						? `no Docker sandbox: ${gate.reason}`
						: 'Docker sandbox not started: call sandbox() inside a test registered with the `test` from useSandbox()',
				);
			}
			return sb;
		},
	};
}

// ---------------------------------------------------------------------------------------------

function dockerCli(): string {
	return dockerCliPath() ?? 'docker';
}

function requirePluginBinary(): string {
	const bin = pluginBinary();
	if (!existsSync(bin)) {
		throw new Error(`plugin binary not found at ${bin} (build it with \`make\`, or set DOCKER_EGRESS_BIN)`);
	}
	return resolve(bin);
}

function execOptions(opts: RunOptions, rejectDefault: boolean): ExecOpts {
	return {
		reject: opts.reject ?? rejectDefault,
		env: { ...opts.env },
		...(opts.input !== undefined ? { input: opts.input } : {}),
		...(opts.timeout !== undefined ? { timeout: opts.timeout } : {}),
		...(opts.cwd !== undefined ? { cwd: opts.cwd } : {}),
	};
}

async function run(cmd: string, args: string[]): Promise<void> {
	await execa(cmd, args, { timeout: 30_000 });
}

function randomId(): string {
	const alphabet = 'abcdefghijklmnopqrstuvwxyz0123456789';
	return [...randomBytes(6)].map((b) => alphabet[b % alphabet.length]).join('');
}

/** CIDR to add on the uplink, and the route the upstream needs back to it (if off-link). */
function extraAddress(raw: string): { cidr: string; routeBack: string | undefined } {
	const [address, prefix] = raw.split('/') as [string, string | undefined];
	if (address.includes(':')) return { cidr: `${address}/${prefix ?? '128'}`, routeBack: undefined };
	const onLink = address.startsWith('192.0.2.');
	const cidr = `${address}/${prefix ?? (onLink ? '24' : '32')}`;
	return { cidr, routeBack: onLink ? undefined : `${address}/32` };
}

function readPidFile(path: string): number | undefined {
	const text = safe(() => readFileSync(path, 'utf8').trim());
	return text && /^\d+$/.test(text) ? Number(text) : undefined;
}

function alive(pid: number): boolean {
	try {
		process.kill(pid, 0);
	} catch {
		return false;
	}
	const stat = safe(() => readFileSync(`/proc/${pid}/stat`, 'utf8'));
	return stat !== undefined && stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
}

function running(child: Background): boolean {
	return child.exitCode === null && child.signalCode === null;
}

function kill(pid: number, signal: NodeJS.Signals): void {
	try {
		process.kill(pid, signal);
	} catch {
		// already gone
	}
}

/** SIGTERM a process we started, wait for it, SIGKILL after `graceMs`. */
async function stopProcess(subprocess: Background | undefined, pid: number, graceMs: number): Promise<void> {
	const exited = subprocess ? subprocess.then(() => undefined, () => undefined) : undefined;
	const waitFor = async (ms: number): Promise<boolean> => {
		const deadline = Date.now() + ms;
		if (exited) {
			let timer: NodeJS.Timeout | undefined;
			const done = await Promise.race([
				exited.then(() => true),
				new Promise<boolean>((r) => (timer = setTimeout(() => r(false), ms))),
			]);
			clearTimeout(timer);
			return done;
		}
		while (Date.now() < deadline) {
			if (!alive(pid)) return true;
			await sleep(50);
		}
		return !alive(pid);
	};
	if (subprocess ? !running(subprocess) : !alive(pid)) return;
	kill(pid, 'SIGTERM');
	if (await waitFor(graceMs)) return;
	kill(pid, 'SIGKILL');
	await waitFor(5_000);
}

/** Mount points at or below `dir`, deepest first. */
function mountsUnder(dir: string): string[] {
	const text = safe(() => readFileSync('/proc/self/mountinfo', 'utf8')) ?? '';
	const points = text
		.split('\n')
		.filter(Boolean)
		.map((line) => line.split(' ')[4] ?? '')
		.map((p) => p.replace(/\\([0-7]{3})/g, (_m, oct: string) => String.fromCharCode(parseInt(oct, 8))))
		.filter((p) => p === dir || p.startsWith(`${dir}/`));
	return [...new Set(points)].sort((a, b) => b.length - a.length);
}

/** Existing cgroup directories of the given containers (cgroup v1 per-controller, and v2). */
function containerCgroups(containers: string[]): string[] {
	if (containers.length === 0) return [];
	const base = '/sys/fs/cgroup';
	const parents = [base, ...(safe(() => readdirSync(base)) ?? []).map((c) => join(base, c))].map((p) => join(p, 'docker'));
	return parents.flatMap((parent) => containers.map((id) => join(parent, id))).filter((d) => existsSync(d));
}

function safe<T>(fn: () => T): T | undefined {
	try {
		return fn();
	} catch {
		return undefined;
	}
}

function sleep(ms: number): Promise<void> {
	return new Promise((r) => setTimeout(r, ms));
}

function sleepSync(ms: number): void {
	Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}
