// The iptables backend's own layout, pinned to iptables whatever the suite runs with: chain
// DOCKER-EGRESS in the nat table, one unconditional jump to it from POSTROUTING, put (back) at the
// top only when it is missing, duplicated, or below a rule that can NAT one of our subnets; an
// admin's jump with conditions, and another subnet's MASQUERADE above ours, are left alone. Also:
// a failing iptables-restore rolls create back, watch repairs the jump, a SIGKILL in the middle of
// an iptables-restore leaves all or nothing, and one sync moves everything between the backends.
//
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import anyTest from 'ava';
import { useSandbox } from '../helpers/sandbox.js';
import { egressRules, firewallSnapshot, iptablesChain, iptablesChainExists, networkNames, nftChain, nftTableItems, postrouting, ruleFor, waitForRule } from './firewall.js';
import { sigkillMidApply, startWatch } from './watch-helpers.js';

// ava runs each test file in a worker of its own: this pins the plugin (sb.egress passes
// process.env through) and the helpers of ./firewall.js to iptables for this file only. (After the
// imports, which ESM evaluates first: none of them reads the variable at load time.)
process.env['DOCKER_EGRESS_FIREWALL_BACKEND'] = 'iptables';

const { test, sandbox } = useSandbox(anyTest);

const JUMP = '-A POSTROUTING -j DOCKER-EGRESS';
const A = { name: 'z_i1', subnet: '10.81.0.0/24', ip: '192.0.2.11' };
const B = { name: 'z_i2', subnet: '10.82.0.0/24', ip: '192.0.2.12' };

const jumps = (rules: string[]) => rules.filter((line) => / -j DOCKER-EGRESS$/.test(line));

test.serial('setup: two egress networks; the jump is first, and no nft table of ours exists', async (t) => {
	const sb = sandbox();
	for (const net of [A, B]) {
		const r = await sb.egress(['create', net.name, '--source-ip', net.ip, '--subnet', net.subnet]);
		t.is(r.exitCode, 0, r.stderr);
	}

	t.is((await postrouting(sb))[0], JUMP);
	t.is(jumps(await postrouting(sb)).length, 1);
	t.is(await nftTableItems(sb), undefined);
	const sync = await sb.egress(['sync']);
	t.regex(sync.stdout, /sync: 0 added, 0 removed, 2 unchanged \(nothing to change\) \(iptables\)$/m);
	t.is(await sb.probe(A.name), A.ip);
	t.is(await sb.probe(B.name), B.ip);
});

test.serial('a removed jump shows missing, and sync puts it back on top', async (t) => {
	const sb = sandbox();
	await sb.exec('iptables', ['-w', '-t', 'nat', '-D', 'POSTROUTING', '-j', 'DOCKER-EGRESS']);
	const ls = await sb.egress(['ls', '--format', '{{.Name}} {{.Status}}']);
	t.is(ls.stdout.trim(), `${A.name} missing\n${B.name} missing`);
	t.regex(ls.stderr, /network z_i1 is missing its rule: no jump to DOCKER-EGRESS in iptables nat POSTROUTING/);
	const sync = await sb.egress(['sync']);
	t.is(sync.exitCode, 0, sync.stderr);
	t.regex(sync.stdout, /^firewall {2}repaired jump to DOCKER-EGRESS at the top of nat POSTROUTING \(iptables: missing\)$/m);
	t.is((await postrouting(sb))[0], JUMP);
	t.is(await sb.probe(B.name), B.ip);
});

test.serial('a duplicated jump is made one again, at the top', async (t) => {
	const sb = sandbox();
	await sb.exec('iptables', ['-w', '-t', 'nat', '-A', 'POSTROUTING', '-j', 'DOCKER-EGRESS']);
	t.is(jumps(await postrouting(sb)).length, 2);
	const sync = await sb.egress(['sync']);
	t.is(sync.exitCode, 0, sync.stderr);
	t.regex(sync.stdout, /^firewall {2}repaired jump to DOCKER-EGRESS at the top of nat POSTROUTING \(iptables: 2 jumps\)$/m);
	const rules = await postrouting(sb);
	t.is(rules[0], JUMP);
	t.is(jumps(rules).length, 1, rules.join('\n'));
	t.is(await sb.probe(A.name), A.ip);
});

test.serial('a MASQUERADE of our subnet above the jump: shadowed (egress is wrong meanwhile); sync moves the jump back on top and leaves the MASQUERADE', async (t) => {
	const sb = sandbox();
	const masquerade = ['-s', A.subnet, '-j', 'MASQUERADE'];
	t.teardown(async () => {
		await sb.exec('iptables', ['-w', '-t', 'nat', '-D', 'POSTROUTING', ...masquerade], { reject: false });
	});
	await sb.exec('iptables', ['-w', '-t', 'nat', '-D', 'POSTROUTING', '-j', 'DOCKER-EGRESS']);
	await sb.exec('iptables', ['-w', '-t', 'nat', '-I', 'POSTROUTING', '1', ...masquerade]);
	await sb.exec('iptables', ['-w', '-t', 'nat', '-A', 'POSTROUTING', '-j', 'DOCKER-EGRESS']);
	t.is(await sb.probe(A.name), '192.0.2.1', 'the MASQUERADE above our jump wins');
	const ls = await sb.egress(['ls', '--format', '{{.Name}} {{.Status}}']);
	t.is(ls.stdout.trim(), `${A.name} shadowed\n${B.name} active`);
	t.regex(ls.stderr, /network z_i1 is shadowed by .*-A POSTROUTING -s 10\.81\.0\.0\/24 -j MASQUERADE/);
	const [view] = JSON.parse((await sb.egress(['inspect', A.name])).stdout) as Array<Record<string, unknown>>;
	t.like(view, { Status: 'shadowed', FirewallBackend: 'iptables' });
	t.regex(String(view!['StatusReason']), /MASQUERADE/);

	const sync = await sb.egress(['sync']);
	t.is(sync.exitCode, 0, sync.stderr);
	t.regex(sync.stdout, /^firewall {2}repaired jump to DOCKER-EGRESS at the top of nat POSTROUTING \(iptables: .*MASQUERADE.*\)$/m);
	const rules = await postrouting(sb);
	t.is(rules[0], JUMP);
	t.is(jumps(rules).length, 1);
	t.true(rules.includes(`-A POSTROUTING -s ${A.subnet} -j MASQUERADE`), 'a rule we did not create is left alone');
	t.is(await sb.probe(A.name), A.ip);
	t.is((await sb.egress(['ls', '--format', '{{.Status}}'])).stdout.trim(), 'active\nactive');
});

test.serial('a MASQUERADE of another subnet above the jump is left alone: status active, sync changes nothing', async (t) => {
	const sb = sandbox();
	const masquerade = ['-s', '10.99.0.0/24', '-j', 'MASQUERADE'];
	t.teardown(async () => {
		await sb.exec('iptables', ['-w', '-t', 'nat', '-D', 'POSTROUTING', ...masquerade], { reject: false });
	});
	await sb.exec('iptables', ['-w', '-t', 'nat', '-I', 'POSTROUTING', '1', ...masquerade]);
	const ls = await sb.egress(['ls', '--format', '{{.Name}} {{.Status}}']);
	t.is(ls.stdout.trim(), `${A.name} active\n${B.name} active`);
	t.is(ls.stderr, '');
	const before = await firewallSnapshot(sb);
	const sync = await sb.egress(['sync']);
	t.is(sync.exitCode, 0, sync.stderr);
	t.regex(sync.stdout, /sync: 0 added, 0 removed, 2 unchanged \(nothing to change\) \(iptables\)$/m);
	t.notRegex(sync.stdout, /^firewall/m);
	t.is(await firewallSnapshot(sb), before);
	t.is((await postrouting(sb))[0], '-A POSTROUTING -s 10.99.0.0/24 -j MASQUERADE');
	t.is(await sb.probe(A.name), A.ip);
});

test.serial('an admin\'s jump to our chain with conditions is never touched', async (t) => {
	const sb = sandbox();
	const theirs = ['-o', 'eg-h', '-j', 'DOCKER-EGRESS'];
	t.teardown(async () => {
		await sb.exec('iptables', ['-w', '-t', 'nat', '-D', 'POSTROUTING', ...theirs], { reject: false });
	});
	await sb.exec('iptables', ['-w', '-t', 'nat', '-I', 'POSTROUTING', '1', ...theirs]);
	// Ours deleted too, so that sync has to repair: it must add its own and keep the admin's.
	await sb.exec('iptables', ['-w', '-t', 'nat', '-D', 'POSTROUTING', '-j', 'DOCKER-EGRESS']);
	const sync = await sb.egress(['sync']);
	t.is(sync.exitCode, 0, sync.stderr);
	t.regex(sync.stdout, /repaired jump .*\(iptables: missing\)/);
	const rules = await postrouting(sb);
	t.is(rules[0], JUMP);
	t.true(rules.includes('-A POSTROUTING -o eg-h -j DOCKER-EGRESS'), rules.join('\n'));
	t.is(jumps(rules).length, 2);
	const again = await sb.egress(['sync']);
	t.regex(again.stdout, /\(nothing to change\) \(iptables\)$/m);
	t.is(await sb.probe(B.name), B.ip);
});

test.serial('a foreign rule in our chain is removed by sync, and said so', async (t) => {
	const sb = sandbox();
	await sb.exec('iptables', ['-w', '-t', 'nat', '-A', 'DOCKER-EGRESS', '-s', '10.98.0.0/24', '-j', 'SNAT', '--to-source', '192.0.2.13']);
	const sync = await sb.egress(['sync']);
	t.is(sync.exitCode, 0, sync.stderr);
	t.regex(sync.stdout, /^firewall {2}removed foreign rule from DOCKER-EGRESS \(iptables\): .*10\.98\.0\.0\/24/m);
	t.regex(sync.stdout, /sync: 0 added, 1 removed, 2 unchanged \(iptables\)$/m);
	const chain = await iptablesChain(sb);
	t.false(chain.some((line) => line.includes('10.98.0.0/24')), chain.join('\n'));
	t.is(chain.length, 2);
});

test.serial('when iptables-restore fails, create removes the new network again and the rules stay as they were', async (t) => {
	const sb = sandbox();
	const fakeBin = path.join(sb.dir, 'failing-iptables');
	mkdirSync(fakeBin, { recursive: true });
	for (const name of ['iptables-nft-restore', 'iptables-legacy-restore']) {
		writeFileSync(path.join(fakeBin, name), '#!/bin/sh\necho "iptables-restore: line 2 failed (simulated)" >&2\nexit 1\n');
		chmodSync(path.join(fakeBin, name), 0o755);
	}

	const [firewall, networks] = await Promise.all([firewallSnapshot(sb), networkNames(sb)]);
	const r = await sb.egress(['create', 'z_i_fail', '--source-ip', '192.0.2.12'], { env: { PATH: `${fakeBin}:${process.env['PATH']}` } });
	t.not(r.exitCode, 0);
	t.regex(r.stderr, /iptables-nft-restore -w (--counters )?--noflush failed: iptables-restore: line 2 failed \(simulated\)/);
	t.regex(r.stderr, /removed network z_i_fail again/);
	t.deepEqual(await networkNames(sb), networks);
	t.is(await firewallSnapshot(sb), firewall);
});

test.serial('--dry-run prints the iptables-restore input (jump included when it is missing) and changes nothing', async (t) => {
	const sb = sandbox();
	await sb.exec('iptables', ['-w', '-t', 'nat', '-D', 'POSTROUTING', '-j', 'DOCKER-EGRESS']);
	t.teardown(async () => {
		await sb.egress(['sync']);
	});
	const before = await firewallSnapshot(sb);
	const sync = await sb.egress(['sync', '--dry-run']);
	t.is(sync.exitCode, 0, sync.stderr);
	t.regex(sync.stdout, /^firewall {2}\(dry run\) repaired jump/m);
	t.regex(sync.stdout, /# iptables-nft-restore -w (--counters )?--noflush <<EOF\n\*nat\n[^]*POSTROUTING.* -j DOCKER-EGRESS\n[^]*COMMIT\nEOF/);
	t.is(await firewallSnapshot(sb), before);
});

test.serial('watch: a deleted jump is put back on top within the interval', async (t) => {
	const sb = sandbox();
	const watch = await startWatch(t, sb);
	await sb.exec('iptables', ['-w', '-t', 'nat', '-D', 'POSTROUTING', '-j', 'DOCKER-EGRESS']);
	const repaired = await watch.waitFor('firewall repaired', { backend: 'iptables' });
	t.regex(String(repaired['change']), /repaired jump to DOCKER-EGRESS at the top of nat POSTROUTING \(iptables: missing\)/);
	const rules = await postrouting(sb);
	t.is(rules[0], JUMP);
	t.is(jumps(rules).length, 1);
	t.is(await sb.probe(A.name), A.ip);
});

test.serial('watch: a MASQUERADE of our subnet inserted above the jump is overtaken within the interval, and left in place', async (t) => {
	const sb = sandbox();
	const masquerade = ['-s', A.subnet, '-j', 'MASQUERADE'];
	const watch = await startWatch(t, sb);
	t.teardown(async () => {
		await sb.exec('iptables', ['-w', '-t', 'nat', '-D', 'POSTROUTING', ...masquerade], { reject: false });
	});
	await sb.exec('iptables', ['-w', '-t', 'nat', '-I', 'POSTROUTING', '1', ...masquerade]);
	await watch.waitFor('firewall repaired', { backend: 'iptables' });
	const rules = await postrouting(sb);
	t.is(rules[0], JUMP);
	t.is(jumps(rules).length, 1, 'exactly one jump');
	t.true(rules.includes(`-A POSTROUTING -s ${A.subnet} -j MASQUERADE`), 'a rule watch did not create is left alone');
	t.is(await sb.probe(A.name), A.ip);
});

test.serial('watch: SIGKILL while iptables-restore applies a large change leaves all or nothing; the next start converges', async (t) => {
	t.timeout(600_000);
	await sigkillMidApply(t, sandbox(), 'iptables', A);
});

test.serial('one sync moves everything to nftables and removes the iptables chain and jump; one sync moves it back', async (t) => {
	const sb = sandbox();
	const toNft = await sb.egress(['sync'], { env: { DOCKER_EGRESS_FIREWALL_BACKEND: 'nftables' } });
	t.is(toNft.exitCode, 0, toNft.stderr);
	t.regex(toNft.stdout, /^firewall {2}removed the iptables backend's iptables chain and jump \(moved to nftables\)$/m);
	t.regex(toNft.stdout, /sync: 2 added, 0 removed, 0 unchanged \(nftables\)$/m);
	t.false(await iptablesChainExists(sb), 'no DOCKER-EGRESS chain left');
	t.is(jumps(await postrouting(sb)).length, 0);
	const nftRules = await egressRules(sb, 'nftables');
	t.true(ruleFor(nftRules, A.subnet, A.ip) && ruleFor(nftRules, B.subnet, B.ip), JSON.stringify(nftRules));
	t.like((await nftChain(sb))?.chain, { hook: 'postrouting', prio: 90 });
	t.is(await sb.probe(A.name), A.ip);
	t.is(await sb.probe(B.name), B.ip);

	const back = await sb.egress(['sync']);
	t.is(back.exitCode, 0, back.stderr);
	t.regex(back.stdout, /^firewall {2}removed the nftables backend's tables \(ip docker-egress; moved to iptables\)$/m);
	t.regex(back.stdout, /\(iptables\)$/m);
	t.is(await nftTableItems(sb), undefined);
	t.is((await postrouting(sb))[0], JUMP);
	await waitForRule(sb, A.subnet, A.ip);
	t.true(ruleFor(await egressRules(sb), B.subnet, B.ip));
	t.is(await sb.probe(A.name), A.ip);
	t.is(await sb.probe(B.name), B.ip);
});
