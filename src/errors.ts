// Named errors. Every failure a user can cause or meet is one of these; cli/run.ts is the one
// place that turns them into a message line and an exit code.

export class EgressError extends Error {
	/** Exit status of the process when this error ends it. */
	readonly exitCode: number = 1;

	constructor(message: string, options?: { cause?: unknown }) {
		super(message, options);
		this.name = new.target.name;
	}
}

/** The user's input is wrong; nothing was changed. */
export class UsageError extends EgressError {}

/** Input that parses but is refused: an address not on this host, an overlap, a taken name… */
export class ValidationError extends EgressError {}

export class NetworkNotFoundError extends EgressError {
	constructor(readonly network: string) {
		super(`network ${network} not found`);
	}
}

export class NotEgressNetworkError extends EgressError {
	constructor(readonly network: string) {
		super(`network ${network} is not an egress network (it has no docker-egress.source-ip label); use docker network rm / inspect for it`);
	}
}

export class DaemonUnreachableError extends EgressError {
	constructor(readonly endpoint: string, cause: unknown) {
		super(`cannot reach the Docker daemon at ${endpoint}: ${reason(cause)}`, { cause });
	}
}

/**
 * The daemon did not answer one call within its deadline: hung (SIGSTOP, a deadlock) or, over
 * TCP, unreachable with its packets dropped. A DaemonUnreachableError, so that every caller that
 * copes with a daemon that is gone copes with this one too.
 */
export class DaemonNotAnsweringError extends DaemonUnreachableError {
	constructor(endpoint: string, timeoutMs: number) {
		super(endpoint, new Error(`no answer within ${timeoutMs / 1000} s`));
	}
}

/** The Docker Engine answered with an error (status code and its message). */
export class DockerApiError extends EgressError {
	constructor(
		message: string,
		readonly statusCode: number | undefined,
		cause?: unknown,
	) {
		super(message, { cause });
	}
}

export class RemoteEndpointError extends EgressError {
	constructor(readonly endpoint: string) {
		super(
			`refusing to change firewall rules through ${endpoint}: docker egress manages the firewall of the machine it runs on, so rule-changing commands need the local daemon (unix socket); run it on that host`,
		);
	}
}

/** iptables, iptables-restore or ip failed; the message carries the command line and its stderr. */
export class CommandError extends EgressError {
	constructor(
		readonly command: string,
		readonly stderr: string,
		cause?: unknown,
	) {
		super(`${command} failed: ${stderr.trim().split('\n').slice(-3).join(' / ') || notStarted(cause) || reason(cause)}`, { cause });
	}
}

/** Why a tool could not be started, in words ("spawn iptables-nft-save ENOENT" says it poorly). */
function notStarted(cause: unknown): string | undefined {
	const error = cause as (NodeJS.ErrnoException & { path?: string }) | undefined;
	if (error?.code === 'ENOENT') {
		return `${error.path ?? 'the tool'} is not installed (not found${error.path?.includes('/') ? '' : ' on PATH'})`;
	}

	if (error?.code === 'EACCES') {
		return `${error.path ?? 'the tool'} cannot be run (permission denied)`;
	}

	return undefined;
}

export class LockTimeoutError extends EgressError {
	constructor(what: string) {
		super(`another docker-egress is ${what} on this host and did not finish in time; try again`);
	}
}

export class InterruptedError extends EgressError {
	override readonly exitCode = 130;
	constructor() {
		super('interrupted; nothing was changed');
	}
}

/** `sync` applied every valid rule but some networks were skipped; already reported on stderr. */
export class PartialSyncError extends EgressError {
	constructor(
		readonly invalid: number,
		readonly containers = 0,
	) {
		const parts = [
			...(invalid > 0 ? [`${invalid} egress network${invalid === 1 ? '' : 's'}`] : []),
			...(containers > 0 ? [`${containers} container${containers === 1 ? '' : 's'}`] : []),
		];
		super(`${parts.join(' and ')} not served: an invalid label or a source address that cannot be served (see above)`);
	}
}

export function reason(error: unknown): string {
	if (error instanceof Error) {
		return error.message;
	}

	return String(error);
}
