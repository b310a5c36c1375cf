// The Docker engines of the test matrix, chosen with DOCKER_EGRESS_TEST_ENGINE (see ./sandbox.ts).
//
//   key            dockerd                                    firewall backend   binaries
//   '29-nftables'  Docker 29.7.2 --firewall-backend=nftables  nftables           <repo>/.cache/engines/docker-29/bin
//   '29-iptables'  Docker 29.7.2                               iptables           <repo>/.cache/engines/docker-29/bin
//   '28'           Docker 28.x (Debian sid)                    iptables           <repo>/.cache/engines/docker-28/bin (+ system runc)
//   '20.10'        Debian 12's docker.io (the default)         iptables           the system's ($PATH)
//
// The 29 and 28 binaries are installed by test/engines/install.sh (`make engines`). The engine's
// bin directory goes first on the PATH of the dockerd a Sandbox starts, so that dockerd finds its
// own containerd, shim, runc (29) and docker-proxy.
import { accessSync, constants, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ENGINE_KEYS = ['29-nftables', '29-iptables', '28', '20.10'] as const;
export type EngineKey = (typeof ENGINE_KEYS)[number];
export type FirewallBackend = 'nftables' | 'iptables';

/** The env variable that selects the engine (unset or empty: '20.10', the system's dockerd). */
export const ENGINE_ENV = 'DOCKER_EGRESS_TEST_ENGINE';

export interface EngineSpec {
	readonly key: EngineKey;
	/** For test titles: 'docker 29 nftables'. */
	readonly label: string;
	/** The major version `docker version` must report (20 for 20.10). */
	readonly major: number;
	readonly firewallBackend: FirewallBackend;
	/** Directory put first on dockerd's PATH (undefined: the system's dockerd as found on $PATH). */
	readonly binDir: string | undefined;
	/** Executables binDir must hold. */
	readonly binaries: readonly string[];
	/** Flags every dockerd of this engine gets. */
	readonly dockerdArgs: readonly string[];
	/** IPv4/IPv6 forwarding must be turned on by hand before dockerd starts (nftables backend). */
	readonly needsForwarding: boolean;
	/** Docker 27+ manage ip6tables by default; 20.10 only with --experimental --ip6tables. */
	readonly ip6tablesByDefault: boolean;
}

/** Repository root: this file is compiled to <repo>/build/test/helpers/engines.js. */
const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

/** Where test/engines/install.sh puts the engines. */
export const ENGINES_DIR = join(repoRoot, '.cache', 'engines');

const DOCKER_29_BINARIES = ['dockerd', 'docker-proxy', 'containerd', 'containerd-shim-runc-v2', 'runc'] as const;
const DOCKER_28_BINARIES = ['dockerd', 'docker-proxy', 'containerd', 'containerd-shim-runc-v2'] as const;

export const ENGINES: Readonly<Record<EngineKey, EngineSpec>> = {
	'29-nftables': {
		key: '29-nftables',
		label: 'docker 29 nftables',
		major: 29,
		firewallBackend: 'nftables',
		binDir: join(ENGINES_DIR, 'docker-29', 'bin'),
		binaries: DOCKER_29_BINARIES,
		dockerdArgs: ['--firewall-backend=nftables'],
		needsForwarding: true,
		ip6tablesByDefault: true,
	},
	'29-iptables': {
		key: '29-iptables',
		label: 'docker 29 iptables',
		major: 29,
		firewallBackend: 'iptables',
		binDir: join(ENGINES_DIR, 'docker-29', 'bin'),
		binaries: DOCKER_29_BINARIES,
		dockerdArgs: [],
		needsForwarding: false,
		ip6tablesByDefault: true,
	},
	'28': {
		key: '28',
		label: 'docker 28 iptables',
		major: 28,
		firewallBackend: 'iptables',
		binDir: join(ENGINES_DIR, 'docker-28', 'bin'),
		binaries: DOCKER_28_BINARIES,
		dockerdArgs: [],
		needsForwarding: false,
		ip6tablesByDefault: true,
	},
	'20.10': {
		key: '20.10',
		label: 'docker 20.10 iptables',
		major: 20,
		firewallBackend: 'iptables',
		binDir: undefined,
		binaries: [],
		dockerdArgs: [],
		needsForwarding: false,
		ip6tablesByDefault: false,
	},
};

function isEngineKey(value: string): value is EngineKey {
	return (ENGINE_KEYS as readonly string[]).includes(value);
}

/** The engine named by $DOCKER_EGRESS_TEST_ENGINE; throws on an unknown name. */
export function selectedEngine(): EngineSpec {
	const raw = process.env[ENGINE_ENV]?.trim() ?? '';
	if (raw === '') return ENGINES['20.10'];
	if (!isEngineKey(raw)) throw new Error(`${ENGINE_ENV}=${raw} is not an engine: use one of ${ENGINE_KEYS.join(', ')} (unset: 20.10)`);
	return ENGINES[raw];
}

/** Why the selected engine cannot run here (unknown name, binaries not installed), or undefined. */
export function engineReason(): string | undefined {
	let engine: EngineSpec;
	try {
		engine = selectedEngine();
	} catch (error) {
		return (error as Error).message;
	}
	if (engine.binDir === undefined) return undefined;
	const missing = engine.binaries.filter((b) => !isExecutableFile(join(engine.binDir!, b)));
	if (missing.length > 0) {
		return (
			`${ENGINE_ENV}=${engine.key} selected, but ${missing.join(', ')} missing from ${engine.binDir} ` +
			'(install the engines with `make engines`, i.e. test/engines/install.sh)'
		);
	}
	return undefined;
}

function isExecutableFile(path: string): boolean {
	try {
		accessSync(path, constants.X_OK);
		return statSync(path).isFile();
	} catch {
		return false;
	}
}
