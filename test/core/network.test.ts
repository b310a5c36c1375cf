import test from 'ava';
import { egressNetworks, sourceIpProblem, type DockerNetwork, type HostAddress } from '../../src/core/network.js';

const host: HostAddress[] = [
	{ interface: 'lo', address: '127.0.0.1', prefix: 8, family: 'ipv4' },
	{ interface: 'eth0', address: '192.0.2.1', prefix: 24, family: 'ipv4' },
	{ interface: 'eth0', address: '192.0.2.11', prefix: 24, family: 'ipv4' },
	{ interface: 'eth0', address: '2001:db8::1', prefix: 64, family: 'ipv6' },
];

const base: DockerNetwork = { id: 'abcdef0123456789', name: 'n', driver: 'bridge', labels: {}, options: {}, subnets: ['172.18.0.0/16'] };

const problems = test.macro((t, ip: string, expected: RegExp | undefined) => {
	const problem = sourceIpProblem(ip, host);
	if (expected) {
		t.regex(problem ?? '', expected);
	} else {
		t.is(problem, undefined);
	}
});

test('host address is fine', problems, '192.0.2.11', undefined);
test('not an address', problems, 'banana', /not an IP address/);
test('not on this host, and says which are', problems, '192.0.2.50', /not an address of this host.*192\.0\.2\.1 on eth0, 192\.0\.2\.11 on eth0\)/);
test('loopback', problems, '127.0.0.1', /loopback/);
test('multicast', problems, '239.1.2.3', /multicast/);
test('unspecified', problems, '0.0.0.0', /unspecified/);
test('wrong family', problems, '2001:db8::1', /IPv6/);

test('only labelled networks are egress networks; bridge name defaults to br-<id12>', (t) => {
	const networks = egressNetworks([base, { ...base, name: 'e', labels: { 'docker-egress.source-ip': '192.0.2.11' } }], host);
	t.is(networks.length, 1);
	t.is(networks[0]!.bridge, 'br-abcdef012345');
	t.true(networks[0]!.masquerade);
	t.is(networks[0]!.problem, undefined);
});

test('a source IP inside its own subnet, a non-bridge driver, and no IPv4 subnet are problems', (t) => {
	const label = { 'docker-egress.source-ip': '192.0.2.11' };
	const [inside, overlay, v6only] = egressNetworks(
		[
			{ ...base, name: 'a', labels: label, subnets: ['192.0.2.0/24'] },
			{ ...base, name: 'b', labels: label, driver: 'overlay' },
			{ ...base, name: 'c', labels: label, subnets: ['2001:db8:1::/64'] },
		],
		host,
	);
	t.regex(inside!.problem!, /inside the network's own subnet/);
	t.regex(overlay!.problem!, /overlay network/);
	t.regex(v6only!.problem!, /no IPv4 subnet/);
});

test('without host addresses (remote daemon) the host check is skipped', (t) => {
	const [network] = egressNetworks([{ ...base, labels: { 'docker-egress.source-ip': '198.51.100.7' } }], undefined);
	t.is(network!.problem, undefined);
});

test('a labelled network whose subnet overlaps a host address or route is invalid, as create refuses it', (t) => {
	const labelled = { ...base, labels: { 'docker-egress.source-ip': '192.0.2.11' } };
	const [onUplink] = egressNetworks([{ ...labelled, subnets: ['192.0.2.0/29'] }], host, [], []);
	t.regex(onUplink!.problem ?? '', /subnet 192\.0\.2\.0\/29 overlaps 192\.0\.2\.0\/24, the subnet of 192\.0\.2\.1 on host interface eth0: its rule would rewrite the host's own traffic/);
	const [onRoute] = egressNetworks([{ ...labelled, subnets: ['10.5.0.0/24'] }], host, [], [{ destination: '10.5.0.0/16', interface: 'eth1' }]);
	t.regex(onRoute!.problem ?? '', /overlaps the host route 10\.5\.0\.0\/16 via eth1/);
	// Its own bridge's address and route are Docker's, not the host's.
	const own = [{ interface: 'br-abcdef012345', address: '172.18.0.1', prefix: 16, family: 'ipv4' as const }, ...host];
	t.is(egressNetworks([labelled], own, [], [{ destination: '172.18.0.0/16', interface: 'br-abcdef012345' }])[0]!.problem, undefined);
	// Without the host's routes (a remote daemon), nothing is judged.
	t.is(egressNetworks([{ ...labelled, subnets: ['192.0.2.0/29'] }], undefined)[0]!.problem, undefined);
});
