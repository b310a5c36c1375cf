// Entry point. The Docker CLI calls `docker-egress docker-cli-plugin-metadata` before every
// `docker egress …`, so that answer comes first, before any other module is loaded.
import { pluginMetadata } from './metadata.js';

if (process.argv[2] === 'docker-cli-plugin-metadata') {
	process.stdout.write(pluginMetadata() + '\n');
} else {
	void import('./cli/run.js')
		.then(async ({ run }) => run(process.argv.slice(2)))
		.then((code) => {
			process.exitCode = code;
		});
}
