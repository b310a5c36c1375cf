import test from 'ava';
import { ipMonitorLineMatters, nftMonitorLineMatters } from '../../src/core/host-events.js';

// Lines as `ip -o monitor address route` (iproute2 6.1) prints them.
const ipLines: Array<[string, boolean]> = [
	['3: eg-h    inet 192.0.2.12/24 scope global secondary eg-h\\       valid_lft forever preferred_lft forever', true],
	['Deleted 3: eg-h    inet 192.0.2.12/24 scope global secondary eg-h\\       valid_lft forever preferred_lft forever', true],
	['3: egx1    inet6 2001:db8::5/64 scope global nodad \\       valid_lft forever preferred_lft forever', true],
	['local 192.0.2.12 dev eg-h table local proto kernel scope host src 192.0.2.12 ', true],
	['Deleted local 192.0.2.12 dev eg-h table local proto kernel scope host src 192.0.2.12 ', true],
	['broadcast 192.0.2.255 dev egx1 table local proto kernel scope link src 192.0.2.12 ', true],
	['192.0.2.0/24 dev egx1 proto kernel scope link src 192.0.2.12 ', true],
	['198.51.100.0/24 via 192.0.2.254 dev egx1 ', true],
	['default via 192.0.2.254 dev eg-h ', true],
	['2001:db8::/64 dev egx1 proto kernel metric 256 pref medium', true],
	['local 2001:db8::5 dev egx1 table local proto kernel metric 0 pref medium', true],
	['[ROUTE]192.0.2.0/24 dev egx1 proto kernel scope link src 192.0.2.12', true],
	// What every container's veth brings: never a source address.
	['multicast ff00::/8 dev veth1a2b3c table local proto kernel metric 256 pref medium', false],
	['fe80::/64 dev veth1a2b3c proto kernel metric 256 pref medium', false],
	['Deleted fe80::/64 dev egx1 proto kernel metric 256 pref medium', false],
	['local fe80::d871:dfff:febf:de dev veth1a2b3c table local proto kernel metric 0 pref medium', false],
	['12: veth1a2b3c    inet6 fe80::d871:dfff:febf:de/64 scope link \\       valid_lft forever preferred_lft forever', false],
	['Deleted 2: egx2    inet6 fe80::9410:8dff:fe94:d6f6/64 scope link tentative \\       valid_lft forever preferred_lft forever', false],
	['ff02::/16 dev eg-h table local', false],
	// Not link-local, whatever they look like.
	['fe8::/16 dev eg-h', true],
	['fec0::/10 dev eg-h', true],
	['', false],
	['   ', false],
	// Anything else counts as a change (a reconcile too many costs little).
	['something nobody has seen before', true],
	['\u001b[31mDeleted', true],
];

for (const [line, matters] of ipLines) {
	test(`ip monitor: ${matters ? 'acts on' : 'ignores'} ${JSON.stringify(line.slice(0, 70))}`, (t) => {
		t.is(ipMonitorLineMatters(line), matters);
	});
}

const ours = [
	{ family: 'ip', table: 'docker-egress' },
	{ family: 'ip6', table: 'docker-egress' },
];

// Lines as `nft -j monitor rules` (nft 1.0.6) prints them.
const nftLines: Array<[string, string, boolean]> = [
	['a flushed chain of ours', '{"delete": {"rule": {"family": "ip", "table": "docker-egress", "chain": "postrouting", "handle": 4, "expr": [{"return": null}]}}}', true],
	['our own write', '{"add": {"rule": {"family": "ip6", "table": "docker-egress", "chain": "postrouting", "handle": 5, "expr": []}}}', true],
	['a table of ours deleted', '{"delete": {"table": {"family": "ip", "name": "docker-egress", "handle": 1}}}', true],
	['a chain of ours deleted', '{"delete": {"chain": {"family": "ip", "table": "docker-egress", "name": "postrouting", "handle": 1}}}', true],
	['Docker 29 nftables rules', '{"add": {"rule": {"family": "ip", "table": "docker-bridges", "chain": "filter-forward", "handle": 40, "expr": []}}}', false],
	['the same name in another family', '{"add": {"rule": {"family": "inet", "table": "docker-egress", "chain": "x", "handle": 4, "expr": []}}}', false],
	['iptables-nft nat', '{"delete": {"rule": {"family": "ip", "table": "nat", "chain": "POSTROUTING", "handle": 9}}}', false],
	['blank', '', false],
	['not JSON', 'Segmentation fault', true],
	['cut JSON', '{"delete": {"rule": {"family": "ip", "tab', true],
	['JSON but not an object', '[1, 2]', true],
	['an object without an event', '{}', true],
	['an event without family', '{"delete": {"rule": {"table": "nat"}}}', true],
	['an event of an unknown shape', '{"delete": 5}', true],
	['null', 'null', true],
];

for (const [what, line, matters] of nftLines) {
	test(`nft monitor: ${matters ? 'acts on' : 'ignores'} ${what}`, (t) => {
		t.is(nftMonitorLineMatters(line, ours), matters);
	});
}

test('nft monitor: the iptables backend cares about iptables-nft nat tables', (t) => {
	const nat = [
		{ family: 'ip', table: 'nat' },
		{ family: 'ip6', table: 'nat' },
	];
	t.true(nftMonitorLineMatters('{"delete": {"rule": {"family": "ip6", "table": "nat", "chain": "DOCKER-EGRESS", "handle": 9}}}', nat));
	t.false(nftMonitorLineMatters('{"delete": {"rule": {"family": "ip", "table": "filter", "chain": "FORWARD", "handle": 9}}}', nat));
});
