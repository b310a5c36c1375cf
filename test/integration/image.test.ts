// The container image (`make image`, pkg/image.sh): built from the executable under test and this
// machine's own nft, iptables, ip and conntrack, imported into the sandbox's daemon (nothing is
// pulled), then run the way the README documents —
//   docker run -d --name egress --restart always --network host --cap-add NET_ADMIN
//     -v /var/run/docker.sock:/var/run/docker.sock -v /var/lib/docker-egress:/var/lib/docker-egress docker-egress
// — inside the sandbox: its daemon's socket, its host namespace (what --network host means there) and
// a state dir of the test. It must serve a new labelled network within seconds (proved by the echo
// server), share the lock and the state file with the plugin run on the host (a second watch is
// refused; a policy set from the host is served), leave the rules in place when stopped, come back
// with the daemon (--restart always), and — with live-restore, where the container outlives a daemon
// restart — reconnect when it mounts the socket's directory rather than the socket file (a restarted
// daemon makes a new socket; a file bind mount keeps the old one). On every engine of the matrix,
// with the run's firewall backend.
import anyTest from 'ava';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { dockerCliPath } from '../helpers/prereqs.js';
import { pluginBinary, repoRoot, useSandbox, type Sandbox } from '../helpers/sandbox.js';
import { egressRules, eventually, firewallBackend, ruleFor, waitForRule } from './firewall.js';

// A directory that holds nothing but a second socket of the sandbox daemon, as /run holds
// /run/docker.sock on a host: what the live-restore variant mounts.
const socketDir = mkdtempSync('/tmp/egimg-');
const { test, sandbox } = useSandbox(anyTest, { dockerdArgs: ['--host', `unix://${socketDir}/docker.sock`] });
test.after.always('remove the socket directory', () => {
	rmSync(socketDir, { recursive: true, force: true });
});

const backend = firewallBackend();
const version = (JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as { version: string }).version;
const IMAGE = 'docker-egress';
const CONTAINER = 'egress';
const NET = { name: 'z_img', subnet: '10.93.0.0/24', ip: '192.0.2.12' };
const ADOPTED = { name: 'z_img_policy', subnet: '10.94.0.0/24', ip: '192.0.2.13' };
const AFTER_RESTART = { name: 'z_img_restart', subnet: '10.95.0.0/24', ip: '192.0.2.11' };
const AFTER_LIVE_RESTORE = { name: 'z_img_live', subnet: '10.96.0.0/24', ip: '192.0.2.13' };

/** The state dir the container mounts at /var/lib/docker-egress (the host's, in the README's line). */
const stateDir = (sb: Sandbox) => join(sb.dir, 'image-state');

async function containerLog(sb: Sandbox): Promise<string> {
	const r = await sb.docker(['logs', CONTAINER], { reject: false });
	return `${r.stdout}${r.stderr}`;
}

test.serial('make image builds docker-egress:<version> and :latest into the daemon without pulling; watch is the default command', async (t) => {
	const sb = sandbox();
	const started = Date.now();
	// What `make image IMAGE_DOCKER=… ` runs, pointed at the sandbox daemon.
	const build = await execa(join(repoRoot, 'pkg', 'image.sh'), ['--docker', dockerCliPath() ?? 'docker', pluginBinary()], {
		env: { DOCKER_HOST: sb.dockerHost, DOCKER_CONFIG: sb.configDir },
		reject: false,
		timeout: 120_000,
	});
	t.log(`pkg/image.sh: exit ${String(build.exitCode)} in ${Date.now() - started} ms\n${build.stderr.trim()}`);
	t.is(build.exitCode, 0, build.stderr);

	const inspect = await sb.docker(['image', 'inspect', '--format', '{{json .Config}}', `${IMAGE}:${version}`]);
	const config = JSON.parse(inspect.stdout) as { Entrypoint: string[]; Cmd: string[]; Env: string[]; Labels: Record<string, string> };
	t.deepEqual(config.Entrypoint, ['/usr/local/bin/docker-egress']);
	t.deepEqual(config.Cmd, ['watch']);
	t.true(config.Env.includes('DOCKER_HOST=unix:///var/run/docker.sock'), config.Env.join(' '));
	t.true(config.Env.includes('DOCKER_EGRESS_STATE_DIR=/var/lib/docker-egress'), config.Env.join(' '));
	t.is(config.Labels['org.opencontainers.image.version'], version);
	t.log(`built from: ${config.Labels['docker-egress.image.built-from'] ?? '(no label)'}`);
	const ids = await Promise.all([`${IMAGE}:${version}`, `${IMAGE}:latest`].map(async (ref) => (await sb.docker(['image', 'inspect', '--format', '{{.Id}}', ref])).stdout.trim()));
	t.is(ids[0], ids[1], ':latest is the same image');

	// The tools the executable runs, and their libraries, are all inside.
	for (const [tool, args] of [
		['nft', ['--version']],
		['iptables', ['--version']],
		['iptables-legacy-save', ['--version']],
		['ip6tables-nft-restore', ['--version']],
		['ip', ['-V']],
		['conntrack', ['--version']],
	] as const) {
		const r = await sb.docker(['run', '--rm', '--pull', 'never', '--network', 'none', '--entrypoint', tool, IMAGE, ...args], { reject: false, timeout: 60_000 });
		t.is(r.exitCode, 0, `${tool} ${args.join(' ')} in the image: ${r.stderr}`);
	}
});

test.serial('the documented docker run line: watch serves a new labelled network within seconds', async (t) => {
	const sb = sandbox();
	mkdirSync(stateDir(sb), { recursive: true });
	// The README's line, with the sandbox's socket and a state dir of the test; the run's backend.
	const run = await sb.docker([
		'run', '-d', '--pull', 'never', '--name', CONTAINER, '--restart', 'always', '--network', 'host', '--cap-add', 'NET_ADMIN',
		'-v', `${sb.socket}:/var/run/docker.sock`, '-v', `${stateDir(sb)}:/var/lib/docker-egress`,
		'-e', `DOCKER_EGRESS_FIREWALL_BACKEND=${backend}`,
		IMAGE,
	], { reject: false, timeout: 60_000 });
	t.is(run.exitCode, 0, run.stderr);
	const log = await eventually('"watch started" in the container log', async () => containerLog(sb), (text) => /watch started/.test(text) || /watch stopped|Error/.test(text), 20_000);
	t.log(log.trim());
	t.regex(log, new RegExp(`watch started endpoint=unix:///var/run/docker.sock .*firewall=${backend}`));

	const created = Date.now();
	await sb.docker(['network', 'create', '--label', `docker-egress.source-ip=${NET.ip}`, '--subnet', NET.subnet, NET.name]);
	await waitForRule(sb, NET.subnet, NET.ip, 10_000);
	const seen = await sb.probe(NET.name);
	const elapsed = Date.now() - created;
	t.log(`egress of ${NET.name} after ${elapsed} ms: ${seen}`);
	t.is(seen, NET.ip);
	t.true(elapsed < 15_000, `served within seconds (${elapsed} ms)`);
	t.regex(await containerLog(sb), new RegExp(`rule added network=${NET.name} subnet=${NET.subnet} source_ip=${NET.ip} .*trigger=events`));
});

test.serial('the container and the plugin on the host share the lock and the state file: a second watch is refused, a policy set from the host is served', async (t) => {
	const sb = sandbox();
	// The watch lock is an abstract unix socket of the network namespace: the container's, bound in the host's.
	const unix = await sb.exec('cat', ['/proc/net/unix']);
	t.regex(unix.stdout, /@docker-egress\/watch$/m, 'the container holds @docker-egress/watch in the host namespace');

	const before = Date.now();
	const second = await sb.egress(['watch', '--state-dir', stateDir(sb)], { timeout: 20_000 });
	t.log(`second watch on the host: exit ${String(second.exitCode)} after ${Date.now() - before} ms: ${second.stderr.trim()}`);
	t.false(second.timedOut, 'the second watch exits by itself');
	t.not(second.exitCode, 0);
	t.regex(second.stderr, /another docker egress watch is already running on this host/);

	// A network someone else made, adopted from the host into the state file the container reads.
	await sb.docker(['network', 'create', '--subnet', ADOPTED.subnet, ADOPTED.name]);
	const set = await sb.egress(['set', ADOPTED.name, '--source-ip', ADOPTED.ip, '--state-dir', stateDir(sb)], { timeout: 60_000 });
	t.is(set.exitCode, 0, set.stderr);
	const ls = await sb.docker(['exec', CONTAINER, 'docker-egress', 'ls', '--format', '{{.Name}} {{.SourceIP}} {{.Via}} {{.Status}}'], { reject: false, timeout: 30_000 });
	t.is(ls.exitCode, 0, ls.stderr);
	t.true(ls.stdout.split('\n').includes(`${ADOPTED.name} ${ADOPTED.ip} policy active`), `ls inside the container:\n${ls.stdout}`);
	t.is(await sb.probe(ADOPTED.name), ADOPTED.ip);

	const container = await sb.docker(['inspect', '--format', '{{.State.Status}} {{.RestartCount}}', CONTAINER]);
	t.is(container.stdout.trim(), 'running 0', 'the container watch kept running');
});

test.serial('docker stop ends watch with exit 0 and leaves the rules in place, like stopping the service', async (t) => {
	const sb = sandbox();
	const stop = await sb.docker(['stop', CONTAINER], { timeout: 30_000 });
	t.is(stop.exitCode, 0, stop.stderr);
	const state = await sb.docker(['inspect', '--format', '{{.State.ExitCode}} {{.State.Status}}', CONTAINER]);
	t.is(state.stdout.trim(), '0 exited');
	t.regex(await containerLog(sb), /watch stopped reason=SIGTERM/);

	t.true(ruleFor(await egressRules(sb), NET.subnet, NET.ip), 'the rule stays');
	t.is(await sb.probe(NET.name), NET.ip);
	t.is(await sb.probe(ADOPTED.name), ADOPTED.ip);
});

test.serial('a daemon restart brings the stopped container back (--restart always) and its watch serves what was made meanwhile', async (t) => {
	const sb = sandbox();
	await sb.restartDockerd();
	await eventually('the container running again', async () => (await sb.docker(['inspect', '--format', '{{.State.Status}}', CONTAINER])).stdout.trim(), (status) => status === 'running', 30_000);
	await eventually('a second "watch started"', async () => containerLog(sb), (text) => (text.match(/watch started/g) ?? []).length >= 2, 20_000);
	await sb.docker(['network', 'create', '--label', `docker-egress.source-ip=${AFTER_RESTART.ip}`, '--subnet', AFTER_RESTART.subnet, AFTER_RESTART.name]);
	await waitForRule(sb, AFTER_RESTART.subnet, AFTER_RESTART.ip, 10_000);
	t.is(await sb.probe(AFTER_RESTART.name), AFTER_RESTART.ip);
	t.is(await sb.probe(NET.name), NET.ip);
	await sb.docker(['rm', '-f', CONTAINER]);
});

test.serial('with live-restore the container outlives a daemon restart: mounting the socket directory, its watch reconnects ("daemon back")', async (t) => {
	const sb = sandbox();
	writeFileSync(join(sb.dir, 'daemon.json'), '{"live-restore": true}\n');
	await sb.restartDockerd();
	const run = await sb.docker([
		'run', '-d', '--pull', 'never', '--name', CONTAINER, '--restart', 'always', '--network', 'host', '--cap-add', 'NET_ADMIN',
		'-v', `${socketDir}:/run/host:ro`, '-e', 'DOCKER_HOST=unix:///run/host/docker.sock',
		'-v', `${stateDir(sb)}:/var/lib/docker-egress`, '-e', `DOCKER_EGRESS_FIREWALL_BACKEND=${backend}`,
		IMAGE,
	], { reject: false, timeout: 60_000 });
	t.is(run.exitCode, 0, run.stderr);
	await eventually('"watch started"', async () => containerLog(sb), (text) => /watch started endpoint=unix:\/\/\/run\/host\/docker.sock/.test(text), 20_000);
	const pid = (await sb.docker(['inspect', '--format', '{{.State.Pid}}', CONTAINER])).stdout.trim();

	await sb.restartDockerd();
	t.is((await sb.docker(['inspect', '--format', '{{.State.Pid}}', CONTAINER])).stdout.trim(), pid, 'the same watch process kept running through the restart');
	const log = await eventually('"daemon back"', async () => containerLog(sb), (text) => /daemon back/.test(text), 20_000);
	t.regex(log, /daemon lost/);
	await sb.docker(['network', 'create', '--label', `docker-egress.source-ip=${AFTER_LIVE_RESTORE.ip}`, '--subnet', AFTER_LIVE_RESTORE.subnet, AFTER_LIVE_RESTORE.name]);
	await waitForRule(sb, AFTER_LIVE_RESTORE.subnet, AFTER_LIVE_RESTORE.ip, 10_000);
	t.is(await sb.probe(AFTER_LIVE_RESTORE.name), AFTER_LIVE_RESTORE.ip);
	await sb.docker(['rm', '-f', CONTAINER]);
});
