// A host-wide lock held by binding a Linux abstract unix socket. Abstract sockets belong to a
// network namespace, which is exactly the scope of the firewall we guard, and the kernel frees
// the name when the holder dies, so a crashed process never leaves a stale lock behind.
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { InterruptedError, LockTimeoutError } from '../errors.js';
import { debug, info } from '../log.js';

export const RULES_LOCK = 'docker-egress/rules';
/** Held by `watch` for as long as it runs: one watch per host (per network namespace). */
export const WATCH_LOCK = 'docker-egress/watch';

export type Lock = { release(): Promise<void> };

export type LockOptions = {
	signal?: AbortSignal;
	/** How long to wait for another holder, in ms (default 60 s). */
	timeoutMs?: number;
	/** What the holder is doing, for the waiting message: "changing rules". */
	what?: string;
};

export async function acquireLock(name: string, options: LockOptions = {}): Promise<Lock> {
	const deadline = Date.now() + (options.timeoutMs ?? 60_000);
	const what = options.what ?? 'changing rules';
	let told = false;
	for (;;) {
		if (options.signal?.aborted) {
			throw new InterruptedError();
		}

		const server = await tryBind(name);
		if (server) {
			debug(`lock ${name} acquired`);
			return releasing(server);
		}

		if (Date.now() > deadline) {
			throw new LockTimeoutError(what);
		}

		if (!told) {
			info(`waiting for another docker-egress that is ${what}…`);
			told = true;
		}

		try {
			await sleep(50 + Math.random() * 50, undefined, { signal: options.signal });
		} catch {
			throw new InterruptedError();
		}
	}
}

/** Takes the lock if it is free; undefined if someone holds it. Does not wait. */
export async function tryLock(name: string): Promise<Lock | undefined> {
	const server = await tryBind(name);
	return server ? releasing(server) : undefined;
}

function releasing(server: net.Server): Lock {
	return {
		async release() {
			await new Promise<void>((resolve) => {
				server.close(() => resolve());
			});
		},
	};
}

async function tryBind(name: string): Promise<net.Server | undefined> {
	return new Promise((resolve, reject) => {
		const server = net.createServer();
		server.once('error', (error: NodeJS.ErrnoException) => {
			if (error.code === 'EADDRINUSE') {
				resolve(undefined);
			} else {
				reject(error);
			}
		});
		server.listen({ path: `\0${name}` }, () => {
			server.unref();
			resolve(server);
		});
	});
}
