import test from 'ava';
import { iptablesShadow, nftShadow, type ForeignChain, type Traffic } from '../../src/core/shadow.js';

const ours: Traffic = { subnet: '10.1.0.0/24', bridge: 'z_a', dockerBridges: new Set(['z_a', 'docker0', 'br-other']) };

/** A table like Docker 29's `ip docker-bridges`: a base chain, a verdict map by input interface, a chain per bridge. */
function dockerLike(masqueradeSubnet: string, prio: number): ForeignChain {
	return {
		family: 'ip',
		table: 'docker-bridges',
		chain: 'nat-postrouting',
		prio,
		items: [
			{ chain: { family: 'ip', table: 'docker-bridges', name: 'nat-postrouting', type: 'nat', hook: 'postrouting', prio } },
			{ map: { name: 'nat-postrouting-in-ifaces', elem: [['z_a', { jump: { target: 'nat-postrouting-in__z_a' } }], ['docker0', { jump: { target: 'nat-postrouting-in__docker0' } }]] } },
			{ rule: { chain: 'nat-postrouting', expr: [{ vmap: { key: { meta: { key: 'iifname' } }, data: '@nat-postrouting-in-ifaces' } }] } },
			{
				rule: {
					chain: 'nat-postrouting-in__z_a',
					expr: [
						{ match: { op: '==', left: { payload: { protocol: 'ip', field: 'saddr' } }, right: { prefix: { addr: masqueradeSubnet.split('/')[0], len: Number(masqueradeSubnet.split('/')[1]) } } } },
						{ match: { op: '!=', left: { meta: { key: 'oifname' } }, right: 'z_a' } },
						{ masquerade: null },
					],
				},
			},
			{ rule: { chain: 'nat-postrouting-in__docker0', expr: [{ masquerade: null }] } },
		],
	};
}

test("a chain ahead whose masquerade matches our subnet shadows it (followed through a verdict map)", (t) => {
	t.regex(nftShadow(dockerLike('10.1.0.0/24', 100), ours) ?? '', /docker-bridges chain nat-postrouting-in__z_a \(priority 100\): masquerade/);
});

test('a masquerade of another subnet, or another bridge, does not', (t) => {
	t.is(nftShadow(dockerLike('10.9.0.0/24', 100), ours), undefined);
	t.is(nftShadow(dockerLike('10.9.0.0/24', 100), { ...ours, bridge: 'z_x' }), undefined);
});

test('fib saddr type local (the host itself) and out-interface Docker bridges never match egress', (t) => {
	const chain: ForeignChain = {
		family: 'ip',
		table: 't',
		chain: 'c',
		prio: 50,
		items: [
			{ rule: { chain: 'c', expr: [{ match: { op: '==', left: { fib: { result: 'type', flags: ['saddr'] } }, right: 'local' } }, { masquerade: null }] } },
			{ rule: { chain: 'c', expr: [{ match: { op: '==', left: { meta: { key: 'oifname' } }, right: 'docker0' } }, { masquerade: null }] } },
		],
	};
	t.is(nftShadow(chain, ours), undefined);
	chain.items.push({ rule: { chain: 'c', expr: [{ match: { op: '==', left: { meta: { key: 'oifname' } }, right: 'eth0' } }, { snat: { addr: '192.0.2.1' } }] } });
	t.regex(nftShadow(chain, ours) ?? '', /snat/);
});

test('iptables: rules above our jump, followed into other chains; RETURN at the top bypasses us', (t) => {
	const chains = new Map([['OTHER', ['-A OTHER -s 10.0.0.0/8 -j MASQUERADE']]]);
	t.is(iptablesShadow(['-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE'], chains, ours, 'DOCKER-EGRESS'), undefined);
	t.is(iptablesShadow(['-A POSTROUTING -o docker0 -m addrtype --src-type LOCAL -j MASQUERADE'], chains, ours, 'DOCKER-EGRESS'), undefined);
	t.is(iptablesShadow(['-A POSTROUTING -j OTHER'], chains, ours, 'DOCKER-EGRESS'), '-A OTHER -s 10.0.0.0/8 -j MASQUERADE');
	t.regex(iptablesShadow(['-A POSTROUTING -s 10.1.0.0/16 -j RETURN'], chains, ours, 'DOCKER-EGRESS') ?? '', /ends POSTROUTING/);
	t.is(iptablesShadow(['-A POSTROUTING ! -s 10.0.0.0/8 -j MASQUERADE'], chains, ours, 'DOCKER-EGRESS'), undefined);
	t.is(iptablesShadow(['-A POSTROUTING -s 10.98.0.0/24 -o eth0 -j DOCKER-EGRESS'], chains, ours, 'DOCKER-EGRESS'), undefined);
});

test("an iptables-nft MASQUERADE seen through nft (an xt target) can NAT the traffic", (t) => {
	const chain: ForeignChain = {
		family: 'ip',
		table: 'nat',
		chain: 'POSTROUTING',
		prio: 100,
		items: [{ rule: { chain: 'POSTROUTING', expr: [{ match: { op: '==', left: { payload: { protocol: 'ip', field: 'saddr' } }, right: { prefix: { addr: '10.1.0.0', len: 16 } } } }, { xt: { type: 'target', name: 'MASQUERADE' } }] } }],
	};
	t.regex(nftShadow(chain, ours) ?? '', /MASQUERADE \(an iptables-nft rule\)/);
});
