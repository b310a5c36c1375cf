// Entry point. The Docker CLI calls `docker-egress docker-cli-plugin-metadata` before every
// `docker egress …`, so that answer comes first, before any other module is loaded — and is
// written straight to fd 1: process.stdout would load Node's stream modules just for one line.
import { writeSync } from 'node:fs';
import { pluginMetadata } from './metadata.js';

if (process.argv[2] === 'docker-cli-plugin-metadata') {
	const text = pluginMetadata() + '\n';
	try {
		writeSync(1, text);
	} catch {
		process.stdout.write(text); // e.g. EAGAIN on a non-blocking pipe
	}
} else {
	void import('./cli/run.js')
		.then(async ({ run }) => run(process.argv.slice(2)))
		.then((code) => {
			process.exitCode = code;
		});
}
