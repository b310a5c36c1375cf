// docker egress sync: one reconcile, reported as added / removed / unchanged.
import type { Argv } from 'yargs';
import { RULES_LOCK, acquireLock } from '../adapters/lock.js';
import type { SnatRule, SyncPlan } from '../core/rules.js';
import { PartialSyncError } from '../errors.js';
import { warn } from '../log.js';
import { requireLocalEndpoint, type Context } from '../service/context.js';
import { reconcile, type SyncResult } from '../service/reconcile.js';

export type SyncOptions = { dryRun: boolean };

export function syncBuilder(yargs: Argv): Argv {
	return yargs.option('dry-run', { type: 'boolean', default: false, describe: 'Print what would change and the iptables-restore input; change nothing' });
}

export async function runSync(options: SyncOptions, context: Context): Promise<void> {
	requireLocalEndpoint(context);
	await context.docker();
	const lock = await acquireLock(RULES_LOCK, { signal: context.signal });
	let result: SyncResult;
	try {
		result = await reconcile(context, { dryRun: options.dryRun });
	} finally {
		await lock.release();
	}

	reportInvalid(result);
	context.out(syncReport(result, options.dryRun).join('\n'));
	if (options.dryRun && result.plan.changed) {
		context.out(describeRestore(result.restoreCommand, result.restoreInput));
	}

	if (options.dryRun && result.plan6.changed) {
		context.out(describeRestore(result.restoreCommand6, result.restoreInput6));
	}

	if (options.dryRun && result.routingCommands.length > 0) {
		context.out(describeRouting(result.routingCommands));
	}

	const invalid = result.networks.filter((network) => network.problem).length;
	if (invalid > 0) {
		throw new PartialSyncError(invalid);
	}
}

export function reportInvalid(result: SyncResult): void {
	for (const network of result.networks) {
		if (network.problem) {
			warn(`network ${network.name} skipped: ${network.problem}`);
		}
	}
}

export function syncReport(result: SyncResult, dryRun: boolean): string[] {
	const plan = mergePlans(result.plan, result.plan6);
	const verb = (past: string, future: string) => (dryRun ? future : past);
	const line = (what: string, rule: SnatRule) => `${what.padEnd(10)}${rule.network}  ${rule.subnet} -> ${rule.sourceIp} (bridge ${rule.bridge})`;
	const lines = [
		...plan.added.map((rule) => line(verb('added', 'add'), rule)),
		...plan.removed.map((rule) => line(verb('removed', 'remove'), rule)),
		...plan.foreign.map((text) => `${verb('removed', 'remove').padEnd(10)}foreign rule: ${text}`),
		...plan.unchanged.map((rule) => line('unchanged', rule)),
	];
	if (plan.jumpRepair) {
		lines.push(`${verb('repaired', 'repair').padEnd(10)}jump to DOCKER-EGRESS at the top of nat POSTROUTING`);
	}

	for (const args of result.routingCommands) {
		lines.push(`${verb('routing', 'routing').padEnd(10)}ip ${args.join(' ')}`);
	}

	const removed = plan.removed.length + plan.foreign.length;
	lines.push(
		`${dryRun ? 'sync --dry-run' : 'sync'}: ${plan.added.length} ${verb('added', 'to add')}, ${removed} ${verb('removed', 'to remove')}, ${plan.unchanged.length} unchanged${plan.changed ? '' : ' (nothing to change)'}`,
	);
	return lines;
}

/** Both families' plans as one, for reporting. */
function mergePlans(plan: SyncPlan, plan6: SyncPlan): SyncPlan {
	return {
		...plan,
		added: [...plan.added, ...plan6.added],
		removed: [...plan.removed, ...plan6.removed],
		unchanged: [...plan.unchanged, ...plan6.unchanged],
		foreign: [...plan.foreign, ...plan6.foreign],
		jumpRepair: plan.jumpRepair || plan6.jumpRepair,
		changed: plan.changed || plan6.changed,
	};
}

export function describeRouting(commands: string[][]): string {
	return commands.map((args) => `# ip ${args.join(' ')}`).join('\n');
}

export function describeRestore(command: string[], input: string): string {
	return `# ${command.join(' ')} <<EOF\n${input}EOF`;
}
