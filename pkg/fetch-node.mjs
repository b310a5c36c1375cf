#!/usr/bin/env node
// Fetches the Node.js runtime the single executable is made of, from the npm registry (the
// `node-linux-<arch>` packages carry the official binaries), checks it against the pinned
// integrity, and extracts bin/node to the given path.
//
// Why not the machine's Node 20: its libuv (1.46) pads Linux abstract socket names to 108 bytes,
// so it cannot connect to the Docker CLI's DOCKER_CLI_PLUGIN_SOCKET (@docker_cli_…), which is how
// the CLI tells a plugin to stop. Node 22 (libuv ≥ 1.48) connects. See README, "Packaging".
//
// Usage: node pkg/fetch-node.mjs OUTPUT
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const pins = JSON.parse(readFileSync(join(here, 'node-runtime.json'), 'utf8'));
const output = resolve(process.argv[2] ?? '');
if (!process.argv[2]) {
	console.error('usage: node pkg/fetch-node.mjs OUTPUT');
	process.exit(2);
}

const pin = pins.packages[process.arch];
if (process.platform !== 'linux' || !pin) {
	console.error(`pkg/fetch-node: no pinned Node.js runtime for ${process.platform}/${process.arch}; build with SEA_NODE=/path/to/node (Node >= 22)`);
	process.exit(1);
}

const spec = `${pin.name}@${pins.version}`;
mkdirSync(dirname(output), { recursive: true });
const work = mkdtempSync(join(dirname(output), '.fetch-node-'));
try {
	const [packed] = JSON.parse(execFileSync('npm', ['pack', spec, '--json', '--silent', '--pack-destination', work], { encoding: 'utf8' }));
	if (packed.integrity !== pin.integrity) {
		throw new Error(`${spec}: integrity ${packed.integrity} does not match the pinned ${pin.integrity}`);
	}

	execFileSync('tar', ['-xzf', join(work, packed.filename), '-C', work, 'package/bin/node']);
	const binary = join(work, 'package', 'bin', 'node');
	chmodSync(binary, 0o755);
	const version = execFileSync(binary, ['--version'], { encoding: 'utf8' }).trim();
	if (version !== `v${pins.version}`) {
		throw new Error(`${spec} runs as ${version}`);
	}

	renameSync(binary, output);
	console.error(`pkg/fetch-node: ${spec} -> ${output} (${version})`);
} finally {
	rmSync(work, { recursive: true, force: true });
}
