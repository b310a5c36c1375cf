// Issue 11: per-container egress addresses. A container labelled `docker-egress.source-ip=<IPv4>`
// egresses from that address on an egress network (its label wins over the network's address), on a
// plain user-defined bridge and on the default bridge; traffic to other containers and to the host
// is not translated. An address that cannot be served fails closed for that container only. `ps`,
// `inspect`, `verify --container` and completion show it; `sync` applies it, `watch` keeps it
// through the container life cycle, and no rule ever names a container that is gone.
//
// Every "what does it egress as" check here runs INSIDE the running container (`docker exec`), not
// in a throwaway container on its network: the label belongs to the container.
//
// The upstream has a route back to the container subnets (10.79.0.0/16 and the default bridge), so
// a container that should not egress at all but leaks its private address would be answered and seen.
import { join } from 'node:path';
import anyTest, { type ExecutionContext } from 'ava';
import { PRIMARY_ADDRESS, PROBE_IMAGE, useSandbox, type Sandbox } from '../helpers/sandbox.js';
import {
	addressOn,
	dropAllOurRules,
	fetchFrom,
	firewallNames,
	fullId,
	networksOf,
	peerEchoServer,
	probeFrom,
	psRows,
	removeContainers,
	rowsOf,
	runContainer,
	sync,
} from './containers-helpers.js';
import { eventually } from './firewall.js';
import { egress, startWatch } from './watch-helpers.js';

const { test, sandbox } = useSandbox(anyTest);

const EGRESS = { name: 'z_ct_egress', subnet: '10.79.1.0/24', ip: '192.0.2.11' };
const PLAIN = { name: 'z_ct_plain', subnet: '10.79.2.0/24' };
const URL = 'http://192.0.2.254/cgi-bin/ip';

// Long-lived containers of the first tests, reused by the ps / inspect / verify / completion tests.
const A_PLAIN = 'ct_egress_unlabelled';
const A_LABEL = { name: 'ct_egress_labelled', ip: '192.0.2.12' };
const B_DEFAULT = { name: 'ct_default_labelled', ip: '192.0.2.13' };
const B_PLAIN = { name: 'ct_plain_labelled', ip: '192.0.2.12' };
const B_UNLABELLED = 'ct_default_unlabelled';

async function syncOk(t: ExecutionContext, sb: Sandbox): Promise<void> {
	const r = await sync(sb);
	t.is(r.exitCode, 0, `sync: ${r.stdout}\n${r.stderr}`);
}

/** JSON output, or undefined when there is none (the failing assertion before says why). */
function parseJson<T = Record<string, unknown>>(text: string): T | undefined {
	try {
		return JSON.parse(text) as T;
	} catch {
		return undefined;
	}
}

test.serial('setup: an egress network, a plain bridge, a route back from the upstream; test mechanics work today', async (t) => {
	const sb = sandbox();
	await sb.execUpstream('ip', ['route', 'add', '10.79.0.0/16', 'via', PRIMARY_ADDRESS]);
	await sb.execUpstream('ip', ['route', 'add', '172.17.0.0/16', 'via', PRIMARY_ADDRESS]);
	const created = await egress(sb, ['create', EGRESS.name, '--source-ip', EGRESS.ip, '--subnet', EGRESS.subnet]);
	t.is(created.exitCode, 0, created.stderr);
	await sb.docker(['network', 'create', '--subnet', PLAIN.subnet, PLAIN.name]);
	await syncOk(t, sb);

	// The network-level behaviour the per-container tests build on (works without issue 11).
	t.is(await sb.probe(EGRESS.name), EGRESS.ip);
	t.is(await sb.probe(PLAIN.name), PRIMARY_ADDRESS);
	t.is(await sb.probe('bridge'), PRIMARY_ADDRESS);
	// The firewall reader the "no rule names it" checks use sees what is there.
	t.deepEqual(await firewallNames(sb, { names: [EGRESS.name], addresses: ['10.79.1.0', '10.79.1.10'] }), [EGRESS.name, '10.79.1.0']);
	// Probing from inside a running container, as every test below does.
	await runContainer(sb, 'ct_mechanics', { network: EGRESS.name });
	try {
		t.is(await probeFrom(sb, 'ct_mechanics'), EGRESS.ip);
	} finally {
		await removeContainers(sb, 'ct_mechanics');
	}
});

test.serial('two containers on one egress network, one labelled with another address: each egresses from its own', async (t) => {
	const sb = sandbox();
	await runContainer(sb, A_PLAIN, { network: EGRESS.name });
	await runContainer(sb, A_LABEL.name, { network: EGRESS.name, egressLabels: { 'source-ip': A_LABEL.ip } });
	await syncOk(t, sb);
	t.is(await probeFrom(sb, A_LABEL.name), A_LABEL.ip, "the container's label wins over the network's address");
	t.is(await probeFrom(sb, A_PLAIN), EGRESS.ip, "an unlabelled container keeps its network's address");
	t.is(await sb.probe(EGRESS.name), EGRESS.ip, 'and so does a new one');
});

test.serial('a labelled container on the default bridge and one on a plain user-defined bridge; an unlabelled one on the default bridge still uses the primary', async (t) => {
	const sb = sandbox();
	await runContainer(sb, B_DEFAULT.name, { egressLabels: { 'source-ip': B_DEFAULT.ip } });
	await runContainer(sb, B_PLAIN.name, { network: PLAIN.name, egressLabels: { 'source-ip': B_PLAIN.ip } });
	await runContainer(sb, B_UNLABELLED, {});
	await syncOk(t, sb);
	t.is(await probeFrom(sb, B_DEFAULT.name), B_DEFAULT.ip);
	t.is(await probeFrom(sb, B_PLAIN.name), B_PLAIN.ip);
	t.is(await probeFrom(sb, B_UNLABELLED), PRIMARY_ADDRESS);
	t.is(await sb.probe('bridge'), PRIMARY_ADDRESS);
	t.is(await sb.probe(PLAIN.name), PRIMARY_ADDRESS);
});

test.serial('traffic of a labelled container to another container and to the host itself is not translated', async (t) => {
	const sb = sandbox();
	const server = 'ct_peer_server';
	await runContainer(sb, server, { network: EGRESS.name, cmd: peerEchoServer(8080) });
	// A server on the host itself (its primary address), answering with the peer's address.
	const hostServer = sb.exec('busybox', ['httpd', '-f', '-p', `${PRIMARY_ADDRESS}:8081`, '-h', join(sb.dir, 'www')], { reject: false });
	t.teardown(async () => {
		hostServer.kill('SIGTERM');
		await hostServer;
		await removeContainers(sb, server);
	});
	const serverIp = await addressOn(sb, server, EGRESS.name);
	const own = await addressOn(sb, A_LABEL.name, EGRESS.name);
	const seenByPeer = await eventually('peer server answers', async () => fetchFrom(sb, A_LABEL.name, serverIp, 8080), (v) => v !== undefined, 10_000);
	t.is(seenByPeer, own, 'a container on the same network sees the private address');
	const seenByHost = await eventually('host server answers', async () => fetchFrom(sb, A_LABEL.name, PRIMARY_ADDRESS, 8081), (v) => v !== undefined, 10_000);
	t.is(seenByHost, own, 'the host sees the private address');
	const seenByHostFromDefault = await fetchFrom(sb, B_DEFAULT.name, PRIMARY_ADDRESS, 8081);
	t.is(seenByHostFromDefault, await addressOn(sb, B_DEFAULT.name, 'bridge'), 'from the default bridge too');
	t.is(await probeFrom(sb, A_LABEL.name), A_LABEL.ip, 'while the outside still sees the label');
});

test.serial('fail closed: a label the host cannot serve (absent, malformed, wrong family, inside its own subnet) -> no egress at all for that container, others fine; ps says why', async (t) => {
	const sb = sandbox();
	const bad = [
		{ name: 'ct_bad_missing', network: EGRESS.name, label: '192.0.2.50', status: 'source-missing', reason: /192\.0\.2\.50/ },
		{ name: 'ct_bad_missing_default', network: 'bridge', label: '192.0.2.51', status: 'source-missing', reason: /192\.0\.2\.51/ },
		{ name: 'ct_bad_malformed', network: EGRESS.name, label: '192.0.2.300', status: 'invalid', reason: /192\.0\.2\.300/ },
		{ name: 'ct_bad_family', network: PLAIN.name, label: '2001:db8:a::11', status: 'invalid', reason: /2001:db8:a::11/ },
		// The egress network's gateway: an address of the host, but inside the container's own subnet.
		{ name: 'ct_bad_subnet', network: EGRESS.name, label: '10.79.1.1', status: 'invalid', reason: /10\.79\.1\.1/ },
	];
	t.teardown(async () => {
		await removeContainers(sb, ...bad.map((c) => c.name), 'ct_bad_host', 'ct_bad_none');
		await sync(sb);
	});
	for (const c of bad) await runContainer(sb, c.name, { network: c.network, egressLabels: { 'source-ip': c.label } });
	await runContainer(sb, 'ct_bad_host', { network: 'host', egressLabels: { 'source-ip': '192.0.2.12' } });
	await runContainer(sb, 'ct_bad_none', { network: 'none', egressLabels: { 'source-ip': '192.0.2.12' } });

	const r = await sync(sb);
	t.is(r.exitCode, 1, `a container that cannot be served makes sync exit 1\n${r.stdout}\n${r.stderr}`);
	for (const c of bad) t.true(r.stderr.includes(c.name), `sync names ${c.name} on stderr:\n${r.stderr}`);

	// Masquerade is off on the egress network (a leak shows 10.79.1.x, or the network's .11);
	// on the plain network and the default bridge a leak shows Docker's 192.0.2.1.
	for (const c of bad) t.is(await probeFrom(sb, c.name, { timeoutSeconds: 3 }), undefined, `${c.name} (label ${c.label}) must not egress at all`);
	t.is(await probeFrom(sb, A_PLAIN), EGRESS.ip, 'others on the same network are fine');
	t.is(await probeFrom(sb, A_LABEL.name), A_LABEL.ip);
	t.is(await probeFrom(sb, B_UNLABELLED), PRIMARY_ADDRESS);
	t.is(await probeFrom(sb, B_PLAIN.name), B_PLAIN.ip);

	const rows = await psRows(sb);
	for (const c of bad) {
		const [row] = rowsOf(rows, c.name);
		t.truthy(row, `ps lists ${c.name}:\n${JSON.stringify(rows, null, 1)}`);
		t.is(row?.Status, c.status, c.name);
		t.regex(row?.StatusReason ?? '', c.reason, c.name);
	}
	t.regex(rowsOf(rows, 'ct_bad_missing')[0]?.StatusReason ?? '', /not an address of this host/);
	for (const name of ['ct_bad_host', 'ct_bad_none']) {
		const listed = rowsOf(rows, name);
		t.true(listed.length > 0, `ps lists ${name} (skipped with a reason)`);
		for (const row of listed) {
			t.is(row.Status, 'invalid', name);
			t.truthy(row.StatusReason, `${name} has a reason`);
		}
	}
	t.is(rowsOf(rows, 'ct_bad_host')[0]?.Network, 'host');
	t.is(rowsOf(rows, 'ct_bad_none')[0]?.Network, 'none');
});

test.serial('stop a labelled container, start an unlabelled one on its old IP, restart the first: the new one egresses from its network, the first from its label', async (t) => {
	const sb = sandbox();
	const first = 'ct_reuse_first';
	const second = 'ct_reuse_second';
	t.teardown(async () => removeContainers(sb, first, second));
	await runContainer(sb, first, { network: EGRESS.name, egressLabels: { 'source-ip': '192.0.2.13' } });
	const firstId = await fullId(sb, first);
	const oldIp = await addressOn(sb, first, EGRESS.name);
	await syncOk(t, sb);
	t.is(await probeFrom(sb, first), '192.0.2.13');

	await sb.docker(['stop', first]);
	await syncOk(t, sb);
	const stopped = rowsOf(await psRows(sb, ['-a']), first);
	t.is(stopped.length, 1, JSON.stringify(stopped));
	t.is(stopped[0]?.Status, 'stopped');
	t.deepEqual(rowsOf(await psRows(sb), first), [], 'a stopped container is listed only with -a');
	t.deepEqual(await firewallNames(sb, { addresses: [oldIp] }), [], `no rule names ${oldIp} once its container stopped`);

	await runContainer(sb, second, { network: EGRESS.name, ip: oldIp });
	await syncOk(t, sb);
	t.is(await probeFrom(sb, second), EGRESS.ip, `the new owner of ${oldIp} does not inherit the label's address`);

	await sb.docker(['start', first]);
	await syncOk(t, sb);
	const newIp = await addressOn(sb, first, EGRESS.name);
	t.not(newIp, oldIp);
	t.is(await probeFrom(sb, first), '192.0.2.13');
	t.is(await probeFrom(sb, second), EGRESS.ip);
	const [row] = rowsOf(await psRows(sb), first);
	t.like(row, { ID: firstId.slice(0, 12), Network: EGRESS.name, Address: newIp, SourceIP: '192.0.2.13', Status: 'active' });
});

test.serial('compose-like scale: every replica of a labelled service egresses from the label; scaling down leaves no rule behind', async (t) => {
	const sb = sandbox();
	const compose = await sb.docker(['compose', 'version'], { reject: false });
	const replicas = ['ctscale-app-1', 'ctscale-app-2', 'ctscale-app-3'];
	const network = 'ctscale_default';
	t.teardown(async () => {
		await removeContainers(sb, ...replicas);
		await sb.docker(['network', 'rm', network], { reject: false });
	});
	if (compose.exitCode === 0) {
		const { writeFileSync } = await import('node:fs');
		const file = join(sb.dir, 'ctscale-compose.yaml');
		writeFileSync(
			file,
			[
				'services:',
				'  app:',
				`    image: ${PROBE_IMAGE}`,
				'    command: ["sh", "-c", "trap \\"exit 0\\" TERM INT; while true; do sleep 1; done"]',
				'    labels:',
				'      docker-egress.source-ip: "192.0.2.13"',
				'networks:',
				'  default:',
				'    ipam:',
				'      config:',
				'        - subnet: 10.79.3.0/24',
				'',
			].join('\n'),
		);
		await sb.docker(['compose', '-p', 'ctscale', '-f', file, 'up', '-d', '--scale', 'app=3'], { timeout: 120_000 });
		t.log('a real compose project (docker compose)');
	} else {
		// No compose plugin here: what compose does, by hand (its labels, its default network).
		t.log('docker compose not installed: three `docker run` with compose labels');
		await sb.docker(['network', 'create', '--subnet', '10.79.3.0/24', '--label', 'com.docker.compose.project=ctscale', '--label', 'com.docker.compose.network=default', network]);
		for (const [i, name] of replicas.entries()) {
			await runContainer(sb, name, {
				network,
				egressLabels: { 'source-ip': '192.0.2.13' },
				labels: { 'com.docker.compose.project': 'ctscale', 'com.docker.compose.service': 'app', 'com.docker.compose.container-number': String(i + 1) },
			});
		}
	}
	await syncOk(t, sb);
	for (const name of replicas) t.is(await probeFrom(sb, name), '192.0.2.13', name);
	const rows = await psRows(sb);
	for (const name of replicas) t.like(rowsOf(rows, name)[0], { Network: network, SourceIP: '192.0.2.13', Status: 'active' }, name);

	const gone = replicas[2]!;
	const goneId = await fullId(sb, gone);
	const goneIp = await addressOn(sb, gone, network);
	await sb.docker(['rm', '-f', gone]);
	await syncOk(t, sb);
	t.deepEqual(await firewallNames(sb, { names: [gone, goneId.slice(0, 12)], addresses: [goneIp] }), []);
	t.deepEqual(rowsOf(await psRows(sb, ['-a']), gone), []);
	for (const name of replicas.slice(0, 2)) t.is(await probeFrom(sb, name), '192.0.2.13', name);
});

test.serial('disconnect / connect and removal: the rule follows the container, and none names a container that is gone', async (t) => {
	const sb = sandbox();
	const name = 'ct_moving';
	t.teardown(async () => removeContainers(sb, name));
	const id = await runContainer(sb, name, { network: EGRESS.name, egressLabels: { 'source-ip': '192.0.2.12' } });
	await syncOk(t, sb);
	const onEgress = await addressOn(sb, name, EGRESS.name);
	t.is(await probeFrom(sb, name), '192.0.2.12');

	await sb.docker(['network', 'disconnect', EGRESS.name, name]);
	await sb.docker(['network', 'connect', PLAIN.name, name]);
	await syncOk(t, sb);
	const onPlain = await addressOn(sb, name, PLAIN.name);
	t.is(await probeFrom(sb, name), '192.0.2.12', 'on the plain network now, still from its label');
	t.deepEqual(await firewallNames(sb, { addresses: [onEgress] }), [], 'its old address is in no rule');
	t.deepEqual(
		rowsOf(await psRows(sb), name).map((row) => [row.Network, row.Address, row.SourceIP]),
		[[PLAIN.name, onPlain, '192.0.2.12']],
	);

	await sb.docker(['network', 'connect', EGRESS.name, name]);
	await syncOk(t, sb);
	const both = rowsOf(await psRows(sb), name);
	t.deepEqual(both.map((row) => row.Network).sort(), [EGRESS.name, PLAIN.name].sort(), 'one row per network');
	for (const row of both) t.is(row.Status, 'active', row.Network);
	t.is(await probeFrom(sb, name), '192.0.2.12');
	const addresses = Object.values(await networksOf(sb, name)).map((net) => net.IPAddress);

	await sb.docker(['rm', '-f', name]);
	await syncOk(t, sb);
	t.deepEqual(await firewallNames(sb, { names: [name, id.slice(0, 12)], addresses }), [], 'no rule names the removed container');
	t.deepEqual(rowsOf(await psRows(sb, ['-a']), name), []);
});

test.serial('ps: JSON lines, -q, --no-trunc, table, a template', async (t) => {
	const sb = sandbox();
	const labelled = [A_LABEL, B_DEFAULT, B_PLAIN];
	const ids = new Map<string, string>();
	for (const c of labelled) ids.set(c.name, await fullId(sb, c.name));
	const network = new Map([
		[A_LABEL.name, EGRESS.name],
		[B_DEFAULT.name, 'bridge'],
		[B_PLAIN.name, PLAIN.name],
	]);

	const rows = await psRows(sb);
	for (const c of labelled) {
		const net = network.get(c.name)!;
		t.deepEqual(
			rowsOf(rows, c.name).map(({ ID, Name, Network, Address, SourceIP, Status }) => ({ ID, Name, Network, Address, SourceIP, Status })),
			[{ ID: ids.get(c.name)!.slice(0, 12), Name: c.name, Network: net, Address: await addressOn(sb, c.name, net), SourceIP: c.ip, Status: 'active' }],
		);
		t.is(typeof rowsOf(rows, c.name)[0]?.StatusReason, 'string', 'StatusReason is there (empty when active)');
	}
	for (const name of [A_PLAIN, B_UNLABELLED]) t.deepEqual(rowsOf(rows, name), [], `${name} has no address of its own: not listed`);

	const noTrunc = await psRows(sb, ['--no-trunc']);
	t.is(rowsOf(noTrunc, A_LABEL.name)[0]?.ID, ids.get(A_LABEL.name));

	const quiet = await egress(sb, ['ps', '-q']);
	t.is(quiet.exitCode, 0, quiet.stderr);
	const quietIds = quiet.stdout.split('\n').filter(Boolean);
	t.is(new Set(quietIds).size, quietIds.length, 'each container once');
	t.deepEqual([...quietIds].sort(), [...new Set(rows.map((row) => row.ID))].sort());
	for (const c of labelled) t.true(quietIds.includes(ids.get(c.name)!.slice(0, 12)), c.name);

	const table = await egress(sb, ['ps']);
	t.is(table.exitCode, 0, table.stderr);
	const [header, ...lines] = table.stdout.split('\n').filter(Boolean);
	t.regex(header ?? '', /^ID\s+NAME\s+NETWORK\s+ADDRESS\s+SOURCE IP\s+STATUS\s*$/);
	const line = lines.find((l) => l.split(/\s+/).includes(A_LABEL.name));
	t.truthy(line, table.stdout);
	t.deepEqual(line?.trim().split(/\s+/), [ids.get(A_LABEL.name)!.slice(0, 12), A_LABEL.name, EGRESS.name, await addressOn(sb, A_LABEL.name, EGRESS.name), A_LABEL.ip, 'active']);
	const explicitTable = await egress(sb, ['ps', '--format', 'table']);
	t.is(explicitTable.stdout, table.stdout);

	const template = await egress(sb, ['ps', '--format', '{{.Name}} {{.SourceIP}} {{.Status}}']);
	t.is(template.exitCode, 0, template.stderr);
	t.true(template.stdout.split('\n').includes(`${B_PLAIN.name} ${B_PLAIN.ip} active`), template.stdout);
});

test.serial('ps -a: a stopped labelled container is listed as stopped; started again, active', async (t) => {
	const sb = sandbox();
	await sb.docker(['stop', B_PLAIN.name]);
	try {
		t.deepEqual(rowsOf(await psRows(sb), B_PLAIN.name), []);
		const all = rowsOf(await psRows(sb, ['-a']), B_PLAIN.name);
		t.true(all.length >= 1, JSON.stringify(all));
		for (const row of all) t.like(row, { SourceIP: B_PLAIN.ip, Status: 'stopped' });
		const quiet = (await egress(sb, ['ps', '-a', '-q'])).stdout.split('\n');
		t.true(quiet.includes((await fullId(sb, B_PLAIN.name)).slice(0, 12)));
	} finally {
		await sb.docker(['start', B_PLAIN.name]);
	}
	await syncOk(t, sb);
	t.like(rowsOf(await psRows(sb), B_PLAIN.name)[0], { Status: 'active', SourceIP: B_PLAIN.ip });
	t.is(await probeFrom(sb, B_PLAIN.name), B_PLAIN.ip);
});

test.serial("inspect NETWORK lists its containers' own addresses (ContainerEgress)", async (t) => {
	const sb = sandbox();
	const r = await egress(sb, ['inspect', EGRESS.name]);
	t.is(r.exitCode, 0, r.stderr);
	const [view] = JSON.parse(r.stdout) as Array<{ ContainerEgress?: Array<{ ID: string; Name: string; Address: string; SourceIP: string; Status: string }> }>;
	const entries = view?.ContainerEgress;
	t.true(Array.isArray(entries), r.stdout);
	const id = await fullId(sb, A_LABEL.name);
	const own = (entries ?? []).filter((entry) => entry.Name === A_LABEL.name || entry.Name === `/${A_LABEL.name}`);
	t.is(own.length, 1, JSON.stringify(entries));
	t.like(own[0], { SourceIP: A_LABEL.ip, Status: 'active' });
	t.true(id.startsWith(own[0]?.ID ?? '-') && (own[0]?.ID.length ?? 0) >= 12, `ID ${own[0]?.ID} of ${id}`);
	t.is(own[0]?.Address.split(',')[0]?.split('/')[0], await addressOn(sb, A_LABEL.name, EGRESS.name));
	t.false((entries ?? []).some((entry) => entry.Name.replace(/^\//, '') === A_PLAIN), 'an unlabelled container has no entry');

	const plain = JSON.parse((await egress(sb, ['inspect', EGRESS.name])).stdout) as Array<{ Containers: Array<{ Name: string }> }>;
	t.true(plain[0]!.Containers.some((c) => c.Name.replace(/^\//, '') === A_PLAIN), 'Containers still lists every attached container');
});

test.serial('verify --container: what the container itself gets, against what the echo server sees', async (t) => {
	const sb = sandbox();
	const before = (await sb.docker(['ps', '-aq'])).stdout.trim().split('\n').sort();

	for (const c of [A_LABEL, B_DEFAULT, B_PLAIN]) {
		const seen = await probeFrom(sb, c.name);
		const r = await egress(sb, ['verify', '--container', c.name, '--url', URL, '--image', PROBE_IMAGE, '--format', 'json']);
		t.is(r.exitCode, 0, `${c.name}: ${r.stdout}\n${r.stderr}`);
		const result = parseJson<{ Expected: string[]; Observed: string | null; Match: boolean }>(r.stdout);
		t.like(result, { Expected: [c.ip], Observed: c.ip, Match: true });
		t.is(result?.Observed ?? undefined, seen, 'the same as what the echo server answered the container itself');
		t.true(r.stdout.includes(c.name), `the result names the container: ${r.stdout}`);
	}

	const text = await egress(sb, ['verify', '--container', A_LABEL.name, '--url', URL, '--image', PROBE_IMAGE], { viaCli: true });
	t.is(text.exitCode, 0, text.stderr);
	t.regex(text.stdout, new RegExp(`${A_LABEL.name}`));
	t.regex(text.stdout, /^expected {2}192\.0\.2\.12$/m);
	t.regex(text.stdout, /^observed {2}192\.0\.2\.12$/m);
	t.regex(text.stdout, /^result {4}match$/m);

	// All of our rules gone: the container on the plain (masquerading) network leaves as Docker's
	// primary address, and verify says so.
	await dropAllOurRules(sb);
	try {
		const seen = await probeFrom(sb, B_PLAIN.name);
		t.is(seen, PRIMARY_ADDRESS);
		const bad = await egress(sb, ['verify', '--container', B_PLAIN.name, '--url', URL, '--image', PROBE_IMAGE, '--format', 'json']);
		t.is(bad.exitCode, 1, bad.stderr);
		t.like(parseJson(bad.stdout), { Expected: [B_PLAIN.ip], Observed: PRIMARY_ADDRESS, Match: false });
		t.regex(bad.stderr, /egress is 192\.0\.2\.1, expected 192\.0\.2\.12/);
	} finally {
		await syncOk(t, sb);
	}

	const missing = await egress(sb, ['verify', '--container', 'ct_no_such_container', '--url', URL, '--image', PROBE_IMAGE]);
	t.not(missing.exitCode, 0);
	t.regex(missing.stderr, /ct_no_such_container/);

	const after = (await sb.docker(['ps', '-aq'])).stdout.trim().split('\n').sort();
	t.deepEqual(after, before, 'verify leaves no container behind');
});

test.serial('completion: verify --container offers container names', async (t) => {
	const sb = sandbox();
	// What the CLI runs on <TAB>: `docker-egress __complete egress verify --container ''`.
	const all = await egress(sb, ['verify', '--container', ''], { globalArgs: ['__complete'] });
	t.is(all.exitCode, 0, all.stderr);
	const offered = all.stdout.split('\n').filter(Boolean);
	t.regex(offered.at(-1) ?? '', /^:\d+$/, 'ends with the completion directive');
	for (const name of [A_LABEL.name, B_DEFAULT.name, B_PLAIN.name]) t.true(offered.some((line) => line.split('\t')[0] === name), `${name} offered:\n${all.stdout}`);

	const prefixed = await egress(sb, ['verify', '--container', 'ct_default_'], { globalArgs: ['__complete'] });
	const names = prefixed.stdout.split('\n').filter((line) => line && !line.startsWith(':')).map((line) => line.split('\t')[0]);
	t.true(names.includes(B_DEFAULT.name), prefixed.stdout);
	t.false(names.includes(A_LABEL.name), prefixed.stdout);

	// And through the real CLI.
	sb.installPlugin();
	const cli = await sb.docker(['__complete', 'egress', 'verify', '--container', 'ct_plain_'], { env: { DOCKER_HOST: sb.dockerHost } });
	t.true(cli.stdout.split('\n').some((line) => line.split('\t')[0] === B_PLAIN.name), cli.stdout);
});

test.serial('watch, without any manual sync: start -> label within 10 s, restart, reuse of the address, connect/disconnect, rm', async (t) => {
	const sb = sandbox();
	const name = 'ct_watched';
	const successor = 'ct_successor';
	t.teardown(async () => removeContainers(sb, name, successor));
	await startWatch(t, sb, { interval: '1' });
	const fromLabel = async (ctr: string, ip: string) =>
		eventually(`${ctr} egresses from ${ip}`, async () => probeFrom(sb, ctr, { timeoutSeconds: 2 }), (seen) => seen === ip, 10_000);

	const id = await runContainer(sb, name, { network: EGRESS.name, egressLabels: { 'source-ip': '192.0.2.13' } });
	t.is(await fromLabel(name, '192.0.2.13'), '192.0.2.13');
	await eventually('ps active', async () => rowsOf(await psRows(sb), name)[0]?.Status, (s) => s === 'active');

	await sb.docker(['restart', name]);
	t.is(await fromLabel(name, '192.0.2.13'), '192.0.2.13', 'after a restart');

	// Stopped: its address goes to a new, unlabelled container, which must egress from its network.
	const oldIp = await addressOn(sb, name, EGRESS.name);
	await sb.docker(['stop', name]);
	await eventually('no rule for the stopped container', async () => firewallNames(sb, { addresses: [oldIp] }), (left) => left.length === 0);
	await runContainer(sb, successor, { network: EGRESS.name, ip: oldIp });
	t.is(await fromLabel(successor, EGRESS.ip), EGRESS.ip, `the new owner of ${oldIp} egresses from its network's address`);
	await sb.docker(['start', name]);
	t.is(await fromLabel(name, '192.0.2.13'), '192.0.2.13', 'started again, on a new address');
	t.is(await probeFrom(sb, successor), EGRESS.ip);

	// Moved to the plain network.
	const onEgress = await addressOn(sb, name, EGRESS.name);
	await sb.docker(['network', 'connect', PLAIN.name, name]);
	await sb.docker(['network', 'disconnect', EGRESS.name, name]);
	t.is(await fromLabel(name, '192.0.2.13'), '192.0.2.13', 'on the plain network');
	await eventually('no rule for its old address', async () => firewallNames(sb, { addresses: [onEgress] }), (left) => left.length === 0);
	const addresses = Object.values(await networksOf(sb, name)).map((net) => net.IPAddress);

	await sb.docker(['rm', '-f', name]);
	await eventually('no rule names the removed container', async () => firewallNames(sb, { names: [name, id.slice(0, 12)], addresses }), (left) => left.length === 0);
	t.deepEqual(rowsOf(await psRows(sb, ['-a']), name), []);
	t.is(await probeFrom(sb, successor), EGRESS.ip);
});

test.serial('cleanup: removing the labelled containers leaves no container rule', async (t) => {
	const sb = sandbox();
	const names = [A_PLAIN, A_LABEL.name, B_DEFAULT.name, B_PLAIN.name, B_UNLABELLED];
	const ids = await Promise.all(names.map(async (name) => (await fullId(sb, name)).slice(0, 12)));
	const addresses = (await Promise.all(names.map(async (name) => Object.values(await networksOf(sb, name)).map((net) => net.IPAddress)))).flat();
	await removeContainers(sb, ...names);
	await syncOk(t, sb);
	t.deepEqual(await firewallNames(sb, { names: [...names, ...ids], addresses }), []);
	t.deepEqual(await psRows(sb, ['-a']), []);
	t.is(await sb.probe(EGRESS.name), EGRESS.ip, 'the network rule stays');
});
