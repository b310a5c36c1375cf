// A real, isolated Docker host for integration tests (recipe: /work/shared/docs/sandbox.md).
//
// Two layouts (options.topology). Each Sandbox owns, under a unique 6-character id:
//
// topology 'single' (the default; unchanged since the first version):
//   - netns `egh-<id>`: the Docker host. Uplink `eg-h` with 192.0.2.1/24 (primary), .11, .12, .13
//     (plus options.extraHostAddresses), default route via 192.0.2.254. A dockerd of its own runs
//     here with its state in /tmp/eg-<id>/ and its socket at /tmp/eg-<id>/docker.sock.
//   - netns `egu-<id>`: the upstream, 192.0.2.254/24 on `eg-u`, running a busybox httpd whose
//     http://192.0.2.254/cgi-bin/ip answers with the source address it saw (REMOTE_ADDR).
//   - with {ipv6: true} (off by default here): eg-h also has 2001:db8:a::1/64 (primary) and
//     2001:db8:a::11/64, the upstream 2001:db8:a::254/64 with a second httpd on [2001:db8:a::254]:80,
//     IPv6 default route via 2001:db8:a::254 and IPv6 forwarding on in the Docker host.
//
// topology 'multihome' (a host with two providers, each with BCP 38 anti-spoofing; always dual-stack):
//
//      egh-<id> (Docker host)             ega-<id> (router A)            egu-<id> (echo server)
//      eg-h  192.0.2.1 .11 .12 .13  ----  eg-u 192.0.2.254  eg-e 203.0.113.1 ---+
//            2001:db8:a::1 ::11               2001:db8:a::254    2001:db8:e::1   |  bridge eg-br
//                                                                               +- 203.0.113.254
//      eg-h2 198.51.100.1 .11 .12  -----  eg-u 198.51.100.254 eg-e 203.0.113.2 -+  2001:db8:e::254
//            2001:db8:b::1 ::11               2001:db8:b::254    2001:db8:e::2
//                                         egb-<id> (router B)
//   - Docker host: main table default routes via router A only (192.0.2.254, 2001:db8:a::254);
//     uplink B has just its connected routes (198.51.100.0/24, 2001:db8:b::/64). NO route via
//     198.51.100.254 / 2001:db8:b::254 exists in the main table, so B's gateway cannot be discovered
//     there: traffic out of B needs policy routing with an explicit gateway (`--via 198.51.100.254`).
//     With {uplinkBGatewayRoute: true} the main table also gets the harmless routes
//     203.0.113.64/26 via 198.51.100.254 and 2001:db8:f::/64 via 2001:db8:b::254 (nothing lives
//     there; the echo server and the routers stay reachable only through A), which makes B's gateway
//     discoverable from the main table. IPv4 and IPv6 forwarding on; rp_filter = options.rpFilter
//     (default 2, loose) on all, default, eg-h and eg-h2.
//   - Routers forward IPv4 and IPv6; each drops (BCP 38) packets arriving from the Docker host
//     (`-i eg-u`) whose source is not in its own uplink subnet: A keeps 192.0.2.0/24 and
//     2001:db8:a::/64, B keeps 198.51.100.0/24 and 2001:db8:b::/64. sb.routerCounters('a'|'b') reads
//     how many packets each forwarded / dropped.
//   - Echo server (netns `egu-<id>`, sb.upstreamNs) at 203.0.113.254 and 2001:db8:e::254 (one httpd
//     per family), routes 192.0.2.0/24 + 2001:db8:a::/64 back via router A, 198.51.100.0/24 +
//     2001:db8:b::/64 via router B. So the echo server sees 198.51.100.x only if the packet took
//     uplink B, and 192.0.2.x only if it took uplink A.
//   - options.extraHostAddresses must lie in one of the four uplink subnets; each goes on its uplink.
//
// options.sharedUpstream (a second Docker host on the upstream of a running 'single' sandbox, e.g.
// for a two-node Swarm; IPv4 only):
//
//      egh-<id1> (host 1)                  egu-<id1> (upstream, echo server)        egh-<id2> (host 2)
//      eg-h 192.0.2.1 .11 .12 .13  ------  eg-u 192.0.2.254                         eg-h 198.51.100.1
//                                          eg-u-<id2> 198.51.100.254  -----------       .11 .12 .13
//   - the second host's uplink eg-h has 198.51.100.1/24 (primary), .11, .12, .13 (UPLINK_PEER),
//     default route via 198.51.100.254 on the first sandbox's upstream namespace, which forwards
//     between the two hosts (IPv4 forwarding turned on there). The echo server is the first
//     sandbox's, 192.0.2.254, so it sees 198.51.100.x from the second host. The second sandbox owns
//     only its host namespace (stop it before the first); options.extraHostAddresses, ipv6 and
//     rpFilter are not supported with it.
// options.hostname (any topology): dockerd runs in a UTS namespace of its own with that hostname,
// which `docker info` reports as Name (a Swarm node's hostname). Without it, every sandbox's daemon
// has the machine's hostname.
//
// In both: the image `egress-probe:latest` (static busybox: sh, nc, timeout, tail, sleep, cat, ip,
// wget). The echo server's answer is the bare address ("2001:db8:a::11", never "[2001:db8:a::11]").
// IPv6 addresses are added with `nodad` (no DAD delay), secondaries before the primary, so the primary
// is what the kernel's source selection (and Docker's MASQUERADE) picks.
// Interfaces are created directly inside their namespaces, so their names never clash between
// sandboxes running at once (ava runs test files in parallel).
//
// Typical test file (one sandbox shared by the file's tests):
//
//   import anyTest from 'ava';
//   import {useSandbox} from '../helpers/sandbox.js';
//
//   const {test, sandbox} = useSandbox(anyTest);   // before: start, after.always: stop
//                          // useSandbox(anyTest, {topology: 'multihome'}) for the two-uplink host
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
// The engine (./engines.ts): $DOCKER_EGRESS_TEST_ENGINE = '29-nftables' | '29-iptables' | '28' |
// '20.10' (unset: '20.10', the system's dockerd). For 29 and 28 the dockerd comes from
// <repo>/.cache/engines/docker-<major>/bin (test/engines/install.sh, `make engines`), which goes
// first on its PATH (its containerd, shim, docker-proxy, and runc for 29; 28 uses the system's runc).
// '29-nftables' adds --firewall-backend=nftables and turns IPv4 and IPv6 forwarding on in the host
// namespace first (Docker's nftables backend does not). Every sandbox has a fresh namespace, so
// backends never meet. After start-up the daemon must report the expected major version and, where it
// reports one (28.2+), firewall backend, or start() fails. sb.engine = {key, version, firewallBackend}.
// Tests registered with useSandbox()'s `test` (or realDockerTest) are titled `[docker 29 nftables] …`.
//
// Docker daemon flags: none are needed for IPv6 on user-defined networks (`docker network create
// --ipv6 --subnet 2001:db8:1::/64 …` works with Docker 20.10 as is; containers get an IPv6 default
// route via the bridge, the sandbox turns IPv6 forwarding on). Docker 20.10 then writes no ip6tables
// rules at all (no MASQUERADE, no isolation); Docker 27+ (28, 29) manage ip6tables by default
// (sb.engine / ENGINES[key].ip6tablesByDefault). options.dockerdArgs: DOCKERD_IP6TABLES makes Docker
// manage ip6tables like iptables on every engine (MASQUERADE for IPv6 networks with masquerade on):
// `--experimental --ip6tables` for 20.10, just `--ip6tables` for 28/29 (no experimental mode there);
// add ['--ipv6', '--fixed-cidr-v6', '2001:db8:2::/64'] for IPv6 on the default bridge.
//
// API (all commands get argument arrays, never a shell string; all run inside netns egh-<id>):
//   Sandbox.start({topology?, ipv6?, uplinkBGatewayRoute?, rpFilter?, dockerdArgs?,
//                  extraHostAddresses?, startTimeoutMs?, hostname?, sharedUpstream?})
//                                 -> Promise<Sandbox>  (cleans up on failure)
//   sb.engine ({key: '29-nftables'|'29-iptables'|'28'|'20.10', version: what `docker version` says,
//   firewallBackend: 'nftables'|'iptables'}), sb.id, sb.hostNs, sb.upstreamNs (the echo server's netns), sb.nsPath, sb.upstreamNsPath, sb.dir,
//   sb.socket, sb.dockerHost ('unix://…'), sb.configDir (DOCKER_CONFIG of docker()/egress()),
//   sb.uplink ('eg-h'), sb.hostAddresses (IPv4 of all uplinks + extras), sb.dockerdLog (path)
//   sb.topology, sb.ipv6, sb.uplinks (UplinkInfo of A, and of B in multihome: name, subnet, gateway,
//   addresses, subnet6, gateway6, addresses6 — primary first), sb.hostAddresses6,
//   sb.echoAddress ('192.0.2.254' single, '203.0.113.254' multihome), sb.echoAddress6 (undefined
//   without IPv6), sb.echoUrl(family?) ('http://203.0.113.254/cgi-bin/ip', 'http://[2001:db8:e::254]/cgi-bin/ip')
//   sb.docker(args, opts?)        docker CLI, -H <sandbox> (DOCKER_CONFIG=sb.configDir)
//   sb.exec(cmd, args, opts?)     anything, e.g. sb.exec('iptables-save', ['-t', 'nat'])
//   sb.execUpstream(cmd, args, opts?)  the same in the upstream (echo server) namespace
//   sb.routerNs(r), sb.execRouter(r, cmd, args, opts?)   multihome: router 'a' or 'b'
//   sb.routerCounters(r)          multihome: {ipv4: {forwarded, dropped}, ipv6: {…}} packets from the host
//   sb.probe(network, {family?: 4|6, timeoutSeconds?})
//                                 -> source address the echo server saw from a container on `network`
//                                    (throws when there is no answer); sb.tryProbe(…) -> undefined then
//   sb.egress(args, {env?, reject?, viaCli?, configDir?, globalArgs?, input?, timeout?})
//                                 the plugin under test ($DOCKER_EGRESS_BIN or <repo>/dist/docker-egress),
//                                 directly (`docker-egress [globalArgs] egress …`) or through the real
//                                 CLI (`docker --config <configDir> [globalArgs] egress …`); DOCKER_HOST
//                                 and DOCKER_CONFIG are set (override or unset them with env: {X: undefined})
//   sb.stopDockerd(), sb.startDockerd(), sb.restartDockerd()   the daemon (same engine, flags, state)
//   sb.dockerdCommand({pidfile?}) {file, args, env} that start this sandbox's dockerd (its engine, flags
//                                 and PATH): for tests that restart the daemon themselves
//   sb.installPlugin(configDir?)  links <configDir>/cli-plugins/docker-egress to the plugin binary
//   sb.stop()                     idempotent; removes containers, dockerd (+containerd, shims), httpds,
//                                 mounts, all namespaces and the temp dir
// docker(), exec(), execUpstream(), execRouter() and egress() return the execa subprocess (await it
// for the result; keep it to signal a long-running `egress watch`). docker()/exec() reject on failure
// unless {reject: false}; egress() defaults to reject: false.
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
import { BlockList, isIP } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa, execaSync, type ResultPromise } from 'execa';
import type { ExecutionContext, TestFn } from 'ava';
import { ENGINE_ENV, selectedEngine, type EngineKey, type EngineSpec, type FirewallBackend } from './engines.js';
import { dockerCliPath, findExecutable, gateRealDocker } from './prereqs.js';

export { ENGINES, ENGINE_KEYS, selectedEngine, type EngineKey, type EngineSpec, type FirewallBackend } from './engines.js';

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
const PROBE_TOOLS = ['sh', 'nc', 'timeout', 'tail', 'sleep', 'cat', 'ip', 'wget'];

/** The Docker host's layout: one uplink to the echo server, or two uplinks through two routers. */
export type Topology = 'single' | 'multihome';

/** One uplink of the Docker host, with the router behind it. Addresses: primary first. */
export interface UplinkInfo {
	/** Interface in the Docker host namespace. */
	readonly name: string;
	/** Which router it leads to ('a' is the upstream itself in the single topology). */
	readonly router: 'a' | 'b';
	readonly subnet: string;
	/** The router's address on this uplink. */
	readonly gateway: string;
	readonly addresses: readonly string[];
	/** IPv6 (configured only when the sandbox has IPv6). */
	readonly subnet6: string;
	readonly gateway6: string;
	readonly addresses6: readonly string[];
}

/** Uplink A: `eg-h`, the default route's uplink (both topologies). */
export const UPLINK_A: UplinkInfo = {
	name: UPLINK,
	router: 'a',
	subnet: '192.0.2.0/24',
	gateway: UPSTREAM_ADDRESS,
	addresses: HOST_ADDRESSES,
	subnet6: '2001:db8:a::/64',
	gateway6: '2001:db8:a::254',
	addresses6: ['2001:db8:a::1', '2001:db8:a::11'],
};

/** The uplink `eg-h` of a sandbox started with options.sharedUpstream (IPv4 only). */
export const UPLINK_PEER: UplinkInfo = {
	name: UPLINK,
	router: 'a',
	subnet: '198.51.100.0/24',
	gateway: '198.51.100.254',
	addresses: ['198.51.100.1', '198.51.100.11', '198.51.100.12', '198.51.100.13'],
	subnet6: '2001:db8:b::/64',
	gateway6: '2001:db8:b::254',
	addresses6: [],
};

/** Uplink B: `eg-h2` (multihome only). No default route uses it. */
export const UPLINK_B: UplinkInfo = {
	name: 'eg-h2',
	router: 'b',
	subnet: '198.51.100.0/24',
	gateway: '198.51.100.254',
	addresses: ['198.51.100.1', '198.51.100.11', '198.51.100.12'],
	subnet6: '2001:db8:b::/64',
	gateway6: '2001:db8:b::254',
	addresses6: ['2001:db8:b::1', '2001:db8:b::11'],
};

export const PRIMARY_ADDRESS6 = '2001:db8:a::1';
/** The echo server of the multihome topology (behind both routers). */
export const ECHO_ADDRESS_MULTIHOME = '203.0.113.254';
export const ECHO_ADDRESS6_MULTIHOME = '2001:db8:e::254';
/** The echo server of the single topology with IPv6 (the upstream itself). */
export const ECHO_ADDRESS6_SINGLE = UPLINK_A.gateway6;
/** Routers' addresses on the echo segment (203.0.113.0/24, 2001:db8:e::/64). */
export const ROUTER_A_ECHO_SIDE = { ipv4: '203.0.113.1', ipv6: '2001:db8:e::1' } as const;
export const ROUTER_B_ECHO_SIDE = { ipv4: '203.0.113.2', ipv6: '2001:db8:e::2' } as const;
/**
 * With {uplinkBGatewayRoute: true}: main-table routes via B's gateway to places where nothing lives
 * (not the echo server, not the routers), so B's gateway can be discovered from the main table.
 */
export const UPLINK_B_GATEWAY_ROUTES = { ipv4: '203.0.113.64/26', ipv6: '2001:db8:f::/64' } as const;
/**
 * Daemon flags that make Docker manage ip6tables (MASQUERADE etc.) for IPv6 networks, for the engine
 * under test: 20.10 needs experimental mode for it; 27+ (28, 29) accept `--experimental` but need only
 * `--ip6tables` (their default anyway), so experimental mode is not turned on there.
 */
export const DOCKERD_IP6TABLES: readonly string[] = engineIp6tablesArgs();

function engineIp6tablesArgs(): readonly string[] {
	try {
		return selectedEngine().major >= 27 ? ['--ip6tables'] : ['--experimental', '--ip6tables'];
	} catch {
		return ['--experimental', '--ip6tables']; // unknown engine: prereqs.ts reports it
	}
}

/** The engine a sandbox runs (sb.engine). */
export interface EngineInfo {
	readonly key: EngineKey;
	/** Server version as `docker version` reports it, e.g. '29.7.2', '28.5.2+dfsg4', '20.10.24+dfsg1'. */
	readonly version: string;
	readonly firewallBackend: FirewallBackend;
}

const ECHO_BRIDGE = 'eg-br';
const ROUTER_ECHO_LINK = 'eg-e';

export interface SandboxOptions {
	/**
	 * 'single' (default): one uplink `eg-h` to the upstream echo server at 192.0.2.254.
	 * 'multihome': two uplinks (`eg-h` to router A, `eg-h2` to router B, both anti-spoofing), default
	 * route via A, echo server at 203.0.113.254 / 2001:db8:e::254 behind both routers; always IPv6.
	 */
	topology?: Topology;
	/** IPv6 too (default: true for 'multihome', false for 'single'; 'multihome' cannot turn it off). */
	ipv6?: boolean;
	/** multihome: add UPLINK_B_GATEWAY_ROUTES via B's gateway to the main table (default false). */
	uplinkBGatewayRoute?: boolean;
	/** rp_filter for all, default and the uplinks (default: 2 in multihome, untouched in single). */
	rpFilter?: 0 | 1 | 2;
	/** Extra dockerd flags, e.g. [...DOCKERD_IP6TABLES]. */
	dockerdArgs?: readonly string[];
	/**
	 * More addresses for the uplink(s). single: e.g. '192.0.2.20' (→ /24), '198.51.100.7' (→ /32,
	 * routed back by the upstream) or '192.0.2.30/24'. multihome: an address in one of the uplink
	 * subnets (192.0.2.0/24, 198.51.100.0/24, 2001:db8:a::/64, 2001:db8:b::/64), put on its uplink.
	 */
	extraHostAddresses?: string[];
	/** How long to wait for dockerd to answer (default 60 s). */
	startTimeoutMs?: number;
	/** dockerd's hostname (`docker info` Name), in a UTS namespace of its own (default: the machine's). */
	hostname?: string;
	/**
	 * A second Docker host on the upstream of this running 'single' sandbox (see the header): uplink
	 * UPLINK_PEER (198.51.100.1 primary), the same echo server. IPv4 only.
	 */
	sharedUpstream?: Sandbox;
}

/** Options of probe() / tryProbe(). */
export interface ProbeOptions {
	/** Talk to the echo server over IPv4 (default) or IPv6. */
	family?: 4 | 6;
	/** nc's time limit inside the container (default 5). */
	timeoutSeconds?: number;
}

/** Packets from the Docker host that a router forwarded / dropped (BCP 38), per family. */
export interface RouterCounters {
	ipv4: { forwarded: number; dropped: number };
	ipv6: { forwarded: number; dropped: number };
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
	/** The engine under test (known once start() has returned). */
	get engine(): EngineInfo {
		if (!this.engineInfo) throw new Error(`sandbox ${this.id}: dockerd not started yet`);
		return this.engineInfo;
	}
	readonly hostNs: string;
	/** The echo server's namespace (in 'single' also the upstream router). */
	readonly upstreamNs: string;
	readonly nsPath: string;
	readonly upstreamNsPath: string;
	readonly dir: string;
	readonly socket: string;
	readonly dockerHost: string;
	readonly configDir: string;
	readonly dockerdLog: string;
	readonly uplink = UPLINK;
	/** IPv4 addresses of the host's uplinks (A, then B in multihome), then options.extraHostAddresses. */
	readonly hostAddresses: string[];
	readonly topology: Topology;
	/** Whether the Docker host, the upstream side and the echo server have IPv6. */
	readonly ipv6: boolean;
	/** The host's uplinks: A, and B in multihome. */
	readonly uplinks: readonly UplinkInfo[];
	/** IPv6 addresses of the host's uplinks and the IPv6 extras ([] without IPv6 and IPv6 extras). */
	readonly hostAddresses6: string[];
	/** The echo server's IPv4 address. */
	readonly echoAddress: string;
	/** The echo server's IPv6 address (undefined without IPv6). */
	readonly echoAddress6: string | undefined;

	private readonly options: SandboxOptions;
	private readonly engineSpec: EngineSpec;
	private engineInfo: EngineInfo | undefined;
	private readonly nsIds = new Set<string>();
	private readonly createdNs: string[] = [];
	private readonly routerNames: { a: string; b: string } | undefined;
	private dockerd: Background | undefined;
	private dockerdPid: number | undefined;
	private readonly httpds: Array<{ child: Background; pid: number | undefined }> = [];
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
		this.engineSpec = selectedEngine();
		this.topology = options.topology ?? 'single';
		const multihome = this.topology === 'multihome';
		this.ipv6 = multihome || (options.ipv6 ?? false);
		this.hostNs = `egh-${id}`;
		this.upstreamNs = options.sharedUpstream ? options.sharedUpstream.upstreamNs : `egu-${id}`;
		this.routerNames = multihome ? { a: `ega-${id}`, b: `egb-${id}` } : undefined;
		this.nsPath = `/var/run/netns/${this.hostNs}`;
		this.upstreamNsPath = `/var/run/netns/${this.upstreamNs}`;
		this.dir = `/tmp/eg-${id}`;
		this.socket = `${this.dir}/docker.sock`;
		this.dockerHost = `unix://${this.socket}`;
		this.configDir = `${this.dir}/config`;
		this.dockerdLog = `${this.dir}/dockerd.log`;
		this.uplinks = multihome ? [UPLINK_A, UPLINK_B] : options.sharedUpstream ? [UPLINK_PEER] : [UPLINK_A];
		const extras = (options.extraHostAddresses ?? []).map((a) => a.split('/')[0]!);
		this.hostAddresses = [...this.uplinks.flatMap((u) => u.addresses), ...extras];
		this.hostAddresses6 = [
			...(this.ipv6 ? this.uplinks.flatMap((u) => u.addresses6) : []),
			...extras.filter((a) => a.includes(':')),
		];
		this.echoAddress = multihome ? ECHO_ADDRESS_MULTIHOME : UPSTREAM_ADDRESS;
		this.echoAddress6 = !this.ipv6 ? undefined : multihome ? ECHO_ADDRESS6_MULTIHOME : ECHO_ADDRESS6_SINGLE;
	}

	/** Start a fresh sandbox; on failure everything already made is removed again. */
	static async start(options: SandboxOptions = {}): Promise<Sandbox> {
		validateOptions(options);
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
			if (['egh', 'egu', 'ega', 'egb'].some((p) => existsSync(`/var/run/netns/${p}-${id}`))) continue;
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

	private async addNamespace(ns: string): Promise<void> {
		await run('ip', ['netns', 'add', ns]);
		this.createdNs.push(ns);
		// /proc/<pid>/ns/net of a process in that namespace reads "net:[<inode>]".
		this.nsIds.add(`net:[${statSync(`/var/run/netns/${ns}`).ino}]`);
		await run('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
	}

	private async setUp(): Promise<void> {
		if (this.topology === 'multihome') await this.setUpMultihome();
		else if (this.options.sharedUpstream) await this.setUpPeer();
		else await this.setUpSingle();

		// Echo server: one httpd per family (busybox httpd binds one address).
		const www = join(this.dir, 'www');
		mkdirSync(join(www, 'cgi-bin'), { recursive: true });
		// busybox httpd writes IPv6 peers as "[addr]": answer with the bare address.
		writeFileSync(
			join(www, 'cgi-bin', 'ip'),
			'#!/bin/sh\necho "Content-Type: text/plain"\necho\na=${REMOTE_ADDR#\\[}\necho "${a%\\]}"\n',
		);
		chmodSync(join(www, 'cgi-bin', 'ip'), 0o755);
		const busybox = findExecutable('busybox') ?? 'busybox';
		const listen = [`${this.echoAddress}:80`, ...(this.echoAddress6 ? [`[${this.echoAddress6}]:80`] : [])];
		for (const address of this.options.sharedUpstream ? [] : listen) {
			const child = execa('nsenter', [`--net=${this.upstreamNsPath}`, busybox, 'httpd', '-f', '-p', address, '-h', www], {
				stdio: 'ignore',
				reject: false,
				cleanup: false,
			});
			this.httpds.push({ child, pid: child.pid });
			void child.catch(() => undefined);
		}

		// dockerd in the host namespace, with its own everything.
		const engine = this.engineSpec;
		if (engine.needsForwarding) {
			// Docker's nftables backend leaves forwarding alone (iptables' sets ip_forward itself).
			await this.sysctl(this.hostNs, ['net.ipv4.ip_forward=1', 'net.ipv6.conf.all.forwarding=1']);
		}
		mkdirSync(this.configDir, { recursive: true });
		writeFileSync(join(this.dir, 'daemon.json'), '{}\n');
		const launched = this.launchDockerd();

		await this.waitForEchoServer(this.echoAddress, this.uplinks[0]!.addresses[0]!);
		if (this.echoAddress6) await this.waitForEchoServer(this.echoAddress6, PRIMARY_ADDRESS6);

		const version = await launched;
		this.engineInfo = await this.checkEngine(version);

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

	/**
	 * Starts this sandbox's dockerd and resolves to its version once it answers. Its log goes
	 * straight into the log file (no pipe through this process, which may exit first).
	 */
	private launchDockerd(): Promise<string> {
		// execa's types only accept literal fd numbers, hence the cast.
		const log = openSync(this.dockerdLog, 'a') as 3;
		try {
			const { file, args, env } = this.dockerdCommand();
			this.dockerd = execa(file, args, { stdin: 'ignore', stdout: log, stderr: log, reject: false, cleanup: false, env });
		} finally {
			closeSync(log);
		}
		this.dockerdPid = this.dockerd.pid;
		let dockerdExited = false;
		void this.dockerd.finally(() => {
			dockerdExited = true;
		});
		return (async () => {
			const deadline = Date.now() + (this.options.startTimeoutMs ?? 60_000);
			for (;;) {
				if (dockerdExited) throw new Error(`dockerd of sandbox ${this.id} exited during start-up\n${this.logTail()}`);
				const r = await this.docker(['version', '--format', '{{.Server.Version}}'], { reject: false, timeout: 10_000 });
				if (r.exitCode === 0) return r.stdout.trim();
				if (Date.now() > deadline) {
					throw new Error(`dockerd of sandbox ${this.id} did not answer on ${this.dockerHost}: ${r.stderr.trim()}\n${this.logTail()}`);
				}
				await sleep(100);
			}
		})();
	}

	/** Stops the daemon (SIGTERM, as a service manager does); containers stop with it. */
	async stopDockerd(): Promise<void> {
		if (this.dockerdPid !== undefined) await stopProcess(this.dockerd, this.dockerdPid, 20_000);
		this.dockerd = undefined;
		this.dockerdPid = undefined;
	}

	/** Starts the daemon again (same engine, flags, state) and waits until it answers. */
	async startDockerd(): Promise<void> {
		if (this.dockerd && running(this.dockerd)) throw new Error(`dockerd of sandbox ${this.id} is running already`);
		await this.launchDockerd();
	}

	/** stopDockerd() then startDockerd(): what `systemctl restart docker` does. */
	async restartDockerd(): Promise<void> {
		await this.stopDockerd();
		await this.startDockerd();
	}

	/**
	 * How this sandbox runs its dockerd (engine binary, flags, PATH), for a test that stops the daemon
	 * and starts it again: execa(file, args, {env, …}). Give another pidfile so that stop() does not
	 * mistake the new daemon for the one it started (it still finds it by namespace and ends it).
	 */
	dockerdCommand(opts: { pidfile?: string } = {}): { file: string; args: string[]; env: Record<string, string> } {
		const engine = this.engineSpec;
		// With a hostname: unshare --uts, set it, then exec nsenter (one PID all along: the daemon's).
		const uts = this.options.hostname ? ['--uts', 'sh', '-c', 'hostname "$1" && shift && exec "$@"', 'sh', this.options.hostname, 'nsenter'] : [];
		return {
			file: uts.length > 0 ? 'unshare' : 'nsenter',
			args: [
				...uts,
				`--net=${this.nsPath}`,
				engine.binDir ? join(engine.binDir, 'dockerd') : 'dockerd',
				'--config-file', join(this.dir, 'daemon.json'),
				'--data-root', join(this.dir, 'data'),
				'--exec-root', join(this.dir, 'exec'),
				'--pidfile', opts.pidfile ?? join(this.dir, 'dockerd.pid'),
				'--host', this.dockerHost,
				'--shutdown-timeout', '3',
				...engine.dockerdArgs,
				...(this.options.dockerdArgs ?? []),
			],
			// The engine's containerd, shim, runc (29) and docker-proxy come first.
			env: engine.binDir ? { PATH: `${engine.binDir}:${process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin'}` } : {},
		};
	}

	/** The daemon must be the engine asked for: same major version, same firewall backend. */
	private async checkEngine(version: string): Promise<EngineInfo> {
		const engine = this.engineSpec;
		const wrong = (what: string) =>
			new Error(
				`sandbox ${this.id}: ${ENGINE_ENV}=${engine.key} asked for ${engine.label}, but the dockerd started ` +
					`(${engine.binDir ? join(engine.binDir, 'dockerd') : 'dockerd on $PATH'}) ${what}\n${this.logTail()}`,
			);
		const major = Number(/^(\d+)\./.exec(version)?.[1]);
		if (major !== engine.major) throw wrong(`reports version ${JSON.stringify(version)}`);
		// API 1.49+ (Docker 28.2+): {"Driver":"nftables","Info":[…]}; older daemons: null.
		const r = await this.docker(['info', '--format', '{{json .FirewallBackend}}'], { timeout: 20_000 });
		const reported = (JSON.parse(r.stdout.trim() || 'null') as { Driver?: string } | null)?.Driver;
		if (reported === undefined && engine.major >= 29) throw wrong(`reports no firewall backend (docker info: ${r.stdout.trim()})`);
		if (reported !== undefined && reported !== engine.firewallBackend) throw wrong(`uses the ${reported} firewall backend`);
		return { key: engine.key, version, firewallBackend: engine.firewallBackend };
	}

	/** The original layout: host `eg-h` <-> upstream `eg-u` (which is also the echo server). */
	private async setUpSingle(): Promise<void> {
		for (const ns of [this.hostNs, this.upstreamNs]) await this.addNamespace(ns);
		const h = ['-n', this.hostNs];
		const u = ['-n', this.upstreamNs];
		await run('ip', ['link', 'add', UPLINK, 'netns', this.hostNs, 'type', 'veth', 'peer', 'name', UPSTREAM_LINK, 'netns', this.upstreamNs]);
		for (const a of HOST_ADDRESSES) await run('ip', [...h, 'addr', 'add', `${a}/24`, 'dev', UPLINK]);
		const upstreamRoutes: string[] = [];
		for (const raw of this.options.extraHostAddresses ?? []) {
			const { cidr, routeBack } = extraAddress(raw);
			const v6 = cidr.includes(':');
			await run('ip', [...h, ...(v6 ? ['-6'] : []), 'addr', 'add', cidr, 'dev', UPLINK, ...(v6 ? ['nodad'] : [])]);
			if (routeBack) upstreamRoutes.push(routeBack);
		}
		if (this.ipv6) await this.addAddresses6(this.hostNs, UPLINK, UPLINK_A.addresses6, 64);
		await run('ip', [...h, 'link', 'set', UPLINK, 'up']);
		await run('ip', [...u, 'addr', 'add', `${UPSTREAM_ADDRESS}/24`, 'dev', UPSTREAM_LINK]);
		if (this.ipv6) await this.addAddresses6(this.upstreamNs, UPSTREAM_LINK, [UPLINK_A.gateway6], 64);
		await run('ip', [...u, 'link', 'set', UPSTREAM_LINK, 'up']);
		await run('ip', [...h, 'route', 'add', 'default', 'via', UPSTREAM_ADDRESS]);
		for (const dest of upstreamRoutes) await run('ip', [...u, 'route', 'add', dest, 'via', PRIMARY_ADDRESS]);
		if (this.ipv6) {
			await run('ip', [...h, '-6', 'route', 'add', 'default', 'via', UPLINK_A.gateway6, 'dev', UPLINK]);
			await this.sysctl(this.hostNs, ['net.ipv6.conf.all.forwarding=1']);
		}
		if (this.options.rpFilter !== undefined) await this.setRpFilter(this.options.rpFilter);
	}

	/** A second host on another sandbox's upstream (options.sharedUpstream; see the header). */
	private async setUpPeer(): Promise<void> {
		await this.addNamespace(this.hostNs);
		const h = ['-n', this.hostNs];
		const peerLink = `eg-u-${this.id}`;
		await run('ip', ['link', 'add', UPLINK, 'netns', this.hostNs, 'type', 'veth', 'peer', 'name', peerLink, 'netns', this.upstreamNs]);
		for (const a of UPLINK_PEER.addresses) await run('ip', [...h, 'addr', 'add', `${a}/24`, 'dev', UPLINK]);
		await run('ip', [...h, 'link', 'set', UPLINK, 'up']);
		await run('ip', ['-n', this.upstreamNs, 'addr', 'add', `${UPLINK_PEER.gateway}/24`, 'dev', peerLink]);
		await run('ip', ['-n', this.upstreamNs, 'link', 'set', peerLink, 'up']);
		await run('ip', [...h, 'route', 'add', 'default', 'via', UPLINK_PEER.gateway]);
		await this.sysctl(this.upstreamNs, ['net.ipv4.ip_forward=1']);
	}

	/** Two uplinks, two anti-spoofing routers, one echo server behind both (see the header). */
	private async setUpMultihome(): Promise<void> {
		const routers = this.routerNames!;
		for (const ns of [this.hostNs, routers.a, routers.b, this.upstreamNs]) await this.addNamespace(ns);
		const h = ['-n', this.hostNs];
		const e = ['-n', this.upstreamNs];

		// Echo segment: a bridge in the echo namespace, one port per router.
		await run('ip', [...e, 'link', 'add', ECHO_BRIDGE, 'type', 'bridge']);
		await run('ip', [...e, 'addr', 'add', `${ECHO_ADDRESS_MULTIHOME}/24`, 'dev', ECHO_BRIDGE]);
		await this.addAddresses6(this.upstreamNs, ECHO_BRIDGE, [ECHO_ADDRESS6_MULTIHOME], 64);
		await run('ip', [...e, 'link', 'set', ECHO_BRIDGE, 'up']);

		// Extra addresses: each on the uplink whose subnet holds it.
		const extras = new Map<UplinkInfo, { v4: string[]; v6: string[] }>([
			[UPLINK_A, { v4: [], v6: [] }],
			[UPLINK_B, { v4: [], v6: [] }],
		]);
		for (const raw of this.options.extraHostAddresses ?? []) {
			const { uplink, cidr } = multihomeExtraAddress(raw);
			extras.get(uplink)![cidr.includes(':') ? 'v6' : 'v4'].push(cidr);
		}

		// The two uplinks and their routers are independent: built at once.
		const buildUplink = async (uplink: UplinkInfo, side: { ipv4: string; ipv6: string }): Promise<void> => {
			const rns = uplink.router === 'a' ? routers.a : routers.b;
			const r = ['-n', rns];
			const echoPort = `eg-e${uplink.router}`;
			const prefix = Number(uplink.subnet.split('/')[1]);
			const prefix6 = Number(uplink.subnet6.split('/')[1]);
			// host <-> router
			await run('ip', ['link', 'add', uplink.name, 'netns', this.hostNs, 'type', 'veth', 'peer', 'name', UPSTREAM_LINK, 'netns', rns]);
			for (const a of uplink.addresses) await run('ip', [...h, 'addr', 'add', `${a}/${prefix}`, 'dev', uplink.name]);
			for (const cidr of extras.get(uplink)!.v4) await run('ip', [...h, 'addr', 'add', cidr, 'dev', uplink.name]);
			// IPv6 secondaries (extras included) before the primary: the newest address wins source selection.
			for (const cidr of extras.get(uplink)!.v6) await run('ip', [...h, '-6', 'addr', 'add', cidr, 'dev', uplink.name, 'nodad']);
			await this.addAddresses6(this.hostNs, uplink.name, uplink.addresses6, prefix6);
			await run('ip', [...h, 'link', 'set', uplink.name, 'up']);
			await run('ip', [...r, 'addr', 'add', `${uplink.gateway}/${prefix}`, 'dev', UPSTREAM_LINK]);
			await this.addAddresses6(rns, UPSTREAM_LINK, [uplink.gateway6], prefix6);
			await run('ip', [...r, 'link', 'set', UPSTREAM_LINK, 'up']);
			// router <-> echo segment
			await run('ip', ['link', 'add', echoPort, 'netns', this.upstreamNs, 'type', 'veth', 'peer', 'name', ROUTER_ECHO_LINK, 'netns', rns]);
			await run('ip', [...e, 'link', 'set', echoPort, 'master', ECHO_BRIDGE]);
			await run('ip', [...e, 'link', 'set', echoPort, 'up']);
			await run('ip', [...r, 'addr', 'add', `${side.ipv4}/24`, 'dev', ROUTER_ECHO_LINK]);
			await this.addAddresses6(rns, ROUTER_ECHO_LINK, [side.ipv6], 64);
			await run('ip', [...r, 'link', 'set', ROUTER_ECHO_LINK, 'up']);
			// The echo server answers this uplink's subnets through this router.
			await run('ip', [...e, 'route', 'add', uplink.subnet, 'via', side.ipv4]);
			await run('ip', [...e, '-6', 'route', 'add', uplink.subnet6, 'via', side.ipv6]);
			// Forwarding, and BCP 38 on what comes from the host.
			await this.sysctl(rns, ['net.ipv4.ip_forward=1', 'net.ipv6.conf.all.forwarding=1']);
			for (const [tool, subnet] of [
				['iptables', uplink.subnet],
				['ip6tables', uplink.subnet6],
			] as const) {
				await execIn(rns, tool, ['-w', '-A', 'FORWARD', '-i', UPSTREAM_LINK, '!', '-s', subnet, '-j', 'DROP']);
				await execIn(rns, tool, ['-w', '-A', 'FORWARD', '-i', UPSTREAM_LINK, '-j', 'ACCEPT']);
			}
		};
		// (allSettled: on a failure, the other half must be finished before stop() takes things down)
		for (const r of await Promise.allSettled([buildUplink(UPLINK_A, ROUTER_A_ECHO_SIDE), buildUplink(UPLINK_B, ROUTER_B_ECHO_SIDE)])) {
			if (r.status === 'rejected') throw r.reason;
		}

		// Docker host routing: defaults via A only.
		await run('ip', [...h, 'route', 'add', 'default', 'via', UPLINK_A.gateway, 'dev', UPLINK_A.name]);
		await run('ip', [...h, '-6', 'route', 'add', 'default', 'via', UPLINK_A.gateway6, 'dev', UPLINK_A.name]);
		if (this.options.uplinkBGatewayRoute) {
			await run('ip', [...h, 'route', 'add', UPLINK_B_GATEWAY_ROUTES.ipv4, 'via', UPLINK_B.gateway, 'dev', UPLINK_B.name]);
			await run('ip', [...h, '-6', 'route', 'add', UPLINK_B_GATEWAY_ROUTES.ipv6, 'via', UPLINK_B.gateway6, 'dev', UPLINK_B.name]);
		}
		await this.sysctl(this.hostNs, ['net.ipv6.conf.all.forwarding=1']);
		await this.setRpFilter(this.options.rpFilter ?? 2);
	}

	/** Add IPv6 addresses without DAD, last one first: the first listed ends up preferred (the primary). */
	private async addAddresses6(ns: string, dev: string, addresses: readonly string[], prefix: number): Promise<void> {
		for (const a of [...addresses].reverse()) await run('ip', ['-n', ns, '-6', 'addr', 'add', `${a}/${prefix}`, 'dev', dev, 'nodad']);
	}

	/** sysctl inside a namespace (busybox: procps may be missing; /proc/sys/net follows the caller's netns). */
	private async sysctl(ns: string, settings: string[]): Promise<void> {
		await execIn(ns, findExecutable('busybox') ?? 'busybox', ['sysctl', '-w', ...settings]);
	}

	private async setRpFilter(value: 0 | 1 | 2): Promise<void> {
		const keys = ['all', 'default', ...this.uplinks.map((u) => u.name)].map((k) => `net.ipv4.conf.${k}.rp_filter=${value}`);
		await this.sysctl(this.hostNs, keys);
	}

	private async waitForEchoServer(address: string, expected: string): Promise<void> {
		const deadline = Date.now() + 10_000;
		let last = '';
		for (;;) {
			// (static busybox wget segfaults without /etc files; nc works)
			const r = await this.exec('busybox', ['nc', '-w', '3', address, '80'], {
				reject: false,
				timeout: 5_000,
				input: 'GET /cgi-bin/ip HTTP/1.0\r\n\r\n',
			});
			if (r.exitCode === 0 && r.stdout.trim().split('\n').at(-1)?.trim() === expected) return;
			last = `exit ${r.exitCode}, stdout ${JSON.stringify(r.stdout)}, stderr ${JSON.stringify(r.stderr)}`;
			if (Date.now() > deadline) throw new Error(`echo server ${address} of sandbox ${this.id} did not answer: ${last}`);
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

	/** A router's namespace (multihome only): 'a' behind uplink eg-h, 'b' behind eg-h2. */
	routerNs(router: 'a' | 'b'): string {
		if (!this.routerNames) throw new Error(`sandbox ${this.id} has no routers: start it with {topology: 'multihome'}`);
		return this.routerNames[router];
	}

	/** Any command inside a router's namespace (multihome only). */
	execRouter(router: 'a' | 'b', cmd: string, args: string[], opts: RunOptions = {}): Run {
		return execa('nsenter', [`--net=/var/run/netns/${this.routerNs(router)}`, cmd, ...args], execOptions(opts, true));
	}

	/**
	 * Packets from the Docker host that a router has forwarded and dropped for a foreign source
	 * (BCP 38) since the start, per family (multihome only). Compare before/after to see which
	 * router a probe went through.
	 */
	async routerCounters(router: 'a' | 'b'): Promise<RouterCounters> {
		const read = async (tool: 'iptables-save' | 'ip6tables-save') => {
			const text = (await this.execRouter(router, tool, ['-c', '-t', 'filter'])).stdout;
			const counts = { forwarded: 0, dropped: 0 };
			for (const m of text.matchAll(/^\[(\d+):\d+\] -A FORWARD (.*) -j (ACCEPT|DROP)$/gm)) {
				if (` ${m[2]} `.includes(` -i ${UPSTREAM_LINK} `)) counts[m[3] === 'DROP' ? 'dropped' : 'forwarded'] += Number(m[1]);
			}
			return counts;
		};
		return { ipv4: await read('iptables-save'), ipv6: await read('ip6tables-save') };
	}

	/** The echo server's URL (answers with the caller's address), e.g. for `egress verify --url`. */
	echoUrl(family: 4 | 6 = 4): string {
		return family === 6 ? `http://[${this.requireEcho6()}]/cgi-bin/ip` : `http://${this.echoAddress}/cgi-bin/ip`;
	}

	/** The source address the echo server sees from a container on `network`; throws without an answer. */
	async probe(network: string, opts: ProbeOptions = {}): Promise<string> {
		const r = await this.runProbe(network, opts);
		if (r.seen === undefined) {
			throw new Error(
				`probe on network ${network} got no answer (exit ${r.exitCode})\nstdout: ${r.stdout}\nstderr: ${r.stderr}`,
			);
		}
		return r.seen;
	}

	/** Like probe(), but undefined when the echo server did not answer (e.g. a router dropped it). */
	async tryProbe(network: string, opts: ProbeOptions = {}): Promise<string | undefined> {
		return (await this.runProbe(network, opts)).seen;
	}

	private async runProbe(network: string, opts: ProbeOptions) {
		const target = opts.family === 6 ? this.requireEcho6() : this.echoAddress;
		const script = `printf "GET /cgi-bin/ip HTTP/1.0\\r\\n\\r\\n" | timeout ${opts.timeoutSeconds ?? 5} nc ${target} 80 | tail -1`;
		const r = await this.docker(['run', '--rm', '--network', network, PROBE_IMAGE, 'sh', '-c', script], {
			reject: false,
			timeout: 60_000,
		});
		const seen = r.stdout.trim();
		return { seen: seen || undefined, exitCode: r.exitCode, stdout: r.stdout, stderr: r.stderr };
	}

	private requireEcho6(): string {
		if (!this.echoAddress6) throw new Error(`sandbox ${this.id} has no IPv6: start it with {ipv6: true} or {topology: 'multihome'}`);
		return this.echoAddress6;
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
		for (const { child, pid } of this.httpds) if (pid !== undefined) await stopProcess(child, pid, 5_000);
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
			[this.dockerd, this.dockerdPid] as const,
			...this.httpds.map(({ child, pid }) => [child, pid] as const),
		]) {
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

/** A command inside a named namespace (setup steps). */
async function execIn(ns: string, cmd: string, args: string[]): Promise<void> {
	await execa('nsenter', [`--net=/var/run/netns/${ns}`, cmd, ...args], { timeout: 30_000 });
}

function validateOptions(options: SandboxOptions): void {
	const topology = options.topology ?? 'single';
	if (topology !== 'single' && topology !== 'multihome') throw new Error(`sandbox: unknown topology ${String(topology)}`);
	if (topology === 'multihome') {
		if (options.ipv6 === false) throw new Error("sandbox: the 'multihome' topology is always dual-stack (ipv6: false given)");
		for (const raw of options.extraHostAddresses ?? []) multihomeExtraAddress(raw);
	} else if (options.uplinkBGatewayRoute) {
		throw new Error("sandbox: uplinkBGatewayRoute needs {topology: 'multihome'}");
	}
	const shared = options.sharedUpstream;
	if (shared) {
		if (topology !== 'single' || shared.topology !== 'single') throw new Error("sandbox: sharedUpstream joins a 'single' sandbox as a 'single' one");
		if (options.ipv6 || options.extraHostAddresses?.length || options.rpFilter !== undefined) {
			throw new Error('sandbox: sharedUpstream takes no ipv6, extraHostAddresses or rpFilter');
		}
	}
}

/** multihome: the uplink an extra address belongs on, and its CIDR (the uplink's prefix by default). */
function multihomeExtraAddress(raw: string): { uplink: UplinkInfo; cidr: string } {
	const [address, prefix] = raw.split('/') as [string, string | undefined];
	const family = isIP(address);
	for (const uplink of [UPLINK_A, UPLINK_B]) {
		const subnet = family === 6 ? uplink.subnet6 : uplink.subnet;
		const [net, bits] = subnet.split('/') as [string, string];
		const list = new BlockList();
		list.addSubnet(net, Number(bits), family === 6 ? 'ipv6' : 'ipv4');
		if (family !== 0 && list.check(address, family === 6 ? 'ipv6' : 'ipv4')) return { uplink, cidr: `${address}/${prefix ?? bits}` };
	}
	throw new Error(
		`sandbox: extra host address ${raw} is in none of the multihome uplink subnets (${[UPLINK_A, UPLINK_B].flatMap((u) => [u.subnet, u.subnet6]).join(', ')})`,
	);
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
