import test from 'ava';
import type { EgressNetwork, HostAddress } from '../../src/core/network.js';
import { attachUplinks, desiredRouting, diffRouting, routingCommands, uplinkFor, type RoutingFacts } from '../../src/core/routing.js';

const addresses: HostAddress[] = [
	{ interface: 'eth0', address: '192.0.2.1', prefix: 24, family: 'ipv4' },
	{ interface: 'eth0', address: '192.0.2.11', prefix: 24, family: 'ipv4' },
	{ interface: 'eth1', address: '198.51.100.11', prefix: 24, family: 'ipv4' },
];
const facts: RoutingFacts = {
	addresses,
	routes: [
		{ destination: 'default', gateway: '192.0.2.254', interface: 'eth0' },
		{ destination: '192.0.2.0/24', interface: 'eth0' },
		{ destination: '198.51.100.0/24', interface: 'eth1' },
		{ destination: '198.18.0.0/24', gateway: '198.51.100.254', interface: 'eth1' },
	],
	links: [
		{ interface: 'eth0', index: 2 },
		{ interface: 'eth1', index: 3 },
	],
};

const network = (sourceIp: string, gateway?: string): EgressNetwork => ({
	id: 'x',
	name: 'z_b',
	via: 'label',
	bridge: 'z_b',
	subnets: ['10.140.0.0/24'],
	subnets6: [],
	sourceIp,
	masquerade: false,
	...(gateway ? { gateway } : {}),
});

test('an address on the default route\'s interface needs no routing', (t) => {
	t.is(uplinkFor(network('192.0.2.11'), facts), undefined);
});

test('an address on another uplink is routed through that uplink\'s table, with its gateway from the main table', (t) => {
	t.deepEqual(uplinkFor(network('198.51.100.11'), facts), { interface: 'eth1', table: 20_003, gateway: '198.51.100.254', connected: '198.51.100.0/24' });
});

test('no gateway anywhere is a problem that says to give --via; a --via off the subnet is one too', (t) => {
	const noGateway = { ...facts, routes: facts.routes.filter((route) => !route.gateway || route.interface === 'eth0') };
	const [missing] = attachUplinks([network('198.51.100.11')], noGateway);
	t.regex(missing!.problem!, /no gateway on eth1.*--via GATEWAY/);
	t.deepEqual(uplinkFor(network('198.51.100.11', '198.51.100.253'), noGateway), { interface: 'eth1', table: 20_003, gateway: '198.51.100.253', connected: '198.51.100.0/24' });
	t.regex((uplinkFor(network('198.51.100.11', '203.0.113.1'), facts) as { problem: string }).problem, /not on 198\.51\.100\.0\/24/);
});

test('rules and table routes, as ip argument vectors: connected before default, tagged with our protocol', (t) => {
	const desired = desiredRouting(attachUplinks([network('198.51.100.11')], facts));
	const commands = routingCommands(diffRouting({ rules: [], routes: [] }, desired)).map((args) => args.join(' '));
	t.deepEqual(commands, [
		'route replace 198.51.100.0/24 dev eth1 src 198.51.100.11 table 20003 protocol 211',
		'route replace default via 198.51.100.254 dev eth1 table 20003 protocol 211',
		'rule add from 10.140.0.0/24 lookup main suppress_prefixlength 0 priority 10000 protocol 211',
		'rule add from 10.140.0.0/24 lookup 20003 priority 10001 protocol 211',
	]);
	t.deepEqual(routingCommands(diffRouting(desired, desired)), []);
	t.deepEqual(
		routingCommands(diffRouting(desired, { rules: [], routes: [] })).map((args) => args.join(' ')),
		[
			'rule del from 10.140.0.0/24 lookup main suppress_prefixlength 0 priority 10000 protocol 211',
			'rule del from 10.140.0.0/24 lookup 20003 priority 10001 protocol 211',
			'route del 198.51.100.0/24 dev eth1 table 20003 protocol 211',
			'route del default via 198.51.100.254 dev eth1 table 20003 protocol 211',
		],
	);
});
