// watch's Prometheus metrics (prom-client, a registry of its own): named as Prometheus and
// kube-proxy name theirs (a `docker_egress_` prefix, base units, `_seconds`, `_total`). Every value
// comes from the WatchRecord that watch keeps anyway; a scrape reads nothing from the host or the
// daemon (except the one ping /healthz and /metrics share, see Watcher.probeDaemon). Loaded only
// when --metrics-address is given.
import { readdirSync } from 'node:fs';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { failureReasons, served, triggers, type ServedEntry, type WatchRecord } from './watch-record.js';
import type { RuleStatus } from './status.js';

export const PREFIX = 'docker_egress_';

/** Every status a network or container entry can have: each is a series, zero when none has it. */
export const statuses: readonly RuleStatus[] = ['active', 'missing', 'shadowed', 'source-missing', 'invalid', 'stopped', 'unknown'];

/** Label values from Docker names and labels are anyone's text: cut to this length. */
export const LABEL_MAX = 128;
/** At most this many connection series; the rest are summed into network="_other". */
export const CONNECTION_SERIES_MAX = 2000;

/** Reconciles take tens of milliseconds to about a second (1,000 networks: ~0.7 s). */
const DURATION_BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

export type MetricsInfo = { version: string; startedAt?: number };

export type WatchMetrics = {
	registry: Registry;
	/** The text exposition of one scrape (Prometheus text format 0.0.4). */
	render(): Promise<string>;
};

/** The registry of one watch: every metric below, read from `record` when scraped. */
export function watchMetrics(record: WatchRecord, info: MetricsInfo): WatchMetrics {
	const registry = new Registry();
	const registers = [registry];
	const name = (suffix: string) => `${PREFIX}${suffix}`;
	// What the last read shows, worked out once per scrape, shared by the collectors below.
	let scraped: ReturnType<typeof served> | undefined;
	const current = () => (scraped ??= record.seen ? served(record.seen) : { entries: [], rules: { ipv4: 0, ipv6: 0 } });

	new Gauge({
		name: name('build_info'),
		help: 'Always 1: the plugin version and the firewall backend in use',
		labelNames: ['version', 'backend'],
		registers,
		collect() {
			this.reset();
			this.set({ version: info.version, backend: record.backend || 'unknown' }, 1);
		},
	});

	const duration = new Histogram({
		name: name('sync_duration_seconds'),
		help: 'Duration of reconciles, by what triggered them (start, events, host, firewall, drift, daemon-back, sighup)',
		labelNames: ['trigger'],
		buckets: DURATION_BUCKETS,
		registers,
	});
	for (const trigger of triggers) {
		duration.zero({ trigger });
	}

	record.onSync((trigger, seconds) => {
		duration.observe({ trigger }, seconds);
	});

	new Gauge({
		name: name('last_successful_sync_timestamp_seconds'),
		help: 'When the last reconcile that succeeded ended, in seconds since the epoch (0: none yet)',
		registers,
		collect() {
			this.set(record.lastSuccessAt === undefined ? 0 : record.lastSuccessAt / 1000);
		},
	});

	new Counter({
		name: name('sync_failures_total'),
		help: 'Reconciles that failed, by reason: daemon (not reachable or not answering), firewall (nft, iptables or ip failed), policies (policy file unreadable), other',
		labelNames: ['reason'],
		registers,
		collect() {
			this.reset();
			for (const reason of failureReasons) {
				this.inc({ reason }, record.failures[reason]);
			}
		},
	});

	new Gauge({
		name: name('rules'),
		help: 'Rules of ours in place in the firewall (map elements or chain rules), by address family and backend',
		labelNames: ['family', 'backend'],
		registers,
		collect() {
			const { rules } = current();
			this.reset();
			for (const family of ['ipv4', 'ipv6'] as const) {
				this.set({ family, backend: record.backend || 'unknown' }, rules[family]);
			}
		},
	});

	const byStatus = (metric: string, help: string, containers: boolean) =>
		new Gauge({
			name: name(metric),
			help,
			labelNames: ['status'],
			registers,
			collect() {
				this.reset();
				const counts = new Map<RuleStatus, number>(statuses.map((status) => [status, 0]));
				for (const entry of current().entries) {
					if ((entry.container !== undefined) === containers) {
						counts.set(entry.status, (counts.get(entry.status) ?? 0) + 1);
					}
				}

				for (const [status, count] of counts) {
					this.set({ status }, count);
				}
			},
		});
	byStatus('networks', 'Egress networks by status, as ls shows it (active, missing, shadowed, source-missing, invalid, unknown)', false);
	byStatus('containers', 'Containers with an egress address of their own, one per network they are on, by status, as ps shows it', true);

	new Counter({
		name: name('docker_events_total'),
		help: 'Docker network and container events received',
		registers,
		collect() {
			this.reset();
			this.inc(record.dockerEvents);
		},
	});

	new Counter({
		name: name('drift_repairs_total'),
		help: 'Reconciles that found our rules or routing changed by someone else (drift check or a rule change the kernel reported) and put them back',
		registers,
		collect() {
			this.reset();
			this.inc(record.driftRepairs);
		},
	});

	new Counter({
		name: name('connections_total'),
		help: 'New connections translated to each source address (a NAT rule sees the first packet of each), per network (and container, for its own address), since the rule was written',
		labelNames: ['network', 'container', 'source_ip'],
		registers,
		collect() {
			this.reset();
			for (const { labels, count } of connectionSeries(current().entries)) {
				this.inc(labels, count);
			}
		},
	});

	new Gauge({
		name: name('daemon_up'),
		help: '1 while the Docker daemon answers, 0 while it is unreachable or does not answer',
		registers,
		collect() {
			this.set(record.daemonSeen && !record.daemonDown ? 1 : 0);
		},
	});

	processMetrics(registers, name, info.startedAt);
	return {
		registry,
		async render() {
			scraped = undefined; // worked out afresh once per scrape
			return registry.metrics();
		},
	};
}

type ConnectionLabels = { network: string; container?: string; source_ip: string };

/** One series per entry and source address, label values cut, at most CONNECTION_SERIES_MAX (the rest summed). */
export function connectionSeries(entries: ServedEntry[]): Array<{ labels: ConnectionLabels; count: number }> {
	const series = new Map<string, { labels: ConnectionLabels; count: number }>();
	for (const entry of entries) {
		for (const { sourceIp, count } of entry.connections) {
			let labels: ConnectionLabels = { network: cut(entry.network), ...(entry.container === undefined ? {} : { container: cut(entry.container) }), source_ip: cut(sourceIp) };
			let key = JSON.stringify(labels);
			if (!series.has(key) && series.size >= CONNECTION_SERIES_MAX - 1) {
				labels = { network: '_other', source_ip: '_other' };
				key = JSON.stringify(labels);
			}

			const found = series.get(key);
			if (found) {
				found.count += count;
			} else {
				series.set(key, { labels, count });
			}
		}
	}

	return [...series.values()];
}

function cut(value: string): string {
	return value.length > LABEL_MAX ? `${value.slice(0, LABEL_MAX - 1)}…` : value;
}

/**
 * What an operator needs of the process itself, read when scraped (no timers, no observers:
 * prom-client's default metrics run an event-loop monitor that wakes watch up all the time).
 */
function processMetrics(registers: Registry[], name: (suffix: string) => string, startedAt = Date.now() - process.uptime() * 1000): void {
	new Counter({
		name: name('process_cpu_seconds_total'),
		help: 'CPU time used by the watch process, user and system',
		registers,
		collect() {
			const { user, system } = process.cpuUsage();
			this.reset();
			this.inc((user + system) / 1e6);
		},
	});
	new Gauge({
		name: name('process_resident_memory_bytes'),
		help: 'Resident memory of the watch process',
		registers,
		collect() {
			this.set(process.memoryUsage.rss());
		},
	});
	new Gauge({
		name: name('process_open_fds'),
		help: 'Open file descriptors of the watch process',
		registers,
		collect() {
			try {
				this.set(readdirSync('/proc/self/fd').length);
			} catch {
				this.reset();
			}
		},
	});
	new Gauge({
		name: name('process_start_time_seconds'),
		help: 'When the watch process started, in seconds since the epoch',
		registers,
		collect() {
			this.set(Math.floor(startedAt / 1000));
		},
	});
}
