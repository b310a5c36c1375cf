// Issue 11 on the two-provider host (topology 'multihome', dual-stack, BCP 38 on both routers):
// a container's own IPv6 address (`docker-egress.source-ipv6`), and a container whose address is on
// the second uplink (`docker-egress.via` / `via6`: policy routing as for networks). The echo server
// sees 198.51.100.x / 2001:db8:b::x only if the packet really left through uplink B.
import anyTest, { type ExecutionContext } from 'ava';
import { PRIMARY_ADDRESS, PROBE_IMAGE, useSandbox, type Sandbox } from '../helpers/sandbox.js';
import { firewallNames, mentionsAddress, networksOf, ourRoutingText, probeFrom, psRows, removeContainers, rowsOf, runContainer, sync } from './containers-helpers.js';
import { egress } from './watch-helpers.js';

const { test, sandbox } = useSandbox(anyTest, { topology: 'multihome' });

const DUAL = { name: 'z_cm_dual', subnet: '10.79.6.0/24', subnet6: '2001:db8:79:6::/64' };
const EGRESS6 = { name: 'z_cm_egress6', subnet: '10.79.8.0/24', subnet6: '2001:db8:79:8::/64', ip: '192.0.2.11', ip6: '2001:db8:a::11' };
const UPLINK_B = { name: 'z_cm_b', subnet: '10.79.7.0/24', subnet6: '2001:db8:79:7::/64' };

async function syncOk(t: ExecutionContext, sb: Sandbox): Promise<void> {
	const r = await sync(sb);
	t.is(r.exitCode, 0, `sync: ${r.stdout}\n${r.stderr}`);
}

function parseJson<T = Record<string, unknown>>(text: string): T | undefined {
	try {
		return JSON.parse(text) as T;
	} catch {
		return undefined;
	}
}

async function addresses(sb: Sandbox, name: string, network: string): Promise<{ v4: string; v6: string }> {
	const net = (await networksOf(sb, name))[network];
	if (!net?.IPAddress || !net.GlobalIPv6Address) throw new Error(`${name} has no dual-stack endpoint on ${network}: ${JSON.stringify(net)}`);
	return { v4: net.IPAddress, v6: net.GlobalIPv6Address };
}

test.serial('setup: dual-stack networks; probing IPv6 from inside a running container works today (network-level source-ipv6)', async (t) => {
	const sb = sandbox();
	for (const n of [DUAL, UPLINK_B]) {
		await sb.docker(['network', 'create', '--ipv6', '--subnet', n.subnet, '--subnet', n.subnet6, n.name]);
	}
	const created = await egress(sb, ['create', EGRESS6.name, '--source-ip', EGRESS6.ip, '--source-ipv6', EGRESS6.ip6, '--subnet', EGRESS6.subnet, '--subnet6', EGRESS6.subnet6]);
	t.is(created.exitCode, 0, created.stderr);
	await syncOk(t, sb);
	t.is(await sb.probe(DUAL.name), PRIMARY_ADDRESS);

	await runContainer(sb, 'cm_mechanics', { network: EGRESS6.name });
	try {
		t.is(await probeFrom(sb, 'cm_mechanics'), EGRESS6.ip);
		t.is(await probeFrom(sb, 'cm_mechanics', { family: 6 }), EGRESS6.ip6);
	} finally {
		await removeContainers(sb, 'cm_mechanics');
	}
});

test.serial('IPv6: a container with source-ip and source-ipv6 egresses from both; ps and verify --container show them', async (t) => {
	const sb = sandbox();
	const name = 'cm_dual_both';
	t.teardown(async () => removeContainers(sb, name));
	const id = await runContainer(sb, name, { network: DUAL.name, egressLabels: { 'source-ip': '192.0.2.12', 'source-ipv6': '2001:db8:a::11' } });
	await syncOk(t, sb);
	t.is(await probeFrom(sb, name), '192.0.2.12');
	t.is(await probeFrom(sb, name, { family: 6 }), '2001:db8:a::11');

	const own = await addresses(sb, name, DUAL.name);
	const rows = rowsOf(await psRows(sb), name);
	t.deepEqual(
		rows.map(({ ID, Network, Address, SourceIP, Status }) => ({ ID, Network, Address, SourceIP, Status })),
		[{ ID: id.slice(0, 12), Network: DUAL.name, Address: `${own.v4},${own.v6}`, SourceIP: '192.0.2.12,2001:db8:a::11', Status: 'active' }],
	);

	for (const family of [4, 6] as const) {
		const expected = family === 4 ? '192.0.2.12' : '2001:db8:a::11';
		const r = await egress(sb, ['verify', '--container', name, '--url', sb.echoUrl(family), '--image', PROBE_IMAGE, '--format', 'json']);
		t.is(r.exitCode, 0, `IPv${family}: ${r.stdout}\n${r.stderr}`);
		t.like(parseJson(r.stdout), { Observed: expected, Match: true });
		t.true((parseJson<{ Expected: string[] }>(r.stdout)?.Expected ?? []).includes(expected));
	}

	await sb.docker(['rm', '-f', name]);
	await syncOk(t, sb);
	t.deepEqual(await firewallNames(sb, { names: [name, id.slice(0, 12)], addresses: [own.v4, own.v6] }), [], 'no rule names the removed container (either family)');
});

test.serial("IPv6: on an egress network, the container's IPv6 label wins over the network's", async (t) => {
	const sb = sandbox();
	const labelled = 'cm_v6_labelled';
	const plain = 'cm_v6_unlabelled';
	t.teardown(async () => removeContainers(sb, labelled, plain));
	await runContainer(sb, labelled, { network: EGRESS6.name, egressLabels: { 'source-ip': '192.0.2.13', 'source-ipv6': '2001:db8:a::1' } });
	await runContainer(sb, plain, { network: EGRESS6.name });
	await syncOk(t, sb);
	t.is(await probeFrom(sb, labelled), '192.0.2.13');
	t.is(await probeFrom(sb, labelled, { family: 6 }), '2001:db8:a::1');
	t.is(await probeFrom(sb, plain), EGRESS6.ip);
	t.is(await probeFrom(sb, plain, { family: 6 }), EGRESS6.ip6);
});

test.serial('IPv6 fail closed: an IPv6 label the host lacks -> no IPv6 egress for that container; ps says source-missing', async (t) => {
	const sb = sandbox();
	const name = 'cm_v6_missing';
	t.teardown(async () => {
		await removeContainers(sb, name);
		await sync(sb);
	});
	// On the egress network: a leak would show the network's 2001:db8:a::11 (on every engine).
	await runContainer(sb, name, { network: EGRESS6.name, egressLabels: { 'source-ip': '192.0.2.12', 'source-ipv6': '2001:db8:a::99' } });
	const r = await sync(sb);
	t.is(r.exitCode, 1, `${r.stdout}\n${r.stderr}`);
	t.true(r.stderr.includes(name), r.stderr);
	t.is(await probeFrom(sb, name, { family: 6, timeoutSeconds: 3 }), undefined);
	const [row] = rowsOf(await psRows(sb), name);
	t.is(row?.Status, 'source-missing');
	t.regex(row?.StatusReason ?? '', /2001:db8:a::99/);
});

test.serial('second uplink: a container with docker-egress.via / via6 leaves through uplink B from its own address; its neighbour through A', async (t) => {
	const sb = sandbox();
	const name = 'cm_uplink_b';
	const neighbour = 'cm_neighbour_b';
	t.teardown(async () => removeContainers(sb, name, neighbour));
	const id = await runContainer(sb, name, {
		network: UPLINK_B.name,
		egressLabels: { 'source-ip': '198.51.100.11', via: '198.51.100.254', 'source-ipv6': '2001:db8:b::11', via6: '2001:db8:b::254' },
	});
	await runContainer(sb, neighbour, { network: UPLINK_B.name });
	await syncOk(t, sb);

	const before = await sb.routerCounters('b');
	t.is(await probeFrom(sb, name), '198.51.100.11');
	t.is(await probeFrom(sb, name, { family: 6 }), '2001:db8:b::11');
	const after = await sb.routerCounters('b');
	t.true(after.ipv4.forwarded > before.ipv4.forwarded, 'IPv4 went through router B');
	t.true(after.ipv6.forwarded > before.ipv6.forwarded, 'IPv6 went through router B');
	t.is(after.ipv4.dropped, before.ipv4.dropped);

	const beforeA = await sb.routerCounters('a');
	t.is(await probeFrom(sb, neighbour), PRIMARY_ADDRESS, 'the unlabelled neighbour still leaves through A');
	t.true((await sb.routerCounters('a')).ipv4.forwarded > beforeA.ipv4.forwarded);

	const own = await addresses(sb, name, UPLINK_B.name);
	t.like(rowsOf(await psRows(sb), name)[0], { Network: UPLINK_B.name, SourceIP: '198.51.100.11,2001:db8:b::11', Status: 'active' });
	const verify = await egress(sb, ['verify', '--container', name, '--url', sb.echoUrl(4), '--image', PROBE_IMAGE, '--format', 'json']);
	t.is(verify.exitCode, 0, `${verify.stdout}\n${verify.stderr}`);
	t.like(parseJson(verify.stdout), { Observed: '198.51.100.11', Match: true });

	// Removed: no firewall rule and no policy rule names it any more.
	await sb.docker(['rm', '-f', name]);
	await syncOk(t, sb);
	t.deepEqual(await firewallNames(sb, { names: [name, id.slice(0, 12)], addresses: [own.v4, own.v6] }), []);
	const routing = await ourRoutingText(sb);
	t.false(mentionsAddress(routing, own.v4), routing);
	t.false(mentionsAddress(routing, own.v6), routing);
	t.is(await probeFrom(sb, neighbour), PRIMARY_ADDRESS);
});

test.serial('second uplink without a gateway (no via, none in the main table): that container fails closed, with a reason', async (t) => {
	const sb = sandbox();
	const name = 'cm_novia_b';
	t.teardown(async () => {
		await removeContainers(sb, name);
		await sync(sb);
	});
	const id = await runContainer(sb, name, { network: UPLINK_B.name, egressLabels: { 'source-ip': '198.51.100.12' } });
	const r = await sync(sb);
	t.is(r.exitCode, 1, `${r.stdout}\n${r.stderr}`);
	t.true(r.stderr.includes(name), r.stderr);
	const beforeA = await sb.routerCounters('a');
	t.is(await probeFrom(sb, name, { timeoutSeconds: 3 }), undefined);
	t.is((await sb.routerCounters('a')).ipv4.forwarded, beforeA.ipv4.forwarded, 'nothing leaves through A either (not the primary address)');
	const [row] = rowsOf(await psRows(sb), name);
	t.truthy(row);
	t.not(row?.Status, 'active');
	t.regex(row?.StatusReason ?? '', /gateway|via/i);
	t.is(row?.ID, id.slice(0, 12));
});
