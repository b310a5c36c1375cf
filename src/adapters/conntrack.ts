// Deletes the connection-tracking entries of a subnet, so flows that were translated to an old
// source address are translated afresh (with the new rule) instead of keeping the old mapping.
import { CommandError } from '../errors.js';
import { runCommand } from './run.js';

/** Returns how many entries were deleted. */
export async function forgetFlows(subnet: string): Promise<number> {
	try {
		return deletedCount(await runCommand('conntrack', ['-D', '-s', subnet]));
	} catch (error) {
		// conntrack exits 1 when it deleted nothing; that is not a failure.
		if (error instanceof CommandError && /0 flow entries have been deleted/.test(error.stderr)) {
			return 0;
		}

		throw error;
	}
}

function deletedCount(output: string): number {
	return Number(/(\d+) flow entries have been deleted/.exec(output)?.[1] ?? 0);
}
