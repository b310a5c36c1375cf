import test from 'ava';
import { absentTable, nftRules, parseNftTable, renderNft } from '../../src/core/nft.js';
import type { SnatRule } from '../../src/core/rules.js';

const rules: SnatRule[] = [
	{ network: 'z_a', subnet: '10.1.0.0/24', bridge: 'br-abc', sourceIp: '192.0.2.11' },
	{ network: 'z_b', subnet: '10.2.0.0/24', bridge: 'z_b', sourceIp: '192.0.2.12' },
	{ network: 'z_6', subnet: '2001:db8:1::/64', bridge: 'z_6', sourceIp: '2001:db8:a::11' },
];

test('the whole layout is one nft -f text: each table declared, deleted and declared again', (t) => {
	t.is(
		renderNft(rules),
		[
			'table ip docker-egress {}',
			'delete table ip docker-egress',
			'table ip docker-egress {',
			'\tcomment "docker-egress: egress source addresses; managed by docker egress, do not edit"',
			'\tmap network_source {',
			'\t\ttype ipv4_addr : ipv4_addr',
			'\t\tflags interval',
			'\t\tcounter',
			'\t\telements = { 10.1.0.0/24 comment "z_a" : 192.0.2.11, 10.2.0.0/24 comment "z_b" : 192.0.2.12 }',
			'\t}',
			'\tset network_bridge {',
			'\t\ttype ipv4_addr . ifname',
			'\t\tflags interval',
			'\t\telements = { 10.1.0.0/24 . "br-abc", 10.2.0.0/24 . "z_b" }',
			'\t}',
			'\tchain postrouting {',
			'\t\ttype nat hook postrouting priority srcnat - 10; policy accept;',
			'\t\tip saddr . oifname @network_bridge return',
			'\t\tsnat ip to ip saddr map @network_source',
			'\t}',
			'}',
			'table ip6 docker-egress {}',
			'delete table ip6 docker-egress',
			'table ip6 docker-egress {',
			'\tcomment "docker-egress: egress source addresses; managed by docker egress, do not edit"',
			'\tmap network_source {',
			'\t\ttype ipv6_addr : ipv6_addr',
			'\t\tflags interval',
			'\t\tcounter',
			'\t\telements = { 2001:db8:1::/64 comment "z_6" : 2001:db8:a::11 }',
			'\t}',
			'\tset network_bridge {',
			'\t\ttype ipv6_addr . ifname',
			'\t\tflags interval',
			'\t\telements = { 2001:db8:1::/64 . "z_6" }',
			'\t}',
			'\tchain postrouting {',
			'\t\ttype nat hook postrouting priority srcnat - 10; policy accept;',
			'\t\tip6 saddr . oifname @network_bridge return',
			'\t\tsnat ip6 to ip6 saddr map @network_source',
			'\t}',
			'}',
			'',
		].join('\n'),
	);
});

test('no rules: the table goes (only where it exists); nothing at all to do is empty input', (t) => {
	t.is(renderNft([], ['ip'], { ip: true }), 'table ip docker-egress {}\ndelete table ip docker-egress\n');
	t.is(renderNft([], ['ip', 'ip6'], { ip: false, ip6: false }), '');
});

test('names are for people: quotes and odd characters never reach nft raw, long ones are cut', (t) => {
	const text = renderNft([{ network: `a"b\n${'x'.repeat(300)}`, subnet: '10.3.0.0/24', bridge: 'br-x', sourceIp: '192.0.2.13' }], ['ip']);
	t.regex(text, /10\.3\.0\.0\/24 comment "a_b_x{116}" : 192\.0\.2\.13/);
});

// What `nft -j list table ip docker-egress` printed for the layout above (nft 1.0.6).
const listed = {
	nftables: [
		{ metainfo: { version: '1.0.6', release_name: 'Lester Gooch #5', json_schema_version: 1 } },
		{ table: { family: 'ip', name: 'docker-egress', handle: 3 } },
		{
			map: {
				family: 'ip',
				name: 'network_source',
				table: 'docker-egress',
				type: 'ipv4_addr',
				handle: 2,
				map: 'ipv4_addr',
				flags: ['interval'],
				elem: [
					[{ elem: { val: { prefix: { addr: '10.1.0.0', len: 24 } }, comment: 'z_a' } }, '192.0.2.11'],
					[{ elem: { val: '10.2.0.7', comment: 'z_b' } }, '192.0.2.12'],
				],
			},
		},
		{
			set: {
				family: 'ip',
				name: 'network_bridge',
				table: 'docker-egress',
				type: ['ipv4_addr', 'ifname'],
				handle: 3,
				flags: ['interval'],
				elem: [{ concat: [{ prefix: { addr: '10.1.0.0', len: 24 } }, 'br-abc'] }, { concat: ['10.2.0.7', 'z_b'] }],
			},
		},
		{ chain: { family: 'ip', table: 'docker-egress', name: 'postrouting', handle: 1, type: 'nat', hook: 'postrouting', prio: 90, policy: 'accept' } },
		{
			rule: {
				family: 'ip',
				table: 'docker-egress',
				chain: 'postrouting',
				handle: 4,
				expr: [{ match: { op: '==', left: { concat: [{ payload: { protocol: 'ip', field: 'saddr' } }, { meta: { key: 'oifname' } }] }, right: '@network_bridge' } }, { return: null }],
			},
		},
		{ rule: { family: 'ip', table: 'docker-egress', chain: 'postrouting', handle: 5, expr: [{ snat: { addr: { map: { key: { payload: { protocol: 'ip', field: 'saddr' } }, data: '@network_source' } } } }] } },
	] as Array<Record<string, any>>,
};

test('reads our table back: elements with their bridge and name, intact', (t) => {
	const state = parseNftTable(listed.nftables, 'ip');
	t.true(state.intact, state.damage.join('; '));
	t.deepEqual(nftRules({ ip: state, ip6: absentTable }), [
		{ network: 'z_a', subnet: '10.1.0.0/24', bridge: 'br-abc', sourceIp: '192.0.2.11' },
		{ network: 'z_b', subnet: '10.2.0.7/32', bridge: 'z_b', sourceIp: '192.0.2.12' },
	]);
});

test('a flushed chain, a changed priority or a rule someone added is damage', (t) => {
	t.false(parseNftTable(listed.nftables.filter((item) => !item['rule']), 'ip').intact);
	const moved = structuredClone(listed.nftables);
	moved.find((item) => item['chain'])!['chain'].prio = 100;
	t.regex(parseNftTable(moved, 'ip').damage.join(), /priority 90/);
	const extra = structuredClone(listed.nftables);
	extra.push({ rule: { family: 'ip', table: 'docker-egress', chain: 'postrouting', handle: 9, expr: [{ accept: null }] } });
	t.false(parseNftTable(extra, 'ip').intact);
});

test('our rules are recognised by structure: a key a newer nft adds does not make the table damaged', (t) => {
	const newer = structuredClone(listed.nftables);
	const snat = newer.find((item) => item['rule']?.handle === 5)!['rule'].expr[0].snat;
	snat.family = 'ip';
	t.true(parseNftTable(newer, 'ip').intact);
	const other = structuredClone(listed.nftables);
	other.find((item) => item['rule']?.handle === 5)!['rule'].expr[0].snat.addr.map.data = '@elsewhere';
	t.false(parseNftTable(other, 'ip').intact);
});

// `nft -j list table ip docker-egress` (nft 1.0.6) of a table with one network served and one failing closed.
const failClosedJson = JSON.parse(
	'[{"metainfo":{"version":"1.0.6","json_schema_version":1}},{"table":{"family":"ip","name":"docker-egress","handle":2}},{"map":{"family":"ip","name":"network_source","table":"docker-egress","type":"ipv4_addr","handle":3,"map":"ipv4_addr","flags":["interval"],"elem":[[{"elem":{"val":{"prefix":{"addr":"10.1.0.0","len":24}},"comment":"a"}},"192.0.2.11"]]}},{"set":{"family":"ip","name":"network_bridge","table":"docker-egress","type":["ipv4_addr","ifname"],"handle":4,"flags":["interval"],"elem":[{"concat":[{"prefix":{"addr":"10.1.0.0","len":24}},"br-a"]}]}},{"set":{"family":"ip","name":"network_blocked","table":"docker-egress","type":"ipv4_addr","handle":5,"flags":["interval"],"elem":[{"elem":{"val":{"prefix":{"addr":"10.2.0.0","len":24}},"comment":"b"}}]}},{"set":{"family":"ip","name":"docker_bridges","table":"docker-egress","type":"ifname","handle":6,"elem":["br-a","br-b","docker0"]}},{"chain":{"family":"ip","table":"docker-egress","name":"postrouting","handle":1,"type":"nat","hook":"postrouting","prio":90,"policy":"accept"}},{"chain":{"family":"ip","table":"docker-egress","name":"forward","handle":2,"type":"filter","hook":"forward","prio":-10,"policy":"accept"}},{"rule":{"family":"ip","table":"docker-egress","chain":"postrouting","handle":7,"expr":[{"match":{"op":"==","left":{"concat":[{"payload":{"protocol":"ip","field":"saddr"}},{"meta":{"key":"oifname"}}]},"right":"@network_bridge"}},{"return":null}]}},{"rule":{"family":"ip","table":"docker-egress","chain":"postrouting","handle":8,"expr":[{"snat":{"addr":{"map":{"key":{"payload":{"protocol":"ip","field":"saddr"}},"data":"@network_source"}}}}]}},{"rule":{"family":"ip","table":"docker-egress","chain":"forward","handle":9,"expr":[{"match":{"op":"==","left":{"meta":{"key":"oifname"}},"right":"@docker_bridges"}},{"return":null}]}},{"rule":{"family":"ip","table":"docker-egress","chain":"forward","handle":10,"expr":[{"match":{"op":"==","left":{"payload":{"protocol":"ip","field":"saddr"}},"right":"@network_blocked"}},{"drop":null}]}}]',
) as Array<Record<string, unknown>>;

test('fail closed: a filter forward chain drops blocked subnets except out through a Docker bridge; read back intact', (t) => {
	const text = renderNft([rules[0]!], ['ip'], { ip: false }, [{ network: 'b', subnet: '10.2.0.0/24', bridge: 'br-b' }], ['docker0', 'br-b', 'br-a']);
	t.true(text.includes('\tset network_blocked {\n\t\ttype ipv4_addr\n\t\tflags interval\n\t\telements = { 10.2.0.0/24 comment "b" }\n\t}'));
	t.true(text.includes('\t\telements = { "br-a", "br-b", "docker0" }'));
	t.true(text.includes('\tchain forward {\n\t\ttype filter hook forward priority filter - 10; policy accept;\n\t\toifname @docker_bridges return\n\t\tip saddr @network_blocked drop\n\t}'));
	const state = parseNftTable(failClosedJson, 'ip');
	t.true(state.intact, state.damage.join('; '));
	t.deepEqual(state.blocked, [{ subnet: '10.2.0.0/24', network: 'b' }]);
	t.deepEqual(state.bridges, ['br-a', 'br-b', 'docker0']);
	// Only blocked networks: the nat chain stays, with empty map and set.
	t.false(renderNft([], ['ip'], { ip: false }, [{ network: 'b', subnet: '10.2.0.0/24', bridge: 'br-b' }], ['br-b']).includes('elements = {  }'));
	// A drop rule taken out of the forward chain is damage (the table is rebuilt).
	const damaged = parseNftTable(failClosedJson.filter((item) => !(item['rule'] && (item['rule'] as { handle: number }).handle === 10)), 'ip');
	t.false(damaged.intact);
	t.regex(damaged.damage.join(';'), /chain forward does not hold exactly our two rules/);
});
