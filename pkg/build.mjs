#!/usr/bin/env node
// Builds the self-contained `docker-egress` executable:
//   1. esbuild bundles src/main.ts (and everything it imports) into dist/docker-egress.cjs;
//   2. Node's Single Executable Application support turns that bundle into a blob, which
//      postject injects into a copy of this Node binary: dist/docker-egress.
//
// Usage: node pkg/build.mjs [--entry FILE] [--outdir DIR] [--name NAME] [--node BINARY]
//                           [--bundle-only] [--no-strip] [--no-code-cache] [--sourcemap] [-q]
//   --entry/--outdir/--name exist so that throwaway entries (smoke tests outside src/) can be
//   packaged exactly like the real one.
//   --node picks the Node.js binary the executable is made of (default: the one running this
//   script); it also writes the SEA blob, as blob and binary must come from the same version.
import { execFileSync } from 'node:child_process';
import { chmodSync, copyFileSync, mkdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { isBuiltin } from 'node:module';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

import * as esbuild from 'esbuild';
import { inject } from 'postject';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const SEA_FUSE = 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2';

const { values: opts } = parseArgs({
	options: {
		entry: { type: 'string', default: join(root, 'src/main.ts') },
		outdir: { type: 'string', default: join(root, 'dist') },
		name: { type: 'string', default: 'docker-egress' },
		node: { type: 'string', default: process.execPath },
		'bundle-only': { type: 'boolean', default: false },
		'no-strip': { type: 'boolean', default: false },
		'no-code-cache': { type: 'boolean', default: false },
		sourcemap: { type: 'boolean', default: false },
		quiet: { type: 'boolean', short: 'q', default: false },
	},
});

const outdir = resolve(opts.outdir);
const bundleFile = join(outdir, `${opts.name}.cjs`);
const blobFile = join(outdir, `${opts.name}.blob`);
const seaConfigFile = join(outdir, `${opts.name}.sea-config.json`);
const exeFile = join(outdir, opts.name);
const nodeBinary = resolve(opts.node);

const log = (msg) => {
	if (!opts.quiet) process.stderr.write(`pkg/build: ${msg}\n`);
};
const rel = (p) => relative(process.cwd(), p) || '.';
const mib = (bytes) => `${(bytes / 1024 / 1024).toFixed(1)} MiB`;

/**
 * Optional dependencies that their users require() inside try/catch and can do without:
 * ssh2 (dockerode → docker-modem) falls back to pure JS without its native addons
 * (sshcrypto.node, cpu-features), and debug works without supports-color (not installed).
 * Replace them with modules that throw when required: the bundle needs no .node files, and the
 * SEA never reaches its restricted require(), which would throw too but first print a warning
 * about loading non-builtin modules.
 */
const OPTIONAL_MODULES = /\.node$|^cpu-features$|^supports-color$/;
const stubOptionalModules = {
	name: 'stub-optional-modules',
	setup(build) {
		build.onResolve({ filter: OPTIONAL_MODULES }, (args) => ({ path: args.path, namespace: 'optional-stub' }));
		build.onLoad({ filter: /.*/, namespace: 'optional-stub' }, (args) => ({
			loader: 'js',
			contents: `throw new Error(${JSON.stringify(`${args.path} is not bundled into docker-egress`)});`,
		}));
	},
};

/**
 * dockerode's image build support (`session.js`: grpc-js + proto-loader; `buildkit.js`: protobufjs)
 * is never used by docker-egress, but docker.js requires session.js at load time. Swap both for
 * stubs that throw if ever called: a smaller bundle and much less to evaluate at start-up.
 */
const stubDockerodeBuildSupport = {
	name: 'stub-dockerode-build-support',
	setup(build) {
		build.onResolve({ filter: /^\.\/(session|buildkit)$/ }, (args) => {
			if (!/[\\/]node_modules[\\/]dockerode[\\/]lib[\\/]/.test(args.importer)) return undefined;
			return { path: args.path.slice(2), namespace: 'dockerode-stub' };
		});
		build.onLoad({ filter: /.*/, namespace: 'dockerode-stub' }, (args) => ({
			loader: 'js',
			contents:
				args.path === 'session'
					? `module.exports = function withSession() { throw new Error('docker-egress: dockerode build sessions are not bundled'); };`
					: `function unsupported() { throw new Error('docker-egress: dockerode buildkit support is not bundled'); }
					   module.exports = { decodeBuildKitStatus: unsupported, followProgress: unsupported };`,
		}));
	},
};

/**
 * docker-modem requires its ssh transport (and with it ssh2, ~600 KB that runs crypto self-tests
 * at load time) as soon as dockerode loads, though only ssh:// endpoints use it. Defer that
 * require() to the first ssh connection.
 */
const lazyDockerModemSsh = {
	name: 'lazy-docker-modem-ssh',
	setup(build) {
		const sshModule = /[\\/]node_modules[\\/]docker-modem[\\/]lib[\\/]ssh\.js$/;
		build.onLoad({ filter: sshModule, namespace: 'file' }, (args) => ({
			loader: 'js',
			resolveDir: dirname(args.path),
			contents: `module.exports = function ssh(opt) { return require(${JSON.stringify(`eager:${args.path}`)})(opt); };`,
		}));
		build.onResolve({ filter: /^eager:/ }, (args) => ({ path: args.path.slice('eager:'.length), namespace: 'eager' }));
		build.onLoad({ filter: /.*/, namespace: 'eager' }, (args) => ({
			loader: 'js',
			resolveDir: dirname(args.path),
			contents: readFileSync(args.path, 'utf8'),
		}));
	},
};

/**
 * dockerode's util.js requires tar-fs (with tar-stream, bl, readable-stream…), @balena/dockerignore
 * and zlib at load time, for building image contexts only. Require them where they are used, so
 * that every command does not evaluate them.
 */
const lazyDockerodeBuildContext = {
	name: 'lazy-dockerode-build-context',
	setup(build) {
		build.onLoad({ filter: /[\\/]node_modules[\\/]dockerode[\\/]lib[\\/]util\.js$/, namespace: 'file' }, (args) => {
			const source = readFileSync(args.path, 'utf8');
			const lazy = {
				"var DockerIgnore = require('@balena/dockerignore');": "var DockerIgnore = function () { return require('@balena/dockerignore').apply(this, arguments); };",
				"var tar = require('tar-fs');": "var tar = { pack: function () { return require('tar-fs').pack.apply(this, arguments); } };",
				"var zlib = require('zlib');": "var zlib = { createGzip: function () { return require('zlib').createGzip.apply(this, arguments); } };",
			};
			let contents = source;
			for (const [eager, deferred] of Object.entries(lazy)) {
				if (!contents.includes(eager)) throw new Error(`dockerode/lib/util.js changed: no \`${eager}\` (update lazyDockerodeBuildContext)`);
				contents = contents.replace(eager, deferred);
			}
			return { loader: 'js', resolveDir: dirname(args.path), contents };
		});
	},
};

/**
 * string-width (used by yargs' cliui for help layout) builds a very large emoji regular
 * expression when it is loaded, which costs tens of milliseconds on every start. Our help text is
 * plain: a small width function (ANSI stripped, combining marks zero, East Asian wide and emoji
 * two columns) does the same job.
 */
const lightStringWidth = {
	name: 'light-string-width',
	setup(build) {
		build.onResolve({ filter: /^string-width$/ }, () => ({ path: 'string-width', namespace: 'light-string-width' }));
		build.onLoad({ filter: /.*/, namespace: 'light-string-width' }, () => ({
			loader: 'js',
			contents: `
const ansi = /\u001B\[[0-9;?]*[ -\/]*[@-~]|\u001B\][^\u0007\u001B]*(?:\u0007|\u001B\\\\)/g;
const wide = (c) => c >= 0x1100 && (c <= 0x115f || (c >= 0x2e80 && c <= 0xa4cf) || (c >= 0xac00 && c <= 0xd7a3) || (c >= 0xf900 && c <= 0xfaff) || (c >= 0xfe30 && c <= 0xfe4f) || (c >= 0xff00 && c <= 0xff60) || (c >= 0xffe0 && c <= 0xffe6) || (c >= 0x1f300 && c <= 0x1faff) || (c >= 0x20000 && c <= 0x3fffd));
function stringWidth(text) {
	let width = 0;
	for (const ch of String(text).replace(ansi, '')) {
		const c = ch.codePointAt(0);
		if (c < 0x20 || (c >= 0x7f && c < 0xa0) || (c >= 0x300 && c < 0x370) || c === 0x200b || (c >= 0xfe00 && c <= 0xfe0f)) continue;
		width += wide(c) ? 2 : 1;
	}
	return width;
}
module.exports = stringWidth;
module.exports.default = stringWidth;
`,
		}));
	},
};

async function bundle() {
	const metadata = JSON.stringify(JSON.parse(readFileSync(join(root, 'plugin-metadata'), 'utf8')));
	mkdirSync(outdir, { recursive: true });
	const result = await esbuild.build({
		absWorkingDir: root,
		entryPoints: [resolve(opts.entry)],
		outfile: bundleFile,
		bundle: true,
		platform: 'node',
		format: 'cjs',
		target: 'node20',
		// Whitespace and syntax only: identifiers stay readable in stack traces.
		minifyWhitespace: true,
		minifySyntax: true,
		legalComments: 'eof',
		sourcemap: opts.sourcemap ? 'linked' : false,
		metafile: true,
		logLevel: 'warning',
		define: {
			__PLUGIN_METADATA__: JSON.stringify(metadata),
			// ESM sources (ours, yargs, yargs-parser) use import.meta.url, which a CJS bundle does not
			// have. Point it at the executable (in a SEA, __filename is process.execPath).
			'import.meta.url': '__importMetaUrl',
			'import.meta.filename': '__filename',
			'import.meta.dirname': '__dirname',
		},
		banner: { js: 'var __importMetaUrl = require("node:url").pathToFileURL(__filename).href;' },
		logOverride: { 'empty-import-meta': 'silent' },
		plugins: [stubOptionalModules, stubDockerodeBuildSupport, lazyDockerModemSsh, lazyDockerodeBuildContext, lightStringWidth],
	});
	writeFileSync(join(outdir, `${opts.name}.meta.json`), JSON.stringify(result.metafile));
	// Inside the SEA, require() only loads builtins: anything else left external (typically a
	// require() in a try/catch that esbuild could not resolve) would fail at run time.
	const leftOut = Object.values(result.metafile.outputs)
		.flatMap((output) => output.imports)
		.filter((i) => i.external && !isBuiltin(i.path))
		.map((i) => `${i.path} (${i.kind})`);
	if (leftOut.length > 0) {
		throw new Error(`non-builtin modules left out of the bundle: ${[...new Set(leftOut)].join(', ')};`
			+ ' bundle them, or stub them in pkg/build.mjs (OPTIONAL_MODULES)');
	}
	log(`bundled ${rel(resolve(opts.entry))} -> ${rel(bundleFile)} (${mib(statSync(bundleFile).size)})`);
}

function seaBlob() {
	const config = {
		main: bundleFile,
		output: blobFile,
		disableExperimentalSEAWarning: true,
		useCodeCache: !opts['no-code-cache'],
		useSnapshot: false,
	};
	writeFileSync(seaConfigFile, JSON.stringify(config, null, '\t') + '\n');
	rmSync(blobFile, { force: true });
	try {
		execFileSync(nodeBinary, ['--experimental-sea-config', seaConfigFile], { cwd: outdir, stdio: 'pipe' });
	} catch (error) {
		process.stderr.write(`${error.stdout ?? ''}${error.stderr ?? ''}`);
		throw error;
	}
	log(`SEA blob ${rel(blobFile)} (${mib(statSync(blobFile).size)}, code cache ${config.useCodeCache ? 'on' : 'off'})`);
}

async function executable() {
	const tmp = `${exeFile}.tmp`;
	rmSync(tmp, { force: true });
	copyFileSync(nodeBinary, tmp);
	chmodSync(tmp, 0o755);
	// The Node binary may carry debug info and a full symbol table (about 16 MiB for Node 20.20 on
	// Debian); drop them when binutils are around. .dynsym, which addons link against, stays.
	if (!opts['no-strip']) {
		try {
			execFileSync('strip', ['--strip-all', tmp], { stdio: 'ignore' });
		} catch {
			log('strip not available or failed: keeping the unstripped Node binary');
		}
	}
	const seaBlob = readFileSync(blobFile);
	// postject prints progress to stdout (keep ours clean), and LIEF warns about every one of the
	// Node binary's many .note sections ("Can't find string offset for section name"): harmless,
	// the executable works, so drop exactly those and let anything else through.
	const { write } = process.stdout;
	const { warn } = console;
	process.stdout.write = () => true;
	console.warn = (...args) => {
		if (!/^warning: Can't find string offset for section name/.test(String(args[0]))) warn(...args);
	};
	try {
		await inject(tmp, 'NODE_SEA_BLOB', seaBlob, { sentinelFuse: SEA_FUSE, overwrite: true });
	} finally {
		process.stdout.write = write;
		console.warn = warn;
	}
	// Rename last so a failed build never leaves a half-made executable behind.
	// (rename, not copy: also works while an older dist/docker-egress is running).
	renameSync(tmp, exeFile);
	const version = execFileSync(nodeBinary, ['--version'], { encoding: 'utf8' }).trim();
	log(`executable ${rel(exeFile)} (${mib(statSync(exeFile).size)}, Node ${version})`);
}

try {
	await bundle();
	if (!opts['bundle-only']) {
		seaBlob();
		await executable();
	}
} catch (error) {
	// esbuild has already printed its diagnostics; everything else gets one line.
	if (!error?.errors) process.stderr.write(`pkg/build: error: ${error?.message ?? error}\n`);
	process.exitCode = 1;
}
