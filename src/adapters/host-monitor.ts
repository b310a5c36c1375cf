// The host's own change notifications, as long-lived child processes in watch's network
// namespace: `ip -o monitor address route` (addresses and routes, both families) and
// `nft -j monitor rules` (rules added or deleted: a flush, a deleted table or chain, `nft flush
// ruleset`, iptables-nft's changes). Only rule events are asked for: nft 1.0.6 prints set
// elements of our concatenated interval set wrongly and may crash doing so (`nft monitor`,
// `nft monitor elements`), and every change that takes a rule of ours away deletes a rule.
// iptables-legacy has no notifications: the periodic drift check is all there is for it.
//
// A monitor that cannot start or exits is started again with backoff, and never ends watch.
import { spawn, type ChildProcess } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { ipMonitorLineMatters, nftMonitorLineMatters, type NftTableRef } from '../core/host-events.js';
import { NFT_TABLE } from '../core/nft.js';
import { debug } from '../log.js';
import type { FirewallBackend } from './firewall.js';
import { IptablesBackend } from './iptables.js';
import { nftCommand } from './nft-hooks.js';

export type MonitorSpec = {
	/** For log lines: "ip monitor", "nft monitor". */
	name: string;
	file: string;
	args: string[];
	/** Whether an output line is a change worth acting on. */
	matters(line: string): boolean;
};

export function addressMonitor(): MonitorSpec {
	return { name: 'ip monitor', file: 'ip', args: ['-o', 'monitor', 'address', 'route'], matters: ipMonitorLineMatters };
}

/**
 * The rule events of the tables the backend's rules live in: ours (nftables), or iptables-nft's
 * nat tables (the iptables backend, nft flavour). Undefined for iptables-legacy, which has none.
 */
export function firewallMonitor(backend: FirewallBackend): MonitorSpec | undefined {
	let tables: NftTableRef[];
	if (backend instanceof IptablesBackend) {
		if (backend.firewall.flavour !== 'nft') {
			return undefined;
		}

		// nat: our SNAT chain and jump; filter: the fail-closed drops and their jump.
		tables = [
			{ family: 'ip', table: 'nat' },
			{ family: 'ip6', table: 'nat' },
			{ family: 'ip', table: 'filter' },
			{ family: 'ip6', table: 'filter' },
		];
	} else {
		tables = [{ family: 'ip', table: NFT_TABLE }, { family: 'ip6', table: NFT_TABLE }];
	}

	return { name: 'nft monitor', file: nftCommand(), args: ['-j', 'monitor', 'rules'], matters: (line) => nftMonitorLineMatters(line, tables) };
}

export type MonitorOptions = {
	signal: AbortSignal;
	/** A line that matters (debounce on the caller's side: events come in bursts). */
	onChange(line: string): void;
	/** Started again after a failure: changes made meanwhile were not seen. */
	onRestart(): void;
	/** It could not start, or exited. `repeated`: not the first failure since it last ran well. */
	onFailure(why: string, repeated: boolean): void;
	/** First retry delay, ms (default 500); doubles up to maxBackoffMs (default 30 s). */
	minBackoffMs?: number;
	maxBackoffMs?: number;
	/** A child that ran this long before failing ends a spell of failures (default 30 s). */
	healthyAfterMs?: number;
};

/** The longest line kept whole; the rest of a longer one is dropped (it still counts as one line). */
const MAX_LINE = 64 * 1024;

/** Runs `spec` until `signal` aborts, restarting it whenever it fails. Never rejects. */
export async function runMonitor(spec: MonitorSpec, options: MonitorOptions): Promise<void> {
	const { signal } = options;
	const minBackoff = options.minBackoffMs ?? 500;
	let backoff = minBackoff;
	let failing = false;
	let runs = 0;
	while (!signal.aborted) {
		const startedAt = Date.now();
		const why = await runOnce(spec, options, () => {
			runs++;
			if (runs > 1) {
				options.onRestart();
			}
		});
		if (signal.aborted) {
			break;
		}

		if (Date.now() - startedAt >= (options.healthyAfterMs ?? 30_000)) {
			failing = false;
			backoff = minBackoff;
		}

		options.onFailure(`${why}; retrying in ${formatMs(backoff)}`, failing);
		failing = true;
		await sleep(backoff, undefined, { signal }).catch(() => undefined);
		backoff = Math.min(backoff * 2, options.maxBackoffMs ?? 30_000);
	}
}

/** One child, until it ends or the signal aborts; resolves to why it ended. */
async function runOnce(spec: MonitorSpec, options: MonitorOptions, started: () => void): Promise<string> {
	const line = [spec.file, ...spec.args].join(' ');
	debug(`exec: ${line} (long-running)`);
	return new Promise((resolve) => {
		let child: ChildProcess;
		try {
			child = spawn(spec.file, spec.args, { stdio: ['ignore', 'pipe', 'pipe'], signal: options.signal });
		} catch (error) {
			resolve(`${line}: ${(error as Error).message}`);
			return;
		}

		let partial = '';
		let stderr = '';
		let failedToStart: Error | undefined;
		const hardStop = () => {
			// SIGTERM (the spawn signal) ends ip and nft at once; make sure of it.
			setTimeout(() => child.kill('SIGKILL'), 500).unref();
		};

		options.signal.addEventListener('abort', hardStop, { once: true });
		child.once('spawn', started);
		child.once('error', (error) => {
			if (!options.signal.aborted) {
				failedToStart = error;
			}
		});
		child.stdout!.setEncoding('utf8');
		child.stdout!.on('data', (chunk: string) => {
			const lines = (partial + chunk).split('\n');
			partial = lines.pop() ?? '';
			if (partial.length > MAX_LINE) {
				lines.push(partial.slice(0, MAX_LINE));
				partial = '';
			}

			for (const text of lines) {
				if (!options.signal.aborted && spec.matters(text)) {
					options.onChange(text);
				}
			}
		});
		child.stderr!.setEncoding('utf8');
		child.stderr!.on('data', (chunk: string) => {
			stderr = (stderr + chunk).slice(-500);
		});
		child.once('close', (code, exitSignal) => {
			options.signal.removeEventListener('abort', hardStop);
			if (failedToStart) {
				resolve(`${line}: ${failedToStart.message}`);
				return;
			}

			const status = exitSignal ? `killed by ${exitSignal}` : `exit status ${String(code)}`;
			const said = stderr.trim().split('\n').at(-1)?.trim();
			resolve(`${line}: ${status}${said ? `: ${said}` : ''}`);
		});
	});
}

function formatMs(ms: number): string {
	return ms < 1000 ? `${ms} ms` : `${ms / 1000} s`;
}
