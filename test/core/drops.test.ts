import test from 'ava';
import { desiredDrops, parseFilterState, planFilter, planFilterSteps, type DropRule } from '../../src/core/drops.js';
import { egressNetworks, type DockerNetwork, type HostAddress } from '../../src/core/network.js';
import { desiredRules } from '../../src/core/rules.js';
import { attachUplinks } from '../../src/core/routing.js';

const host: HostAddress[] = [
	{ interface: 'eth0', address: '192.0.2.1', prefix: 24, family: 'ipv4' },
	{ interface: 'eth0', address: '192.0.2.11', prefix: 24, family: 'ipv4' },
	{ interface: 'eth0', address: '2001:db8::1', prefix: 64, family: 'ipv6' },
];

function network(name: string, subnets: string[], labels: Record<string, string>, extra: Partial<DockerNetwork> = {}): DockerNetwork {
	return { id: `${name.padEnd(12, '0')}ffff`, name, driver: 'bridge', labels, options: {}, subnets, ...extra };
}

test('a source address not on the host: source-missing, no SNAT rule, its subnet dropped', (t) => {
	const [missing] = egressNetworks([network('z_m', ['10.77.1.0/24'], { 'docker-egress.source-ip': '192.0.2.12' })], host, [], []);
	t.truthy(missing!.problem);
	t.true(missing!.sourceMissing);
	t.deepEqual(missing!.blocked, { ipv4: true, ipv6: false });
	t.deepEqual(desiredRules([missing!]), []);
	t.deepEqual(
		desiredDrops([missing!]).map((rule) => rule.subnet),
		['10.77.1.0/24'],
	);
});

test('a malformed or unusable source fails closed too, as invalid (not source-missing)', (t) => {
	const [banana, loopback] = egressNetworks(
		[network('z_b', ['10.77.2.0/24'], { 'docker-egress.source-ip': 'banana' }), network('z_l', ['10.77.3.0/24'], { 'docker-egress.source-ip': '127.0.0.1' })],
		host,
	);
	for (const blocked of [banana!, loopback!]) {
		t.deepEqual(blocked.blocked, { ipv4: true, ipv6: false });
		t.is(blocked.sourceMissing, undefined);
		t.is(desiredDrops([blocked]).length, 1);
	}
});

test('structural problems (not a bridge, overlapping the host, overlapping another egress network) drop nothing', (t) => {
	const label = { 'docker-egress.source-ip': '192.0.2.99' };
	const networks = egressNetworks(
		[
			network('z_overlay', ['10.77.4.0/24'], label, { driver: 'overlay' }),
			network('z_host', ['192.0.2.0/29'], label),
			network('z_a', ['10.77.5.0/24'], { 'docker-egress.source-ip': '192.0.2.11' }),
			network('z_b', ['10.77.5.0/25'], label),
		],
		host,
		[],
		[],
	);
	const byName = Object.fromEntries(networks.map((n) => [n.name, n]));
	t.regex(byName['z_overlay']!.problem!, /overlay network/);
	t.regex(byName['z_host']!.problem!, /overlaps 192\.0\.2\.0\/24/);
	t.regex(byName['z_b']!.problem!, /overlaps 10\.77\.5\.0\/24 of egress network z_a/);
	t.deepEqual(desiredDrops(networks), []);
	t.deepEqual(desiredRules(networks).map((rule) => rule.network), ['z_a']);
});

test('an IPv6 source missing drops only IPv6; IPv4 keeps its SNAT rule', (t) => {
	const [dual] = egressNetworks([network('z_d', ['10.77.6.0/24', '2001:db8:6::/64'], { 'docker-egress.source-ip': '192.0.2.11', 'docker-egress.source-ipv6': '2001:db8::99' })], host, [], []);
	t.true(dual!.sourceMissing);
	t.deepEqual(dual!.blocked, { ipv4: false, ipv6: true });
	t.deepEqual(desiredRules([dual!]).map((rule) => rule.sourceIp), ['192.0.2.11']);
	t.deepEqual(desiredDrops([dual!], 'ipv6').map((rule) => rule.subnet), ['2001:db8:6::/64']);
	t.deepEqual(desiredDrops([dual!]), []);
});

test('no way out (no gateway on the address uplink) fails closed', (t) => {
	const hostB: HostAddress[] = [...host, { interface: 'eth1', address: '198.51.100.11', prefix: 24, family: 'ipv4' }];
	const networks = egressNetworks([network('z_u', ['10.77.7.0/24'], { 'docker-egress.source-ip': '198.51.100.11' })], hostB, [], []);
	const [routed] = attachUplinks(networks, { addresses: hostB, routes: [{ destination: 'default', interface: 'eth0', gateway: '192.0.2.254' }], links: [{ name: 'eth0', index: 2 }, { name: 'eth1', index: 3 }] } as never);
	t.regex(routed!.problem!, /eth1/);
	t.deepEqual(routed!.blocked, { ipv4: true, ipv6: false });
	t.is(desiredDrops([routed!]).length, 1);
});

const drop: DropRule = { network: 'z_m', id: 'abcdef0123456789', subnet: '10.77.1.0/24', bridge: 'br-abcdef012345' };
const bridges = new Set(['br-abcdef012345', 'docker0']);
const dockerFilter = ['*filter', ':INPUT ACCEPT [0:0]', ':FORWARD ACCEPT [0:0]', ':DOCKER-USER - [0:0]', '-A FORWARD -j DOCKER-USER', '-A FORWARD -j DOCKER-FORWARD', '-A DOCKER-USER -j RETURN', 'COMMIT'];

test('iptables: the drop chain goes first in DOCKER-USER, after a RETURN per Docker bridge, in one transaction', (t) => {
	const plan = planFilter(parseFilterState(dockerFilter.join('\n')), [drop], bridges);
	t.true(plan.changed);
	t.is(
		plan.input,
		[
			'*filter',
			':DOCKER-EGRESS - [0:0]',
			'-A DOCKER-EGRESS -o br-abcdef012345 -j RETURN',
			'-A DOCKER-EGRESS -o docker0 -j RETURN',
			'-A DOCKER-EGRESS -s 10.77.1.0/24 -m comment --comment "docker-egress:abcdef012345 z_m" -j DROP',
			'-I DOCKER-USER 1 -j DOCKER-EGRESS',
			'COMMIT',
			'',
		].join('\n'),
	);
});

test('iptables: read back as written, nothing to change; without DOCKER-USER the jump goes in FORWARD', (t) => {
	const applied = [
		'*filter',
		':FORWARD ACCEPT [0:0]',
		':DOCKER-USER - [0:0]',
		':DOCKER-EGRESS - [0:0]',
		'-A FORWARD -j DOCKER-USER',
		'-A FORWARD -j DOCKER-FORWARD',
		'-A DOCKER-USER -j DOCKER-EGRESS',
		'-A DOCKER-USER -j RETURN',
		'-A DOCKER-EGRESS -o br-abcdef012345 -j RETURN',
		'-A DOCKER-EGRESS -o docker0 -j RETURN',
		'-A DOCKER-EGRESS -s 10.77.1.0/24 -m comment --comment "docker-egress:abcdef012345 z_m" -j DROP',
		'COMMIT',
	];
	const state = parseFilterState(applied.join('\n'));
	t.true(state.jumpFirst);
	t.deepEqual(state.drops.map((rule) => rule.subnet), ['10.77.1.0/24']);
	t.false(planFilter(state, [drop], bridges).changed);
	const bare = planFilter(parseFilterState('*filter\n:FORWARD ACCEPT [0:0]\n-A FORWARD -j ACCEPT\nCOMMIT'), [drop], bridges);
	t.true(bare.input.includes('-I FORWARD 1 -j DOCKER-EGRESS'));
});

test('iptables: a jump pushed below someone else\'s rule is moved back on top, deleted by its exact text', (t) => {
	const moved = ['*filter', ':DOCKER-USER - [0:0]', ':DOCKER-EGRESS - [0:0]', '-A DOCKER-USER -i eth9 -j ACCEPT', '-A DOCKER-USER -j DOCKER-EGRESS', 'COMMIT'];
	const plan = planFilter(parseFilterState(moved.join('\n')), [drop], bridges);
	t.true(plan.jumpRepair);
	t.true(plan.input.includes('-D DOCKER-USER -j DOCKER-EGRESS\n-I DOCKER-USER 1 -j DOCKER-EGRESS'));
	t.false(plan.input.includes('eth9'));
});

test('iptables: when nothing is blocked the chain and jump go; an admin\'s conditional jump keeps the emptied chain', (t) => {
	const applied = ['*filter', ':DOCKER-USER - [0:0]', ':DOCKER-EGRESS - [0:0]', '-A DOCKER-USER -j DOCKER-EGRESS', '-A DOCKER-EGRESS -s 10.77.1.0/24 -m comment --comment "docker-egress:abcdef012345 z_m" -j DROP', 'COMMIT'];
	t.is(planFilter(parseFilterState(applied.join('\n')), [], bridges).input, ['*filter', '-D DOCKER-USER -j DOCKER-EGRESS', ':DOCKER-EGRESS - [0:0]', '-X DOCKER-EGRESS', 'COMMIT', ''].join('\n'));
	const withAdmin = [...applied.slice(0, -1), '-A FORWARD -i eth9 -j DOCKER-EGRESS', 'COMMIT'];
	const input = planFilter(parseFilterState(withAdmin.join('\n')), [], bridges).input;
	t.false(input.includes('-X'));
	t.false(input.includes('eth9'));
	t.false(planFilter(parseFilterState(''), [], bridges).changed);
});

test('iptables: drops that go are removed only after the nat change; drops that come go in before it', (t) => {
	const applied = ['*filter', ':DOCKER-USER - [0:0]', ':DOCKER-EGRESS - [0:0]', '-A DOCKER-USER -j DOCKER-EGRESS', '-A DOCKER-EGRESS -o br-abcdef012345 -j RETURN', '-A DOCKER-EGRESS -o docker0 -j RETURN', '-A DOCKER-EGRESS -s 10.77.1.0/24 -m comment --comment "docker-egress:abcdef012345 z_m" -j DROP', 'COMMIT'];
	const other: DropRule = { network: 'z_n', id: '1234567890abcdef', subnet: '10.77.2.0/24', bridge: 'br-1234567890ab' };
	const { before, after } = planFilterSteps(parseFilterState(applied.join('\n')), [other], bridges);
	t.true(before!.input.includes('10.77.1.0/24') && before!.input.includes('10.77.2.0/24'));
	t.true(after!.input.includes('10.77.2.0/24'));
	t.false(after!.input.includes('10.77.1.0/24'));
	t.false(after!.input.includes('-I DOCKER-USER'));
	const coming = planFilterSteps(parseFilterState(dockerFilter.join('\n')), [drop], bridges);
	t.truthy(coming.before);
	t.is(coming.after, undefined);
});

test("a VPN's split default routes (0.0.0.0/1, 128.0.0.0/1) are no overlap: networks keep their rules", (t) => {
	const routes = [
		{ destination: '0.0.0.0/1', interface: 'tun0' },
		{ destination: '128.0.0.0/1', interface: 'tun0' },
	];
	const [served] = egressNetworks([network('z_vpn', ['10.77.8.0/24'], { 'docker-egress.source-ip': '192.0.2.11' })], host, [], routes);
	t.is(served!.problem, undefined);
	const [inside] = egressNetworks([network('z_in', ['10.77.9.0/24'], { 'docker-egress.source-ip': '192.0.2.11' })], host, [], [{ destination: '10.77.9.128/25', interface: 'eth0' }]);
	t.regex(inside!.problem!, /overlaps the host route 10\.77\.9\.128\/25/);
});
