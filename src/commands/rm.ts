// docker egress rm NETWORK…: remove each egress network, then its rule (one reconcile at the
// end). A network Docker refuses to remove (still in use) keeps its rule.
import type { Argv } from 'yargs';
import { RULES_LOCK, acquireLock } from '../adapters/lock.js';
import { isEgressNetwork } from '../core/network.js';
import { EgressError, NotEgressNetworkError, reason } from '../errors.js';
import { warn } from '../log.js';
import { requireLocalEndpoint, type Context } from '../service/context.js';
import { reconcile } from '../service/reconcile.js';
import { describeStep } from './sync.js';

export type RmOptions = { networks: string[]; dryRun: boolean };

export function rmBuilder(yargs: Argv): Argv {
	return yargs
		.positional('networks', { type: 'string', array: true, describe: 'Egress networks to remove', demandOption: true })
		.option('dry-run', { type: 'boolean', default: false, describe: 'Print the Docker calls and the iptables-restore input; change nothing' });
}

export async function runRm(options: RmOptions, context: Context): Promise<void> {
	requireLocalEndpoint(context);
	const docker = await context.docker();
	const lock = await acquireLock(RULES_LOCK, { signal: context.signal });
	const failures: string[] = [];
	try {
		const removedIds: string[] = [];
		for (const name of options.networks) {
			try {
				const network = await docker.inspectNetwork(name);
				if (!isEgressNetwork(network)) {
					throw new NotEgressNetworkError(name);
				}

				if (options.dryRun) {
					context.out(`# Docker Engine API\nDELETE /networks/${network.id}`);
				} else {
					await docker.removeNetwork(network.id);
					context.out(name);
				}

				removedIds.push(network.id);
			} catch (error) {
				failures.push(`${name}: ${reason(error)}`);
			}
		}

		if (options.dryRun) {
			const preview = await reconcile(context, { dryRun: true, withoutNetworks: removedIds });
			context.out(preview.plan.steps.map((step) => describeStep(step)).join('\n') || '# no rule changes');
		} else if (removedIds.length > 0) {
			const result = await reconcile(context);
			if (result.policyError) {
				warn(result.policyError.message);
			}
		}
	} finally {
		await lock.release();
	}

	if (failures.length > 1) {
		for (const failure of failures) {
			process.stderr.write(`Error: ${failure}\n`);
		}

		throw new EgressError(`failed to remove ${failures.length} networks (see above)`);
	}

	if (failures.length === 1) {
		throw new EgressError(`failed to remove ${failures[0]}`);
	}
}
