// Proves the multihome layout of the test harness (test/helpers/sandbox.ts, {topology: 'multihome'}):
// a Docker host with two uplinks, each to its own anti-spoofing (BCP 38) router, both routers in
// front of one echo server; default route via A only. The manual recipes the plugin must automate
// (issue 4) are shown to work here by hand: SNAT to an address of uplink B alone is dropped by
// router A, SNAT plus a source policy rule reaches the echo server through router B, and IPv6 SNAT
// on a dual-stack network. Also the single topology with IPv6, and clean-up of both. Needs no
// plugin binary.
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import anyTest from 'ava';
import { execa } from 'execa';
import { realDockerTest } from '../helpers/prereqs.js';
import {
	DOCKERD_IP6TABLES,
	ECHO_ADDRESS6_MULTIHOME,
	ECHO_ADDRESS_MULTIHOME,
	PRIMARY_ADDRESS,
	PRIMARY_ADDRESS6,
	Sandbox,
	UPLINK_A,
	UPLINK_B,
	UPLINK_B_GATEWAY_ROUTES,
	useSandbox,
	type RouterCounters,
} from '../helpers/sandbox.js';

const { test, sandbox } = useSandbox(anyTest, { topology: 'multihome' });

type Route = { dst: string; gateway?: string; dev?: string };

async function routes(sb: Sandbox, family: '-4' | '-6', table = 'main'): Promise<Route[]> {
	return JSON.parse((await sb.exec('ip', ['-j', family, 'route', 'show', 'table', table])).stdout) as Route[];
}

async function globalAddresses(sb: Sandbox, family: '-4' | '-6', dev: string): Promise<string[]> {
	const out = JSON.parse((await sb.exec('ip', ['-j', family, 'addr', 'show', 'dev', dev, 'scope', 'global'])).stdout) as Array<{
		addr_info: Array<{ local?: string; prefixlen?: number }>;
	}>;
	// (iproute2 6.1 prints an empty object for each address the scope filter left out)
	return (out[0]?.addr_info ?? []).filter((a) => a.local !== undefined).map((a) => `${a.local}/${a.prefixlen}`);
}

/** How router counters moved between two readings. */
function delta(before: RouterCounters, after: RouterCounters): RouterCounters {
	return {
		ipv4: { forwarded: after.ipv4.forwarded - before.ipv4.forwarded, dropped: after.ipv4.dropped - before.ipv4.dropped },
		ipv6: { forwarded: after.ipv6.forwarded - before.ipv6.forwarded, dropped: after.ipv6.dropped - before.ipv6.dropped },
	};
}

async function counters(sb: Sandbox): Promise<{ a: RouterCounters; b: RouterCounters }> {
	const [a, b] = await Promise.all([sb.routerCounters('a'), sb.routerCounters('b')]);
	return { a, b };
}

test.serial('the multihome sandbox has the documented layout', async (t) => {
	const sb = sandbox();
	t.is(sb.topology, 'multihome');
	t.true(sb.ipv6);
	t.is(sb.echoAddress, ECHO_ADDRESS_MULTIHOME);
	t.is(sb.echoAddress6, ECHO_ADDRESS6_MULTIHOME);
	t.is(sb.echoUrl(), 'http://203.0.113.254/cgi-bin/ip');
	t.is(sb.echoUrl(6), 'http://[2001:db8:e::254]/cgi-bin/ip');
	t.deepEqual(sb.uplinks.map((u) => u.name), ['eg-h', 'eg-h2']);
	t.deepEqual(sb.hostAddresses, ['192.0.2.1', '192.0.2.11', '192.0.2.12', '192.0.2.13', '198.51.100.1', '198.51.100.11', '198.51.100.12']);
	t.deepEqual(sb.hostAddresses6, ['2001:db8:a::1', '2001:db8:a::11', '2001:db8:b::1', '2001:db8:b::11']);
	t.is(sb.routerNs('a'), `ega-${sb.id}`);
	t.is(sb.routerNs('b'), `egb-${sb.id}`);
	const netns = (await execa('ip', ['netns', 'list'])).stdout;
	for (const ns of [sb.hostNs, sb.upstreamNs, sb.routerNs('a'), sb.routerNs('b')]) t.true(netns.includes(ns), ns);

	// Addresses, primary first in both families.
	t.deepEqual(await globalAddresses(sb, '-4', 'eg-h'), ['192.0.2.1/24', '192.0.2.11/24', '192.0.2.12/24', '192.0.2.13/24']);
	t.deepEqual(await globalAddresses(sb, '-4', 'eg-h2'), ['198.51.100.1/24', '198.51.100.11/24', '198.51.100.12/24']);
	t.deepEqual(await globalAddresses(sb, '-6', 'eg-h'), ['2001:db8:a::1/64', '2001:db8:a::11/64']);
	t.deepEqual(await globalAddresses(sb, '-6', 'eg-h2'), ['2001:db8:b::1/64', '2001:db8:b::11/64']);

	// Main table: defaults via A only; B has only its connected route, no route via its router.
	const v4 = await routes(sb, '-4');
	t.deepEqual(v4.filter((r) => r.dst === 'default').map((r) => `${r.gateway} ${r.dev}`), ['192.0.2.254 eg-h']);
	t.false(v4.some((r) => r.gateway === UPLINK_B.gateway), JSON.stringify(v4));
	t.true(v4.some((r) => r.dst === '198.51.100.0/24' && r.dev === 'eg-h2' && r.gateway === undefined));
	const v6 = await routes(sb, '-6');
	t.deepEqual(v6.filter((r) => r.dst === 'default').map((r) => `${r.gateway} ${r.dev}`), ['2001:db8:a::254 eg-h']);
	t.false(v6.some((r) => r.gateway === UPLINK_B.gateway6), JSON.stringify(v6));
	t.regex((await sb.exec('ip', ['route', 'get', ECHO_ADDRESS_MULTIHOME])).stdout, /via 192\.0\.2\.254 dev eg-h src 192\.0\.2\.1 /);
	t.regex((await sb.exec('ip', ['route', 'get', ECHO_ADDRESS6_MULTIHOME])).stdout, /via 2001:db8:a::254 dev eg-h .*src 2001:db8:a::1 /);
	t.regex((await sb.exec('busybox', ['sysctl', 'net.ipv6.conf.all.forwarding', 'net.ipv4.conf.eg-h2.rp_filter'])).stdout, /forwarding = 1\n.*rp_filter = 2/);

	// Routers forward and drop foreign sources from the host side.
	for (const [r, uplink] of [['a', UPLINK_A], ['b', UPLINK_B]] as const) {
		t.regex((await sb.execRouter(r, 'busybox', ['sysctl', 'net.ipv4.ip_forward', 'net.ipv6.conf.all.forwarding'])).stdout, /= 1\n.*= 1/);
		const rules4 = (await sb.execRouter(r, 'iptables', ['-w', '-S', 'FORWARD'])).stdout;
		t.true(rules4.includes(`! -s ${uplink.subnet} -i eg-u -j DROP`), rules4);
		const rules6 = (await sb.execRouter(r, 'ip6tables', ['-w', '-S', 'FORWARD'])).stdout;
		t.true(rules6.includes(`! -s ${uplink.subnet6} -i eg-u -j DROP`), rules6);
	}
	// The echo server answers each uplink's subnet through that uplink's router.
	const echoRoutes = (await sb.execUpstream('ip', ['route'])).stdout;
	t.regex(echoRoutes, /192\.0\.2\.0\/24 via 203\.0\.113\.1 /);
	t.regex(echoRoutes, /198\.51\.100\.0\/24 via 203\.0\.113\.2 /);
});

test.serial('(1) a container on the default bridge reaches the echo server as 192.0.2.1, through router A', async (t) => {
	const sb = sandbox();
	const before = await counters(sb);
	t.is(await sb.probe('bridge'), PRIMARY_ADDRESS);
	const after = await counters(sb);
	t.true(delta(before.a, after.a).ipv4.forwarded > 0, 'router A forwarded it');
	t.is(delta(before.a, after.a).ipv4.dropped, 0);
	t.deepEqual(delta(before.b, after.b), { ipv4: { forwarded: 0, dropped: 0 }, ipv6: { forwarded: 0, dropped: 0 } });
	// The probe image's wget works against the echo URL too (for `verify`).
	const w = await sb.docker(['run', '--rm', '--network', 'bridge', 'egress-probe:latest', 'wget', '-q', '-O', '-', sb.echoUrl()]);
	t.is(w.stdout.trim(), PRIMARY_ADDRESS);
});

test.serial('(2) SNAT to an uplink-B address alone is dropped by router A; with a source policy rule it leaves through B', async (t) => {
	const sb = sandbox();
	const subnet = '10.98.0.0/24';
	const snat = ['-t', 'nat', 'POSTROUTING', '-s', subnet, '!', '-o', 'eg_mhb', '-j', 'SNAT', '--to-source', '198.51.100.11'];
	await sb.docker([
		'network', 'create', '--driver', 'bridge',
		'--opt', 'com.docker.network.bridge.name=eg_mhb',
		'--opt', 'com.docker.network.bridge.enable_ip_masquerade=false',
		'--subnet', subnet,
		'eg_mhb',
	]);
	t.teardown(async () => {
		await sb.exec('ip', ['rule', 'del', 'from', subnet, 'lookup', '100', 'pref', '1000'], { reject: false });
		await sb.exec('ip', ['route', 'flush', 'table', '100'], { reject: false });
		await sb.exec('iptables', ['-w', '-D', ...snat], { reject: false });
		await sb.docker(['network', 'rm', 'eg_mhb'], { reject: false });
	});
	const [, , chain, ...match] = snat;
	await sb.exec('iptables', ['-w', '-t', 'nat', '-I', chain!, '1', ...match]);

	// SNAT alone: the packet leaves by the default route (uplink A) with B's address; router A drops it.
	let before = await counters(sb);
	let started = Date.now();
	t.is(await sb.tryProbe('eg_mhb', { timeoutSeconds: 3 }), undefined, 'router A must drop a source from uplink B');
	t.log(`failed probe took ${Date.now() - started} ms`);
	let after = await counters(sb);
	t.true(delta(before.a, after.a).ipv4.dropped > 0, 'router A dropped it (BCP 38)');
	t.is(delta(before.a, after.a).ipv4.forwarded, 0);
	t.is(delta(before.b, after.b).ipv4.forwarded, 0, 'nothing went through router B');

	// The policy rule: that subnet's traffic uses a table whose default is router B.
	await sb.exec('ip', ['rule', 'add', 'from', subnet, 'lookup', '100', 'pref', '1000']);
	await sb.exec('ip', ['route', 'add', 'default', 'via', UPLINK_B.gateway, 'dev', UPLINK_B.name, 'table', '100']);
	before = await counters(sb);
	started = Date.now();
	t.is(await sb.probe('eg_mhb'), '198.51.100.11');
	t.log(`successful probe took ${Date.now() - started} ms`);
	after = await counters(sb);
	t.true(delta(before.b, after.b).ipv4.forwarded > 0, 'router B forwarded it');
	t.is(delta(before.b, after.b).ipv4.dropped, 0);
	t.is(delta(before.a, after.a).ipv4.forwarded + delta(before.a, after.a).ipv4.dropped, 0, 'router A saw nothing of it');

	// Other networks keep using uplink A.
	t.is(await sb.probe('bridge'), PRIMARY_ADDRESS);
});

test.serial('(3) IPv6: a dual-stack network with ip6tables SNAT reaches the echo server as 2001:db8:a::11', async (t) => {
	const sb = sandbox();
	const subnet6 = '2001:db8:1::/64';
	const snat = ['POSTROUTING', '-s', subnet6, '!', '-o', 'eg_mh6', '-j', 'SNAT', '--to-source', '2001:db8:a::11'];
	await sb.docker([
		'network', 'create', '--driver', 'bridge', '--ipv6',
		'--opt', 'com.docker.network.bridge.name=eg_mh6',
		'--opt', 'com.docker.network.bridge.enable_ip_masquerade=false',
		'--subnet', '10.97.0.0/24',
		'--subnet', subnet6,
		'eg_mh6',
	]);
	t.teardown(async () => {
		await sb.exec('ip6tables', ['-w', '-t', 'nat', '-D', ...snat], { reject: false });
		await sb.docker(['network', 'rm', 'eg_mh6'], { reject: false });
	});
	// Containers get an IPv6 address and default route from Docker without any daemon flag.
	const inside = await sb.docker(['run', '--rm', '--network', 'eg_mh6', 'egress-probe:latest', 'ip', '-6', 'route']);
	t.regex(inside.stdout, /default via 2001:db8:1::1 dev eth0/);

	// No SNAT: the container's own address is not in 2001:db8:a::/64 and router A drops it.
	let before = await counters(sb);
	t.is(await sb.tryProbe('eg_mh6', { family: 6, timeoutSeconds: 3 }), undefined);
	t.true(delta(before.a, (await counters(sb)).a).ipv6.dropped > 0, 'router A dropped the foreign IPv6 source');

	await sb.exec('ip6tables', ['-w', '-t', 'nat', '-I', 'POSTROUTING', '1', ...snat.slice(1)]);
	before = await counters(sb);
	t.is(await sb.probe('eg_mh6', { family: 6 }), '2001:db8:a::11');
	t.true(delta(before.a, (await counters(sb)).a).ipv6.forwarded > 0, 'through router A');
	const w = await sb.docker(['run', '--rm', '--network', 'eg_mh6', 'egress-probe:latest', 'wget', '-q', '-O', '-', sb.echoUrl(6)]);
	t.is(w.stdout.trim(), '2001:db8:a::11');
});

test.serial('(3b) IPv6 through uplink B: ip6tables SNAT plus a source policy rule gives 2001:db8:b::11', async (t) => {
	const sb = sandbox();
	const subnet6 = '2001:db8:3::/64';
	const snat = ['POSTROUTING', '-s', subnet6, '!', '-o', 'eg_mh6b', '-j', 'SNAT', '--to-source', '2001:db8:b::11'];
	await sb.docker([
		'network', 'create', '--driver', 'bridge', '--ipv6',
		'--opt', 'com.docker.network.bridge.name=eg_mh6b',
		'--opt', 'com.docker.network.bridge.enable_ip_masquerade=false',
		'--subnet', '10.96.0.0/24',
		'--subnet', subnet6,
		'eg_mh6b',
	]);
	t.teardown(async () => {
		await sb.exec('ip', ['-6', 'rule', 'del', 'from', subnet6, 'lookup', '101', 'pref', '1001'], { reject: false });
		await sb.exec('ip', ['-6', 'route', 'flush', 'table', '101'], { reject: false });
		await sb.exec('ip6tables', ['-w', '-t', 'nat', '-D', ...snat], { reject: false });
		await sb.docker(['network', 'rm', 'eg_mh6b'], { reject: false });
	});
	await sb.exec('ip6tables', ['-w', '-t', 'nat', '-I', 'POSTROUTING', '1', ...snat.slice(1)]);
	await sb.exec('ip', ['-6', 'rule', 'add', 'from', subnet6, 'lookup', '101', 'pref', '1001']);
	await sb.exec('ip', ['-6', 'route', 'add', 'default', 'via', UPLINK_B.gateway6, 'dev', UPLINK_B.name, 'table', '101']);
	const before = await counters(sb);
	t.is(await sb.probe('eg_mh6b', { family: 6 }), '2001:db8:b::11');
	t.true(delta(before.b, (await counters(sb)).b).ipv6.forwarded > 0, 'through router B');
});

test('options that make no sense are refused before anything is made', async (t) => {
	await t.throwsAsync(Sandbox.start({ topology: 'multihome', extraHostAddresses: ['10.1.2.3'] }), { message: /none of the multihome uplink subnets/ });
	await t.throwsAsync(Sandbox.start({ topology: 'multihome', ipv6: false }), { message: /dual-stack/ });
	await t.throwsAsync(Sandbox.start({ uplinkBGatewayRoute: true }), { message: /multihome/ });
});

// Two more sandboxes at once: multihome with the optional route via B's gateway and extra
// addresses, and the single topology with IPv6 and Docker's ip6tables. Then both are gone.
realDockerTest(anyTest)('multihome and single+IPv6 variants work and leave nothing behind', async (t) => {
	let started = Date.now();
	const [m, s] = await Promise.all([
		Sandbox.start({ topology: 'multihome', uplinkBGatewayRoute: true, extraHostAddresses: ['198.51.100.20', '2001:db8:b::20', '192.0.2.30'] }),
		Sandbox.start({ ipv6: true, dockerdArgs: DOCKERD_IP6TABLES }),
	]);
	t.log(`starting a multihome and a single+IPv6 sandbox at once took ${Date.now() - started} ms`);
	let stopped = false;
	t.teardown(async () => {
		if (!stopped) await Promise.allSettled([m.stop(), s.stop()]);
	});

	// multihome: B's gateway is in the main table, yet the echo server is still reached through A.
	const v4 = await routes(m, '-4');
	t.true(v4.some((r) => r.dst === UPLINK_B_GATEWAY_ROUTES.ipv4 && r.gateway === UPLINK_B.gateway && r.dev === 'eg-h2'), JSON.stringify(v4));
	const v6 = await routes(m, '-6');
	t.true(v6.some((r) => r.dst === UPLINK_B_GATEWAY_ROUTES.ipv6 && r.gateway === UPLINK_B.gateway6 && r.dev === 'eg-h2'), JSON.stringify(v6));
	t.regex((await m.exec('ip', ['route', 'get', ECHO_ADDRESS_MULTIHOME])).stdout, /dev eg-h /);
	t.deepEqual(await globalAddresses(m, '-4', 'eg-h2'), ['198.51.100.1/24', '198.51.100.11/24', '198.51.100.12/24', '198.51.100.20/24']);
	t.deepEqual(await globalAddresses(m, '-6', 'eg-h2'), ['2001:db8:b::1/64', '2001:db8:b::11/64', '2001:db8:b::20/64']);
	t.true((await globalAddresses(m, '-4', 'eg-h')).includes('192.0.2.30/24'));
	t.true(m.hostAddresses.includes('198.51.100.20') && m.hostAddresses6.includes('2001:db8:b::20'));
	t.is(await m.probe('bridge'), PRIMARY_ADDRESS);

	// single + IPv6: same IPv4 layout as ever, plus IPv6 on the uplink and the upstream.
	t.is(s.topology, 'single');
	t.is(s.echoAddress, '192.0.2.254');
	t.is(s.echoAddress6, '2001:db8:a::254');
	t.throws(() => s.routerNs('a'), { message: /multihome/ });
	t.deepEqual(await globalAddresses(s, '-4', 'eg-h'), ['192.0.2.1/24', '192.0.2.11/24', '192.0.2.12/24', '192.0.2.13/24']);
	t.deepEqual(await globalAddresses(s, '-6', 'eg-h'), ['2001:db8:a::1/64', '2001:db8:a::11/64']);
	t.is(await s.probe('bridge'), PRIMARY_ADDRESS);
	// With DOCKERD_IP6TABLES Docker masquerades IPv6 networks itself, from the primary address.
	await s.docker(['network', 'create', '--ipv6', '--subnet', '2001:db8:2::/64', 'eg_s6']);
	if (s.engine.firewallBackend === 'nftables') {
		// Docker's nftables backend: the masquerade lives in its own table, in a chain per bridge.
		t.regex((await s.exec('/usr/sbin/nft', ['list', 'table', 'ip6', 'docker-bridges'])).stdout, /oifname != "br-[0-9a-f]+" ip6 saddr 2001:db8:2::\/64 .*masquerade/);
	} else {
		t.regex((await s.exec('ip6tables-save', ['-t', 'nat'])).stdout, /-A POSTROUTING -s 2001:db8:2::\/64 ! -o br-[0-9a-f]+ -j MASQUERADE/);
	}
	t.is(await s.probe('eg_s6', { family: 6 }), PRIMARY_ADDRESS6);
	t.is(await s.probe('eg_s6'), PRIMARY_ADDRESS);

	started = Date.now();
	await Promise.all([m.stop(), s.stop()]);
	stopped = true;
	t.log(`stopping both took ${Date.now() - started} ms`);
	const netns = (await execa('ip', ['netns', 'list'])).stdout;
	for (const sb of [m, s]) {
		for (const prefix of ['egh', 'egu', 'ega', 'egb']) t.false(netns.includes(`${prefix}-${sb.id}`), `${prefix}-${sb.id} left behind`);
		t.false(existsSync(sb.dir), `${sb.dir} left behind`);
		t.false(readFileSync('/proc/self/mountinfo', 'utf8').includes(sb.dir), `mounts under ${sb.dir} left behind`);
		const procs = readdirSync('/proc').filter((p) => /^\d+$/.test(p)).filter((p) => {
			try {
				return readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(sb.dir);
			} catch {
				return false;
			}
		});
		t.deepEqual(procs, [], `processes of ${sb.id} left behind`);
	}
});
