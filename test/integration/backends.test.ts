// Issue 9: the egress path is ours whatever else writes the firewall. On the engine of this run
// (DOCKER_EGRESS_TEST_ENGINE) and with the backend of this run (DOCKER_EGRESS_FIREWALL_BACKEND,
// default nftables), as the echo server sees it:
// - a created network and a labelled network with Docker's masquerade on egress from their own
//   addresses, after a daemon restart and after a simulated reboot (flushed kernel rules, an
//   unrelated saved iptables nat rule restored before dockerd starts), and `ls` agrees;
// - something that NATs a network's traffic before our rule makes `shadowed`, never `active`;
// - 60 plain networks created 10 at a time while watch runs keep their masquerade, and admins'
//   rules survive (no deletes by position);
// - moving between the backends takes one sync and leaves nothing of ours in the other.
import { join } from 'node:path';
import anyTest, { type ExecutionContext } from 'ava';
import { PRIMARY_ADDRESS, useSandbox, type Run, type Sandbox } from '../helpers/sandbox.js';
import { eventually, sleep } from './firewall.js';

const { test, sandbox } = useSandbox(anyTest);

/** The backend this run uses by default (the plugin's auto choice is nftables where nft works). */
const BACKEND = process.env['DOCKER_EGRESS_FIREWALL_BACKEND'] || 'nftables';
const NFT = '/usr/sbin/nft';

function egress(sb: Sandbox, args: string[], env: Record<string, string | undefined> = {}): Run {
	return sb.egress(args, { env: { DOCKER_EGRESS_STATE_DIR: join(sb.dir, 'state'), ...env } });
}

async function ok(t: ExecutionContext, run: Run): Promise<string> {
	const r = await run;
	t.is(r.exitCode, 0, `${r.command}\n${r.stderr}`);
	return r.stdout;
}

type LsRow = { Name: string; Status: string; StatusReason: string; SourceIP: string };

async function ls(sb: Sandbox, env: Record<string, string | undefined> = {}): Promise<Map<string, LsRow>> {
	const r = await egress(sb, ['ls', '--format', 'json'], env);
	if (r.exitCode !== 0) throw new Error(`ls failed: ${r.stderr}`);
	return new Map(
		r.stdout
			.split('\n')
			.filter(Boolean)
			.map((line) => JSON.parse(line) as LsRow)
			.map((row) => [row.Name, row]),
	);
}

/** Each network egresses from its address (echo server), and ls calls it active; the default bridge from the primary. */
async function expectEgress(t: ExecutionContext, sb: Sandbox, when: string, expected: Record<string, string>, env: Record<string, string | undefined> = {}): Promise<void> {
	const rows = await ls(sb, env);
	for (const [network, address] of Object.entries(expected)) {
		t.is(await sb.probe(network), address, `${when}: ${network} egresses from ${address}`);
		t.is(rows.get(network)?.Status, 'active', `${when}: ls says ${network} is active (${rows.get(network)?.StatusReason ?? 'not listed'})`);
	}

	t.is(await sb.probe('bridge'), PRIMARY_ADDRESS, `${when}: the default bridge egresses from the primary address`);
}

/**
 * Status is the truth, whatever it is: `active` only where the echo server sees the network's
 * address; `shadowed` where it sees another one; `missing` where it sees another one or, for a
 * network with masquerade off, nothing at all (fail closed).
 */
async function expectTruthfulStatus(t: ExecutionContext, sb: Sandbox, when: string, expected: Record<string, string>): Promise<void> {
	const rows = await ls(sb);
	for (const [network, address] of Object.entries(expected)) {
		const seen = await sb.tryProbe(network);
		const status = rows.get(network)?.Status;
		const what = `${when}: ${network} is ${status} (${rows.get(network)?.StatusReason ?? ''}) and the echo server saw ${seen ?? 'nothing'}`;
		t.true(['active', 'shadowed', 'missing'].includes(status ?? ''), what);
		t.is(status === 'active', seen === address, what);
		if (status === 'shadowed') t.not(seen, undefined, what);
	}
}

async function dockerFirewallBackend(sb: Sandbox): Promise<string> {
	const r = await sb.docker(['info', '--format', '{{json .FirewallBackend}}'], { reject: false });
	return /nftables/.test(r.stdout) ? 'nftables' : 'iptables';
}

test.serial('a created network and a labelled one with masquerade on egress from their own addresses, through a daemon restart and a reboot', async (t) => {
	const sb = sandbox();
	await ok(t, egress(sb, ['create', 'z_bk_a', '--source-ip', '192.0.2.11', '--subnet', '10.91.0.0/24']));
	// What compose makes when driver_opts are not written: Docker's masquerade stays on.
	await sb.docker(['network', 'create', '--label', 'docker-egress.source-ip=192.0.2.12', '--subnet', '10.91.1.0/24', 'z_bk_m']);
	await ok(t, egress(sb, ['sync']));
	const expected = { z_bk_a: '192.0.2.11', z_bk_m: '192.0.2.12' };
	await expectEgress(t, sb, 'after sync', expected);
	const verify = await ok(t, egress(sb, ['verify', 'z_bk_m', '--url', sb.echoUrl(), '--image', 'egress-probe:latest']));
	t.regex(verify, /192\.0\.2\.12/);

	// dockerd restarts (its own rules are put back, Docker's MASQUERADE ends on top again): no sync.
	await sb.restartDockerd();
	if (BACKEND === 'nftables') {
		await expectEgress(t, sb, 'after a daemon restart, before any sync', expected);
	} else {
		// Docker puts the MASQUERADE of a masquerading network above our jump again: until a sync
		// (or watch) moves the jump, that network is shadowed — and ls must say so.
		await expectTruthfulStatus(t, sb, 'after a daemon restart, before any sync', expected);
	}

	await ok(t, egress(sb, ['sync']));
	await expectEgress(t, sb, 'after a daemon restart and sync', expected);

	// A reboot: the kernel's rules are gone, the host's saved iptables rules come back before
	// dockerd starts (netfilter-persistent, ufw, firewalld do that), then dockerd, then sync.
	await sb.stopDockerd();
	await sb.exec(NFT, ['flush', 'ruleset']);
	await sb.exec('iptables-restore', [], { input: '*nat\n:POSTROUTING ACCEPT [0:0]\n-A POSTROUTING -s 198.18.0.0/15 -o eg-h -j MASQUERADE\nCOMMIT\n' });
	await sb.startDockerd();
	await expectTruthfulStatus(t, sb, 'after a reboot, before sync', expected);
	await ok(t, egress(sb, ['sync']));
	await expectEgress(t, sb, 'after a reboot and sync', expected);
	t.regex((await sb.exec('iptables-save', ['-t', 'nat'])).stdout, /-A POSTROUTING -s 198\.18\.0\.0\/15 -o eg-h -j MASQUERADE/, 'the saved rule is untouched');
	await ok(t, egress(sb, ['rm', 'z_bk_a']));
	await sb.docker(['network', 'rm', 'z_bk_m']);
});

test.serial('something that NATs a network before our rule makes it shadowed (named), never active', async (t) => {
	const sb = sandbox();
	await ok(t, egress(sb, ['create', 'z_bk_s', '--source-ip', '192.0.2.13', '--subnet', '10.91.2.0/24']));
	await expectEgress(t, sb, 'before', { z_bk_s: '192.0.2.13' });
	if (BACKEND === 'nftables') {
		// A NAT chain of someone else's at a priority before ours.
		await sb.exec(NFT, ['-f', '-'], { input: 'table ip eg_test_early {\n\tchain pr {\n\t\ttype nat hook postrouting priority srcnat - 50; policy accept;\n\t\tip saddr 10.91.2.0/24 masquerade\n\t}\n}\n' });
	} else {
		await sb.exec('iptables', ['-t', 'nat', '-I', 'POSTROUTING', '1', '-s', '10.91.2.0/24', '-j', 'MASQUERADE']);
	}

	t.is(await sb.probe('z_bk_s'), PRIMARY_ADDRESS, 'the rule ahead wins: the echo server sees the primary address');
	const row = (await ls(sb)).get('z_bk_s');
	t.is(row?.Status, 'shadowed');
	t.regex(row?.StatusReason ?? '', BACKEND === 'nftables' ? /eg_test_early chain pr \(priority 50\): masquerade/ : /-s 10\.91\.2\.0\/24 -j MASQUERADE/);
	const text = await egress(sb, ['ls']);
	t.regex(text.stderr, /network z_bk_s is shadowed by /);

	await ok(t, egress(sb, ['sync']));
	if (BACKEND === 'nftables') {
		t.is((await ls(sb)).get('z_bk_s')?.Status, 'shadowed', 'sync never touches a table it did not create');
		t.regex((await sb.exec(NFT, ['list', 'table', 'ip', 'eg_test_early'])).stdout, /masquerade/);
		await sb.exec(NFT, ['delete', 'table', 'ip', 'eg_test_early']);
	} else {
		// The jump is moved above the rule that shadows ours; that rule stays.
		const save = (await sb.exec('iptables-save', ['-t', 'nat'])).stdout;
		t.regex(save, /-A POSTROUTING -j DOCKER-EGRESS\n(.*\n)*-A POSTROUTING -s 10\.91\.2\.0\/24 -j MASQUERADE/);
		await sb.exec('iptables', ['-t', 'nat', '-D', 'POSTROUTING', '-s', '10.91.2.0/24', '-j', 'MASQUERADE']);
	}

	await expectEgress(t, sb, 'after', { z_bk_s: '192.0.2.13' });
	await ok(t, egress(sb, ['rm', 'z_bk_s']));
});

test.serial("60 plain networks created 10 at a time while watch runs keep their masquerade; admins' rules survive", async (t) => {
	const sb = sandbox();
	await ok(t, egress(sb, ['create', 'z_bk_w', '--source-ip', '192.0.2.11', '--subnet', '10.91.3.0/24']));
	const iptablesBackend = BACKEND === 'iptables';
	const adminRules = [
		['-A', 'POSTROUTING', '-s', '198.18.0.0/15', '-o', 'eg-h', '-j', 'MASQUERADE'],
		...(iptablesBackend ? [['-A', 'POSTROUTING', '-s', '10.98.0.0/24', '-o', 'eg-h', '-j', 'DOCKER-EGRESS']] : []),
	];
	for (const rule of adminRules) await sb.exec('iptables', ['-t', 'nat', ...rule]);
	const watch = egress(sb, ['watch', '--interval', '1']);
	t.teardown(async () => {
		if (watch.exitCode === null) watch.kill('SIGTERM');
		await watch.catch(() => undefined);
	});
	await sleep(1_000);
	const names: string[] = [];
	for (let round = 0; round < 3; round++) {
		for (let batch = 0; batch < 2; batch++) {
			await Promise.all(
				Array.from({ length: 10 }, async (_, i) => {
					const n = round * 20 + batch * 10 + i;
					const name = `z_mR_${n}`;
					names.push(name);
					await sb.docker(['network', 'create', '--subnet', `10.92.${n}.0/24`, name]);
				}),
			);
		}
	}

	await sleep(3_000); // several drift checks of watch
	const dockerNft = (await dockerFirewallBackend(sb)) === 'nftables';
	if (!dockerNft) {
		const save = (await sb.exec('iptables-save', ['-t', 'nat'])).stdout;
		const missing = names.filter((_, n) => !save.includes(`-A POSTROUTING -s 10.92.${n}.0/24 ! -o br-`));
		t.deepEqual(missing, [], 'every network keeps its MASQUERADE rule');
	}

	// Every one of them egresses from the primary address (6 probes at a time).
	const seen: Record<string, string | undefined> = {};
	for (let i = 0; i < names.length; i += 6) {
		await Promise.all(names.slice(i, i + 6).map(async (name) => (seen[name] = await sb.tryProbe(name))));
	}

	t.deepEqual(
		names.filter((name) => seen[name] !== PRIMARY_ADDRESS),
		[],
		`networks not egressing from ${PRIMARY_ADDRESS}: ${JSON.stringify(Object.fromEntries(Object.entries(seen).filter(([, a]) => a !== PRIMARY_ADDRESS)))}`,
	);
	const save = (await sb.exec('iptables-save', ['-t', 'nat'])).stdout;
	for (const rule of adminRules) t.true(save.includes(rule.join(' ')), `admin's rule survived: ${rule.join(' ')}`);
	await expectEgress(t, sb, 'after the churn', { z_bk_w: '192.0.2.11' });
	watch.kill('SIGTERM');
	const result = await watch;
	t.regex(result.stderr, /watch stopped/);
	t.notRegex(result.stderr, /reconcile failed/);
	await sb.docker(['network', 'rm', ...names]);
	for (const rule of adminRules) await sb.exec('iptables', ['-t', 'nat', '-D', ...rule.slice(1)]);
	await ok(t, egress(sb, ['rm', 'z_bk_w']));
});

test.serial("moving between the backends takes one sync and leaves nothing of ours in the other; an admin's jump stays", async (t) => {
	const sb = sandbox();
	const iptables = { DOCKER_EGRESS_FIREWALL_BACKEND: 'iptables' };
	const nftables = { DOCKER_EGRESS_FIREWALL_BACKEND: 'nftables' };
	await ok(t, egress(sb, ['create', 'z_bk_x', '--source-ip', '192.0.2.12', '--subnet', '10.91.4.0/24'], iptables));
	await expectEgress(t, sb, 'iptables backend', { z_bk_x: '192.0.2.12' }, iptables);
	t.is((await sb.exec(NFT, ['list', 'table', 'ip', 'docker-egress'], { reject: false })).exitCode, 1, 'no nftables table of ours');
	t.regex((await sb.exec('iptables-save', ['-t', 'nat'])).stdout, /-A DOCKER-EGRESS -s 10\.91\.4\.0\/24 /);
	t.is(JSON.parse(await ok(t, egress(sb, ['version', '--format', 'json'], iptables)))['FirewallBackend'], 'iptables');
	// An admin's conditional jump into our chain: someone else's rule.
	await sb.exec('iptables', ['-t', 'nat', '-A', 'POSTROUTING', '-s', '10.98.0.0/24', '-o', 'eg-h', '-j', 'DOCKER-EGRESS']);

	const moved = await ok(t, egress(sb, ['sync'], nftables));
	t.regex(moved, /removed the iptables backend's iptables chain and jump/);
	t.regex(moved, /\(nftables\)$/m);
	const save = (await sb.exec('iptables-save', ['-t', 'nat'])).stdout;
	t.notRegex(save, /-A POSTROUTING -j DOCKER-EGRESS/, 'our jump is gone');
	t.notRegex(save, /-A DOCKER-EGRESS /, 'our chain is empty');
	t.regex(save, /-A POSTROUTING -s 10\.98\.0\.0\/24 -o eg-h -j DOCKER-EGRESS/, "the admin's jump stays");
	t.regex((await sb.exec(NFT, ['list', 'table', 'ip', 'docker-egress'])).stdout, /10\.91\.4\.0\/24 (counter packets \d+ bytes \d+ )?comment "z_bk_x" : 192\.0\.2\.12/);
	await expectEgress(t, sb, 'nftables backend', { z_bk_x: '192.0.2.12' }, nftables);
	const inspect = JSON.parse(await ok(t, egress(sb, ['inspect', 'z_bk_x'], nftables))) as Array<Record<string, unknown>>;
	t.is(inspect[0]!['FirewallBackend'], 'nftables');
	t.deepEqual(inspect[0]!['Rules'], ['element ip docker-egress network_source { 10.91.4.0/24 : 192.0.2.12 }', 'element ip docker-egress network_bridge { 10.91.4.0/24 . "z_bk_x" }']);

	const back = await ok(t, egress(sb, ['sync'], iptables));
	t.regex(back, /removed the nftables backend's tables/);
	t.is((await sb.exec(NFT, ['list', 'table', 'ip', 'docker-egress'], { reject: false })).exitCode, 1);
	await expectEgress(t, sb, 'back on iptables', { z_bk_x: '192.0.2.12' }, iptables);
	t.regex((await sb.exec('iptables-save', ['-t', 'nat'])).stdout, /-A POSTROUTING -s 10\.98\.0\.0\/24 -o eg-h -j DOCKER-EGRESS/);
	await sb.exec('iptables', ['-t', 'nat', '-D', 'POSTROUTING', '-s', '10.98.0.0/24', '-o', 'eg-h', '-j', 'DOCKER-EGRESS']);
	await ok(t, egress(sb, ['rm', 'z_bk_x'], iptables));
	await ok(t, egress(sb, ['sync']));
	await eventually('no rule left for 10.91.4.0/24', async () => (await sb.exec('iptables-save', ['-t', 'nat'])).stdout, (save) => !save.includes('-A DOCKER-EGRESS -s 10.91.4.0/24'));
});

test('a bad --firewall-backend is one clear line and no change', async (t) => {
	const sb = sandbox();
	const r = await egress(sb, ['--firewall-backend', 'pf', 'sync']);
	t.not(r.exitCode, 0);
	t.is(r.stderr.trim(), 'Error: invalid --firewall-backend "pf": use nftables, iptables or auto');
	const env = await egress(sb, ['sync'], { DOCKER_EGRESS_FIREWALL_BACKEND: 'ipfw' });
	t.not(env.exitCode, 0);
	t.regex(env.stderr, /^Error: invalid DOCKER_EGRESS_FIREWALL_BACKEND "ipfw"/);
});
