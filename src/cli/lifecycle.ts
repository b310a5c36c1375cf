// When to stop. Under the Docker CLI, the plugin connects to DOCKER_CLI_PLUGIN_SOCKET; the CLI
// closes that connection instead of forwarding SIGINT/SIGTERM when its stdout is not a
// terminal. Both that EOF and a direct signal abort the returned signal; long waits honour it.
// Whatever a command waits on, it is gone within a second of being told to stop: a wait that
// does not honour the signal (or a handle that keeps the event loop alive) ends with the process.
import net from 'node:net';
import { debug } from '../log.js';

/** How long a stopping command may take to wind down before the process exits anyway. */
export const STOP_GRACE_MS = 800;

let reloadHandler: (() => void) | undefined;
const lastWords: Array<(why: string) => void> = [];

/**
 * SIGHUP calls `handler` instead of stopping the process (watch re-reads its policies). Without
 * one, SIGHUP stops a command like SIGTERM (its terminal went away).
 */
export function onReload(handler: () => void): void {
	reloadHandler = handler;
}

/** `fn` runs (synchronously) just before the process exits because it overran its grace period. */
export function beforeForcedExit(fn: (why: string) => void): () => void {
	lastWords.push(fn);
	return () => {
		lastWords.splice(lastWords.indexOf(fn), 1);
	};
}

export function watchForStop(env = process.env): AbortSignal {
	const controller = new AbortController();
	const forceExit = (why: string) => {
		for (const fn of [...lastWords]) {
			try {
				fn(why);
			} catch {
				// last words must not keep the process from ending
			}
		}

		process.exit(130);
	};

	const stop = (why: string) => {
		if (!controller.signal.aborted) {
			debug(`stopping: ${why}`);
			controller.abort(new Error(why));
			// Not unref'd would keep an ending process alive; unref'd, it fires only if something
			// else still does (a connect in flight, a child, a lock wait).
			setTimeout(() => {
				forceExit(`${why}; still busy after ${STOP_GRACE_MS} ms`);
			}, STOP_GRACE_MS).unref();
		}
	};

	for (const name of ['SIGINT', 'SIGTERM'] as const) {
		process.on(name, () => {
			if (controller.signal.aborted) {
				// A second signal while shutting down: stop now.
				forceExit(`${name} again`);
			}

			stop(name);
		});
	}

	process.on('SIGHUP', () => {
		if (reloadHandler && !controller.signal.aborted) {
			reloadHandler();
		} else {
			stop('SIGHUP');
		}
	});

	const socketName = env['DOCKER_CLI_PLUGIN_SOCKET'];
	if (socketName) {
		const address = socketName.startsWith('@') ? `\0${socketName.slice(1)}` : socketName;
		const socket = net.createConnection({ path: address });
		socket.on('error', (error) => {
			debug(`plugin socket ${socketName}: ${error.message}`);
		});
		socket.on('end', () => {
			stop('the docker CLI closed the plugin socket');
		});
		socket.resume();
		socket.unref();
	}

	return controller.signal;
}
