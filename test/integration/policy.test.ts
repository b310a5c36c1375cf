// Policies for networks docker egress did not create: `set NETWORK --source-ip IP` / `unset NETWORK`,
// stored in <state-dir>/policies.json and keyed by network name, so that a network removed and
// recreated with another subnet (docker compose down/up) gets its rule again. Every positive claim
// about egress is proved by the upstream echo server (sb.probe).
//
// Every command gets an explicit state dir under the sandbox (never the machine's
// /var/lib/docker-egress): --state-dir where the contract has it, DOCKER_EGRESS_STATE_DIR always
// (except where a test is about which of the two wins).
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import anyTest, { type ExecutionContext } from 'ava';
import { PRIMARY_ADDRESS, useSandbox, type Run, type Sandbox } from '../helpers/sandbox.js';
import { egressRules, eventually, firewallSnapshot, flushEgressRules, ruleFor, rulesOf, sleep, waitForNoRule, waitForRule } from './firewall.js';

const { test, sandbox } = useSandbox(anyTest);

// ---------------------------------------------------------------------------------------------
// Helpers

/** The state dir of most tests here. */
function stateDir(sb: Sandbox): string {
	return join(sb.dir, 'state');
}

function policiesFile(dir: string): string {
	return join(dir, 'policies.json');
}

/** The plugin, with `dir` (default stateDir) in DOCKER_EGRESS_STATE_DIR unless opts.env says otherwise. */
function egress(sb: Sandbox, args: string[], opts: Parameters<Sandbox['egress']>[1] & { dir?: string } = {}): Run {
	const { dir, ...rest } = opts;
	return sb.egress(args, { timeout: 60_000, ...rest, env: { DOCKER_EGRESS_STATE_DIR: dir ?? stateDir(sb), ...rest.env } });
}

function sd(dir: string): string[] {
	return ['--state-dir', dir];
}

/** A network made with plain `docker network create`: no label, masquerade on (Docker's default). */
async function plainNetwork(sb: Sandbox, name: string, subnet: string): Promise<void> {
	await sb.docker(['network', 'create', '--subnet', subnet, name]);
}

/** A file's text, or '' when it does not exist. */
function readOrEmpty(path: string): string {
	return existsSync(path) ? readFileSync(path, 'latin1') : '';
}

type LsRow = Record<string, unknown>;

async function lsJson(sb: Sandbox, dir = stateDir(sb)): Promise<LsRow[]> {
	const r = await egress(sb, ['ls', '--format', 'json', ...sd(dir)], { dir });
	if (r.exitCode !== 0) throw new Error(`ls failed: ${r.stderr}`);
	return r.stdout.split('\n').filter(Boolean).map((line) => JSON.parse(line) as LsRow);
}

/** A running `watch --interval 0.5 --log-format json`, stopped (SIGTERM, then awaited) by t.teardown. */
async function startWatch(t: ExecutionContext, sb: Sandbox, dir = stateDir(sb)) {
	const proc = egress(sb, ['watch', '--interval', '0.5', '--log-format', 'json', ...sd(dir)], { dir, timeout: undefined });
	let stderr = '';
	const started = new Promise<void>((resolve, reject) => {
		const timer = setTimeout(() => reject(new Error(`no "watch started" within 30 s:\n${stderr}`)), 30_000);
		proc.stderr!.on('data', (chunk: Buffer) => {
			stderr += chunk.toString();
			if (stderr.split('\n').some((line) => line.includes('"watch started"'))) {
				clearTimeout(timer);
				resolve();
			}
		});
		void proc.then(() => {
			clearTimeout(timer);
			reject(new Error(`watch exited (code ${String(proc.exitCode)}) before "watch started":\n${stderr}`));
		}, reject);
	});
	let stopping: Promise<unknown> | undefined;
	const stop = () => {
		stopping ??= (async () => {
			if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
			const timer = setTimeout(() => proc.kill('SIGKILL'), 10_000);
			try {
				return await proc;
			} finally {
				clearTimeout(timer);
			}
		})();
		return stopping;
	};
	t.teardown(async () => {
		await stop();
	});
	await started;
	return {
		stop,
		get stderr() {
			return stderr;
		},
		get running() {
			return proc.exitCode === null && proc.signalCode === null;
		},
		/** JSON log lines with this msg. */
		logged(msg: string): Array<Record<string, unknown>> {
			return stderr
				.split('\n')
				.filter((line) => line.startsWith('{'))
				.map((line) => JSON.parse(line) as Record<string, unknown>)
				.filter((line) => line['msg'] === msg);
		},
	};
}

const POL = { name: 'z_pol', subnet: '10.60.1.0/24', recreated: '10.60.2.0/24' };

// ---------------------------------------------------------------------------------------------
// Tests (serial: they share one Docker host, its firewall and the state dir)

test.serial('set adopts a plain network (masquerade on): exit 0, warns that it fails open, and applies the rule itself', async (t) => {
	const sb = sandbox();
	await plainNetwork(sb, POL.name, POL.subnet);
	t.is(await sb.probe(POL.name), PRIMARY_ADDRESS, 'before: Docker masquerades with the primary address');
	t.false(existsSync(policiesFile(stateDir(sb))));

	const set = await egress(sb, ['set', POL.name, '--source-ip', '192.0.2.12', ...sd(stateDir(sb))]);
	t.is(set.exitCode, 0, set.stderr);
	t.log(`set stderr:\n${set.stderr}`);
	t.regex(set.stderr, /masquerade/i);
	t.regex(set.stderr, /fails open/);
	t.true(ruleFor(await egressRules(sb), POL.subnet, '192.0.2.12'));
	t.is(await sb.probe(POL.name), '192.0.2.12');

	const text = readFileSync(policiesFile(stateDir(sb)), 'utf8');
	t.notThrows(() => JSON.parse(text), 'policies.json is JSON');
	t.true(text.includes(POL.name) && text.includes('192.0.2.12'), text);
});

test.serial('ls shows policy networks marked VIA policy, labelled ones VIA label', async (t) => {
	const sb = sandbox();
	const created = await egress(sb, ['create', 'z_lab', '--source-ip', '192.0.2.11', '--subnet', '10.60.9.0/24']);
	t.is(created.exitCode, 0, created.stderr);
	t.is(await sb.probe('z_lab'), '192.0.2.11');
	t.is(await sb.probe(POL.name), '192.0.2.12', 'create (a reconcile) keeps the policy rule');

	const table = await egress(sb, ['ls', ...sd(stateDir(sb))]);
	t.is(table.exitCode, 0, table.stderr);
	t.log(`ls:\n${table.stdout}\nstderr:\n${table.stderr}`);
	const [header, ...rows] = table.stdout.trim().split('\n');
	t.regex(header ?? '', /\bVIA\b/);
	t.regex(rows.find((row) => /\bz_pol\b/.test(row)) ?? '', /\b10\.60\.1\.0\/24\b.*\b192\.0\.2\.12\b.*\bactive\b/);
	t.regex(rows.find((row) => /\bz_pol\b/.test(row)) ?? '', /\bpolicy\b/);
	t.regex(rows.find((row) => /\bz_lab\b/.test(row)) ?? '', /\blabel\b/);
	t.regex(table.stderr, /z_pol.*fails open|fails open.*z_pol/, 'ls warns that the adopted network fails open');

	const json = await lsJson(sb);
	t.like(json.find((row) => row['Name'] === POL.name), { Via: 'policy', SourceIP: '192.0.2.12', Subnet: POL.subnet, Status: 'active', Masquerade: true });
	t.like(json.find((row) => row['Name'] === 'z_lab'), { Via: 'label', SourceIP: '192.0.2.11', Masquerade: false });

	const template = await egress(sb, ['ls', '--format', '{{.Name}} {{.Via}}', ...sd(stateDir(sb))]);
	t.is(template.stdout.trim(), 'z_lab label\nz_pol policy');
	t.is((await egress(sb, ['rm', 'z_lab'])).exitCode, 0);
});

test.serial('with watch running, the policy network removed and recreated with another subnet gets its rule again', async (t) => {
	const sb = sandbox();
	const watch = await startWatch(t, sb);
	await sb.docker(['network', 'rm', POL.name]);
	await waitForNoRule(sb, POL.subnet);
	await plainNetwork(sb, POL.name, POL.recreated);
	await waitForRule(sb, POL.recreated, '192.0.2.12');
	t.is(await sb.probe(POL.name), '192.0.2.12');
	const ours = () => watch.logged('rule added').filter((line) => line['network'] === POL.name && line['subnet'] === POL.recreated);
	const added = await eventually('"rule added" for the recreated network', async () => ours(), (lines) => lines.length > 0, 5_000);
	t.is(added.length, 1, watch.stderr);
	t.like(added[0], { source_ip: '192.0.2.12' });
	t.true(watch.running);
});

test.serial('set to another IP on a policy network (while watch runs): moves it, says open connections will reset', async (t) => {
	const sb = sandbox();
	const watch = await startWatch(t, sb);
	const set = await egress(sb, ['set', POL.name, '--source-ip', '192.0.2.13', ...sd(stateDir(sb))], { timeout: 30_000 });
	t.false(set.timedOut, 'set does not wait for watch to end');
	t.is(set.exitCode, 0, set.stderr);
	t.log(`set stderr:\n${set.stderr}`);
	t.regex(set.stderr, /connections.*reset/);
	const rules = rulesOf(await egressRules(sb), POL.recreated);
	t.is(rules.length, 1, JSON.stringify(rules));
	t.true(ruleFor(rules, POL.recreated, '192.0.2.13'));
	t.is(await sb.probe(POL.name), '192.0.2.13');
	t.true(watch.running);
});

test.serial('set to another IP resets the open connections of that network (their conntrack entries go)', async (t) => {
	const sb = sandbox();
	const port = '9999';
	// Upstream: a TCP server that holds the connection open.
	const server = sb.execUpstream('busybox', ['nc', '-l', '-p', port], { reject: false });
	t.teardown(async () => {
		server.kill('SIGTERM');
		await server;
	});
	await eventually(
		'the upstream server to listen',
		async () => (await sb.execUpstream('ss', ['-Hltn', `sport = :${port}`])).stdout,
		(text) => text.includes(`:${port}`),
	);
	// A container on the policy network that keeps one connection busy (a line every 0.2 s).
	const client = await sb.docker([
		'run', '-d', '--name', 'z_pol_flow', '--network', POL.name, 'egress-probe:latest',
		'sh', '-c', `while true; do echo x; sleep 0.2; done | nc 192.0.2.254 ${port}`,
	]);
	t.teardown(async () => {
		await sb.docker(['rm', '-f', 'z_pol_flow'], { reject: false });
	});
	const containerId = client.stdout.trim();
	const flows = async () => (await sb.exec('conntrack', ['-L', '-p', 'tcp', '--dport', port], { reject: false })).stdout;
	const before = await eventually('an established flow leaving as 192.0.2.13', flows, (text) => /ESTABLISHED.*dst=192\.0\.2\.13 /.test(text));
	t.log(`before:\n${before}`);

	const set = await egress(sb, ['set', POL.name, '--source-ip', '192.0.2.12', ...sd(stateDir(sb))]);
	t.is(set.exitCode, 0, set.stderr);
	t.log(`set stderr:\n${set.stderr}`);
	t.regex(set.stderr, /connections.*reset/);
	t.notRegex(set.stderr, /\b0 tracked flows?\b/, 'the message must not say that no flow was forgotten: one was');
	// Without the reset, that flow would keep its old translation (192.0.2.13) for days.
	const after = await eventually('the old translation gone', flows, (text) => !/dst=192\.0\.2\.13 /.test(text));
	t.log(`after:\n${after}`);
	// The client's connection was reset: its next segment left as .12, which the server does not know.
	const state = await eventually(
		'the client container to end',
		async () => (await sb.docker(['inspect', '--format', '{{.State.Status}}', containerId])).stdout.trim(),
		(status) => status === 'exited',
		15_000,
	);
	t.is(state, 'exited');
	t.is(await sb.probe(POL.name), '192.0.2.12');
});

test.serial('unset removes the rule: the network (masquerade on) leaves from the primary address again', async (t) => {
	const sb = sandbox();
	const unset = await egress(sb, ['unset', POL.name, ...sd(stateDir(sb))]);
	t.is(unset.exitCode, 0, unset.stderr);
	t.deepEqual(rulesOf(await egressRules(sb), POL.recreated), []);
	t.is(await sb.probe(POL.name), PRIMARY_ADDRESS);
	t.false((await lsJson(sb)).some((row) => row['Name'] === POL.name), 'ls no longer lists it');
	const text = readFileSync(policiesFile(stateDir(sb)), 'utf8');
	t.notThrows(() => JSON.parse(text));
	t.false(text.includes(POL.name), text);
});

test.serial('set for a network that does not exist yet: accepted with a warning; its rule appears when it is created while watch runs', async (t) => {
	const sb = sandbox();
	const net = { name: 'z_future', subnet: '10.60.3.0/24', ip: '192.0.2.11' };
	t.teardown(async () => {
		await egress(sb, ['unset', net.name, ...sd(stateDir(sb))]);
		await sb.docker(['network', 'rm', net.name], { reject: false });
	});
	const nat = await firewallSnapshot(sb);
	const set = await egress(sb, ['set', net.name, '--source-ip', net.ip, ...sd(stateDir(sb))]);
	t.is(set.exitCode, 0, set.stderr);
	t.regex(set.stderr, /no network named/);
	t.is(await firewallSnapshot(sb), nat, 'no rule yet');

	const watch = await startWatch(t, sb);
	await plainNetwork(sb, net.name, net.subnet);
	await waitForRule(sb, net.subnet, net.ip);
	t.is(await sb.probe(net.name), net.ip);
	t.true(watch.running);
});

test.serial('the state dir is --state-dir, else DOCKER_EGRESS_STATE_DIR; the flag wins', async (t) => {
	const sb = sandbox();
	const envDir = join(sb.dir, 'state-env');
	const net = { name: 'z_envnet', subnet: '10.60.5.0/24', ip: '192.0.2.13' };
	await plainNetwork(sb, net.name, net.subnet);
	t.teardown(async () => {
		await egress(sb, ['unset', net.name], { dir: envDir });
		await sb.docker(['network', 'rm', net.name], { reject: false });
	});

	const set = await egress(sb, ['set', net.name, '--source-ip', net.ip], { dir: envDir });
	t.is(set.exitCode, 0, set.stderr);
	t.true(readFileSync(policiesFile(envDir), 'utf8').includes(net.name), 'written to $DOCKER_EGRESS_STATE_DIR');
	t.false(readOrEmpty(policiesFile(stateDir(sb))).includes(net.name), 'not to the other state dir');
	t.is(await sb.probe(net.name), net.ip);

	const names = async (args: string[], env: Record<string, string | undefined>) => {
		const r = await sb.egress(['ls', '--format', '{{.Name}} {{.Via}}', ...args], { env });
		t.is(r.exitCode, 0, r.stderr);
		return r.stdout.split('\n');
	};
	t.true((await names([], { DOCKER_EGRESS_STATE_DIR: envDir })).includes(`${net.name} policy`), 'from the environment');
	t.true((await names(sd(envDir), { DOCKER_EGRESS_STATE_DIR: undefined })).includes(`${net.name} policy`), 'from the flag');
	t.false((await names(sd(stateDir(sb)), { DOCKER_EGRESS_STATE_DIR: envDir })).includes(`${net.name} policy`), 'the flag wins over the environment');
});

const unreadable = /policies\.json.*(corrupt|cannot read)/;

test.serial('a truncated or corrupt policies.json: ls, sync, set, unset and watch fail with one clear line; the file and the rules stay as they were', async (t) => {
	t.timeout(300_000);
	const sb = sandbox();
	const dir = join(sb.dir, 'state-corrupt');
	const net = { name: 'z_pc', subnet: '10.60.4.0/24', ip: '192.0.2.13' };
	await plainNetwork(sb, net.name, net.subnet);
	const set = await egress(sb, ['set', net.name, '--source-ip', net.ip, ...sd(dir)], { dir });
	t.is(set.exitCode, 0, set.stderr);
	t.is(await sb.probe(net.name), net.ip);
	const valid = readFileSync(policiesFile(dir));
	t.teardown(async () => {
		writeFileSync(policiesFile(dir), valid);
		await egress(sb, ['unset', net.name, ...sd(dir)], { dir });
		await sb.docker(['network', 'rm', net.name], { reject: false });
	});

	const broken: Array<[string, Buffer]> = [
		['truncated', valid.subarray(0, Math.floor(valid.length / 2))],
		['garbage', Buffer.from('\u0000\u00ffnot json at all {{{\n', 'latin1')],
		['empty', Buffer.alloc(0)],
	];
	const commands: string[][] = [
		['ls'],
		['sync'],
		['set', net.name, '--source-ip', '192.0.2.11'],
		['set', 'z_pc_other', '--source-ip', '192.0.2.11'],
		['unset', net.name],
		['watch', '--interval', '0.5'],
	];
	for (const [kind, bytes] of broken) {
		writeFileSync(policiesFile(dir), bytes);
		const nat = await firewallSnapshot(sb);
		for (const args of commands) {
			const what = `${kind} file, ${args.join(' ')}`;
			const r = await egress(sb, [...args, ...sd(dir)], { dir, timeout: 30_000 });
			t.false(r.timedOut, `${what}: exits by itself`);
			t.not(r.exitCode, 0, `${what}: exit status`);
			t.regex(r.stderr, unreadable, what);
			t.is(r.stderr.trim().split('\n').length, 1, `${what}: one line, got:\n${r.stderr}`);
			t.deepEqual(readFileSync(policiesFile(dir)), bytes, `${what}: file left as it was`);
		}
		t.is(await firewallSnapshot(sb), nat, `${kind} file: rules unchanged (a corrupt file is not an empty policy set)`);
	}
	t.is(await sb.probe(net.name), net.ip, 'the policy network kept its rule throughout');
});

test.serial('a corrupt or ill-typed policies.json costs only the policies: sync serves the labelled networks, keeps the policy rules it finds, and fails with one line; ls lists and fails', async (t) => {
	t.timeout(180_000);
	const sb = sandbox();
	const dir = join(sb.dir, 'state-partial');
	const policy = { name: 'z_pp', subnet: '10.60.7.0/24', ip: '192.0.2.13' };
	const labelled = { name: 'z_pl', subnet: '10.60.8.0/24', ip: '192.0.2.12' };
	await plainNetwork(sb, policy.name, policy.subnet);
	t.is((await egress(sb, ['set', policy.name, '--source-ip', policy.ip, ...sd(dir)], { dir })).exitCode, 0);
	t.is((await egress(sb, ['create', labelled.name, '--source-ip', labelled.ip, '--subnet', labelled.subnet], { dir })).exitCode, 0);
	const valid = readFileSync(policiesFile(dir));
	t.teardown(async () => {
		writeFileSync(policiesFile(dir), valid);
		await egress(sb, ['unset', policy.name, ...sd(dir)], { dir });
		await egress(sb, ['rm', labelled.name], { dir });
		await sb.docker(['network', 'rm', policy.name], { reject: false });
	});

	const broken: Array<[string, string, RegExp]> = [
		['truncated', valid.toString('latin1').slice(0, 20), /policies\.json is corrupt/],
		['ill-typed via', JSON.stringify({ version: 1, policies: { [policy.name]: { sourceIp: policy.ip, via: 5 } } }), /policies\.json is corrupt \(policy z_pp: "via" is 5, not a string\)/],
	];
	for (const [kind, text, message] of broken) {
		writeFileSync(policiesFile(dir), text);
		// The policy network's rule is there: a sync that cannot read the policies keeps it.
		const kept = await egress(sb, ['sync', ...sd(dir)], { dir });
		t.not(kept.exitCode, 0, `${kind}: sync exit status`);
		t.regex(kept.stderr, message, kind);
		t.is(kept.stderr.trim().split('\n').length, 1, `${kind}: one line, got:\n${kept.stderr}`);
		t.regex(kept.stdout, /\(nothing to change\)/, `${kind}: nothing removed`);
		t.is(await sb.probe(policy.name), policy.ip, `${kind}: the policy network kept its rule`);

		// Rules flushed: the labelled network gets its rule back all the same.
		await flushEgressRules(sb);
		const healed = await egress(sb, ['sync', ...sd(dir)], { dir });
		t.not(healed.exitCode, 0, `${kind}: sync exit status`);
		t.regex(healed.stderr, message, kind);
		t.regex(healed.stdout, /^added\s+z_pl\s+10\.60\.8\.0\/24 -> 192\.0\.2\.12/m, kind);
		t.is(await sb.probe(labelled.name), labelled.ip, `${kind}: the labelled network egresses from its address`);

		const ls = await egress(sb, ['ls', '--format', '{{.Name}} {{.Status}}', ...sd(dir)], { dir });
		t.not(ls.exitCode, 0, `${kind}: ls exit status`);
		t.regex(ls.stdout, /^z_pl active$/m, kind);
		t.regex(ls.stderr, message, kind);

		// The file is good again: the policy network is served again.
		writeFileSync(policiesFile(dir), valid);
		t.is((await egress(sb, ['sync', ...sd(dir)], { dir })).exitCode, 0);
		t.is(await sb.probe(policy.name), policy.ip, `${kind}: the policy network is served again`);
	}
});

test.serial('set with a source IP that is not usable is refused with one line and writes nothing', async (t) => {
	const sb = sandbox();
	const net = { name: 'z_pb', subnet: '10.60.6.0/24' };
	await plainNetwork(sb, net.name, net.subnet);
	t.teardown(async () => {
		await sb.docker(['network', 'rm', net.name], { reject: false });
	});
	const fresh = join(sb.dir, 'state-fresh');
	mkdirSync(fresh, { recursive: true });
	const existing = readOrEmpty(policiesFile(stateDir(sb)));
	const nat = await firewallSnapshot(sb);
	const cases: Array<[string, RegExp]> = [
		['192.0.2.50', /192\.0\.2\.50 is not an address of this host/],
		['banana', /"banana": not an IP address/],
		['127.0.0.1', /loopback/],
	];
	for (const [ip, message] of cases) {
		for (const dir of [fresh, stateDir(sb)]) {
			const r = await egress(sb, ['set', net.name, '--source-ip', ip, ...sd(dir)], { dir });
			t.not(r.exitCode, 0, `${ip}: exit status`);
			t.regex(r.stderr, message, ip);
			t.is(r.stderr.trim().split('\n').length, 1, `${ip}: one line, got:\n${r.stderr}`);
		}
		t.false(existsSync(policiesFile(fresh)), `${ip}: no state file written`);
		t.is(readOrEmpty(policiesFile(stateDir(sb))), existing, `${ip}: state file unchanged`);
	}
	t.is(await firewallSnapshot(sb), nat);
	t.is(await sb.probe(net.name), PRIMARY_ADDRESS);
});
