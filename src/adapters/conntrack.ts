// Deletes the connection-tracking entries of a subnet, so flows that were translated to an old
// source address are translated afresh (with the new rule) instead of keeping the old mapping.
import { CommandError } from '../errors.js';
import { runProcess } from './run.js';

/** Returns how many entries were deleted. conntrack prints that count on stderr. */
export async function forgetFlows(subnet: string): Promise<number> {
	const args = ['-D', '-s', subnet];
	const result = await runProcess('conntrack', args);
	const count = /(\d+) flow entries have been deleted/.exec(`${result.stderr}\n${result.stdout}`)?.[1];
	// It exits 1 when it deleted nothing; that is not a failure.
	if (count === undefined) {
		throw new CommandError(`conntrack ${args.join(' ')}`, result.stderr || `exit status ${result.exitCode ?? result.signal}`);
	}

	return Number(count);
}

/**
 * The source addresses (original direction) of every tracked flow, both families: one listing,
 * so forgetting flows for many addresses runs `conntrack -D` only for those that have some.
 */
export async function trackedSources(): Promise<Set<string>> {
	const sources = new Set<string>();
	for (const args of [['-L'], ['-L', '-f', 'ipv6']]) {
		const result = await runProcess('conntrack', args);
		for (const line of result.stdout.split('\n')) {
			const source = /\bsrc=(\S+)/.exec(line)?.[1];
			if (source) {
				sources.add(source);
			}
		}
	}

	return sources;
}
