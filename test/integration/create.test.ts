// The core promise, end to end through the real Docker CLI and the real binary: containers on an
// egress network reach the outside world from its source IP, as the upstream echo server sees it.
import anyTest from 'ava';
import { useSandbox } from '../helpers/sandbox.js';
import { deleteEgressRule, egressRules, firewallBackend, iptablesChainExists, networkNames, nftChain, postrouting, saveAll, subnetOf } from './firewall.js';

const { test, sandbox } = useSandbox(anyTest);

test.serial('two egress networks leave from their own IPs; the default bridge from the primary', async (t) => {
	const sb = sandbox();
	const a = await sb.egress(['create', 'z_custom_a', '--source-ip', '192.0.2.11'], { viaCli: true });
	t.is(a.exitCode, 0, a.stderr);
	t.regex(a.stdout.trim(), /^[0-9a-f]{64}$/);
	const b = await sb.egress(['create', 'z_custom_b', '--source-ip', '192.0.2.12', '--subnet', '10.77.0.0/24', '--label', 'team=web'], { viaCli: true });
	t.is(b.exitCode, 0, b.stderr);

	t.is(await sb.probe('z_custom_a'), '192.0.2.11');
	t.is(await sb.probe('z_custom_b'), '192.0.2.12');
	t.is(await sb.probe('bridge'), '192.0.2.1');

	// The network is what the recipe makes by hand: attachable, masquerade off, labelled, bridge named.
	const inspect = JSON.parse((await sb.docker(['network', 'inspect', 'z_custom_b'])).stdout) as Array<Record<string, any>>;
	t.true(inspect[0]!['Attachable']);
	t.is(inspect[0]!['Options']['com.docker.network.bridge.enable_ip_masquerade'], 'false');
	t.is(inspect[0]!['Options']['com.docker.network.bridge.name'], 'z_custom_b');
	t.is(inspect[0]!['Labels']['docker-egress.source-ip'], '192.0.2.12');
	t.is(inspect[0]!['Labels']['team'], 'web');

	if (firewallBackend() === 'iptables') {
		// Our chain is jumped to first, ahead of Docker's MASQUERADE.
		t.is((await postrouting(sb))[0], '-A POSTROUTING -j DOCKER-EGRESS');
	} else {
		// Our own base chain, hooked before every NAT chain at srcnat (100); no iptables chain beside it.
		const own = await nftChain(sb);
		t.like(own?.chain, { type: 'nat', hook: 'postrouting', prio: 90, policy: 'accept' });
		t.is(own?.rules.length, 2);
		t.false(await iptablesChainExists(sb), 'the iptables backend is not used as well');
	}

	const subnetA = await subnetOf(sb, 'z_custom_a');
	t.deepEqual(
		(await egressRules(sb)).map(({ subnet, bridge, sourceIp }) => ({ subnet, bridge, sourceIp })).sort((x, y) => x.sourceIp.localeCompare(y.sourceIp)),
		[
			{ subnet: subnetA, bridge: 'z_custom_a', sourceIp: '192.0.2.11' },
			{ subnet: '10.77.0.0/24', bridge: 'z_custom_b', sourceIp: '192.0.2.12' },
		],
	);
});

test.serial('ls shows every egress network with a live rule, in every format', async (t) => {
	const sb = sandbox();
	const table = await sb.egress(['ls'], { viaCli: true });
	t.is(table.exitCode, 0, table.stderr);
	const lines = table.stdout.trim().split('\n');
	t.regex(lines[0]!, /^ID\s+NAME\s+SUBNET\s+SOURCE IP\s+BRIDGE\s+VIA\s+ROUTE\s+STATUS\s+CONTAINERS$/);
	t.regex(table.stdout, /z_custom_a\s+\S+\s+192\.0\.2\.11\s+z_custom_a\s+label\s+main\s+active\s+0/);
	t.regex(table.stdout, /z_custom_b\s+10\.77\.0\.0\/24\s+192\.0\.2\.12\s+z_custom_b\s+label\s+main\s+active\s+0/);

	const json = await sb.egress(['ls', '--format', 'json']);
	const rows = json.stdout.trim().split('\n').map((line) => JSON.parse(line) as Record<string, unknown>);
	t.deepEqual(
		rows.map((row) => [row['Name'], row['SourceIP'], row['Status']]),
		[
			['z_custom_a', '192.0.2.11', 'active'],
			['z_custom_b', '192.0.2.12', 'active'],
		],
	);

	const template = await sb.egress(['ls', '--format', '{{.Name}} {{.SourceIP}}']);
	t.is(template.stdout.trim(), 'z_custom_a 192.0.2.11\nz_custom_b 192.0.2.12');

	const quiet = await sb.egress(['ls', '-q']);
	t.true(quiet.stdout.trim().split('\n').every((id) => /^[0-9a-f]{12}$/.test(id)));
	const full = await sb.egress(['ls', '-q', '--no-trunc']);
	t.true(full.stdout.trim().split('\n').every((id) => /^[0-9a-f]{64}$/.test(id)));
});

test.serial('a rule deleted by hand shows as missing; inspect shows the exact rule and the containers', async (t) => {
	const sb = sandbox();
	await deleteEgressRule(sb, '10.77.0.0/24');
	// Masquerade is off: without its rule the network's traffic leaves untranslated (no answer).
	t.not(await sb.tryProbe('z_custom_b', { timeoutSeconds: 3 }), '192.0.2.12', 'the deleted rule no longer applies');
	const ls = await sb.egress(['ls', '--format', '{{.Name}} {{.Status}}']);
	t.is(ls.stdout.trim(), 'z_custom_a active\nz_custom_b missing');
	t.is((await sb.egress(['sync'])).exitCode, 0);
	t.is(await sb.probe('z_custom_b'), '192.0.2.12');

	await sb.docker(['run', '-d', '--name', 'holder', '--network', 'z_custom_a', 'egress-probe:latest', 'sleep', '300']);
	const inspect = await sb.egress(['inspect', 'z_custom_a'], { viaCli: true });
	t.is(inspect.exitCode, 0, inspect.stderr);
	const [view] = JSON.parse(inspect.stdout) as Array<Record<string, any>>;
	const subnet = await subnetOf(sb, 'z_custom_a');
	t.is(view!['Status'], 'active');
	t.deepEqual(
		view!['Rules'],
		firewallBackend() === 'iptables'
			? [`-A DOCKER-EGRESS -s ${subnet} ! -o z_custom_a -m comment --comment "docker-egress:${String(view!['ID']).slice(0, 12)} z_custom_a" -j SNAT --to-source 192.0.2.11`]
			: [`element ip docker-egress network_source { ${subnet} : 192.0.2.11 }`, `element ip docker-egress network_bridge { ${subnet} . "z_custom_a" }`],
	);
	t.is(view!['FirewallBackend'], firewallBackend());
	t.deepEqual(
		view!['Containers'].map((c: Record<string, string>) => c['Name']),
		['holder'],
	);
	t.regex((await sb.egress(['ls'])).stdout, /z_custom_a\s+.*active\s+1/);
});

test.serial('rm refuses a network in use and keeps its rule; then removes network and rule', async (t) => {
	const sb = sandbox();
	const subnet = await subnetOf(sb, 'z_custom_a');
	const refused = await sb.egress(['rm', 'z_custom_a'], { viaCli: true });
	t.not(refused.exitCode, 0);
	t.regex(refused.stderr, /active endpoints/);
	t.is(refused.stderr.trim().split('\n').length, 1, refused.stderr);
	t.true((await networkNames(sb)).includes('z_custom_a'));
	t.true((await egressRules(sb)).some((rule) => rule.subnet === subnet));
	t.is(await sb.probe('z_custom_a'), '192.0.2.11');

	await sb.docker(['rm', '-f', 'holder']);
	const removed = await sb.egress(['rm', 'z_custom_a'], { viaCli: true });
	t.is(removed.exitCode, 0, removed.stderr);
	t.false((await networkNames(sb)).includes('z_custom_a'));
	t.false((await saveAll(sb)).includes(subnet), 'no rule in any table mentions the removed subnet');
	t.true((await egressRules(sb)).some((rule) => rule.bridge === 'z_custom_b'), 'the other network keeps its rule');
});

test.serial('a network labelled by plain docker network create is an egress network too', async (t) => {
	const sb = sandbox();
	await sb.docker([
		'network',
		'create',
		'--label',
		'docker-egress.source-ip=192.0.2.13',
		'--opt',
		'com.docker.network.bridge.enable_ip_masquerade=false',
		'--subnet',
		'10.78.0.0/24',
		'z_plain',
	]);
	t.regex((await sb.egress(['ls'])).stdout, /z_plain\s+10\.78\.0\.0\/24\s+192\.0\.2\.13\s+br-[0-9a-f]{12}\s+label\s+main\s+missing/);
	const sync = await sb.egress(['sync']);
	t.is(sync.exitCode, 0, sync.stderr);
	t.regex(sync.stdout, /added\s+z_plain\s+10\.78\.0\.0\/24 -> 192\.0\.2\.13/);
	t.is(await sb.probe('z_plain'), '192.0.2.13');
	const rm = await sb.egress(['rm', 'z_plain', 'z_custom_b']);
	t.is(rm.exitCode, 0, rm.stderr);
	t.deepEqual(await egressRules(sb), []);
});
