// A burst of network creations is coalesced: a few reconciles, not one full rewrite per network.
// To make the burst independent of how fast this (shared, noisy) machine creates networks, watch
// is paused (SIGSTOP) while they are created, so all their events reach it at once on SIGCONT.
import http from 'node:http';
import anyTest from 'ava';
import { useSandbox } from '../helpers/sandbox.js';
import { egressRules } from './firewall.js';

const { test, sandbox } = useSandbox(anyTest);

test.serial('30 network events arriving at once: all get rules, in one or two reconciles', async (t) => {
	const sb = sandbox();
	const watch = sb.egress(['watch', '--interval', '2', '--log-format', 'json'], { globalArgs: ['-l', 'debug'], env: { DOCKER_EGRESS_STATE_DIR: `${sb.dir}/state` } });
	let log = '';
	watch.stderr!.on('data', (chunk: Buffer) => {
		log += chunk.toString();
	});
	try {
		await waitUntil(() => log.includes('"msg":"watch started"'), 20_000);
		const names = Array.from({ length: 30 }, (_, i) => `z_burst${i}`);
		watch.kill('SIGSTOP');
		// Through the Engine API from this one process, as compose or a script would: a real burst.
		await Promise.all(
			names.map(async (name, i) =>
				engine(sb.socket, 'POST', '/networks/create', {
					Name: name,
					Labels: { 'docker-egress.source-ip': '192.0.2.12' },
					Options: { 'com.docker.network.bridge.enable_ip_masquerade': 'false' },
					IPAM: { Config: [{ Subnet: `10.120.${i}.0/24` }] },
				}),
			),
		);
		watch.kill('SIGCONT');
		await waitUntil(async () => (await egressRules(sb)).length === 30, 20_000);
		const events = log.split('\n').filter((line) => line.includes('"msg":"docker event"')).length;
		const reconciles = log.split('\n').filter((line) => line.includes('"msg":"reconciled"') && line.includes('"trigger":"events"')).length;
		t.log(`${events} events, ${reconciles} event-triggered reconciles`);
		t.true(events >= 30);
		t.true(reconciles <= 2, `${reconciles} reconciles for ${events} events`);
		t.is(await sb.probe('z_burst29'), '192.0.2.12');
		await Promise.all(names.map(async (name) => sb.docker(['network', 'rm', name])));
		await waitUntil(async () => (await egressRules(sb)).length === 0, 20_000);
	} finally {
		watch.kill('SIGTERM');
		await watch;
	}
});

async function engine(socketPath: string, method: string, path: string, body: unknown): Promise<void> {
	await new Promise<void>((resolve, reject) => {
		const request = http.request({ socketPath, method, path, headers: { 'Content-Type': 'application/json' } }, (response) => {
			response.resume();
			response.on('end', () => {
				if ((response.statusCode ?? 500) < 300) {
					resolve();
				} else {
					reject(new Error(`${method} ${path}: ${response.statusCode}`));
				}
			});
		});
		request.on('error', reject);
		request.end(JSON.stringify(body));
	});
}

async function waitUntil(condition: () => boolean | Promise<boolean>, timeoutMs: number): Promise<void> {
	const deadline = Date.now() + timeoutMs;
	while (!(await condition())) {
		if (Date.now() > deadline) {
			throw new Error('timed out waiting');
		}

		await new Promise((resolve) => setTimeout(resolve, 100));
	}
}
