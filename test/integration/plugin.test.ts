// The Docker CLI plugin protocol, through the real docker CLI: metadata, help, global flags before
// `egress`, endpoint resolution from contexts, and stopping when the CLI closes the plugin socket.
import { readFileSync } from 'node:fs';
import { mkdtempSync } from 'node:fs';
import path from 'node:path';
import anyTest from 'ava';
import { execa } from 'execa';
import { pluginBinary, repoRoot, useSandbox, type Sandbox } from '../helpers/sandbox.js';
import { networkNames } from './firewall.js';

const { test, sandbox } = useSandbox(anyTest);

test('metadata answers without a daemon, from the embedded plugin-metadata file', async (t) => {
	const r = await execa(pluginBinary(), ['docker-cli-plugin-metadata'], { env: { DOCKER_HOST: 'unix:///nonexistent.sock' } });
	const metadata = JSON.parse(r.stdout) as Record<string, string>;
	t.deepEqual(metadata, JSON.parse(readFileSync(path.join(repoRoot, 'plugin-metadata'), 'utf8')));
	t.is(metadata['SchemaVersion'], '0.1.0');
	for (const key of ['Vendor', 'Version', 'ShortDescription', 'URL']) {
		t.truthy(metadata[key], key);
	}
});

test('docker --help lists egress under Management Commands; help works every way', async (t) => {
	const sb = sandbox();
	sb.installPlugin();
	const help = await sb.docker(['--help']);
	const management = help.stdout.split(/\n\n/).find((block) => block.startsWith('Management Commands:'));
	t.regex(management ?? '', /^\s+egress\*?\s+Fixed egress source IPs/m);

	for (const args of [['help', 'egress'], ['egress', '--help']]) {
		const r = await sb.docker(args);
		t.regex(r.stdout, /Usage: {2}docker egress COMMAND/, args.join(' '));
		t.regex(r.stdout, /docker egress create <network>/);
	}

	const create = await sb.docker(['egress', 'create', '--help']);
	t.regex(create.stdout, /--source-ip/);
	t.regex(create.stdout, /--dry-run/);
	const ls = await sb.docker(['egress', 'ls', '--help']);
	t.regex(ls.stdout, /--no-trunc/);
});

async function contextConfig(sb: Sandbox, current: boolean): Promise<string> {
	const config = mkdtempSync(path.join(sb.dir, 'cfg-'));
	await sb.docker(['--config', config, 'context', 'create', 'egctx', '--docker', `host=${sb.dockerHost}`]);
	if (current) {
		await sb.docker(['--config', config, 'context', 'use', 'egctx']);
	}

	return config;
}

test.serial('global flags before egress are honoured: --context, -H, --config with currentContext, -D', async (t) => {
	const sb = sandbox();
	const created = await sb.egress(['create', 'z_p1', '--source-ip', '192.0.2.12', '--subnet', '10.95.0.0/24']);
	t.is(created.exitCode, 0, created.stderr);
	const noHost = { DOCKER_HOST: undefined };

	// No DOCKER_HOST and no context: the default socket, which does not exist in this sandbox.
	const plain = await sb.egress(['ls'], { viaCli: true, configDir: mkdtempSync(path.join(sb.dir, 'cfg-')), env: noHost });
	t.not(plain.exitCode, 0);
	t.regex(plain.stderr, /cannot reach the Docker daemon at unix:\/\/\/var\/run\/docker\.sock/);

	const viaContext = await sb.egress(['ls', '--format', '{{.Name}}'], { viaCli: true, configDir: await contextConfig(sb, false), globalArgs: ['--context', 'egctx'], env: noHost });
	t.is(viaContext.exitCode, 0, viaContext.stderr);
	t.is(viaContext.stdout.trim(), 'z_p1');

	const viaCurrent = await sb.egress(['ls', '--format', '{{.Name}}'], { viaCli: true, configDir: await contextConfig(sb, true), env: noHost });
	t.is(viaCurrent.exitCode, 0, viaCurrent.stderr);
	t.is(viaCurrent.stdout.trim(), 'z_p1');

	const viaHost = await sb.egress(['ls', '--format', '{{.Name}}'], { viaCli: true, globalArgs: ['-H', sb.dockerHost], env: noHost });
	t.is(viaHost.exitCode, 0, viaHost.stderr);
	t.is(viaHost.stdout.trim(), 'z_p1');

	const debug = await sb.egress(['sync'], { viaCli: true, globalArgs: ['-D'] });
	t.is(debug.exitCode, 0, debug.stderr);
	t.regex(debug.stderr, /debug: exec: iptables-nft-save (-c )?-t nat/);

	const quiet = await sb.egress(['sync'], { viaCli: true, globalArgs: ['-l', 'error'] });
	t.is(quiet.stderr, '');
	t.is((await sb.egress(['rm', 'z_p1'])).exitCode, 0);
});

/**
 * Holds the rules lock inside the sandbox's network namespace, as another docker-egress would:
 * binds the same abstract socket name (perl, from Debian's essential perl-base, binds it with the
 * exact length, as the plugin's Node 22 runtime does).
 */
async function holdLock(sb: Sandbox) {
	const script = '$|=1; socket(my $s, AF_UNIX, SOCK_STREAM, 0) or die; bind($s, pack_sockaddr_un("\\0docker-egress/rules")) or die "bind: $!"; listen($s, 1) or die; print "held\\n"; sleep 60';
	const holder = sb.exec('perl', ['-MSocket', '-e', script], { reject: false });
	await new Promise<void>((resolve) => {
		holder.stdout!.on('data', () => resolve());
	});
	// Wrapped: returning the subprocess itself from an async function would await its end.
	return {
		async release() {
			holder.kill('SIGTERM');
			await holder;
		},
	};
}

async function waitFor(stream: NodeJS.ReadableStream, pattern: RegExp): Promise<void> {
	let seen = '';
	await new Promise<void>((resolve, reject) => {
		stream.on('data', (chunk: Buffer) => {
			seen += chunk.toString();
			if (pattern.test(seen)) {
				resolve();
			}
		});
		stream.on('end', () => {
			reject(new Error(`output ended without ${String(pattern)}:\n${seen}`));
		});
	});
}

test.serial('SIGTERM to the docker CLI (stdout not a terminal) closes the plugin socket, and the plugin stops cleanly', async (t) => {
	const sb = sandbox();
	const holder = await holdLock(sb);
	try {
		const networks = await networkNames(sb);
		const cli = sb.egress(['create', 'z_p_stop', '--source-ip', '192.0.2.12'], { viaCli: true });
		await waitFor(cli.stderr!, /waiting for another docker-egress/);
		const started = Date.now();
		cli.kill('SIGTERM');
		const r = await cli;
		t.true(Date.now() - started < 10_000);
		t.not(r.exitCode, 0);
		t.regex(r.stderr, /interrupted; nothing was changed/);
		t.deepEqual(await networkNames(sb), networks);
	} finally {
		await holder.release();
	}
});

test.serial('a direct SIGTERM stops the plugin too', async (t) => {
	const sb = sandbox();
	const holder = await holdLock(sb);
	try {
		const plugin = sb.egress(['sync']);
		await waitFor(plugin.stderr!, /waiting for another docker-egress/);
		plugin.kill('SIGTERM');
		const r = await plugin;
		t.is(r.exitCode, 130);
		t.regex(r.stderr, /interrupted/);
	} finally {
		await holder.release();
	}
});

test.serial('shell completion through the CLI: docker egress rm <TAB> offers egress networks', async (t) => {
	const sb = sandbox();
	sb.installPlugin();
	for (const [name, subnet] of [
		['z_c1', '10.96.0.0/24'],
		['z_c2', '10.96.1.0/24'],
	] as const) {
		t.is((await sb.egress(['create', name, '--source-ip', '192.0.2.12', '--subnet', subnet])).exitCode, 0);
	}

	// The CLI hands completion to the plugin as `docker-egress __complete egress rm z_c`.
	const env = { DOCKER_HOST: sb.dockerHost };
	const rm = await sb.docker(['__complete', 'egress', 'rm', 'z_c'], { env });
	t.deepEqual(rm.stdout.trim().split('\n'), ['z_c1', 'z_c2', ':4']);
	const commands = await sb.docker(['__complete', 'egress', 'sy'], { env });
	t.regex(commands.stdout, /^sync\tMake the firewall match/m);
	for (const name of ['z_c1', 'z_c2']) {
		t.is((await sb.egress(['rm', name])).exitCode, 0);
	}
});

test('the executable runs without node_modules or a Node.js install', async (t) => {
	const r = await execa('env', ['-i', pluginBinary(), 'egress', '--help'], { cwd: '/', reject: false });
	t.is(r.exitCode, 0, r.stderr);
	t.regex(r.stdout, /docker egress create/);
	t.regex(readFileSync(pluginBinary()).subarray(0, 4).toString('latin1'), /ELF/);
});
