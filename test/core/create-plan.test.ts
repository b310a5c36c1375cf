import test from 'ava';
import { checkAgainstHost, defaultRouteWarnings, derivedBridgeName, planCreate, type CreateRequest, type HostView } from '../../src/core/create-plan.js';
import type { DockerNetwork } from '../../src/core/network.js';
import { ValidationError } from '../../src/errors.js';

const request: CreateRequest = { network: 'z_custom_a', sourceIp: '192.0.2.11', labels: [], opts: [] };

test('a plain request: bridge named after the network, masquerade off, labelled', (t) => {
	const plan = planCreate({ ...request, subnet: '10.20.0.0/24', labels: ['team=web'] });
	t.is(plan.bridge, 'z_custom_a');
	t.deepEqual(plan.labels, { team: 'web', 'docker-egress.source-ip': '192.0.2.11' });
	t.deepEqual(plan.options, { 'com.docker.network.bridge.name': 'z_custom_a', 'com.docker.network.bridge.enable_ip_masquerade': 'false' });
	t.is(plan.subnet?.text, '10.20.0.0/24');
});

test('a long network name gets a short derived bridge name', (t) => {
	const plan = planCreate({ ...request, network: 'kasm_sessions_egress_b' });
	t.is(plan.bridge, derivedBridgeName('kasm_sessions_egress_b'));
	t.regex(plan.bridge, /^kasm_ses-[0-9a-f]{6}$/);
	t.true(Buffer.byteLength(plan.bridge) <= 15);
});

const refused = test.macro((t, change: Partial<CreateRequest>, message: RegExp) => {
	const error = t.throws(() => planCreate({ ...request, ...change }), { instanceOf: ValidationError });
	t.regex(error!.message, message);
	t.false(error!.message.includes('\n'));
});

test('invalid source IP', refused, { sourceIp: '192.0.2' }, /not an IP address/);
test('loopback source IP', refused, { sourceIp: '127.0.0.1' }, /loopback/);
test('multicast source IP', refused, { sourceIp: '224.0.0.1' }, /multicast/);
test('unspecified source IP', refused, { sourceIp: '0.0.0.0' }, /unspecified/);
test('IPv6 source IP for an IPv4 network', refused, { sourceIp: '2001:db8::11' }, /IPv6/);
test('malformed subnet', refused, { subnet: '10.0.0.0/33' }, /not an IPv4 CIDR/);
test('subnet with host bits', refused, { subnet: '10.0.0.5/24' }, /did you mean 10\.0\.0\.0\/24/);
test('subnet too small', refused, { subnet: '10.0.0.0/31' }, /too small/);
test('source IP inside the subnet', refused, { subnet: '192.0.2.0/25' }, /inside the network's own subnet/);
test('gateway outside the subnet', refused, { subnet: '10.0.0.0/24', gateway: '10.0.1.1' }, /not a usable address/);
test('gateway without subnet', refused, { gateway: '10.0.0.1' }, /need --subnet/);
test('ip-range outside the subnet', refused, { subnet: '10.0.0.0/24', ipRange: '10.0.1.0/25' }, /not inside/);
test('ip-range with host bits', refused, { subnet: '10.0.0.0/24', ipRange: '10.0.0.128/24' }, /did you mean 10\.0\.0\.0\/24/);
test('bridge name over 15 bytes', refused, { bridgeName: 'a-very-long-bridge' }, /15 bytes/);
test('bridge name with a bad character', refused, { bridgeName: 'br/0' }, /letters, digits/);
test('bad network name', refused, { network: '-x' }, /invalid network name/);
test('label without =', refused, { labels: ['nokey'] }, /key=value/);
test('our own label', refused, { labels: ['docker-egress.source-ip=1.2.3.4'] }, /set by docker egress/);
test('masquerade on', refused, { opts: ['com.docker.network.bridge.enable_ip_masquerade=true'] }, /fails closed/);

const host: HostView = {
	addresses: [
		{ interface: 'eth0', address: '192.0.2.1', prefix: 24, family: 'ipv4' },
		{ interface: 'eth0', address: '192.0.2.11', prefix: 24, family: 'ipv4' },
		{ interface: 'docker0', address: '172.17.0.1', prefix: 16, family: 'ipv4' },
	],
	routes: [
		{ destination: '192.0.2.0/24', interface: 'eth0' },
		{ destination: '198.51.100.0/24', interface: 'eth0' },
		{ destination: '172.17.0.0/16', interface: 'docker0' },
	],
	mainRoutes: [{ destination: 'default', gateway: '192.0.2.254', interface: 'eth0' }],
	interfaces: ['lo', 'eth0', 'docker0'],
	links: [
		{ interface: 'lo', index: 1 },
		{ interface: 'eth0', index: 2 },
		{ interface: 'docker0', index: 3 },
	],
};

const docker: DockerNetwork[] = [
	{ id: 'b1', name: 'bridge', driver: 'bridge', labels: {}, options: { 'com.docker.network.bridge.name': 'docker0' }, subnets: ['172.17.0.0/16'] },
	{ id: 'h1', name: 'host', driver: 'host', labels: {}, options: {}, subnets: [] },
];

const conflicting = test.macro((t, change: Partial<CreateRequest>, message: RegExp) => {
	const error = t.throws(() => checkAgainstHost(planCreate({ ...request, ...change }), host, docker), { instanceOf: ValidationError });
	t.regex(error!.message, message);
});

test('source IP not on the host lists the ones that are', conflicting, { sourceIp: '192.0.2.50' }, /192\.0\.2\.1 on eth0, 192\.0\.2\.11 on eth0\)$/);
test('a Docker bridge gateway is not a usable source', conflicting, { sourceIp: '172.17.0.1' }, /172\.17\.0\.1 is not an address of this host/);
test('subnet overlapping another Docker network', conflicting, { subnet: '172.17.5.0/24' }, /overlaps 172\.17\.0\.0\/16 of Docker network bridge/);
test('subnet overlapping a host address', conflicting, { subnet: '192.0.2.128/25', sourceIp: '192.0.2.11' }, /host interface eth0/);
test('subnet overlapping a host route', conflicting, { subnet: '198.51.100.0/26' }, /host route 198\.51\.100\.0\/24/);
test('existing network name', conflicting, { network: 'bridge' }, /already exists/);
test('bridge name taken by an interface', conflicting, { bridgeName: 'eth0' }, /interface named eth0 already exists/);
test('bridge name taken by a Docker network', conflicting, { bridgeName: 'docker0' }, /already used by network bridge/);

test('a free subnet passes, and a z_ name sorts after bridge: no warning', (t) => {
	t.deepEqual(checkAgainstHost(planCreate({ ...request, subnet: '10.30.0.0/24' }), host, docker), []);
});

test('a name that sorts before existing bridge networks gets a warning that says how to avoid it', (t) => {
	const [warning] = defaultRouteWarnings('aaa', docker);
	t.regex(warning!, /sorts before bridge/);
	t.regex(warning!, /z_ prefix/);
	t.regex(warning!, /gw-priority/);
});

test('dual stack: the IPv6 source and subnet become a label and an IPv6 IPAM config', (t) => {
	const plan = planCreate({ ...request, sourceIpv6: '2001:DB8:A::11', subnet6: '2001:db8:1::/64' });
	t.is(plan.labels['docker-egress.source-ipv6'], '2001:db8:a::11');
	t.is(plan.subnet6?.text, '2001:db8:1::/64');
});

test('link-local IPv6 source', refused, { sourceIpv6: 'fe80::1' }, /link-local/);
test('IPv4 address as the IPv6 source', refused, { sourceIpv6: '192.0.2.11' }, /IPv4 address cannot be the source of IPv6/);
test('IPv6 source inside its subnet', refused, { sourceIpv6: '2001:db8:1::11', subnet6: '2001:db8:1::/64' }, /inside the network's own subnet 2001:db8:1::\/64/);
test('IPv6 subnet with host bits', refused, { sourceIpv6: '2001:db8:a::11', subnet6: '2001:db8:1::5/64' }, /did you mean 2001:db8:1::\/64/);
test('--subnet6 without --source-ipv6', refused, { subnet6: '2001:db8:1::/64' }, /needs --source-ipv6/);
