// docker egress sync: one reconcile, reported as added / removed / unchanged.
import type { Argv } from 'yargs';
import { RULES_LOCK, acquireLock } from '../adapters/lock.js';
import type { Step } from '../adapters/firewall.js';
import type { SnatRule } from '../core/rules.js';
import { subjectOf } from '../core/network.js';
import { PartialSyncError } from '../errors.js';
import { warn } from '../log.js';
import { requireLocalEndpoint, type Context } from '../service/context.js';
import { reconcile, type SyncResult } from '../service/reconcile.js';

export type SyncOptions = { dryRun: boolean };

export function syncBuilder(yargs: Argv): Argv {
	return yargs.option('dry-run', { type: 'boolean', default: false, describe: 'Print what would change and the exact firewall input (nft -f or iptables-restore); change nothing' });
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
	if (options.dryRun) {
		for (const step of result.plan.steps) {
			context.out(describeStep(step));
		}
	}

	if (options.dryRun && result.routingCommands.length > 0) {
		context.out(describeRouting(result.routingCommands));
	}

	// The rules above were applied all the same: a bad policy file costs only the policies.
	if (result.policyError) {
		throw result.policyError;
	}

	const invalid = result.networks.filter((network) => network.problem && !network.container).length;
	const containers = new Set(result.networks.filter((network) => network.problem && network.container).map((network) => network.id)).size;
	if (invalid + containers > 0) {
		throw new PartialSyncError(invalid, containers);
	}
}

export function reportInvalid(result: SyncResult): void {
	for (const network of result.networks) {
		if (network.problem) {
			warn(`${subjectOf(network)} ${network.blocked ? 'fails closed (its outbound traffic is dropped)' : 'skipped'}: ${network.problem}`);
		}
	}
}

export function syncReport(result: SyncResult, dryRun: boolean): string[] {
	const { plan } = result;
	const verb = (past: string, future: string) => (dryRun ? future : past);
	const line = (what: string, rule: SnatRule) => `${what.padEnd(10)}${rule.network}  ${rule.subnet} -> ${rule.sourceIp} (bridge ${rule.bridge})`;
	const lines = [
		...plan.added.map((rule) => line(verb('added', 'add'), rule)),
		...plan.removed.map((rule) => line(verb('removed', 'remove'), rule)),
		...plan.unchanged.map((rule) => line('unchanged', rule)),
		...plan.notes.map((note) => `${'firewall'.padEnd(10)}${dryRun ? `(dry run) ${note}` : note}`),
	];
	for (const args of result.routingCommands) {
		lines.push(`${verb('routing', 'routing').padEnd(10)}ip ${args.join(' ')}`);
	}

	const foreign = plan.notes.filter((note) => note.startsWith('removed foreign rule')).length;
	lines.push(
		`${dryRun ? 'sync --dry-run' : 'sync'}: ${plan.added.length} ${verb('added', 'to add')}, ${plan.removed.length + foreign} ${verb('removed', 'to remove')}, ${plan.unchanged.length} unchanged${plan.changed ? '' : ' (nothing to change)'} (${result.backend.name})`,
	);
	return lines;
}

export function describeRouting(commands: string[][]): string {
	return commands.map((args) => `# ip ${args.join(' ')}`).join('\n');
}

/** A transaction as a shell here-document (shown by --dry-run; never run through a shell). */
export function describeStep(step: Step): string {
	return `# ${step.command.join(' ')} <<EOF\n${step.input}EOF`;
}
