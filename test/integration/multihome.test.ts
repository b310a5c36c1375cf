// A host with two providers, each dropping sources it does not own (BCP 38), and IPv6: the source
// IP decides the uplink (policy routing), dual-stack networks egress from their IPv6 source too,
// and `verify` tells what really happens.
import anyTest from 'ava';
import { useSandbox, type Sandbox } from '../helpers/sandbox.js';
import { egressRules, firewallBackend, firewallSnapshot, flushEgressRules, networkNames, nftChain, postrouting, ruleFor, saveAll } from './firewall.js';

const { test, sandbox } = useSandbox(anyTest, { topology: 'multihome' });

async function ourRouting(sb: Sandbox): Promise<string> {
	const [rules, routes] = await Promise.all([sb.exec('ip', ['-4', 'rule', 'show']), sb.exec('ip', ['-4', 'route', 'show', 'table', 'all', 'proto', '211'])]);
	return [...rules.stdout.split('\n').filter((line) => line.includes('proto 211')), ...routes.stdout.split('\n').filter(Boolean)].join('\n');
}

const refused = test.macro(async (t, args: string[], message: RegExp) => {
	const sb = sandbox();
	const [firewall, networks, routing] = await Promise.all([firewallSnapshot(sb), networkNames(sb), ourRouting(sb)]);
	const r = await sb.egress(args);
	t.not(r.exitCode, 0);
	t.regex(r.stderr, message);
	t.is(r.stderr.trim().split('\n').length, 1, r.stderr);
	t.deepEqual(await networkNames(sb), networks);
	t.is(await firewallSnapshot(sb), firewall);
	t.is(await ourRouting(sb), routing);
});

test.serial('refused: a source IP on uplink B with no gateway anywhere', refused, ['create', 'z_m_x', '--source-ip', '198.51.100.11'], /198\.51\.100\.11 is on eg-h2, which the default route does not use, and no gateway on eg-h2 is in the main table; give it with --via GATEWAY/);
test.serial('refused: a --via gateway not on the uplink\'s subnet', refused, ['create', 'z_m_x', '--source-ip', '198.51.100.11', '--via', '203.0.113.1'], /gateway 203\.0\.113\.1 is not on 198\.51\.100\.0\/24/);
test.serial('refused: an IPv6 source not on this host', refused, ['create', 'z_m_x', '--source-ip', '192.0.2.11', '--source-ipv6', '2001:db8:a::99', '--subnet6', '2001:db8:1::/64'], /2001:db8:a::99 is not an address of this host \(its IPv6 addresses: .*2001:db8:a::11 on eg-h/);
test.serial('refused: a link-local IPv6 source', refused, ['create', 'z_m_x', '--source-ip', '192.0.2.11', '--source-ipv6', 'fe80::1', '--subnet6', '2001:db8:1::/64'], /link-local/);

test.serial('a source IP on uplink B leaves through uplink B (policy routing), and only then', async (t) => {
	const sb = sandbox();
	const r = await sb.egress(['create', 'z_m_b', '--source-ip', '198.51.100.11', '--via', '198.51.100.254', '--subnet', '10.150.0.0/24'], { viaCli: true });
	t.is(r.exitCode, 0, r.stderr);
	t.is(await sb.probe('z_m_b'), '198.51.100.11');
	t.is(await sb.probe('bridge'), '192.0.2.1');

	const routing = await ourRouting(sb);
	t.regex(routing, /10000:\s+from 10\.150\.0\.0\/24 lookup main suppress_prefixlength 0 proto 211/);
	t.regex(routing, /10001:\s+from 10\.150\.0\.0\/24 lookup 2\d{4} proto 211/);
	t.regex(routing, /default via 198\.51\.100\.254 dev eg-h2 table 2\d{4}/);

	const ls = await sb.egress(['ls', '--format', '{{.Name}} {{.Route}} {{.Status}}']);
	t.is(ls.stdout.trim(), 'z_m_b eg-h2 via 198.51.100.254 active');
	const [view] = JSON.parse((await sb.egress(['inspect', 'z_m_b'])).stdout) as Array<Record<string, any>>;
	t.like(view!['Uplink'], { Interface: 'eg-h2', Gateway: '198.51.100.254', RpFilter: 2 });

	// Someone flushes our policy rule: the packets go out of uplink A and router A drops them.
	await sb.exec('ip', ['rule', 'del', 'priority', '10001']);
	t.is(await sb.tryProbe('z_m_b', { timeoutSeconds: 3 }), undefined);
	t.regex((await sb.egress(['ls', '--format', '{{.Status}}'])).stdout, /missing/);
	const sync = await sb.egress(['sync']);
	t.is(sync.exitCode, 0, sync.stderr);
	t.regex(sync.stdout, /routing\s+ip rule add from 10\.150\.0\.0\/24 lookup 2\d{4} priority 10001 protocol 211/);
	t.is(await sb.probe('z_m_b'), '198.51.100.11');
});

test.serial('watch restores a flushed policy rule', async (t) => {
	const sb = sandbox();
	const watch = sb.egress(['watch', '--interval', '0.5']);
	let log = '';
	watch.stderr!.on('data', (chunk: Buffer) => {
		log += chunk.toString();
	});
	try {
		await until(() => log.includes('watch started'));
		await sb.exec('ip', ['rule', 'del', 'priority', '10001']);
		await until(async () => (await ourRouting(sb)).includes('10001:'));
		t.regex(log, /routing changed command="ip rule add from 10\.150\.0\.0\/24/);
		t.is(await sb.probe('z_m_b'), '198.51.100.11');
	} finally {
		watch.kill('SIGTERM');
		await watch;
	}
});

test.serial('verify: match through uplink B; mismatch once the rules are gone and masquerade is on', async (t) => {
	const sb = sandbox();
	const good = await sb.egress(['verify', 'z_m_b', '--url', sb.echoUrl(4), '--image', 'egress-probe:latest', '--format', 'json']);
	t.is(good.exitCode, 0, good.stderr);
	t.like(JSON.parse(good.stdout), { Observed: '198.51.100.11', Match: true });

	await sb.docker(['network', 'create', '--label', 'docker-egress.source-ip=192.0.2.13', '--subnet', '10.151.0.0/24', 'z_m_masq']);
	t.is((await sb.egress(['sync'])).exitCode, 0);
	t.like(JSON.parse((await sb.egress(['verify', 'z_m_masq', '--url', sb.echoUrl(4), '--image', 'egress-probe:latest', '--format', 'json'])).stdout), { Observed: '192.0.2.13', Match: true });
	await flushEgressRules(sb);
	const bad = await sb.egress(['verify', 'z_m_masq', '--url', sb.echoUrl(4), '--image', 'egress-probe:latest', '--format', 'json']);
	t.not(bad.exitCode, 0);
	t.like(JSON.parse(bad.stdout), { Observed: '192.0.2.1', Match: false });
	t.is((await sb.docker(['ps', '-aq', '--filter', 'label=docker-egress.verify'])).stdout.trim(), '');
	await sb.docker(['network', 'rm', 'z_m_masq']);
	t.is((await sb.egress(['sync'])).exitCode, 0);
});

test.serial('rm takes the policy rules and the table with the network', async (t) => {
	const sb = sandbox();
	t.is((await sb.egress(['rm', 'z_m_b'])).exitCode, 0);
	t.is(await ourRouting(sb), '');
});

test.serial('a dual-stack network egresses from its IPv4 and its IPv6 source', async (t) => {
	const sb = sandbox();
	const r = await sb.egress(['create', 'z_m_dual', '--source-ip', '192.0.2.12', '--source-ipv6', '2001:db8:a::11', '--subnet', '10.152.0.0/24', '--subnet6', '2001:db8:1::/64'], { viaCli: true });
	t.is(r.exitCode, 0, r.stderr);
	t.is(await sb.probe('z_m_dual'), '192.0.2.12');
	t.is(await sb.probe('z_m_dual', { family: 6 }), '2001:db8:a::11');
	const ls = await sb.egress(['ls', '--format', '{{.Name}} {{.Subnet}} {{.SourceIP}} {{.Status}}']);
	t.is(ls.stdout.trim(), 'z_m_dual 10.152.0.0/24,2001:db8:1::/64 192.0.2.12,2001:db8:a::11 active');
	const rules = await egressRules(sb);
	t.true(ruleFor(rules, '10.152.0.0/24', '192.0.2.12'));
	t.true(ruleFor(rules, '2001:db8:1::/64', '2001:db8:a::11'), JSON.stringify(rules));
	t.is(rules.find((rule) => rule.subnet === '2001:db8:1::/64')?.bridge, 'z_m_dual');
	if (firewallBackend() === 'iptables') {
		t.is((await postrouting(sb, 6))[0], '-A POSTROUTING -j DOCKER-EGRESS');
	} else {
		t.like((await nftChain(sb, 6))?.chain, { family: 'ip6', type: 'nat', hook: 'postrouting', prio: 90 });
	}
	const verify6 = await sb.egress(['verify', 'z_m_dual', '--url', sb.echoUrl(6), '--image', 'egress-probe:latest']);
	t.is(verify6.exitCode, 0, verify6.stdout + verify6.stderr);
	t.regex(verify6.stdout, /observed {2}2001:db8:a::11/);

	t.is((await sb.egress(['rm', 'z_m_dual'])).exitCode, 0);
	t.notRegex(await saveAll(sb), /2001:db8:1::/);
});

test.serial('refused: an IPv6 source on uplink B without --via6', refused, ['create', 'z_m_x', '--source-ip', '192.0.2.11', '--source-ipv6', '2001:db8:b::11', '--subnet6', '2001:db8:3::/64'], /2001:db8:b::11 is on eg-h2, which the default route does not use.*--via6 GATEWAY/);

test.serial('dual stack through uplink B: policy routing for both families', async (t) => {
	const sb = sandbox();
	const r = await sb.egress([
		'create',
		'z_m_b6',
		'--source-ip',
		'198.51.100.12',
		'--via',
		'198.51.100.254',
		'--source-ipv6',
		'2001:db8:b::11',
		'--via6',
		'2001:db8:b::254',
		'--subnet',
		'10.153.0.0/24',
		'--subnet6',
		'2001:db8:2::/64',
	]);
	t.is(r.exitCode, 0, r.stderr);
	t.is(await sb.probe('z_m_b6'), '198.51.100.12');
	t.is(await sb.probe('z_m_b6', { family: 6 }), '2001:db8:b::11');
	const rules6 = (await sb.exec('ip', ['-6', 'rule', 'show'])).stdout;
	t.regex(rules6, /10001:\s+from 2001:db8:2::\/64 lookup 2\d{4} proto 211/);
	t.is((await sb.egress(['ls', '--format', '{{.Route}} {{.Status}}'])).stdout.trim(), 'eg-h2 via 198.51.100.254,eg-h2 via 2001:db8:b::254 active');
	t.is((await sb.egress(['rm', 'z_m_b6'])).exitCode, 0);
	t.notRegex((await sb.exec('ip', ['-6', 'rule', 'show'])).stdout, /proto 211/);
});

async function until(condition: () => boolean | Promise<boolean>, timeoutMs = 15_000): Promise<void> {
	const deadline = Date.now() + timeoutMs;
	while (!(await condition())) {
		if (Date.now() > deadline) {
			throw new Error('timed out waiting');
		}

		await new Promise((resolve) => setTimeout(resolve, 100));
	}
}
