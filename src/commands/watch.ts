// docker egress watch: the long-running controller (see service/watch.ts). One per host.
import type { Argv } from 'yargs';
import { WATCH_LOCK, tryLock } from '../adapters/lock.js';
import { MetricsServer, parseMetricsAddress, type MetricsAddress } from '../adapters/metrics-server.js';
import { beforeForcedExit, onReload } from '../cli/lifecycle.js';
import { parsedMetadata } from '../metadata.js';
import { EgressError, UsageError, reason } from '../errors.js';
import { requireLocalEndpoint, type Context } from '../service/context.js';
import { createLogger, keepRunningWhenOutputCloses } from '../service/logger.js';
import { Watcher } from '../service/watch.js';

export type WatchCommandOptions = { interval: number; logFormat: 'text' | 'json'; metricsAddress?: string };

/** The environment variable that turns the metrics endpoint on when the flag is not given (a container's way). */
export const METRICS_ADDRESS_ENV = 'DOCKER_EGRESS_METRICS_ADDRESS';

export function watchBuilder(yargs: Argv): Argv {
	return yargs
		.option('interval', { type: 'number', default: 5, describe: 'Seconds between drift checks (rules flushed by others come back within this)', requiresArg: true })
		.option('log-format', { type: 'string', choices: ['text', 'json'], default: 'text', describe: 'Log line format (stderr)' })
		.option('metrics-address', {
			type: 'string',
			describe: `Serve Prometheus metrics on GET /metrics and health on GET /healthz at HOST:PORT, such as 127.0.0.1:9469 (default $${METRICS_ADDRESS_ENV}; off when neither is set)`,
			requiresArg: true,
		});
}

export async function runWatch(options: WatchCommandOptions, context: Context): Promise<void> {
	if (!Number.isFinite(options.interval) || options.interval < 0.1 || options.interval > 3600) {
		throw new UsageError(`invalid --interval ${String(options.interval)}: give seconds between 0.1 and 3600`);
	}

	const metricsAddress = options.metricsAddress ?? (process.env[METRICS_ADDRESS_ENV] || undefined);
	const address = metricsAddress === undefined ? undefined : parseMetricsAddress(metricsAddress);
	requireLocalEndpoint(context);
	await context.policies.read(); // a corrupt state file is an error before anything starts
	const lock = await tryLock(WATCH_LOCK);
	if (!lock) {
		throw new EgressError('another docker egress watch is already running on this host (it holds the lock @docker-egress/watch)');
	}

	// A log collector that restarts, or `watch | head -1`, must not stop the rules being kept.
	keepRunningWhenOutputCloses();
	const log = createLogger(options.logFormat);
	const watcher = new Watcher(context, log, { intervalMs: options.interval * 1000 });
	let server: MetricsServer | undefined;
	if (address) {
		try {
			server = await serveMetrics(address, watcher); // a bad address is an error before anything starts
		} catch (error) {
			await lock.release();
			throw error;
		}

		log.info('metrics served', { address: server.address, paths: '/metrics /healthz' });
	}

	onReload(() => {
		watcher.reload();
	});
	// Every way watch stops ends with this line, a stop that overran its grace period included.
	const forgetLastWords = beforeForcedExit((why) => {
		log.info('watch stopped', { reason: why });
	});
	try {
		await watcher.run();
		log.info('watch stopped', { reason: String((context.signal.reason as Error | undefined)?.message ?? 'signal') });
	} catch (error) {
		log.error('watch stopped', { reason: reason(error) });
		throw error;
	} finally {
		forgetLastWords();
		await server?.close();
		await lock.release();
	}
}

/** The metrics endpoint of this watch; prom-client is loaded only here. */
async function serveMetrics(address: MetricsAddress, watcher: Watcher): Promise<MetricsServer> {
	const { watchMetrics } = await import('../service/metrics.js');
	const metrics = watchMetrics(watcher.record, { version: parsedMetadata().Version });
	return MetricsServer.listen(address, {
		refresh: async () => watcher.probeDaemon(),
		metrics: async () => ({ contentType: metrics.registry.contentType, body: await metrics.render() }),
		health: () => watcher.record.health(),
	});
}
