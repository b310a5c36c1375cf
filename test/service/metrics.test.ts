import test from 'ava';
import type { FirewallBackend, FirewallState, RuleCheck } from '../../src/adapters/firewall.js';
import type { RuleCounter } from '../../src/core/connections.js';
import type { EgressNetwork } from '../../src/core/network.js';
import { CONNECTION_SERIES_MAX, connectionSeries, LABEL_MAX, statuses, watchMetrics } from '../../src/service/metrics.js';
import { WatchRecord } from '../../src/service/watch-record.js';

function network(name: string, subnet: string, sourceIp: string, extra: Partial<EgressNetwork> = {}): EgressNetwork {
	return { id: `${name}-id`, name, via: 'label', bridge: name, subnets: [subnet], sourceIp, subnets6: [], masquerade: false, ...extra };
}

/** A backend whose state holds these counters; rules without a counter are missing. */
function fakeBackend(counters: RuleCounter[], shadowed = new Set<string>()): FirewallBackend {
	return {
		name: 'nftables',
		counters: () => counters,
		check: (_state: FirewallState, rules: Array<{ subnet: string; network: string }>): RuleCheck => {
			if (rules.some((rule) => shadowed.has(rule.network))) return { status: 'shadowed', by: 'someone' };
			return rules.every((rule) => counters.some((counter) => counter.subnet === rule.subnet)) ? { status: 'active' } : { status: 'missing', why: 'no element' };
		},
	} as unknown as FirewallBackend;
}

const networks: EgressNetwork[] = [
	network('z_a', '10.1.0.0/24', '192.0.2.11', { subnets6: ['2001:db8:1::/64'], sourceIpv6: '2001:db8:a::11' }),
	network('z_b', '10.2.0.0/24', '192.0.2.12'),
	network('z_gone', '10.3.0.0/24', '192.0.2.99', { problem: 'not on this host', sourceMissing: true, blocked: { ipv4: true, ipv6: false } }),
	network('z_shadow', '10.4.0.0/24', '192.0.2.13'),
	network('web-1', '10.1.0.5/32', '192.0.2.14', { container: { network: 'z_a', networkId: 'z_a-id', running: true, address: '10.1.0.5' } }),
];
const counters: RuleCounter[] = [
	{ subnet: '10.1.0.5/32', sourceIp: '192.0.2.14', packets: 2 },
	{ subnet: '10.1.0.0/24', sourceIp: '192.0.2.11', packets: 3 },
	{ subnet: '2001:db8:1::/64', sourceIp: '2001:db8:a::11', packets: 4 },
	{ subnet: '10.2.0.0/24', sourceIp: '192.0.2.12', packets: 0 },
	{ subnet: '10.4.0.0/24', sourceIp: '192.0.2.13', packets: 1 },
];

function recorded(): WatchRecord {
	const record = new WatchRecord(() => 1_764_000_000_000);
	record.backend = 'nftables';
	record.seen = { backend: fakeBackend(counters, new Set(['z_shadow'])), firewall: { backend: 'nftables', foreign: [] }, routing: { rules: [], routes: [] }, networks, bridges: new Set() };
	return record;
}

/** The value of one sample line, by its exact series text. */
function sample(text: string, series: string): number | undefined {
	const line = text.split('\n').find((candidate) => candidate.startsWith(`${series} `));
	return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

test('every metric is named docker_egress_*, in base units, counters end in _total, and each has HELP and TYPE', async (t) => {
	const text = await watchMetrics(recorded(), { version: '0.1.0' }).render();
	const types = new Map([...text.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map((match) => [match[1]!, match[2]!]));
	t.deepEqual([...types.keys()].sort(), [
		'docker_egress_build_info',
		'docker_egress_connections_total',
		'docker_egress_containers',
		'docker_egress_daemon_up',
		'docker_egress_docker_events_total',
		'docker_egress_drift_repairs_total',
		'docker_egress_last_successful_sync_timestamp_seconds',
		'docker_egress_networks',
		'docker_egress_process_cpu_seconds_total',
		'docker_egress_process_open_fds',
		'docker_egress_process_resident_memory_bytes',
		'docker_egress_process_start_time_seconds',
		'docker_egress_rules',
		'docker_egress_sync_duration_seconds',
		'docker_egress_sync_failures_total',
	]);
	for (const [name, type] of types) {
		t.is(type === 'counter', name.endsWith('_total'), name);
		t.regex(text, new RegExp(`^# HELP ${name} \\S`, 'm'));
	}
	t.is(types.get('docker_egress_sync_duration_seconds'), 'histogram');
});

test('values come from the record: statuses of networks and containers, rules per family, connections per source address', async (t) => {
	const record = recorded();
	const text = await watchMetrics(record, { version: '0.1.0' }).render();
	t.is(sample(text, 'docker_egress_build_info{version="0.1.0",backend="nftables"}'), 1);
	t.is(sample(text, 'docker_egress_networks{status="active"}'), 2);
	t.is(sample(text, 'docker_egress_networks{status="source-missing"}'), 1);
	t.is(sample(text, 'docker_egress_networks{status="shadowed"}'), 1);
	t.is(sample(text, 'docker_egress_containers{status="active"}'), 1);
	for (const status of statuses) {
		t.not(sample(text, `docker_egress_networks{status="${status}"}`), undefined, `every status is a series: ${status}`);
	}
	t.is(sample(text, 'docker_egress_rules{family="ipv4",backend="nftables"}'), 4);
	t.is(sample(text, 'docker_egress_rules{family="ipv6",backend="nftables"}'), 1);
	t.is(sample(text, 'docker_egress_connections_total{network="z_a",source_ip="192.0.2.11"}'), 3);
	t.is(sample(text, 'docker_egress_connections_total{network="z_a",source_ip="2001:db8:a::11"}'), 4);
	t.is(sample(text, 'docker_egress_connections_total{network="z_b",source_ip="192.0.2.12"}'), 0);
	t.is(sample(text, 'docker_egress_connections_total{network="z_a",container="web-1",source_ip="192.0.2.14"}'), 2);
	t.false(text.includes('network="z_gone"'), 'a network without a rule has no connection series');
	t.is(sample(text, 'docker_egress_daemon_up'), 0, 'not up before the daemon answered');
	t.is(sample(text, 'docker_egress_last_successful_sync_timestamp_seconds'), 0);
	t.is(sample(text, 'docker_egress_sync_failures_total{reason="firewall"}'), 0);

	record.daemonUp();
	record.dockerEvents += 5;
	record.driftRepairs++;
	record.synced('start', 0.2);
	record.failed('drift', 0.03, 'firewall', 'nft failed');
	const after = await watchMetrics(record, { version: '0.1.0' }).render();
	t.is(sample(after, 'docker_egress_daemon_up'), 1);
	t.is(sample(after, 'docker_egress_docker_events_total'), 5);
	t.is(sample(after, 'docker_egress_drift_repairs_total'), 1);
	t.is(sample(after, 'docker_egress_last_successful_sync_timestamp_seconds'), 1_764_000_000);
	t.is(sample(after, 'docker_egress_sync_failures_total{reason="firewall"}'), 1);
	t.is(sample(after, 'docker_egress_sync_failures_total{reason="daemon"}'), 0);
});

test('the histogram counts every reconcile by trigger, failed ones too', async (t) => {
	const record = recorded();
	const metrics = watchMetrics(record, { version: '0.1.0' });
	record.synced('events', 0.04);
	record.synced('events', 0.3);
	record.failed('drift', 0.02, 'daemon', 'gone');
	record.failed('drift', undefined, 'policies', 'not timed: counted as a failure only');
	const text = await metrics.render();
	t.is(sample(text, 'docker_egress_sync_duration_seconds_count{trigger="events"}'), 2);
	t.is(sample(text, 'docker_egress_sync_duration_seconds_bucket{le="0.05",trigger="events"}'), 1);
	t.is(sample(text, 'docker_egress_sync_duration_seconds_count{trigger="drift"}'), 1);
	t.is(sample(text, 'docker_egress_sync_duration_seconds_count{trigger="start"}'), 0);
	t.is(sample(text, 'docker_egress_sync_failures_total{reason="policies"}'), 1);
});

test('label values are anyone\'s text: escaped by prom-client, cut, and the number of connection series bounded', async (t) => {
	const hostile = 'z_"evil"\\\nname';
	const record = new WatchRecord();
	record.seen = {
		backend: fakeBackend([{ subnet: '10.9.0.0/24', sourceIp: '192.0.2.11', packets: 1 }]),
		firewall: { backend: 'nftables', foreign: [] },
		routing: { rules: [], routes: [] },
		networks: [network(hostile, '10.9.0.0/24', '192.0.2.11')],
		bridges: new Set(),
	};
	const text = await watchMetrics(record, { version: '0.1.0' }).render();
	t.true(text.includes('docker_egress_connections_total{network="z_\\"evil\\"\\\\\\nname",source_ip="192.0.2.11"} 1'), text);

	const long = connectionSeries([{ network: 'n'.repeat(500), status: 'active', connections: [{ sourceIp: '192.0.2.11', count: 1 }] }]);
	t.is(long[0]!.labels.network.length, LABEL_MAX);
	const many = connectionSeries(Array.from({ length: CONNECTION_SERIES_MAX + 10 }, (_, i) => ({ network: `z_${i}`, status: 'active' as const, connections: [{ sourceIp: '192.0.2.11', count: 1 }] })));
	t.is(many.length, CONNECTION_SERIES_MAX);
	t.deepEqual(many.at(-1), { labels: { network: '_other', source_ip: '_other' }, count: 11 });
});

test('health: 503 with one line while starting, while the daemon is away, after a failed reconcile; 200 once a reconcile succeeds', (t) => {
	let now = Date.parse('2026-12-03T10:00:00Z');
	const record = new WatchRecord(() => now);
	t.deepEqual(record.health(), { ok: false, reason: 'starting: no reconcile has finished yet' });
	record.daemonUp();
	record.synced('start', 0.1);
	t.deepEqual(record.health(), { ok: true });
	record.daemonUnavailable('not answering', 'no answer within 2 s\nat all');
	now += 5000;
	record.daemonUnavailable('not answering', 'again');
	t.deepEqual(record.health(), { ok: false, reason: 'daemon not answering since 2026-12-03T10:00:00.000Z: no answer within 2 s at all' });
	record.daemonUp();
	t.deepEqual(record.health(), { ok: true });
	record.failed('firewall', 0.1, 'firewall', 'nft -f - failed: Error: Could not process rule');
	t.deepEqual(record.health(), { ok: false, reason: 'last reconcile failed at 2026-12-03T10:00:05.000Z (firewall): nft -f - failed: Error: Could not process rule' });
	record.synced('drift', 0.1);
	t.deepEqual(record.health(), { ok: true });
	record.daemonUnavailable('gone', 'connect ENOENT');
	t.regex((record.health() as { reason: string }).reason, /^daemon unreachable since .*: connect ENOENT$/);
});

test('a drift check that finds the rules right moves the last-sync time on, unless the daemon is away or the last reconcile failed', (t) => {
	let now = 1_000_000;
	const record = new WatchRecord(() => now);
	record.daemonUp();
	record.synced('start', 0.1);
	now += 5000;
	record.verified();
	t.is(record.lastSuccessAt, 1_005_000);
	record.daemonUnavailable('not answering', 'no answer');
	now += 5000;
	record.verified();
	t.is(record.lastSuccessAt, 1_005_000);
	record.daemonUp();
	record.failed('events', 0.1, 'policies', 'policies unreadable');
	now += 5000;
	record.verified();
	t.is(record.lastSuccessAt, 1_005_000);
});
