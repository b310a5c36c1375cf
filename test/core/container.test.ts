import test from 'ava';
import { egressContainers, type DockerContainer } from '../../src/core/container.js';
import { desiredDrops } from '../../src/core/drops.js';
import { egressNetworks, type DockerNetwork, type HostAddress } from '../../src/core/network.js';
import { absentTable, parseNftTable, renderNft } from '../../src/core/nft.js';
import { desiredRules } from '../../src/core/rules.js';

const host: HostAddress[] = [
	{ interface: 'eth0', address: '192.0.2.1', prefix: 24, family: 'ipv4' },
	{ interface: 'eth0', address: '192.0.2.11', prefix: 24, family: 'ipv4' },
	{ interface: 'eth0', address: '192.0.2.12', prefix: 24, family: 'ipv4' },
	{ interface: 'eth0', address: '2001:db8::12', prefix: 64, family: 'ipv6' },
];

const networks: DockerNetwork[] = [
	{ id: 'e'.repeat(64), name: 'z_egress', driver: 'bridge', labels: { 'docker-egress.source-ip': '192.0.2.11' }, options: {}, subnets: ['10.79.1.0/24'] },
	{ id: 'p'.repeat(64), name: 'z_plain', driver: 'bridge', labels: {}, options: {}, subnets: ['10.79.2.0/24', '2001:db8:2::/64'] },
	{ id: 'b'.repeat(64), name: 'bridge', driver: 'bridge', labels: {}, options: { 'com.docker.network.bridge.name': 'docker0' }, subnets: ['172.17.0.0/16'] },
	{ id: 'h'.repeat(64), name: 'host', driver: 'host', labels: {}, options: {}, subnets: [] },
	{ id: 'm'.repeat(64), name: 'z_mac', driver: 'macvlan', labels: {}, options: {}, subnets: ['192.168.5.0/24'] },
];

function container(name: string, labels: Record<string, string>, endpoints: DockerContainer['endpoints'], running = true): DockerContainer {
	return { id: `${name}`.padEnd(64, '0'), name, labels, running, networkMode: endpoints[0]?.network ?? 'none', endpoints };
}

const on = (network: string, ipv4?: string, ipv6?: string) => ({ network, networkId: networks.find((n) => n.name === network)!.id, ipv4, ipv6 });

function entries(containers: DockerContainer[], hostAddresses = host) {
	return egressContainers(containers, networks, egressNetworks(networks, hostAddresses, [], []), hostAddresses);
}

test('only labelled containers; one entry per network; their addresses are /32 rules tagged as containers, first', (t) => {
	const result = entries([
		container('c_own', { 'docker-egress.source-ip': '192.0.2.12' }, [on('z_egress', '10.79.1.2'), on('bridge', '172.17.0.2')]),
		container('c_plain', {}, [on('z_plain', '10.79.2.2')]),
	]);
	t.deepEqual(
		result.map((entry) => [entry.name, entry.container!.network, entry.subnets, entry.bridge, entry.problem]),
		[
			['c_own', 'bridge', ['172.17.0.2/32'], 'docker0', undefined],
			['c_own', 'z_egress', ['10.79.1.2/32'], 'br-eeeeeeeeeeee', undefined],
		],
	);
	const rules = desiredRules([...egressNetworks(networks, host, [], []), ...result]);
	t.deepEqual(
		rules.map((rule) => [rule.subnet, rule.sourceIp, rule.container ?? false]),
		[
			['10.79.1.2/32', '192.0.2.12', true],
			['172.17.0.2/32', '192.0.2.12', true],
			['10.79.1.0/24', '192.0.2.11', false],
		],
	);
});

test('an address the host lacks: source-missing, its /32 dropped; malformed or inside its subnet: invalid, dropped', (t) => {
	const [missing, banana, inside] = entries(
		[
			container('a_missing', { 'docker-egress.source-ip': '192.0.2.99' }, [on('z_plain', '10.79.2.5')]),
			container('b_banana', { 'docker-egress.source-ip': 'banana' }, [on('z_plain', '10.79.2.6')]),
			container('c_inside', { 'docker-egress.source-ip': '10.79.2.1' }, [on('z_plain', '10.79.2.7')]),
		],
		[...host, { interface: 'eth1', address: '10.79.2.1', prefix: 32, family: 'ipv4' }],
	);
	t.true(missing!.sourceMissing);
	t.is(banana!.sourceMissing, undefined);
	t.regex(inside!.problem!, /inside the subnet 10\.79\.2\.0\/24 of its network z_plain/);
	t.deepEqual(desiredRules([missing!, banana!, inside!]), []);
	t.deepEqual(
		desiredDrops([missing!, banana!, inside!]).map((drop) => drop.subnet),
		['10.79.2.5/32', '10.79.2.6/32', '10.79.2.7/32'],
	);
});

test('host, none and macvlan: skipped with a reason, nothing dropped; stopped: no rule, no problem', (t) => {
	const result = entries([
		container('h', { 'docker-egress.source-ip': '192.0.2.12' }, [on('host')]),
		{ ...container('n', { 'docker-egress.source-ip': '192.0.2.12' }, []), networkMode: 'none' },
		container('m', { 'docker-egress.source-ip': '192.0.2.12' }, [on('z_mac', '192.168.5.2')]),
		container('s', { 'docker-egress.source-ip': '192.0.2.12' }, [on('z_plain')], false),
	]);
	const byName = Object.fromEntries(result.map((entry) => [entry.name, entry]));
	t.regex(byName['h']!.problem!, /host network/);
	t.regex(byName['n']!.problem!, /no network of its own/);
	t.regex(byName['m']!.problem!, /macvlan network z_mac/);
	t.is(byName['s']!.problem, undefined);
	t.false(byName['s']!.container!.running);
	t.deepEqual(desiredDrops(result), []);
	t.deepEqual(desiredRules(result), []);
});

test('a container on a network that fails closed fails closed with it, without a drop of its own (the subnet covers it)', (t) => {
	const withoutEleven = host.filter((address) => address.address !== '192.0.2.11');
	const result = entries([container('c', { 'docker-egress.source-ip': '192.0.2.12' }, [on('z_egress', '10.79.1.2')])], withoutEleven);
	t.true(result[0]!.sourceMissing);
	t.regex(result[0]!.problem!, /its network z_egress fails closed/);
	const all = [...egressNetworks(networks, withoutEleven, [], []), ...result];
	t.deepEqual(
		desiredDrops(all).map((drop) => drop.subnet),
		['10.79.1.0/24'],
	);
});

test('IPv6: a container with source-ipv6 gets a /128 rule for its IPv6 address', (t) => {
	const [entry] = entries([container('c6', { 'docker-egress.source-ipv6': '2001:db8::12' }, [on('z_plain', '10.79.2.9', '2001:db8:2::9')])]);
	t.deepEqual(entry!.subnets, []);
	t.deepEqual(entry!.subnets6, ['2001:db8:2::9/128']);
	t.deepEqual(
		desiredRules([entry!], 'ipv6').map((rule) => [rule.subnet, rule.sourceIp]),
		[['2001:db8:2::9/128', '2001:db8::12']],
	);
	t.deepEqual(desiredRules([entry!]), []);
});

test('nftables: containers get a map looked up first, after traffic to any Docker bridge returns; read back intact', (t) => {
	const text = renderNft(
		[
			{ network: 'c', id: 'x', subnet: '10.79.1.2/32', bridge: 'z_egress', sourceIp: '192.0.2.12', container: true },
			{ network: 'z_egress', subnet: '10.79.1.0/24', bridge: 'z_egress', sourceIp: '192.0.2.11' },
		],
		['ip'],
		{ ip: false },
		[],
		['z_egress', 'docker0'],
	);
	t.true(text.includes('\tmap container_source {\n\t\ttype ipv4_addr : ipv4_addr\n\t\tcounter\n\t\telements = { 10.79.1.2 comment "c" : 192.0.2.12 }\n\t}'));
	t.true(text.includes('\t\toifname @docker_bridges return\n\t\tsnat ip to ip saddr map @container_source\n\t\tip saddr . oifname @network_bridge return\n\t\tsnat ip to ip saddr map @network_source'));
	t.false(text.includes('chain forward'), 'no drops, no forward chain');
	t.is(absentTable.containers.length, 0);
	// As nft 1.0.6 prints it back (`nft -j list table ip docker-egress`), trimmed to what matters.
	const items = JSON.parse(
		'[{"map":{"family":"ip","name":"network_source","table":"docker-egress","type":"ipv4_addr","map":"ipv4_addr","flags":["interval"],"elem":[[{"prefix":{"addr":"10.79.1.0","len":24}},"192.0.2.11"]]}},{"set":{"family":"ip","name":"network_bridge","table":"docker-egress","type":["ipv4_addr","ifname"],"flags":["interval"],"elem":[{"concat":[{"prefix":{"addr":"10.79.1.0","len":24}},"z_egress"]}]}},{"map":{"family":"ip","name":"container_source","table":"docker-egress","type":"ipv4_addr","map":"ipv4_addr","elem":[[{"elem":{"val":"10.79.1.2","comment":"c"}},"192.0.2.12"]]}},{"set":{"family":"ip","name":"docker_bridges","table":"docker-egress","type":"ifname","elem":["docker0","z_egress"]}},{"chain":{"family":"ip","table":"docker-egress","name":"postrouting","type":"nat","hook":"postrouting","prio":90,"policy":"accept"}},{"rule":{"family":"ip","table":"docker-egress","chain":"postrouting","expr":[{"match":{"op":"==","left":{"meta":{"key":"oifname"}},"right":"@docker_bridges"}},{"return":null}]}},{"rule":{"family":"ip","table":"docker-egress","chain":"postrouting","expr":[{"snat":{"family":"ip","addr":{"map":{"key":{"payload":{"protocol":"ip","field":"saddr"}},"data":"@container_source"}}}}]}},{"rule":{"family":"ip","table":"docker-egress","chain":"postrouting","expr":[{"match":{"op":"==","left":{"concat":[{"payload":{"protocol":"ip","field":"saddr"}},{"meta":{"key":"oifname"}}]},"right":"@network_bridge"}},{"return":null}]}},{"rule":{"family":"ip","table":"docker-egress","chain":"postrouting","expr":[{"snat":{"family":"ip","addr":{"map":{"key":{"payload":{"protocol":"ip","field":"saddr"}},"data":"@network_source"}}}}]}}]',
	) as Array<Record<string, unknown>>;
	const state = parseNftTable(items, 'ip');
	t.true(state.intact, state.damage.join('; '));
	t.deepEqual(state.containers, [{ subnet: '10.79.1.2/32', sourceIp: '192.0.2.12', network: 'c' }]);
});

test("policy routing: a container's own address is looked up before its network's subnet; on a network routed elsewhere, an address of the main uplink looks up main", async (t) => {
	const { desiredRouting, RULE_PRIORITY_CONTAINER_MAIN, RULE_PRIORITY_CONTAINER_UPLINK, RULE_PRIORITY_UPLINK } = await import('../../src/core/routing.js');
	const [net] = egressNetworks(networks, host, [], []);
	const routedNetwork = { ...net!, uplink: { interface: 'eth1', table: 20003, gateway: '198.51.100.254', connected: '198.51.100.0/24' } };
	const [own] = entries([container('c_main', { 'docker-egress.source-ip': '192.0.2.12' }, [on('z_egress', '10.79.1.2')])]);
	const [viaB] = entries([container('c_b', { 'docker-egress.source-ip': '192.0.2.12' }, [on('z_egress', '10.79.1.3')])]);
	const plan = desiredRouting([routedNetwork, own!, { ...viaB!, uplink: { interface: 'eth2', table: 20004, gateway: '203.0.113.254', connected: '203.0.113.0/24' } }]);
	const rule = (from: string) => plan.rules.filter((r) => r.from === from).map((r) => [r.priority, r.table]);
	t.deepEqual(rule('10.79.1.0/24'), [[10_000, 'main'], [RULE_PRIORITY_UPLINK, 20003]]);
	t.deepEqual(rule('10.79.1.3/32'), [[RULE_PRIORITY_CONTAINER_MAIN, 'main'], [RULE_PRIORITY_CONTAINER_UPLINK, 20004]]);
	t.deepEqual(rule('10.79.1.2/32'), [[RULE_PRIORITY_CONTAINER_UPLINK, 'main']]);
	t.true(RULE_PRIORITY_CONTAINER_UPLINK < 10_000);
});
