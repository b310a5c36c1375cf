// `sync` makes the chain exactly what the labelled networks ask for, and --dry-run changes nothing.
import anyTest from 'ava';
import { useSandbox } from '../helpers/sandbox.js';
import { egressRules, networkNames, postrouting, saveTable } from './firewall.js';

const { test, sandbox } = useSandbox(anyTest);

test.serial('setup: two egress networks', async (t) => {
	const sb = sandbox();
	t.is((await sb.egress(['create', 'z_s1', '--source-ip', '192.0.2.11', '--subnet', '10.81.0.0/24'])).exitCode, 0);
	t.is((await sb.egress(['create', 'z_s2', '--source-ip', '192.0.2.12', '--subnet', '10.82.0.0/24'])).exitCode, 0);
	t.is(await sb.probe('z_s1'), '192.0.2.11');
});

test.serial('a flushed chain is restored, and a second sync changes nothing', async (t) => {
	const sb = sandbox();
	await sb.exec('iptables', ['-t', 'nat', '-F', 'DOCKER-EGRESS']);
	const first = await sb.egress(['sync']);
	t.is(first.exitCode, 0, first.stderr);
	t.regex(first.stdout, /sync: 2 added, 0 removed, 0 unchanged/);
	t.is(await sb.probe('z_s1'), '192.0.2.11');
	t.is(await sb.probe('z_s2'), '192.0.2.12');

	const before = await saveTable(sb);
	const second = await sb.egress(['sync']);
	t.regex(second.stdout, /sync: 0 added, 0 removed, 2 unchanged \(nothing to change\)/);
	t.is(await saveTable(sb), before);
});

test.serial('a removed jump is put back on top', async (t) => {
	const sb = sandbox();
	await sb.exec('iptables', ['-t', 'nat', '-D', 'POSTROUTING', '-j', 'DOCKER-EGRESS']);
	t.regex((await sb.egress(['ls', '--format', '{{.Status}}'])).stdout, /missing\nmissing/);
	const sync = await sb.egress(['sync']);
	t.regex(sync.stdout, /repaired\s+jump/);
	t.is((await postrouting(sb))[0], '-A POSTROUTING -j DOCKER-EGRESS');
	t.is(await sb.probe('z_s2'), '192.0.2.12');
});

test.serial('a jump moved below a MASQUERADE is moved back on top (egress was wrong meanwhile)', async (t) => {
	const sb = sandbox();
	await sb.exec('iptables', ['-t', 'nat', '-D', 'POSTROUTING', '-j', 'DOCKER-EGRESS']);
	await sb.exec('iptables', ['-t', 'nat', '-I', 'POSTROUTING', '1', '-s', '10.81.0.0/24', '-j', 'MASQUERADE']);
	await sb.exec('iptables', ['-t', 'nat', '-A', 'POSTROUTING', '-j', 'DOCKER-EGRESS']);
	t.is(await sb.probe('z_s1'), '192.0.2.1', 'the MASQUERADE above our jump wins');
	const sync = await sb.egress(['sync']);
	t.is(sync.exitCode, 0, sync.stderr);
	const rules = await postrouting(sb);
	t.is(rules[0], '-A POSTROUTING -j DOCKER-EGRESS');
	t.is(rules.filter((line) => line.includes('DOCKER-EGRESS')).length, 1);
	t.true(rules.includes('-A POSTROUTING -s 10.81.0.0/24 -j MASQUERADE'), 'a rule we did not create is left alone');
	t.is(await sb.probe('z_s1'), '192.0.2.11');
	await sb.exec('iptables', ['-t', 'nat', '-D', 'POSTROUTING', '-s', '10.81.0.0/24', '-j', 'MASQUERADE']);
});

test.serial('a rule whose network is gone is removed', async (t) => {
	const sb = sandbox();
	await sb.docker(['network', 'rm', 'z_s2']);
	t.true((await egressRules(sb)).some((line) => line.includes('10.82.0.0/24')));
	const sync = await sb.egress(['sync']);
	t.regex(sync.stdout, /removed\s+z_s2\s+10\.82\.0\.0\/24/);
	t.false((await egressRules(sb)).some((line) => line.includes('10.82.0.0/24')));
});

test.serial('a bad label is skipped with one message naming the network; sync exits non-zero; others keep their rule', async (t) => {
	const sb = sandbox();
	const bad = [
		['z_bad_banana', 'banana', '10.83.0.0/24'],
		['z_bad_absent', '192.0.2.99', '10.84.0.0/24'],
		['z_bad_family', '2001:db8::99', '10.85.0.0/24'],
	] as const;
	for (const [name, ip, subnet] of bad) {
		await sb.docker(['network', 'create', '--label', `docker-egress.source-ip=${ip}`, '--opt', 'com.docker.network.bridge.enable_ip_masquerade=false', '--subnet', subnet, name]);
	}

	await sb.exec('iptables', ['-t', 'nat', '-F', 'DOCKER-EGRESS']);
	const sync = await sb.egress(['sync']);
	t.not(sync.exitCode, 0);
	t.regex(sync.stderr, /network z_bad_banana skipped: .*"banana": not an IP address/);
	t.regex(sync.stderr, /network z_bad_absent skipped: .*192\.0\.2\.99 is not an address of this host/);
	t.regex(sync.stderr, /network z_bad_family skipped: .*IPv6/);
	t.regex(sync.stdout, /added\s+z_s1/);
	t.is(await sb.probe('z_s1'), '192.0.2.11');
	t.deepEqual((await egressRules(sb)).length, 1);

	const ls = await sb.egress(['ls', '--format', '{{.Name}} {{.Status}}']);
	t.is(ls.exitCode, 0);
	t.is(ls.stdout.trim(), 'z_bad_absent invalid\nz_bad_banana invalid\nz_bad_family invalid\nz_s1 active');
	for (const [name] of bad) {
		await sb.docker(['network', 'rm', name]);
	}
});

test.serial('--dry-run prints the exact calls and the iptables-restore input, and changes nothing', async (t) => {
	const sb = sandbox();
	await sb.exec('iptables', ['-t', 'nat', '-F', 'DOCKER-EGRESS']);
	const nat = await saveTable(sb);
	const networks = await networkNames(sb);

	const sync = await sb.egress(['sync', '--dry-run']);
	t.is(sync.exitCode, 0, sync.stderr);
	t.regex(sync.stdout, /add\s+z_s1/);
	t.regex(sync.stdout, /# iptables-nft-restore -w --noflush <<EOF\n\*nat\n:DOCKER-EGRESS - \[0:0\]\n-A DOCKER-EGRESS -s 10\.81\.0\.0\/24 ! -o z_s1 .*--to-source 192\.0\.2\.11\nCOMMIT\nEOF/);

	const create = await sb.egress(['create', 'z_s3', '--source-ip', '192.0.2.13', '--subnet', '10.86.0.0/24', '--dry-run']);
	t.is(create.exitCode, 0, create.stderr);
	t.regex(create.stdout, /POST \/networks\/create\n\{\n {2}"Name": "z_s3"/);
	t.regex(create.stdout, /"com\.docker\.network\.bridge\.enable_ip_masquerade": "false"/);
	t.regex(create.stdout, /-A DOCKER-EGRESS -s 10\.86\.0\.0\/24 ! -o z_s3 .*--to-source 192\.0\.2\.13/);

	const rm = await sb.egress(['rm', 'z_s1', '--dry-run']);
	t.is(rm.exitCode, 0, rm.stderr);
	t.regex(rm.stdout, /DELETE \/networks\/[0-9a-f]{64}/);

	t.is(await saveTable(sb), nat);
	t.deepEqual(await networkNames(sb), networks);
});
