// Prerequisites of the real-Docker tests, and the skip / fail policy when they are missing.
//
// `sandboxReason()` says why a Sandbox (see ./sandbox.ts) cannot run on this machine, or undefined
// when it can. A missing dist/docker-egress is deliberately NOT a reason: the tests that need the
// plugin fail loudly on their own (Sandbox#egress throws with the path it looked at).
// DOCKER_EGRESS_NO_SANDBOX=<why> declares the sandbox unavailable on purpose (same policy applies).
//
// `realDockerTest(test)` applies the policy to an ava test function:
//   - prerequisites present        -> returns `test` unchanged;
//   - missing, and CI is set       -> registers a `before` hook that throws the reason, so every test
//                                     of the file FAILS (a CI machine without Docker is a broken CI);
//   - missing, outside CI          -> prints a loud console.warn naming the reason and returns a
//                                     `test` whose every registration (test, test.serial, .only,
//                                     .failing, hooks) becomes a `.skip` one.
// Use the returned function, not ava's, to register the tests of that file. Its tests (test,
// test.serial, .only, .failing, .skip, .todo; not hooks) get their title prefixed with the engine
// under test, e.g. `[docker 29 nftables] create gives …` (see ./engines.ts, DOCKER_EGRESS_TEST_ENGINE).
//
// The engine selected with DOCKER_EGRESS_TEST_ENGINE is a prerequisite too: an unknown name, or
// binaries not installed in .cache/engines (`make engines`), is a reason like any other.
import { accessSync, closeSync, constants, openSync, readSync, statSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execaSync } from 'execa';
import type { TestFn } from 'ava';
import { engineReason, selectedEngine } from './engines.js';

/**
 * Executables a Sandbox needs (dockerd also needs containerd and runc, both from docker.io). An
 * engine from .cache/engines brings its own dockerd, containerd (and runc for 29): those are looked
 * for there instead (./engines.ts).
 */
export const REQUIRED_COMMANDS = [
	'dockerd',
	'containerd',
	'runc',
	'iptables',
	'iptables-save',
	'iptables-restore',
	'busybox',
	'nsenter',
	'unshare',
	'ip',
	'tar',
	'umount',
] as const;

/** Path of an executable found on $PATH, or undefined. */
export function findExecutable(name: string): string | undefined {
	if (name.includes('/')) return isExecutable(name) ? name : undefined;
	for (const dir of (process.env.PATH ?? '').split(delimiter)) {
		if (!dir) continue;
		const candidate = join(dir, name);
		if (isExecutable(candidate)) return candidate;
	}
	return undefined;
}

function isExecutable(path: string): boolean {
	try {
		accessSync(path, constants.X_OK);
		return statSync(path).isFile();
	} catch {
		return false;
	}
}

/** The Docker CLI used by the tests: /usr/local/bin/docker when present, else `docker` on $PATH. */
export function dockerCliPath(): string | undefined {
	if (isExecutable('/usr/local/bin/docker')) return '/usr/local/bin/docker';
	return findExecutable('docker');
}

/** True when an ELF file has a PT_INTERP program header, i.e. it needs a dynamic loader. */
function isDynamicElf(path: string): boolean | undefined {
	let fd: number | undefined;
	try {
		fd = openSync(path, 'r');
		const header = Buffer.alloc(64);
		if (readSync(fd, header, 0, 64, 0) < 64) return undefined;
		if (header.readUInt32BE(0) !== 0x7f454c46) return undefined; // "\x7fELF"
		const is64 = header[4] === 2;
		const le = header[5] === 1;
		const u16 = (b: Buffer, o: number) => (le ? b.readUInt16LE(o) : b.readUInt16BE(o));
		const u32 = (b: Buffer, o: number) => (le ? b.readUInt32LE(o) : b.readUInt32BE(o));
		const phoff = is64 ? Number(le ? header.readBigUInt64LE(32) : header.readBigUInt64BE(32)) : u32(header, 28);
		const phentsize = u16(header, is64 ? 54 : 42);
		const phnum = u16(header, is64 ? 56 : 44);
		const table = Buffer.alloc(phentsize * phnum);
		readSync(fd, table, 0, table.length, phoff);
		for (let i = 0; i < phnum; i++) {
			if (u32(table, i * phentsize) === 3 /* PT_INTERP */) return true;
		}
		return false;
	} catch {
		return undefined;
	} finally {
		if (fd !== undefined) closeSync(fd);
	}
}

let cachedReason: { value: string | undefined } | undefined;

/** Synchronous form of sandboxReason() (the result is cached per process / worker). */
export function sandboxReasonSync(): string | undefined {
	cachedReason ??= { value: computeReason() };
	return cachedReason.value;
}

/** Why real-Docker tests cannot run here, or undefined when they can. */
export async function sandboxReason(): Promise<string | undefined> {
	return sandboxReasonSync();
}

function computeReason(): string | undefined {
	// Lets a developer (or a test of this policy) declare the sandbox unavailable on purpose.
	const forced = process.env.DOCKER_EGRESS_NO_SANDBOX;
	if (forced) return `DOCKER_EGRESS_NO_SANDBOX is set (${forced})`;
	if (process.platform !== 'linux') return `real-Docker tests need Linux (this is ${process.platform})`;
	const uid = process.getuid?.();
	if (uid !== 0) return `real-Docker tests need root (running as uid ${uid ?? '?'})`;
	const engineProblem = engineReason();
	if (engineProblem) return engineProblem;
	const engine = selectedEngine();
	const missing: string[] = REQUIRED_COMMANDS.filter((c) => !engine.binaries.includes(c) && !findExecutable(c));
	if (!dockerCliPath()) missing.push('docker');
	// Docker's nftables backend runs `nft` ("Failed to find nft tool" otherwise).
	if (engine.firewallBackend === 'nftables' && !findExecutable('nft')) missing.push('nft');
	if (missing.length > 0) {
		return (
			`missing on $PATH: ${missing.join(', ')} ` +
			'(apt-get install -y docker.io iptables nftables busybox-static util-linux iproute2)'
		);
	}
	const busybox = findExecutable('busybox')!;
	if (isDynamicElf(busybox) === true) {
		return `${busybox} is dynamically linked; the probe image needs a static one (apt-get install -y busybox-static)`;
	}
	const probe = execaSync('unshare', ['--net', 'true'], { reject: false, timeout: 10_000 });
	if (probe.exitCode !== 0) {
		return `cannot create network namespaces (unshare --net: ${String(probe.stderr).trim() || `exit ${probe.exitCode}`})`;
	}
	return undefined;
}

/** Whether we run under CI (CI set to anything but '', '0' or 'false'). */
export function isCI(): boolean {
	const ci = process.env.CI;
	return ci !== undefined && ci !== '' && ci !== '0' && ci.toLowerCase() !== 'false';
}

export type GateMode = 'run' | 'fail' | 'skip';

/**
 * realDockerTest() plus the mode it chose: 'run' (prerequisites present), 'fail' (missing, CI) or
 * 'skip' (missing, outside CI).
 */
export function gateRealDocker<Context>(
	test: TestFn<Context>,
	reason: string | undefined = sandboxReasonSync(),
): { test: TestFn<Context>; mode: GateMode; reason: string | undefined } {
	const prefix = `[${engineLabel()}, egress ${pluginBackendLabel()}] `;
	if (reason === undefined) return { test: titled(test, prefix), mode: 'run', reason };
	if (isCI()) {
		if (!failing.has(test)) {
			failing.add(test);
			test.before('real-Docker prerequisites', () => {
				throw new Error(`real-Docker tests cannot run on this CI machine: ${reason}`);
			});
		}
		return { test: titled(test, prefix), mode: 'fail', reason };
	}
	warnSkipped(test, reason);
	return { test: titled(skipping(test), prefix), mode: 'skip', reason };
}

/**
 * The plugin's firewall backend in this run: DOCKER_EGRESS_FIREWALL_BACKEND, else its own choice
 * (nftables wherever nft works, as on every machine the tests run on). A test file may pin another.
 */
function pluginBackendLabel(): string {
	return process.env.DOCKER_EGRESS_FIREWALL_BACKEND || 'nftables';
}

/** 'docker 29 nftables', or the raw value when DOCKER_EGRESS_TEST_ENGINE names no engine. */
function engineLabel(): string {
	try {
		return selectedEngine().label;
	} catch {
		return `docker ${process.env.DOCKER_EGRESS_TEST_ENGINE ?? '?'}`;
	}
}

/** See the comment at the top of this file. */
export function realDockerTest<Context>(test: TestFn<Context>): TestFn<Context> {
	return gateRealDocker(test).test;
}

const warned = new Set<string>();
const failing = new WeakSet<object>();

function warnSkipped(test: TestFn<any>, reason: string): void {
	let file = '(unknown test file)';
	try {
		file = test.meta.file.startsWith('file:') ? fileURLToPath(test.meta.file) : test.meta.file;
	} catch {
		// meta is only available inside an ava worker
	}
	if (warned.has(file)) return;
	warned.add(file);
	const bar = '!'.repeat(78);
	console.warn(
		`\n${bar}\n!! SKIPPING the real-Docker tests of ${file}\n!! reason: ${reason}\n` +
			`!! (set CI=1 to make this a failure)\n${bar}\n`,
	);
}

type AnyFn = (...args: unknown[]) => unknown;
type Registrar = AnyFn & Record<string, unknown>;

const HOOKS = new Set(['before', 'beforeEach', 'after', 'afterEach']);

/** A test function whose every registration becomes a skipped one. */
function skipping<Context>(test: TestFn<Context>): TestFn<Context> {
	return skippingTests(test as unknown as Registrar) as unknown as TestFn<Context>;
}

function skippingTests(target: Registrar): Registrar {
	const skip = target.skip as AnyFn;
	return new Proxy(target, {
		apply: (_t, thisArg, args: unknown[]) => Reflect.apply(skip, thisArg, args),
		get(t, prop, receiver) {
			if (prop === 'only') return skip;
			if (prop === 'serial' || prop === 'failing') return skippingTests(t[prop] as Registrar);
			if (typeof prop === 'string' && HOOKS.has(prop)) return skippingHook(t[prop] as Registrar);
			return Reflect.get(t, prop, receiver);
		},
	});
}

const TITLED = new WeakSet<object>();
/** Registrars whose first argument is a test title (hooks, macro and meta are left alone). */
const TITLED_REGISTRARS = new Set(['serial', 'only', 'skip', 'todo', 'failing']);

/** A test function that prefixes every test title it registers (once, however often it is wrapped). */
function titled<Context>(test: TestFn<Context>, prefix: string): TestFn<Context> {
	return titledTests(test as unknown as Registrar, prefix) as unknown as TestFn<Context>;
}

function titledTests(target: Registrar, prefix: string): Registrar {
	if (TITLED.has(target)) return target;
	const proxy = new Proxy(target, {
		apply: (t, thisArg, args: unknown[]) => {
			const [title, ...rest] = args;
			return Reflect.apply(t, thisArg, typeof title === 'string' ? [prefix + title, ...rest] : args);
		},
		get(t, prop, receiver) {
			const value = Reflect.get(t, prop, receiver) as unknown;
			if (typeof prop === 'string' && TITLED_REGISTRARS.has(prop) && typeof value === 'function') {
				return titledTests(value as Registrar, prefix);
			}
			return value;
		},
	});
	TITLED.add(proxy);
	return proxy;
}

function skippingHook(hook: Registrar): Registrar {
	const skip = hook.skip as AnyFn;
	return new Proxy(hook, {
		apply: (_t, thisArg, args: unknown[]) => Reflect.apply(skip, thisArg, args),
		get(t, prop, receiver) {
			if (prop === 'always') return skippingHook(t.always as Registrar);
			return Reflect.get(t, prop, receiver);
		},
	});
}
