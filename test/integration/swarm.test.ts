// Issue 12, item 5: a Swarm of two Docker hosts runs pkg/stack.yml — one `docker egress watch` per
// node, as a global service of the image — and each node serves the per-node address labels for
// itself only.
//
//   node-a (sandbox A, manager)  192.0.2.1 (primary), .11, .12, .13      \
//                                                                         upstream: echo server 192.0.2.254,
//   node-b (sandbox B, worker)   198.51.100.1 (primary), .11, .12, .13   /  router between the two hosts
//
// Each daemon runs with its own hostname (node-a, node-b); swarm traffic (2377, 7946) stays on the
// test segment. The image is docker-egress:latest: $DOCKER_EGRESS_IMAGE_TAR if given (a `docker
// save` of the real one), else a stand-in imported from dist/docker-egress and the host's tools
// (test/helpers/egress-image.ts). The stack is pkg/stack.yml as shipped, but for the two bind-mount
// sources: both daemons share this machine's file system, so each node's socket and state directory
// are made distinct with Swarm's `{{.Node.Hostname}}` template.
//
// What is proven, with the echo server's answer (the address it saw):
//   - a bridge network created on each node with the same name and the label
//     docker-egress.source-ip=node-a=192.0.2.11,node-b=198.51.100.11: A egresses from .11 of its
//     own, B from 198.51.100.11 (Docker's masquerade would show the primaries, .1);
//   - a network whose list names node-a only: served on A; on B it fails closed (no answer at all,
//     status source-missing with the reason), never masqueraded from B's own address;
//   - a container labelled with a list keyed by Swarm node IDs: each node's copy egresses from its
//     node's entry.
//
// Without Swarm (every engine, 29-nftables included): one host whose daemon is named node-a serves
// a per-node label by its hostname with `sync`, and fails closed for a list that does not name it.
//
// Docker 29 with its nftables firewall backend refuses Swarm mode (`docker swarm init`: "Error
// response from daemon: --firewall-backend=nftables is incompatible with swarm mode"): on that
// engine the test is registered as skipped, with that reason.
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import anyTest from 'ava';
import { realDockerTest } from '../helpers/prereqs.js';
import { egressImageTar, EGRESS_IMAGE, loadEgressImage } from '../helpers/egress-image.js';
import { PROBE_IMAGE, repoRoot, Sandbox, selectedEngine } from '../helpers/sandbox.js';
import { egress } from './watch-helpers.js';

const test = realDockerTest(anyTest);
const engine = selectedEngine();
const NFTABLES_SWARM = 'Docker 29 refuses Swarm mode with its nftables firewall backend (swarm init: "--firewall-backend=nftables is incompatible with swarm mode")';
const swarmTest = engine.firewallBackend === 'nftables' ? test.skip : test.serial;
if (engine.firewallBackend === 'nftables') {
	console.warn(`\n!! SKIPPING ${join('test', 'integration', 'swarm.test.ts')}: ${NFTABLES_SWARM}\n`);
}

const STACK = 'egress';
const SERVICE = `${STACK}_watch`;
const BOTH = { network: 'z_swarm', label: 'node-a=192.0.2.11,node-b=198.51.100.11', a: '192.0.2.11', b: '198.51.100.11', subnet: '10.81.1.0/24' };
const ONLY_A = { network: 'z_swarm_a', label: 'node-a=192.0.2.12', a: '192.0.2.12', subnet: '10.81.2.0/24' };

swarmTest(`two-node swarm: pkg/stack.yml runs one watch per node; each node serves its own entry of per-node labels${engine.firewallBackend === 'nftables' ? ` (skipped: ${NFTABLES_SWARM})` : ''}`, async (t) => {
	t.timeout(180_000);
	const dir = `/tmp/eg-swarm-${process.pid}-${Date.now().toString(36)}`;
	mkdirSync(dir, { mode: 0o700 });
	t.teardown(() => rmSync(dir, { recursive: true, force: true }));
	for (const node of ['node-a', 'node-b']) mkdirSync(join(dir, node, 'state'), { recursive: true });
	const socketOf = (node: string) => join(dir, node, 'docker.sock');

	// The stand-in image is built while the two daemons start.
	const image = egressImageTar(dir);
	const a = await Sandbox.forTest(t, { hostname: 'node-a', dockerdArgs: ['--host', `unix://${socketOf('node-a')}`] });
	const b = await Sandbox.forTest(t, { hostname: 'node-b', sharedUpstream: a, dockerdArgs: ['--host', `unix://${socketOf('node-b')}`] });
	t.is((await a.docker(['info', '--format', '{{.Name}}'])).stdout.trim(), 'node-a');
	t.is((await b.docker(['info', '--format', '{{.Name}}'])).stdout.trim(), 'node-b');

	// The swarm: A manages, B joins; both advertise their primary address on the test segment.
	await a.docker(['swarm', 'init', '--advertise-addr', '192.0.2.1', '--listen-addr', '192.0.2.1:2377'], { timeout: 60_000 });
	const token = (await a.docker(['swarm', 'join-token', '-q', 'worker'])).stdout.trim();
	await b.docker(['swarm', 'join', '--token', token, '--advertise-addr', '198.51.100.1', '--listen-addr', '198.51.100.1:2377', '192.0.2.1:2377'], { timeout: 60_000 });
	const nodeIds = {
		a: (await a.docker(['info', '--format', '{{.Swarm.NodeID}}'])).stdout.trim(),
		b: (await b.docker(['info', '--format', '{{.Swarm.NodeID}}'])).stdout.trim(),
	};
	t.log(`swarm: node-a ${nodeIds.a} (manager), node-b ${nodeIds.b}`);

	const tar = await image;
	await Promise.all([loadEgressImage(a, tar), loadEgressImage(b, tar)]);

	// pkg/stack.yml, with each node's own socket and state directory.
	const shipped = readFileSync(join(repoRoot, 'pkg', 'stack.yml'), 'utf8');
	const stack = shipped
		.replace('source: /var/run/docker.sock', `source: ${dir}/{{.Node.Hostname}}/docker.sock`)
		.replace('source: /var/lib/docker-egress', `source: ${dir}/{{.Node.Hostname}}/state`);
	t.not(stack, shipped);
	// The egress backend of this run (DOCKER_EGRESS_FIREWALL_BACKEND) reaches the watches too.
	const backend = process.env.DOCKER_EGRESS_FIREWALL_BACKEND;
	const stackFile = backend ? stack.replace('    image: docker-egress:latest\n', `    image: docker-egress:latest\n    environment:\n      DOCKER_EGRESS_FIREWALL_BACKEND: ${backend}\n`) : stack;
	writeFileSync(join(dir, 'stack.yml'), stackFile);
	const deploy = await a.docker(['stack', 'deploy', '--resolve-image', 'never', '-c', join(dir, 'stack.yml'), STACK], { timeout: 60_000 });
	t.log(deploy.stdout.trim());
	const spec = JSON.parse((await a.docker(['service', 'inspect', SERVICE, '--format', '{{json .Spec}}'])).stdout) as ServiceSpec;
	t.is(spec.Mode.Global !== undefined, true, 'a global service');
	t.deepEqual(spec.TaskTemplate.ContainerSpec.CapabilityAdd, ['CAP_NET_ADMIN'], 'cap_add of the stack file reached the service');
	t.is(spec.TaskTemplate.ContainerSpec.Image, EGRESS_IMAGE);

	// One running watch per node, in the node's network namespace.
	for (const [sb, name] of [[a, 'node-a'], [b, 'node-b']] as const) {
		await eventually(`a running watch task on ${name}`, async () => (await sb.docker(['ps', '--filter', `label=com.docker.swarm.service.name=${SERVICE}`, '--format', '{{.State}}'], { reject: false })).stdout.trim(), (out) => out === 'running', 60_000, async () => taskStates(a));
	}

	// The same network on each node, with a per-node address.
	for (const sb of [a, b]) {
		await sb.docker(['network', 'create', '--subnet', BOTH.subnet, '--label', `docker-egress.source-ip=${BOTH.label}`, BOTH.network]);
	}

	t.is(await eventually('node-a egresses from its own entry', async () => a.tryProbe(BOTH.network), (seen) => seen === BOTH.a, 30_000), BOTH.a);
	t.is(await eventually('node-b egresses from its own entry', async () => b.tryProbe(BOTH.network), (seen) => seen === BOTH.b, 30_000), BOTH.b);

	// A list that names node-a only: served on A, fails closed on B.
	for (const sb of [a, b]) {
		await sb.docker(['network', 'create', '--subnet', ONLY_A.subnet, '--label', `docker-egress.source-ip=${ONLY_A.label}`, ONLY_A.network]);
	}

	t.is(await eventually('node-a serves a list that names it', async () => a.tryProbe(ONLY_A.network), (seen) => seen === ONLY_A.a, 30_000), ONLY_A.a);
	const onB = await eventually(
		'node-b shows the network it has no address for as source-missing',
		async () => (await egress(b, ['ls', '--no-trunc', '--format', '{{.Name}} {{.Status}} {{.StatusReason}}'])).stdout.split('\n').find((line) => line.startsWith(`${ONLY_A.network} `)) ?? '',
		(line) => line.includes('source-missing') && line.includes('dropped'),
		30_000,
	);
	t.regex(onB, /has no address for this node \(hostname node-b, Swarm node ID \w+; it names node-a\)/);
	t.is(await b.tryProbe(ONLY_A.network, { timeoutSeconds: 3 }), undefined, 'no answer: dropped, not masqueraded from 198.51.100.1');

	// A container whose label names each node by its Swarm node ID.
	const label = `docker-egress.source-ip=${nodeIds.a}=192.0.2.13,${nodeIds.b}=198.51.100.13`;
	for (const sb of [a, b]) {
		await sb.docker(['run', '-d', '--name', 'c_swarm', '--network', BOTH.network, '--label', label, PROBE_IMAGE, 'sleep', '600'], { timeout: 60_000 });
	}

	t.is(await eventually('the container on node-a egresses from node-a\'s entry', async () => probeFrom(a, 'c_swarm'), (seen) => seen === '192.0.2.13', 30_000), '192.0.2.13');
	t.is(await eventually('the container on node-b egresses from node-b\'s entry', async () => probeFrom(b, 'c_swarm'), (seen) => seen === '198.51.100.13', 30_000), '198.51.100.13');

	// Each watch logs what it served (the tasks' stderr comes back on the CLI's stderr).
	const logs = await a.docker(['service', 'logs', '--timestamps', SERVICE], { reject: false, timeout: 30_000 });
	t.log(`${logs.stdout}${logs.stderr}`.split('\n').filter(Boolean).sort().slice(-16).join('\n'));

	await a.docker(['stack', 'rm', STACK], { reject: false, timeout: 60_000 });
	await b.docker(['swarm', 'leave', '--force'], { reject: false, timeout: 30_000 });
	await a.docker(['swarm', 'leave', '--force'], { reject: false, timeout: 30_000 });
});

test.serial('one host, no swarm: a per-node label is served by the hostname docker info reports; a list without it fails closed', async (t) => {
	const sb = await Sandbox.forTest(t, { hostname: 'node-a' });
	await sb.docker(['network', 'create', '--subnet', BOTH.subnet, '--label', `docker-egress.source-ip=${BOTH.label}`, BOTH.network]);
	await sb.docker(['network', 'create', '--subnet', ONLY_A.subnet, '--label', 'docker-egress.source-ip=node-b=198.51.100.11, NODE-C=198.51.100.12', ONLY_A.network]);
	const sync = await egress(sb, ['sync']);
	t.is(sync.exitCode, 1, 'a network that fails closed makes sync exit non-zero');
	t.regex(sync.stdout, /added\s+z_swarm\s+10\.81\.1\.0\/24 -> 192\.0\.2\.11/);
	t.regex(sync.stderr, /network z_swarm_a fails closed \(its outbound traffic is dropped\): label docker-egress\.source-ip="node-b=198\.51\.100\.11, NODE-C=198\.51\.100\.12" has no address for this node \(hostname node-a, not a Swarm node; it names node-b, NODE-C\)/);
	t.is(await sb.probe(BOTH.network), BOTH.a);
	t.is(await sb.tryProbe(ONLY_A.network, { timeoutSeconds: 3 }), undefined, 'dropped, not masqueraded from 192.0.2.1');
	const ls = await egress(sb, ['ls', '--no-trunc', '--format', '{{.Name}} {{.SourceIP}} {{.Status}}']);
	t.deepEqual(ls.stdout.trim().split('\n'), ['z_swarm 192.0.2.11 active', 'z_swarm_a node-b=198.51.100.11, NODE-C=198.51.100.12 source-missing']);
	// A malformed list is invalid: its traffic is dropped too.
	await sb.docker(['network', 'create', '--subnet', '10.81.3.0/24', '--label', 'docker-egress.source-ip=node-a=192.0.2.13,node-b', 'z_swarm_bad']);
	const bad = await egress(sb, ['ls', '--no-trunc', '--format', '{{.Name}} {{.Status}} {{.StatusReason}}']);
	t.regex(bad.stdout, /z_swarm_bad invalid label docker-egress\.source-ip="node-a=192\.0\.2\.13,node-b": item 2 of 2 "node-b" has no '='/);
});

type ServiceSpec = { Mode: { Global?: object; Replicated?: object }; TaskTemplate: { ContainerSpec: { Image: string; CapabilityAdd?: string[] } } };

async function taskStates(manager: Sandbox): Promise<string> {
	const r = await manager.docker(['service', 'ps', '--no-trunc', '--format', '{{.Node}} {{.CurrentState}} {{.Error}}', SERVICE], { reject: false });
	return `${r.stdout}${r.stderr}`;
}

async function probeFrom(sb: Sandbox, container: string): Promise<string | undefined> {
	const script = `printf "GET /cgi-bin/ip HTTP/1.0\\r\\n\\r\\n" | timeout 5 nc ${sb.echoAddress} 80 | tail -1`;
	const r = await sb.docker(['exec', container, 'sh', '-c', script], { reject: false, timeout: 30_000 });
	return r.stdout.trim() || undefined;
}

async function eventually<T>(what: string, read: () => Promise<T>, ok: (value: T) => boolean, timeoutMs: number, explain?: () => Promise<string>): Promise<T> {
	const deadline = Date.now() + timeoutMs;
	for (;;) {
		const value = await read();
		if (ok(value)) return value;
		if (Date.now() > deadline) {
			const more = explain ? `\n${await explain()}` : '';
			throw new Error(`${what}: not within ${timeoutMs} ms; last seen: ${JSON.stringify(value)}${more}`);
		}

		await new Promise((resolve) => setTimeout(resolve, 500));
	}
}
