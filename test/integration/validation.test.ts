// Bad input: one clear line on stderr, a non-zero exit, and no network or rule left behind.
// And a create whose rule cannot be installed leaves nothing either.
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import anyTest from 'ava';
import { useSandbox } from '../helpers/sandbox.js';
import { egressRules, firewallBackend, firewallSnapshot, networkNames, NFT, ruleFor, subnetOf } from './firewall.js';

const { test, sandbox } = useSandbox(anyTest);

test.serial('setup: one egress network to collide with', async (t) => {
	const sb = sandbox();
	const r = await sb.egress(['create', 'z_v_ok', '--source-ip', '192.0.2.11', '--subnet', '10.90.0.0/24']);
	t.is(r.exitCode, 0, r.stderr);
});

const refused = test.macro({
	async exec(t, args: string[], message: RegExp, options: { globalArgs?: string[]; env?: Record<string, string | undefined>; stdout?: string } = {}) {
		const sb = sandbox();
		const [firewall, networks] = await Promise.all([firewallSnapshot(sb), networkNames(sb)]);
		const r = await sb.egress(args, options);
		t.not(r.exitCode, 0, r.stdout);
		t.regex(r.stderr, message);
		t.is(r.stderr.trim().split('\n').length, 1, `one line on stderr, got:\n${r.stderr}`);
		t.is(r.stdout.trim(), options.stdout ?? '');
		t.deepEqual(await networkNames(sb), networks, 'no network created or removed');
		t.is(await firewallSnapshot(sb), firewall, 'firewall unchanged');
	},
	title: (title = '') => `refused: ${title}`,
});

const create = (...extra: string[]) => ['create', 'z_v_new', ...extra];

test.serial('invalid source IP', refused, create('--source-ip', 'banana'), /--source-ip "banana": not an IP address/);
test.serial('source IP not on this host, listing the ones that are', refused, create('--source-ip', '192.0.2.50'), /192\.0\.2\.50 is not an address of this host \(its IPv4 addresses: .*192\.0\.2\.1 on eg-h, 192\.0\.2\.11 on eg-h, 192\.0\.2\.12 on eg-h, 192\.0\.2\.13 on eg-h\)\s*$/);
test.serial('loopback', refused, create('--source-ip', '127.0.0.1'), /loopback/);
test.serial('multicast', refused, create('--source-ip', '224.0.0.5'), /multicast/);
test.serial('unspecified', refused, create('--source-ip', '0.0.0.0'), /unspecified/);
test.serial('IPv6 source for an IPv4 network', refused, create('--source-ip', '2001:db8::11'), /IPv6/);
test.serial('source IP inside the subnet', refused, create('--source-ip', '192.0.2.11', '--subnet', '192.0.2.0/24'), /inside the network's own subnet/);
test.serial('malformed subnet', refused, create('--source-ip', '192.0.2.11', '--subnet', '10.0.0.0/40'), /invalid --subnet "10\.0\.0\.0\/40"/);
test.serial('too-small subnet', refused, create('--source-ip', '192.0.2.11', '--subnet', '10.91.0.0/31'), /too small/);
test.serial('subnet overlapping another Docker network', refused, create('--source-ip', '192.0.2.11', '--subnet', '10.90.0.128/25'), /overlaps 10\.90\.0\.0\/24 of Docker network z_v_ok/);
test.serial('subnet overlapping the host uplink', refused, create('--source-ip', '192.0.2.11', '--subnet', '192.0.2.128/25'), /overlaps 192\.0\.2\.0\/24.*host interface eg-h/);
test.serial('existing network name', refused, ['create', 'z_v_ok', '--source-ip', '192.0.2.12'], /network with name z_v_ok already exists/);
test.serial('bridge name over 15 bytes', refused, create('--source-ip', '192.0.2.11', '--bridge-name', 'br-much-too-long0'), /longer than 15 bytes/);
test.serial('bridge name with invalid characters', refused, create('--source-ip', '192.0.2.11', '--bridge-name', 'br 0'), /only letters, digits/);
test.serial('unreachable daemon, naming the endpoint', refused, ['sync'], /cannot reach the Docker daemon at unix:\/\/\/tmp\/egress-nowhere\.sock \(-H\)/, { globalArgs: ['-H', 'unix:///tmp/egress-nowhere.sock'] });
test.serial('remote endpoint for create', refused, create('--source-ip', '192.0.2.11'), /refusing to change firewall rules through tcp:\/\/127\.0\.0\.1:9/, { globalArgs: ['-H', 'tcp://127.0.0.1:9'] });
test.serial('remote endpoint for sync', refused, ['sync'], /refusing to change firewall rules through tcp:\/\/127\.0\.0\.1:9/, { env: { DOCKER_HOST: 'tcp://127.0.0.1:9' } });
test.serial('remote endpoint for rm', refused, ['rm', 'z_v_ok'], /refusing to change firewall rules through ssh:\/\/egress@127\.0\.0\.1/, { globalArgs: ['-H', 'ssh://egress@127.0.0.1'] });
test.serial('rm of a network that does not exist', refused, ['rm', 'z_v_nope'], /network z_v_nope not found/);
test.serial('rm of a network that is not an egress network', refused, ['rm', 'bridge'], /not an egress network/);
test.serial('inspect of a network that does not exist (prints [] like docker)', refused, ['inspect', 'z_v_nope'], /network z_v_nope not found/, { stdout: '[]' });

test.serial('a name that sorts first works, with a warning that says how to avoid the default-route problem', async (t) => {
	const sb = sandbox();
	const r = await sb.egress(['create', 'a_egress', '--source-ip', '192.0.2.12']);
	t.is(r.exitCode, 0, r.stderr);
	t.regex(r.stderr, /warning: network name a_egress sorts before bridge.*z_ prefix.*gw-priority/);
	t.is((await sb.egress(['rm', 'a_egress'])).exitCode, 0);
});

test.serial('when the rule cannot be installed, the new network is removed again', async (t) => {
	const sb = sandbox();
	const fakeBin = path.join(sb.dir, 'failing-bin');
	mkdirSync(fakeBin, { recursive: true });
	let env: Record<string, string>;
	let message: RegExp;
	if (firewallBackend() === 'iptables') {
		for (const name of ['iptables-nft-restore', 'iptables-legacy-restore']) {
			writeFileSync(path.join(fakeBin, name), '#!/bin/sh\necho "iptables-restore: line 2 failed (simulated)" >&2\nexit 1\n');
			chmodSync(path.join(fakeBin, name), 0o755);
		}

		env = { PATH: `${fakeBin}:${process.env['PATH']}` };
		message = /iptables-nft-restore -w (--counters )?--noflush failed: iptables-restore: line 2 failed \(simulated\)/;
	} else {
		// An nft that reads (and probes) as the real one, but fails every transaction (-f).
		const wrapper = path.join(fakeBin, 'nft');
		writeFileSync(wrapper, `#!/bin/sh\nfor arg; do\n\tif [ "$arg" = -f ]; then echo "Error: Could not process rule: simulated" >&2; exit 1; fi\ndone\nexec ${NFT} "$@"\n`);
		chmodSync(wrapper, 0o755);
		env = { DOCKER_EGRESS_NFT: wrapper };
		message = new RegExp(`${wrapper.replaceAll('/', '\\/')} -f - failed: Error: Could not process rule: simulated`);
	}

	const [firewall, networks] = await Promise.all([firewallSnapshot(sb), networkNames(sb)]);
	const r = await sb.egress(['create', 'z_v_fail', '--source-ip', '192.0.2.12'], { env });
	t.not(r.exitCode, 0);
	t.regex(r.stderr, message);
	t.regex(r.stderr, /removed network z_v_fail again/);
	t.deepEqual(await networkNames(sb), networks);
	t.is(await firewallSnapshot(sb), firewall);
});

test.serial('two creates at the same time both succeed, with distinct subnets and both rules', async (t) => {
	const sb = sandbox();
	const [one, two] = await Promise.all([
		sb.egress(['create', 'z_v_par1', '--source-ip', '192.0.2.12']),
		sb.egress(['create', 'z_v_par2', '--source-ip', '192.0.2.13']),
	]);
	t.is(one.exitCode, 0, one.stderr);
	t.is(two.exitCode, 0, two.stderr);
	const [subnet1, subnet2] = await Promise.all([subnetOf(sb, 'z_v_par1'), subnetOf(sb, 'z_v_par2')]);
	t.not(subnet1, subnet2);
	const rules = await egressRules(sb);
	t.true(ruleFor(rules, subnet1, '192.0.2.12'));
	t.true(ruleFor(rules, subnet2, '192.0.2.13'));
	t.is(await sb.probe('z_v_par1'), '192.0.2.12');
	t.is(await sb.probe('z_v_par2'), '192.0.2.13');
});
