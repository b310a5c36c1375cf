// Labels made by someone else, as a hostile or careless user would write them: text that would
// colour or forge rows of a listing, a 5,000-character value, and a subnet that overlaps the
// host's own uplink. Each costs only its own network, and reaches the terminal escaped.
import { existsSync, mkdtempSync, readdirSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import anyTest from 'ava';
import { useSandbox } from '../helpers/sandbox.js';

const { test, sandbox } = useSandbox(anyTest);

const EVIL = '\u001b[31mRED\u001b[0m\nFAKE-LINE';
const LONG = 'x'.repeat(5000);
const RAW_CONTROL = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f]/;

test.serial('setup: networks labelled with control characters and with a 5,000-character value', async (t) => {
	const sb = sandbox();
	await sb.docker(['network', 'create', '--subnet', '10.93.1.0/24', '--label', `docker-egress.source-ip=${EVIL}`, 'z_h_evil']);
	await sb.docker(['network', 'create', '--subnet', '10.93.2.0/24', '--label', `docker-egress.source-ip=${LONG}`, 'z_h_long']);
	t.pass();
});

test.serial('ls prints one row each, no raw escape or newline, width bounded', async (t) => {
	const sb = sandbox();
	const r = await sb.egress(['ls']);
	t.is(r.exitCode, 0, r.stderr);
	const lines = r.stdout.trimEnd().split('\n');
	t.is(lines.length, 3, r.stdout);
	t.notRegex(r.stdout, RAW_CONTROL);
	t.notRegex(r.stderr, RAW_CONTROL);
	t.true(lines.every((line) => line.length < 250), `widths: ${lines.map((line) => line.length).join(', ')}`);
	t.regex(lines.find((line) => line.includes('z_h_evil')) ?? '', /\\x1b\[31mRED\\x1b\[0m\\nFAKE-LINE/);
	t.regex(lines.find((line) => line.includes('z_h_long')) ?? '', /x{39}…/);
	t.regex(r.stderr, /network z_h_evil is invalid: label docker-egress\.source-ip="\\u001b\[31mRED.*not an IP address/);
});

test.serial('--no-trunc shows the whole value, escaped', async (t) => {
	const sb = sandbox();
	const r = await sb.egress(['ls', '--no-trunc', '--format', '{{.Name}} {{.SourceIP}}']);
	t.is(r.exitCode, 0, r.stderr);
	t.deepEqual(r.stdout.trimEnd().split('\n'), ['z_h_evil \\x1b[31mRED\\x1b[0m\\nFAKE-LINE', `z_h_long ${LONG}`]);
});

test.serial('--format json round-trips the exact labels', async (t) => {
	const sb = sandbox();
	const r = await sb.egress(['ls', '--format', 'json']);
	t.is(r.exitCode, 0, r.stderr);
	t.notRegex(r.stdout, RAW_CONTROL);
	const rows = r.stdout.trimEnd().split('\n').map((line) => JSON.parse(line) as { Name: string; SourceIP: string; Status: string });
	t.deepEqual(
		rows.map(({ Name, SourceIP, Status }) => ({ Name, SourceIP, Status })),
		[
			{ Name: 'z_h_evil', SourceIP: EVIL, Status: 'invalid' },
			{ Name: 'z_h_long', SourceIP: LONG, Status: 'invalid' },
		],
	);
	await sb.docker(['network', 'rm', 'z_h_evil', 'z_h_long']);
});

test.serial('a labelled network overlapping the host uplink is invalid, with no rule: the host keeps its own address', async (t) => {
	const sb = sandbox();
	await sb.docker(['network', 'create', '--subnet', '192.0.2.0/29', '--gateway', '192.0.2.6', '-o', 'com.docker.network.bridge.enable_ip_masquerade=false', '--label', 'docker-egress.source-ip=192.0.2.13', 'z_ovl']);
	const sync = await sb.egress(['sync']);
	t.not(sync.exitCode, 0, sync.stdout);
	t.regex(sync.stderr, /network z_ovl skipped: subnet 192\.0\.2\.0\/29 overlaps 192\.0\.2\.0\/24, the subnet of 192\.0\.2\.1 on host interface eg-h/);
	t.notRegex(sync.stdout, /z_ovl/);
	const ls = await sb.egress(['ls', '--no-trunc', '--format', '{{.Name}} {{.Status}} {{.Problem}}']);
	t.regex(ls.stdout, /^z_ovl invalid subnet 192\.0\.2\.0\/29 overlaps 192\.0\.2\.0\/24, the subnet of 192\.0\.2\.1 on host interface eg-h: its rule would rewrite the host's own traffic there$/m);
	const seen = await sb.exec('busybox', ['wget', '-q', '-O', '-', sb.echoUrl()]);
	t.is(seen.stdout.trim(), '192.0.2.1');
	await sb.docker(['network', 'rm', 'z_ovl']);
});

/** A PATH directory with every system tool but the firewall ones (iptables*, ip6tables*, nft, xtables*). */
function pathWithoutFirewallTools(): string {
	const dir = mkdtempSync(path.join(tmpdir(), 'egress-path-'));
	for (const bin of ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin']) {
		for (const name of existsSync(bin) ? readdirSync(bin) : []) {
			if (!/^(ip6?tables|nft$|xtables|ebtables|arptables)/.test(name) && !existsSync(path.join(dir, name))) {
				symlinkSync(path.join(bin, name), path.join(dir, name));
			}
		}
	}

	return dir;
}

test.serial('no iptables or nft on PATH: ls lists the networks as unknown, says why in one line, and exits non-zero', async (t) => {
	const sb = sandbox();
	t.is((await sb.egress(['create', 'z_h_ok', '--source-ip', '192.0.2.12', '--subnet', '10.93.3.0/24'])).exitCode, 0);
	const dir = pathWithoutFirewallTools();
	t.teardown(async () => {
		rmSync(dir, { recursive: true, force: true });
		await sb.egress(['rm', 'z_h_ok']);
	});
	for (const backend of ['auto', 'nftables', 'iptables']) {
		const r = await sb.egress(['ls', '--format', '{{.Name}} {{.Status}}'], { env: { PATH: dir, DOCKER_EGRESS_NFT: '/nonexistent', DOCKER_EGRESS_FIREWALL_BACKEND: backend } });
		t.not(r.exitCode, 0, `${backend}: exit status`);
		t.is(r.stdout.trim(), 'z_h_ok unknown', backend);
		t.is(r.stderr.trim().split('\n').length, 1, `${backend}: one line, got:\n${r.stderr}`);
		t.regex(r.stderr, /cannot read the firewall, so rule states are unknown: .* is not installed/, backend);
		t.log(`${backend}: ${r.stderr.trim()}`);
	}
});
