// When to stop. Under the Docker CLI, the plugin connects to DOCKER_CLI_PLUGIN_SOCKET; the CLI
// closes that connection instead of forwarding SIGINT/SIGTERM when its stdout is not a
// terminal. Both that EOF and a direct signal abort the returned signal; long waits honour it.
import net from 'node:net';
import { debug } from '../log.js';

export function watchForStop(env = process.env): AbortSignal {
	const controller = new AbortController();
	const stop = (why: string) => {
		if (!controller.signal.aborted) {
			debug(`stopping: ${why}`);
			controller.abort(new Error(why));
		}
	};

	for (const name of ['SIGINT', 'SIGTERM'] as const) {
		process.on(name, () => {
			if (controller.signal.aborted) {
				// A second signal while shutting down: stop now.
				process.exit(130);
			}

			stop(name);
		});
	}

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
