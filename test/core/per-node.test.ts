import test from 'ava';
import { egressContainers, type DockerContainer } from '../../src/core/container.js';
import { desiredDrops } from '../../src/core/drops.js';
import { egressNetworks, type DockerNetwork, type HostAddress } from '../../src/core/network.js';
import { isPerNodeValue, namesNode, parsePerNodeList, usesPerNodeValues, valueForNode, type NodeIdentity } from '../../src/core/per-node.js';
import { desiredRules } from '../../src/core/rules.js';

const nodeA: NodeIdentity = { hostname: 'node-a', nodeId: 'x1y2z3a4b5c6d7e8f9g0h1i2j' };
const nodeC: NodeIdentity = { hostname: 'node-c' };
const ipv4 = (value: string) => (/^\d+\.\d+\.\d+\.\d+$/.test(value) ? undefined : 'not an IPv4 address');

test('a plain address is no list, and is every node\'s as it is', (t) => {
	t.false(isPerNodeValue('192.0.2.11'));
	t.false(isPerNodeValue('2001:db8::1'));
	t.true(isPerNodeValue('node-a=192.0.2.11'));
	t.deepEqual(valueForNode('docker-egress.source-ip', '192.0.2.11', undefined, ipv4), { value: '192.0.2.11' });
	t.deepEqual(valueForNode('docker-egress.source-ip', 'banana', nodeA, ipv4), { value: 'banana' }, 'judged by the usual checks');
});

test('a list: entries in order, whitespace around items, names and values ignored', (t) => {
	t.deepEqual(parsePerNodeList(' node-a = 192.0.2.11 ,node-b=198.51.100.11'), {
		entries: [
			{ node: 'node-a', value: '192.0.2.11' },
			{ node: 'node-b', value: '198.51.100.11' },
		],
	});
	t.deepEqual(parsePerNodeList('n1.example.org=2001:db8::1'), { entries: [{ node: 'n1.example.org', value: '2001:db8::1' }] });
});

const malformed = test.macro((t, raw: string, expected: RegExp) => {
	const parsed = parsePerNodeList(raw);
	t.true('problem' in parsed);
	t.regex('problem' in parsed ? parsed.problem : '', expected);
});

test('empty item (trailing comma)', malformed, 'node-a=192.0.2.11,', /item 2 of 2 is empty/);
test('empty item (double comma)', malformed, 'node-a=192.0.2.11,,node-b=198.51.100.11', /item 2 of 3 is empty/);
test('item without =', malformed, 'node-a=192.0.2.11,198.51.100.11', /item 2 of 2 "198\.51\.100\.11" has no '='/);
test('no node name', malformed, '=192.0.2.11', /no node name before =/);
test('odd node name', malformed, 'node a=192.0.2.11', /"node a" is not a node hostname or ID/);
test('no address', malformed, 'node-a=', /no address after =/);
test('a node named twice, whatever the case', malformed, 'node-a=192.0.2.11,NODE-A=192.0.2.12', /node NODE-A is named twice/);

test('a node is named by its hostname (any case) or its Swarm node ID', (t) => {
	t.true(namesNode('node-a', nodeA));
	t.true(namesNode('Node-A', nodeA));
	t.true(namesNode(nodeA.nodeId!, nodeA));
	t.false(namesNode(nodeA.nodeId!.toUpperCase(), nodeA), 'IDs are exact');
	t.false(namesNode('node', nodeA), 'no prefixes');
	t.false(namesNode('x1y2z3a4b5c6', nodeA), 'no ID prefixes');
});

test('this node\'s entry is its address; a list without it is "not for this node"', (t) => {
	const raw = 'node-a=192.0.2.11,node-b=198.51.100.11';
	t.deepEqual(valueForNode('docker-egress.source-ip', raw, nodeA, ipv4), { value: '192.0.2.11', node: 'node-a' });
	t.deepEqual(valueForNode('docker-egress.source-ip', `${nodeA.nodeId!}=192.0.2.13`, nodeA, ipv4), { value: '192.0.2.13', node: nodeA.nodeId! });
	const missing = valueForNode('docker-egress.source-ip', raw, nodeC, ipv4);
	t.deepEqual(missing, {
		problem: 'label docker-egress.source-ip="node-a=192.0.2.11,node-b=198.51.100.11" has no address for this node (hostname node-c, not a Swarm node; it names node-a, node-b)',
		notForNode: true,
	});
});

test('a list is judged the same on every node: a bad address anywhere in it is a problem everywhere', (t) => {
	const raw = 'node-a=192.0.2.11,node-b=198.51.100.x';
	for (const node of [nodeA, nodeC]) {
		const choice = valueForNode('docker-egress.source-ip', raw, node, ipv4);
		t.deepEqual(choice, { problem: 'label docker-egress.source-ip="node-a=192.0.2.11,node-b=198.51.100.x": node node-b: "198.51.100.x": not an IPv4 address', notForNode: false });
	}
});

test('this node named twice: the same address is fine, two addresses are a problem; no identity, no list', (t) => {
	t.deepEqual(valueForNode('l', `node-a=192.0.2.11,${nodeA.nodeId!}=192.0.2.11`, nodeA, ipv4), { value: '192.0.2.11', node: 'node-a' });
	const two = valueForNode('l', `node-a=192.0.2.11,${nodeA.nodeId!}=192.0.2.12`, nodeA, ipv4);
	t.regex('problem' in two ? two.problem : '', /this node is named twice with different addresses \(node-a and x1y2/);
	const unknown = valueForNode('l', 'node-a=192.0.2.11', undefined, ipv4);
	t.deepEqual(unknown, { problem: 'label l="node-a=192.0.2.11": the Docker daemon did not say which node this is', notForNode: false });
});

test('usesPerNodeValues looks only at the address labels', (t) => {
	const keys = ['docker-egress.source-ip', 'docker-egress.via'];
	t.false(usesPerNodeValues([{ 'docker-egress.source-ip': '192.0.2.11' }, { other: 'a=b' }], keys));
	t.true(usesPerNodeValues([{}, { 'docker-egress.via': 'node-a=192.0.2.254' }], keys));
});

// ---- in egress networks and containers -------------------------------------------------------

const hostA: HostAddress[] = [
	{ interface: 'eth0', address: '192.0.2.1', prefix: 24, family: 'ipv4' },
	{ interface: 'eth0', address: '192.0.2.11', prefix: 24, family: 'ipv4' },
	{ interface: 'eth0', address: '2001:db8:a::11', prefix: 64, family: 'ipv6' },
];
const network = (labels: Record<string, string>, name = 'z_net'): DockerNetwork => ({
	id: `${name}`.padEnd(64, '0'),
	name,
	driver: 'bridge',
	labels,
	options: {},
	subnets: ['10.80.0.0/24', '2001:db8:80::/64'],
});
const perNode = { 'docker-egress.source-ip': 'node-a=192.0.2.11, node-b=198.51.100.11' };

test('a network with a per-node label is served on a node it names, with that node\'s address', (t) => {
	const [egress] = egressNetworks([network(perNode)], hostA, [], [], nodeA);
	t.is(egress!.problem, undefined);
	t.is(egress!.sourceIp, '192.0.2.11');
	t.deepEqual(
		desiredRules([egress!]).map((rule) => `${rule.subnet} -> ${rule.sourceIp}`),
		['10.80.0.0/24 -> 192.0.2.11'],
	);
});

test('a node the list does not name fails closed (source-missing): its traffic is dropped, never masqueraded from another address', (t) => {
	const [egress] = egressNetworks([network(perNode)], hostA, [], [], nodeC);
	t.regex(egress!.problem!, /has no address for this node \(hostname node-c, not a Swarm node; it names node-a, node-b\)/);
	t.true(egress!.sourceMissing);
	t.deepEqual(egress!.blocked, { ipv4: true, ipv6: false });
	t.deepEqual(desiredRules([egress!]), []);
	t.deepEqual(desiredDrops([egress!]).map((drop) => drop.subnet), ['10.80.0.0/24']);
	t.is(egress!.sourceIp, perNode['docker-egress.source-ip'], 'shown as written');
});

test('a node\'s entry that is not on that host is source-missing as a plain address is', (t) => {
	const [egress] = egressNetworks([network({ 'docker-egress.source-ip': 'node-a=192.0.2.99' })], hostA, [], [], nodeA);
	t.regex(egress!.problem!, /192\.0\.2\.99 is not an address of this host/);
	t.true(egress!.sourceMissing);
});

test('a malformed list is invalid (fail closed, not source-missing) on every node', (t) => {
	for (const node of [nodeA, nodeC]) {
		const [egress] = egressNetworks([network({ 'docker-egress.source-ip': 'node-a=192.0.2.11,node-b' })], hostA, [], [], node);
		t.regex(egress!.problem!, /item 2 of 2 "node-b" has no '='/);
		t.is(egress!.sourceMissing, undefined);
		t.deepEqual(egress!.blocked, { ipv4: true, ipv6: false });
	}
});

test('each family and via on its own: a plain IPv6 source with a per-node IPv4 one; via for one node only', (t) => {
	const labels = {
		'docker-egress.source-ip': 'node-a=192.0.2.11,node-b=198.51.100.11',
		'docker-egress.source-ipv6': '2001:db8:a::11',
		'docker-egress.via': 'node-b=198.51.100.254',
		'docker-egress.via6': 'node-a=2001:db8:a::254',
	};
	const [onA] = egressNetworks([network(labels)], hostA, [], [], nodeA);
	t.is(onA!.problem, undefined);
	t.is(onA!.gateway, undefined, 'no via entry for node-a: the gateway comes from the main table');
	t.is(onA!.gateway6, '2001:db8:a::254');
	const [onC] = egressNetworks([network(labels)], hostA, [], [], nodeC);
	t.deepEqual(onC!.blocked, { ipv4: true, ipv6: false }, 'IPv6 is still served from its plain address');
	const [badVia] = egressNetworks([network({ ...labels, 'docker-egress.via': 'node-a=2001:db8::1' })], hostA, [], [], nodeA);
	t.regex(badVia!.problem!, /label docker-egress\.via=.*node node-a: "2001:db8::1": not an IPv4 address/);
});

test('a container with a per-node label: its own address on a node it names, fails closed elsewhere', (t) => {
	const plain = network({}, 'z_plain');
	const container: DockerContainer = {
		id: 'c'.repeat(64),
		name: 'c_web',
		labels: { 'docker-egress.source-ip': `${nodeA.nodeId!}=192.0.2.11,node-b=198.51.100.11` },
		running: true,
		networkMode: 'z_plain',
		endpoints: [{ network: 'z_plain', networkId: plain.id, ipv4: '10.80.0.2' }],
	};
	const [onA] = egressContainers([container], [plain], [], hostA, nodeA);
	t.is(onA!.problem, undefined);
	t.is(onA!.sourceIp, '192.0.2.11');
	t.deepEqual(onA!.subnets, ['10.80.0.2/32']);
	const [onC] = egressContainers([container], [plain], [], hostA, nodeC);
	t.regex(onC!.problem!, /has no address for this node/);
	t.true(onC!.sourceMissing);
	t.deepEqual(desiredDrops([onC!]).map((drop) => drop.subnet), ['10.80.0.2/32']);
});
