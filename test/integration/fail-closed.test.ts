// Issue 10 #1, fail closed: while a network's source address is not on the host, its traffic leaves
// the host from no address at all — not Docker's MASQUERADE address, not its own private one (the
// echo server has a route back to the container subnets here, so a leak would be answered and
// seen). Other networks and the host are unaffected; when the address comes back, so does egress.
import anyTest from 'ava';
import { useSandbox } from '../helpers/sandbox.js';
import { egress, startWatch } from './watch-helpers.js';
import { eventually, sleep } from './firewall.js';

const { test, sandbox } = useSandbox(anyTest);

const ROUTE_BACK = '10.78.0.0/16';
const CREATED = { name: 'z_fc_created', subnet: '10.78.1.0/24', ip: '192.0.2.12' };
const LABELLED = { name: 'z_fc_labelled', subnet: '10.78.2.0/24', ip: '192.0.2.13' };
const PLAIN = { name: 'z_fc_plain', subnet: '10.78.3.0/24' };

type Row = { Name: string; Status: string; StatusReason: string };

async function rows(sb: ReturnType<typeof sandbox>): Promise<Map<string, Row>> {
	const r = await egress(sb, ['ls', '--format', 'json']);
	return new Map(
		r.stdout
			.trim()
			.split('\n')
			.filter(Boolean)
			.map((line) => JSON.parse(line) as Row)
			.map((row) => [row.Name, row]),
	);
}

async function addressGoes(sb: ReturnType<typeof sandbox>, ip: string): Promise<void> {
	await sb.exec('ip', ['addr', 'del', `${ip}/24`, 'dev', sb.uplink]);
}

async function addressReturns(sb: ReturnType<typeof sandbox>, ip: string): Promise<void> {
	await sb.exec('ip', ['addr', 'add', `${ip}/24`, 'dev', sb.uplink]);
}

test.serial('setup: a created network, a labelled one with Docker masquerade on, a plain one; the upstream routes back to them', async (t) => {
	const sb = sandbox();
	await sb.execUpstream('ip', ['route', 'add', ROUTE_BACK, 'via', '192.0.2.1']);
	const created = await egress(sb, ['create', CREATED.name, '--source-ip', CREATED.ip, '--subnet', CREATED.subnet]);
	t.is(created.exitCode, 0, created.stderr);
	await sb.docker(['network', 'create', '--label', `docker-egress.source-ip=${LABELLED.ip}`, '--subnet', LABELLED.subnet, LABELLED.name]);
	await sb.docker(['network', 'create', '--subnet', PLAIN.subnet, PLAIN.name]);
	const sync = await egress(sb, ['sync']);
	t.is(sync.exitCode, 0, sync.stderr);
	t.is(await sb.probe(CREATED.name), CREATED.ip);
	t.is(await sb.probe(LABELLED.name), LABELLED.ip);
	t.is(await sb.probe(PLAIN.name), '192.0.2.1');
});

test.serial('sync: source addresses gone -> no egress at all for those networks (not the primary, not the private address); ls says source-missing', async (t) => {
	const sb = sandbox();
	await addressGoes(sb, CREATED.ip);
	await addressGoes(sb, LABELLED.ip);
	try {
		const sync = await egress(sb, ['sync']);
		t.not(sync.exitCode, 0, 'a network that cannot be served is a partial sync');
		t.regex(sync.stderr, new RegExp(`network ${CREATED.name} fails closed \\(its outbound traffic is dropped\\): .*${CREATED.ip.replaceAll('.', '\\.')} is not an address of this host`));
		t.is(await sb.tryProbe(CREATED.name, { timeoutSeconds: 3 }), undefined, 'masquerade off: a leak would show its private 10.78.1.x address');
		t.is(await sb.tryProbe(LABELLED.name, { timeoutSeconds: 3 }), undefined, "masquerade on: a leak would show Docker's 192.0.2.1");
		t.is(await sb.probe(PLAIN.name), '192.0.2.1', 'other networks are unaffected');
		const listed = await rows(sb);
		for (const name of [CREATED.name, LABELLED.name]) {
			t.is(listed.get(name)?.Status, 'source-missing');
			t.regex(listed.get(name)?.StatusReason ?? '', /is not an address of this host.*its outbound IPv4 traffic is dropped until it can be served \(fail closed\)/);
		}

		const inspect = await egress(sb, ['inspect', LABELLED.name]);
		const [object] = JSON.parse(inspect.stdout) as Array<{ Status: string; StatusReason: string; Rules: string[] }>;
		t.is(object!.Status, 'source-missing');
		t.true(object!.Rules.some((rule) => rule.includes(LABELLED.subnet)), JSON.stringify(object!.Rules));
		// The host itself still reaches the echo server from its primary address.
		const fromHost = await sb.exec('busybox', ['sh', '-c', `printf 'GET /cgi-bin/ip HTTP/1.0\\r\\n\\r\\n' | busybox timeout 3 busybox nc ${sb.echoAddress} 80 | busybox tail -1`]);
		t.is(fromHost.stdout.trim(), '192.0.2.1');
	} finally {
		await addressReturns(sb, CREATED.ip);
		await addressReturns(sb, LABELLED.ip);
	}

	const sync = await egress(sb, ['sync']);
	t.is(sync.exitCode, 0, sync.stderr);
	t.is(await sb.probe(CREATED.name), CREATED.ip);
	t.is(await sb.probe(LABELLED.name), LABELLED.ip);
	const listed = await rows(sb);
	t.is(listed.get(LABELLED.name)?.Status, 'active');
});

test.serial('a container on a network that fails closed still reaches a container on its own network', async (t) => {
	const sb = sandbox();
	await sb.docker(['run', '-d', '--name', 'z_fc_server', '--network', CREATED.name, '--ip', '10.78.1.50', 'egress-probe:latest', 'sh', '-c', 'while true; do echo pong | nc -l -p 7000; done']);
	t.teardown(async () => {
		await sb.docker(['rm', '-f', 'z_fc_server'], { reject: false });
	});
	await addressGoes(sb, CREATED.ip);
	try {
		const sync = await egress(sb, ['sync']);
		t.regex(sync.stderr, /fails closed/);
		const r = await sb.docker(['run', '--rm', '--network', CREATED.name, 'egress-probe:latest', 'sh', '-c', 'echo ping | timeout 5 nc 10.78.1.50 7000'], { reject: false });
		t.is(r.stdout.trim(), 'pong', r.stderr);
		t.is(await sb.tryProbe(CREATED.name, { timeoutSeconds: 3 }), undefined);
	} finally {
		await addressReturns(sb, CREATED.ip);
	}

	t.is((await egress(sb, ['sync'])).exitCode, 0);
});

test.serial('watch: the address leaves and returns; no probe ever sees another address, and egress comes back by itself', async (t) => {
	const sb = sandbox();
	const watch = await startWatch(t, sb, { interval: '1' });
	t.is(await sb.probe(LABELLED.name), LABELLED.ip);
	await addressGoes(sb, LABELLED.ip);
	let returned = false;
	try {
		await watch.waitFor('network fails closed', { network: LABELLED.name, status: 'source-missing' }, 20_000);
		// While it is gone: never the primary, never the private address.
		for (let i = 0; i < 3; i++) {
			const seen = await sb.tryProbe(LABELLED.name, { timeoutSeconds: 2 });
			t.is(seen, undefined, `probe ${i} while ${LABELLED.ip} is gone`);
		}

		t.is(await sb.probe(CREATED.name), CREATED.ip, 'the other egress network keeps its address');
		await addressReturns(sb, LABELLED.ip);
		returned = true;
		await watch.waitFor('network served again', { network: LABELLED.name }, 20_000);
	} finally {
		if (!returned) await addressReturns(sb, LABELLED.ip);
	}

	const seen = await eventually('egress from the labelled address', async () => sb.tryProbe(LABELLED.name, { timeoutSeconds: 3 }), (value) => value !== undefined, 20_000);
	t.is(seen, LABELLED.ip);
	await sleep(100);
});
