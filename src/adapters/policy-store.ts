// Egress policies for networks docker egress did not create, kept in <state-dir>/policies.json.
// Written atomically (temp file, fsync, rename, fsync of the directory) by callers that hold the
// rules lock; a file that cannot be read or parsed is an error, never an empty policy set.
import { constants } from 'node:fs';
import { mkdir, open, readFile, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import type { Policy } from '../core/network.js';
import { EgressError } from '../errors.js';

export const DEFAULT_STATE_DIR = '/var/lib/docker-egress';

export class StateFileError extends EgressError {}

type StateFile = { version: 1; policies: Record<string, { sourceIp: string; sourceIpv6?: string; via?: string; via6?: string }> };

/**
 * What a reconcile gets: the policies to serve, and the error when the file could not be read.
 * Then `policies` are the last good ones this store read or wrote, or undefined when it has none
 * (a one-shot command): the caller must not take that for an empty policy set.
 */
export type PoliciesRead = { policies: Policy[]; error?: undefined } | { policies: Policy[] | undefined; error: StateFileError };

export class PolicyStore {
	readonly file: string;
	/** The policies of the last successful read or write (a long-running watch keeps serving them). */
	private lastGood: Policy[] | undefined;

	constructor(readonly dir: string) {
		this.file = path.join(dir, 'policies.json');
	}

	static fromEnv(flag: string | undefined, env = process.env): PolicyStore {
		return new PolicyStore(flag ?? env['DOCKER_EGRESS_STATE_DIR'] ?? DEFAULT_STATE_DIR);
	}

	async read(): Promise<Policy[]> {
		let text: string;
		try {
			text = await readFile(this.file, 'utf8');
		} catch (error) {
			if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
				return [];
			}

			throw new StateFileError(`cannot read state file ${this.file}: ${(error as Error).message}`, { cause: error });
		}

		this.lastGood = parseState(text, this.file);
		return this.lastGood;
	}

	/** Like read, but a bad file is returned as the error, with the last good policies if any. */
	async readOrLastGood(): Promise<PoliciesRead> {
		try {
			return { policies: await this.read() };
		} catch (error) {
			if (!(error instanceof StateFileError)) {
				throw error;
			}

			return { policies: this.lastGood, error };
		}
	}

	async write(policies: Policy[]): Promise<void> {
		const state: StateFile = {
			version: 1,
			policies: Object.fromEntries([...policies].sort((a, b) => (a.network < b.network ? -1 : 1)).map((policy) => [policy.network, { sourceIp: policy.sourceIp, ...(policy.sourceIpv6 ? { sourceIpv6: policy.sourceIpv6 } : {}), ...(policy.via ? { via: policy.via } : {}), ...(policy.via6 ? { via6: policy.via6 } : {}) }])),
		};
		await mkdir(this.dir, { recursive: true, mode: 0o755 });
		const temporary = `${this.file}.${process.pid}.tmp`;
		try {
			const handle = await open(temporary, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC, 0o644);
			try {
				await handle.writeFile(`${JSON.stringify(state, null, 2)}\n`);
				await handle.sync();
			} finally {
				await handle.close();
			}

			await rename(temporary, this.file);
			this.lastGood = policies;
			const directory = await open(this.dir, constants.O_RDONLY);
			try {
				await directory.sync();
			} finally {
				await directory.close();
			}
		} catch (error) {
			await rm(temporary, { force: true });
			throw new StateFileError(`cannot write state file ${this.file}: ${(error as Error).message}`, { cause: error });
		}
	}
}

export function parseState(text: string, file: string): Policy[] {
	let state: unknown;
	try {
		state = JSON.parse(text);
	} catch (error) {
		throw new StateFileError(`state file ${file} is corrupt (${(error as Error).message}); fix or remove it`, { cause: error });
	}

	const policies = (state as Partial<StateFile> | null)?.policies;
	if ((state as Partial<StateFile> | null)?.version !== 1 || typeof policies !== 'object' || policies === null) {
		throw new StateFileError(`state file ${file} is corrupt (expected {"version": 1, "policies": {…}}); fix or remove it`);
	}

	return Object.entries(policies).map(([network, value]) => {
		if (typeof value !== 'object' || value === null || Array.isArray(value)) {
			throw new StateFileError(`state file ${file} is corrupt (policy ${network} is ${JSON.stringify(value)}, not an object); fix or remove it`);
		}

		if (value.sourceIp === undefined) {
			throw new StateFileError(`state file ${file} is corrupt (policy ${network} has no sourceIp); fix or remove it`);
		}

		// An ill-typed field is an error, never dropped: a policy without its `via` would egress
		// through another uplink than the one asked for.
		for (const field of ['sourceIp', 'sourceIpv6', 'via', 'via6'] as const) {
			if (value[field] !== undefined && typeof value[field] !== 'string') {
				throw new StateFileError(`state file ${file} is corrupt (policy ${network}: "${field}" is ${JSON.stringify(value[field])}, not a string); fix or remove it`);
			}
		}

		return {
			network,
			sourceIp: value.sourceIp,
			...(typeof value.sourceIpv6 === 'string' ? { sourceIpv6: value.sourceIpv6 } : {}),
			...(typeof value.via === 'string' ? { via: value.via } : {}),
			...(typeof value.via6 === 'string' ? { via6: value.via6 } : {}),
		};
	});
}
