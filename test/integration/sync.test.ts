// `sync` makes the firewall exactly what the labelled networks ask for, on whichever backend is in
// use, and --dry-run changes nothing. The iptables layout itself (the jump) is iptables.test.ts's.
import anyTest from 'ava';
import { useSandbox } from '../helpers/sandbox.js';
import { deleteEgressRule, deleteEgressTable, egressRules, firewallBackend, firewallSnapshot, flushEgressRules, networkNames, NFT } from './firewall.js';

const { test, sandbox } = useSandbox(anyTest);

test.serial('setup: two egress networks', async (t) => {
	const sb = sandbox();
	t.is((await sb.egress(['create', 'z_s1', '--source-ip', '192.0.2.11', '--subnet', '10.81.0.0/24'])).exitCode, 0);
	t.is((await sb.egress(['create', 'z_s2', '--source-ip', '192.0.2.12', '--subnet', '10.82.0.0/24'])).exitCode, 0);
	t.is(await sb.probe('z_s1'), '192.0.2.11');
});

test.serial('a flushed rule set shows missing, is restored by sync, and a second sync changes nothing', async (t) => {
	const sb = sandbox();
	await flushEgressRules(sb);
	t.deepEqual(await egressRules(sb), []);
	t.is((await sb.egress(['ls', '--format', '{{.Name}} {{.Status}}'])).stdout.trim(), 'z_s1 missing\nz_s2 missing');
	t.not(await sb.tryProbe('z_s1', { timeoutSeconds: 3 }), '192.0.2.11', 'the flush took the rule away');
	const first = await sb.egress(['sync']);
	t.is(first.exitCode, 0, first.stderr);
	if (firewallBackend() === 'iptables') {
		t.regex(first.stdout, /sync: 2 added, 0 removed, 0 unchanged \(iptables\)$/m);
	} else {
		// The map still held both elements: the table is rebuilt, and the report says why.
		t.regex(first.stdout, /^firewall {2}rebuilt table ip docker-egress \(chain postrouting does not hold exactly our two rules/m);
		t.regex(first.stdout, /sync: \d added, 0 removed, \d unchanged \(nftables\)$/m);
	}
	t.is(await sb.probe('z_s1'), '192.0.2.11');
	t.is(await sb.probe('z_s2'), '192.0.2.12');

	const before = await firewallSnapshot(sb);
	const second = await sb.egress(['sync']);
	t.regex(second.stdout, new RegExp(`sync: 0 added, 0 removed, 2 unchanged \\(nothing to change\\) \\(${firewallBackend()}\\)`));
	t.is(await firewallSnapshot(sb), before);
});

test.serial('rules deleted with their container (the nft table, or the chain\'s rules) are added back', async (t) => {
	const sb = sandbox();
	await deleteEgressTable(sb);
	t.deepEqual(await egressRules(sb), []);
	const sync = await sb.egress(['sync']);
	t.is(sync.exitCode, 0, sync.stderr);
	t.regex(sync.stdout, /^added\s+z_s1\s+10\.81\.0\.0\/24 -> 192\.0\.2\.11 \(bridge z_s1\)$/m);
	t.regex(sync.stdout, new RegExp(`sync: 2 added, 0 removed, 0 unchanged \\(${firewallBackend()}\\)`));
	t.is(await sb.probe('z_s2'), '192.0.2.12');
});

test.serial('one rule deleted by hand shows missing for that network only, and sync adds just that one', async (t) => {
	const sb = sandbox();
	await deleteEgressRule(sb, '10.82.0.0/24');
	t.deepEqual((await egressRules(sb)).map((rule) => rule.subnet), ['10.81.0.0/24']);
	t.is((await sb.egress(['ls', '--format', '{{.Name}} {{.Status}}'])).stdout.trim(), 'z_s1 active\nz_s2 missing');
	const sync = await sb.egress(['sync']);
	t.is(sync.exitCode, 0, sync.stderr);
	t.regex(sync.stdout, new RegExp(`sync: 1 added, 0 removed, 1 unchanged \\(${firewallBackend()}\\)`));
	t.is(await sb.probe('z_s2'), '192.0.2.12');
	t.is(await sb.probe('z_s1'), '192.0.2.11');
});

test.serial('a rule whose network is gone is removed', async (t) => {
	const sb = sandbox();
	await sb.docker(['network', 'rm', 'z_s2']);
	t.true((await egressRules(sb)).some((rule) => rule.subnet === '10.82.0.0/24'));
	const sync = await sb.egress(['sync']);
	t.regex(sync.stdout, /removed\s+z_s2\s+10\.82\.0\.0\/24/);
	t.false((await egressRules(sb)).some((rule) => rule.subnet === '10.82.0.0/24'));
});

test.serial('a bad label fails closed with one message naming the network; sync exits non-zero; others keep their rule', async (t) => {
	const sb = sandbox();
	const bad = [
		['z_bad_banana', 'banana', '10.83.0.0/24'],
		['z_bad_absent', '192.0.2.99', '10.84.0.0/24'],
		['z_bad_family', '2001:db8::99', '10.85.0.0/24'],
	] as const;
	for (const [name, ip, subnet] of bad) {
		await sb.docker(['network', 'create', '--label', `docker-egress.source-ip=${ip}`, '--opt', 'com.docker.network.bridge.enable_ip_masquerade=false', '--subnet', subnet, name]);
	}

	await flushEgressRules(sb);
	const sync = await sb.egress(['sync']);
	t.not(sync.exitCode, 0);
	t.regex(sync.stderr, /network z_bad_banana fails closed \(its outbound traffic is dropped\): .*"banana": not an IP address/);
	t.regex(sync.stderr, /network z_bad_absent fails closed \(its outbound traffic is dropped\): .*192\.0\.2\.99 is not an address of this host/);
	t.regex(sync.stderr, /network z_bad_family fails closed \(its outbound traffic is dropped\): .*IPv6/);
	t.is(await sb.probe('z_s1'), '192.0.2.11');
	t.deepEqual((await egressRules(sb)).map((rule) => rule.subnet), ['10.81.0.0/24']);

	const ls = await sb.egress(['ls', '--format', '{{.Name}} {{.Status}}']);
	t.is(ls.exitCode, 0);
	t.is(ls.stdout.trim(), 'z_bad_absent source-missing\nz_bad_banana invalid\nz_bad_family invalid\nz_s1 active');
	for (const [name] of bad) {
		await sb.docker(['network', 'rm', name]);
	}
});

test.serial('--dry-run prints the exact calls and the firewall input, and changes nothing', async (t) => {
	const sb = sandbox();
	await deleteEgressTable(sb);
	const firewall = await firewallSnapshot(sb);
	const networks = await networkNames(sb);
	const iptables = firewallBackend() === 'iptables';

	const sync = await sb.egress(['sync', '--dry-run']);
	t.is(sync.exitCode, 0, sync.stderr);
	t.regex(sync.stdout, /add\s+z_s1/);
	t.regex(sync.stdout, new RegExp(`sync --dry-run: 1 to add, 0 to remove, 0 unchanged \\(${firewallBackend()}\\)`));
	if (iptables) {
		t.regex(sync.stdout, /# iptables-nft-restore -w (--counters )?--noflush <<EOF\n\*nat\n:DOCKER-EGRESS - \[0:0\]\n(\[\d+:\d+\] )?-A DOCKER-EGRESS -s 10\.81\.0\.0\/24 ! -o z_s1 .*--to-source 192\.0\.2\.11\nCOMMIT\nEOF/);
	} else {
		const step = /# (\S+) -f - <<EOF\n([^]*?)EOF/.exec(sync.stdout);
		t.is(step?.[1], NFT, sync.stdout);
		t.regex(step?.[2] ?? '', /elements = \{ 10\.81\.0\.0\/24 (counter packets \d+ bytes \d+ )?comment "z_s1" : 192\.0\.2\.11 \}/);
		t.regex(step?.[2] ?? '', /elements = \{ 10\.81\.0\.0\/24 \. "z_s1" \}/);
		t.regex(step?.[2] ?? '', /type nat hook postrouting priority srcnat - 10; policy accept;/);
		// The printed input is what nft takes: check it (nft -c changes nothing).
		const check = await sb.exec(NFT, ['-c', '-f', '-'], { input: step?.[2] ?? '', reject: false });
		t.is(check.exitCode, 0, check.stderr);
	}

	const create = await sb.egress(['create', 'z_s3', '--source-ip', '192.0.2.13', '--subnet', '10.86.0.0/24', '--dry-run']);
	t.is(create.exitCode, 0, create.stderr);
	t.regex(create.stdout, /POST \/networks\/create\n\{\n {2}"Name": "z_s3"/);
	t.regex(create.stdout, /"com\.docker\.network\.bridge\.enable_ip_masquerade": "false"/);
	t.regex(create.stdout, iptables ? /-A DOCKER-EGRESS -s 10\.86\.0\.0\/24 ! -o z_s3 .*--to-source 192\.0\.2\.13/ : /10\.86\.0\.0\/24 comment "z_s3" : 192\.0\.2\.13/);

	const rm = await sb.egress(['rm', 'z_s1', '--dry-run']);
	t.is(rm.exitCode, 0, rm.stderr);
	t.regex(rm.stdout, /DELETE \/networks\/[0-9a-f]{64}/);

	t.is(await firewallSnapshot(sb), firewall);
	t.deepEqual(await networkNames(sb), networks);
	t.not(await sb.tryProbe('z_s1', { timeoutSeconds: 3 }), '192.0.2.11', 'the dry run installed nothing');
});
