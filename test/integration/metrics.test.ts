// watch --metrics-address (issue 12, items 1-3): Prometheus text on /metrics, checked by Prometheus'
// own `promtool check metrics`, and its values checked against what happened in the sandbox —
// connections made from a container, a flushed chain, a SIGSTOPped dockerd — plus /healthz, and the
// Connections of `ls`, `ps` and `inspect`. On the backend in use (DOCKER_EGRESS_FIREWALL_BACKEND).
//
// The endpoint listens on 127.0.0.1 of the sandbox's Docker host namespace (where watch runs), so it
// is fetched from inside it, with the test's own Node (busybox wget crashes on this machine, and busybox nc
// quits at the end of its input before a slower answer arrives).
// promtool comes from test/tools/install-promtool.sh (.ci/run runs it): without it the promtool
// test fails under CI and is skipped, loudly, elsewhere.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import anyTest from 'ava';
import { execa } from 'execa';
import { findExecutable, isCI } from '../helpers/prereqs.js';
import { PROBE_IMAGE, repoRoot, useSandbox, type Sandbox } from '../helpers/sandbox.js';
import { eventually, firewallBackend, flushEgressRules, sleep, waitForRule } from './firewall.js';
import { removeContainers, runContainer } from './containers-helpers.js';
import { egress, labelledNetwork, stateDir, Watch } from './watch-helpers.js';

const { test, sandbox } = useSandbox(anyTest);

const NET = { name: 'z_mx_keep', subnet: '10.74.0.0/24', ip: '192.0.2.11' };
const CONTAINER = { name: 'mx_own', ip: '192.0.2.12' };
/** A port of the sandbox's own loopback: nothing else listens in that namespace. */
const PORT = 20_000 + Math.floor(Math.random() * 20_000);

type Reply = { status: number; body: string; headers: string };

/**
 * GET `path` on the metrics endpoint, from inside the sandbox's Docker host namespace, with this
 * Node (busybox nc quits at the end of its input, before a slower answer arrives); status 0: no answer.
 */
async function get(sb: Sandbox, path: string): Promise<Reply> {
	const script = `fetch('http://127.0.0.1:${PORT}${path}').then(async (r) => console.log(JSON.stringify({ status: r.status, headers: [...r.headers].map((h) => h.join(': ')).join('\\n'), body: await r.text() })), () => console.log('{"status":0,"headers":"","body":""}'))`;
	const r = await sb.exec(process.execPath, ['-e', script], { reject: false, timeout: 15_000, env: { NODE_OPTIONS: undefined } });
	return JSON.parse(r.stdout) as Reply;
}

async function scrape(sb: Sandbox): Promise<string> {
	const reply = await get(sb, '/metrics');
	if (reply.status !== 200) throw new Error(`GET /metrics: ${reply.status}\n${reply.headers}\n${reply.body}`);
	return reply.body;
}

/** The value of one series (exact label set, as prom-client writes it), or undefined. */
function value(text: string, series: string): number | undefined {
	const line = text.split('\n').find((candidate) => candidate.startsWith(`${series} `));
	return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

async function metric(sb: Sandbox, series: string): Promise<number | undefined> {
	return value(await scrape(sb), series);
}

function promtool(): string | undefined {
	const cached = join(repoRoot, '.cache', 'promtool', 'promtool');
	return process.env['DOCKER_EGRESS_PROMTOOL'] ?? findExecutable(cached) ?? findExecutable('promtool');
}

function dockerdPid(sb: Sandbox): number {
	return Number(readFileSync(join(sb.dir, 'dockerd.pid'), 'utf8').trim());
}

/** One watch for the whole file (the tests build on each other); the last test stops it. */
let watch: Watch | undefined;
test.after.always('stop watch', async () => {
	await watch?.stop();
});

test.serial('setup: an egress network and a watch serving metrics on 127.0.0.1', async (t) => {
	const sb = sandbox();
	await labelledNetwork(sb, NET.name, NET.subnet, NET.ip);
	const args = ['watch', '--interval', '1', '--log-format', 'json', '--state-dir', stateDir(sb), '--metrics-address', `127.0.0.1:${PORT}`];
	watch = new Watch(egress(sb, args), true);
	await watch.waitFor('watch started', {}, 30_000);
	await watch.waitFor('metrics served', { address: `127.0.0.1:${PORT}` });
	await waitForRule(sb, NET.subnet, NET.ip);
	t.pass();
});

test.serial('GET /metrics: Prometheus text format, every docker_egress_ metric, values as the sandbox is', async (t) => {
	const sb = sandbox();
	const reply = await get(sb, '/metrics');
	t.is(reply.status, 200, reply.body);
	t.regex(reply.headers, /^content-type: text\/plain; version=0\.0\.4; charset=utf-8$/im);
	const text = await eventually('the network active in the metrics', async () => scrape(sb), (body) => value(body, 'docker_egress_networks{status="active"}') === 1);
	const backend = firewallBackend();
	t.is(value(text, `docker_egress_build_info{version="0.1.0",backend="${backend}"}`), 1);
	t.is(value(text, 'docker_egress_daemon_up'), 1);
	t.is(value(text, `docker_egress_rules{family="ipv4",backend="${backend}"}`), 1);
	t.is(value(text, 'docker_egress_networks{status="missing"}'), 0);
	t.true((value(text, 'docker_egress_sync_duration_seconds_count{trigger="start"}') ?? 0) >= 1, text);
	t.true(Math.abs((value(text, 'docker_egress_last_successful_sync_timestamp_seconds') ?? 0) - Date.now() / 1000) < 120);
	t.is(value(text, 'docker_egress_sync_failures_total{reason="firewall"}'), 0);
	t.is(value(text, `docker_egress_connections_total{network="${NET.name}",source_ip="${NET.ip}"}`), 0);
	// On a quiet host the drift checks (every --interval, here 1 s) keep the last-sync time current.
	const synced = value(text, 'docker_egress_last_successful_sync_timestamp_seconds')!;
	await sleep(2500);
	t.true((await metric(sb, 'docker_egress_last_successful_sync_timestamp_seconds'))! > synced, 'a drift check that finds the rules right counts');
	const health = await get(sb, '/healthz');
	t.is(health.status, 200);
	t.is(health.body, 'ok\n');
	t.is((await get(sb, '/nope')).status, 404);
});

const tool = promtool();
if (tool === undefined && !isCI()) {
	console.warn(`\n*** metrics.test: promtool is not installed: the promtool check is SKIPPED (run test/tools/install-promtool.sh) ***\n`);
}

(tool === undefined && !isCI() ? test.serial.skip : test.serial)('promtool check metrics accepts the exposition (no lint problems)', async (t) => {
	if (tool === undefined) {
		t.fail('promtool is not installed (test/tools/install-promtool.sh; .ci/run runs it)');
		return;
	}

	const text = await scrape(sandbox());
	const r = await execa(tool, ['check', 'metrics'], { input: text, reject: false });
	t.is(r.exitCode, 0, `${r.stdout}\n${r.stderr}\n${text}`);
	t.is(`${r.stdout}${r.stderr}`.trim(), '', 'no lint problems');
});

test.serial('three connections from the network: connections_total and ls Connections count at least three', async (t) => {
	const sb = sandbox();
	const series = `docker_egress_connections_total{network="${NET.name}",source_ip="${NET.ip}"}`;
	const before = (await metric(sb, series)) ?? 0;
	const script = `for i in 1 2 3; do printf "GET /cgi-bin/ip HTTP/1.0\\r\\n\\r\\n" | timeout 5 nc ${sb.echoAddress} 80 | tail -1; done`;
	const run = await sb.docker(['run', '--rm', '--network', NET.name, PROBE_IMAGE, 'sh', '-c', script], { timeout: 60_000 });
	t.deepEqual(run.stdout.trim().split('\n'), [NET.ip, NET.ip, NET.ip]);
	const after = await eventually('three more connections in the metric', async () => (await metric(sb, series)) ?? 0, (count) => count >= before + 3, 10_000);
	t.log(`connections_total ${before} -> ${after}`);
	const ls = await egress(sb, ['ls', '--format', '{{.Name}} {{.Connections}}', '--state-dir', stateDir(sb)]);
	t.is(ls.exitCode, 0, ls.stderr);
	const count = Number(/^z_mx_keep (\d+)$/m.exec(ls.stdout)?.[1]);
	t.true(count >= 3, ls.stdout);
	const json = JSON.parse((await egress(sb, ['ls', '--format', 'json', '--state-dir', stateDir(sb)])).stdout.trim().split('\n').find((line) => line.includes(NET.name))!) as { Connections: number };
	t.true(json.Connections >= 3);
	const inspect = JSON.parse((await egress(sb, ['inspect', NET.name, '--state-dir', stateDir(sb)])).stdout) as Array<{ Connections: number }>;
	t.true(inspect[0]!.Connections >= 3, JSON.stringify(inspect));

	// Another network's rule rewrites the whole table (nftables) or chain (iptables): the count stays.
	const other = { name: 'z_mx_other', subnet: '10.74.1.0/24', ip: '192.0.2.13' };
	t.teardown(async () => {
		await sb.docker(['network', 'rm', other.name], { reject: false });
	});
	await labelledNetwork(sb, other.name, other.subnet, other.ip);
	await waitForRule(sb, other.subnet, other.ip);
	await sleep(1500); // a drift check reads the rewritten rules
	t.true(((await metric(sb, series)) ?? 0) >= before + 3, 'the count survives a rewrite for another network');
	const again = await egress(sb, ['ls', '--format', '{{.Name}} {{.Connections}}', '--state-dir', stateDir(sb)]);
	t.true(Number(/^z_mx_keep (\d+)$/m.exec(again.stdout)?.[1]) >= 3, again.stdout);
	t.regex(again.stdout, /^z_mx_other 0$/m);
});

test.serial('a container with its own address: its own series, and ps / inspect count its connections', async (t) => {
	const sb = sandbox();
	t.teardown(async () => removeContainers(sb, CONTAINER.name));
	await runContainer(sb, CONTAINER.name, { network: NET.name, egressLabels: { 'source-ip': CONTAINER.ip } });
	await eventually('the container active in ps', async () => (await egress(sb, ['ps', '--format', '{{.Name}} {{.Status}}', '--state-dir', stateDir(sb)])).stdout, (out) => out.includes(`${CONTAINER.name} active`), 15_000);
	const script = `for i in 1 2 3; do printf "GET /cgi-bin/ip HTTP/1.0\\r\\n\\r\\n" | timeout 5 nc ${sb.echoAddress} 80 | tail -1; done`;
	const run = await sb.docker(['exec', CONTAINER.name, 'sh', '-c', script], { timeout: 60_000 });
	t.deepEqual(run.stdout.trim().split('\n'), [CONTAINER.ip, CONTAINER.ip, CONTAINER.ip]);
	const series = `docker_egress_connections_total{network="${NET.name}",container="${CONTAINER.name}",source_ip="${CONTAINER.ip}"}`;
	await eventually('the container series at three', async () => (await metric(sb, series)) ?? 0, (count) => count >= 3, 10_000);
	t.is(await metric(sb, 'docker_egress_containers{status="active"}'), 1);
	const ps = await egress(sb, ['ps', '--format', '{{.Name}} {{.Connections}}', '--state-dir', stateDir(sb)]);
	t.true(Number(new RegExp(`^${CONTAINER.name} (\\d+)$`, 'm').exec(ps.stdout)?.[1]) >= 3, ps.stdout);
	const inspect = JSON.parse((await egress(sb, ['inspect', NET.name, '--state-dir', stateDir(sb)])).stdout) as Array<{ ContainerEgress: Array<{ Name: string; Connections: number }> }>;
	t.true(inspect[0]!.ContainerEgress.find((entry) => entry.Name === CONTAINER.name)!.Connections >= 3, JSON.stringify(inspect));
});

test.serial('a flushed chain: drift_repairs_total goes up by exactly one', async (t) => {
	const sb = sandbox();
	// Settled: no reconcile of the container test still running.
	await sleep(1500);
	const before = (await metric(sb, 'docker_egress_drift_repairs_total')) ?? -1;
	await flushEgressRules(sb);
	await waitForRule(sb, NET.subnet, NET.ip, 8_000);
	await eventually('one drift repair', async () => (await metric(sb, 'docker_egress_drift_repairs_total')) ?? -1, (count) => count >= before + 1, 8_000);
	await sleep(2500); // our own write, and two drift checks more, must not count
	t.is(await metric(sb, 'docker_egress_drift_repairs_total'), before + 1);
});

test.serial('a SIGSTOPped dockerd: daemon_up 0 and /healthz 503 within seconds; 200 and daemon_up 1 after SIGCONT', async (t) => {
	t.timeout(90_000);
	const sb = sandbox();
	const pid = dockerdPid(sb);
	const failuresBefore = (await metric(sb, 'docker_egress_sync_failures_total{reason="daemon"}')) ?? 0;
	let frozen = true;
	const thaw = () => {
		if (frozen) {
			frozen = false;
			process.kill(pid, 'SIGCONT');
		}
	};
	t.teardown(thaw);
	t.is((await get(sb, '/healthz')).status, 200);
	process.kill(pid, 'SIGSTOP');
	const stoppedAt = Date.now();
	const down = await eventually('/healthz 503', async () => get(sb, '/healthz'), (reply) => reply.status === 503, 10_000);
	const seconds = (Date.now() - stoppedAt) / 1000;
	t.log(`SIGSTOP to 503: ${seconds.toFixed(1)} s: ${down.body.trim()}`);
	t.true(seconds < 6, `${seconds} s`);
	t.regex(down.body, /^daemon not answering since \d{4}-\d\d-\d\dT[\d:.]+Z: [^\n]+\n$/);
	t.is(down.body.trim().split('\n').length, 1);
	t.is(await metric(sb, 'docker_egress_daemon_up'), 0);
	await watch!.waitFor('daemon not answering', {}, 5_000);
	// The reconciles of the spell (each interval, from the last rules) count as failed, for the daemon.
	await eventually('a failed reconcile (daemon)', async () => (await metric(sb, 'docker_egress_sync_failures_total{reason="daemon"}')) ?? 0, (count) => count > failuresBefore, 15_000);

	thaw();
	const resumedAt = Date.now();
	await eventually('/healthz 200 again', async () => (await get(sb, '/healthz')).status, (status) => status === 200, 20_000);
	t.log(`SIGCONT to 200: ${((Date.now() - resumedAt) / 1000).toFixed(1)} s`);
	t.is(await metric(sb, 'docker_egress_daemon_up'), 1);
	await watch!.waitFor('daemon back', {}, 5_000);
});

test.serial('SIGTERM: watch stops within a second with the endpoint open, and the port is closed after', async (t) => {
	const sb = sandbox();
	t.is((await get(sb, '/healthz')).status, 200);
	// A client that keeps its connection open (never sends the end of its request).
	const held = sb.exec('busybox', ['sh', '-c', `(printf 'GET /metrics HTTP/1.1\\r\\n'; sleep 5) | busybox nc 127.0.0.1 ${PORT}`], { reject: false, timeout: 20_000 });
	await sleep(300);
	const started = Date.now();
	const result = await watch!.stop();
	const took = Date.now() - started;
	t.is(result.exitCode, 0, watch!.stderr);
	t.true(took < 1500, `stopped in ${took} ms`);
	t.log(`stopped in ${took} ms`);
	t.is((await get(sb, '/healthz')).status, 0, 'nothing listens any more');
	held.kill();
	await held;
});
