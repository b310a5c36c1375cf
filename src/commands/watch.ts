// docker egress watch: the long-running controller (see service/watch.ts). One per host.
import type { Argv } from 'yargs';
import { WATCH_LOCK, tryLock } from '../adapters/lock.js';
import { beforeForcedExit, onReload } from '../cli/lifecycle.js';
import { EgressError, UsageError, reason } from '../errors.js';
import { requireLocalEndpoint, type Context } from '../service/context.js';
import { createLogger, keepRunningWhenOutputCloses } from '../service/logger.js';
import { Watcher } from '../service/watch.js';

export type WatchCommandOptions = { interval: number; logFormat: 'text' | 'json' };

export function watchBuilder(yargs: Argv): Argv {
	return yargs
		.option('interval', { type: 'number', default: 5, describe: 'Seconds between drift checks (rules flushed by others come back within this)', requiresArg: true })
		.option('log-format', { type: 'string', choices: ['text', 'json'], default: 'text', describe: 'Log line format (stderr)' });
}

export async function runWatch(options: WatchCommandOptions, context: Context): Promise<void> {
	if (!Number.isFinite(options.interval) || options.interval < 0.1 || options.interval > 3600) {
		throw new UsageError(`invalid --interval ${String(options.interval)}: give seconds between 0.1 and 3600`);
	}

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
		await lock.release();
	}
}
