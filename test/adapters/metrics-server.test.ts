import { createServer } from 'node:net';
import test from 'ava';
import { MetricsServer, parseMetricsAddress } from '../../src/adapters/metrics-server.js';

test('HOST:PORT and [IPv6]:PORT; anything else is refused with one line', (t) => {
	t.deepEqual(parseMetricsAddress('127.0.0.1:9469'), { host: '127.0.0.1', port: 9469 });
	t.deepEqual(parseMetricsAddress('[::1]:9469'), { host: '::1', port: 9469 });
	t.deepEqual(parseMetricsAddress('0.0.0.0:9469'), { host: '0.0.0.0', port: 9469 });
	t.deepEqual(parseMetricsAddress('localhost:9469'), { host: 'localhost', port: 9469 });
	for (const bad of ['9469', ':9469', '127.0.0.1', '127.0.0.1:0', '127.0.0.1:65536', 'example.com:9469', '::1:9469', '[127.0.0.1]:9469', '127.0.0.1:94a']) {
		t.throws(() => parseMetricsAddress(bad), { message: /^invalid --metrics-address .*: give HOST:PORT/ }, bad);
	}
});

async function freePort(): Promise<number> {
	const server = createServer();
	await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
	const { port } = server.address() as { port: number };
	await new Promise((resolve) => server.close(resolve));
	return port;
}

const handlers = (healthy: boolean) => ({
	refreshed: 0,
	async refresh() {
		this.refreshed++;
	},
	metrics: async () => ({ contentType: 'text/plain; version=0.0.4; charset=utf-8', body: 'docker_egress_daemon_up 1\n' }),
	health: () => (healthy ? ({ ok: true } as const) : ({ ok: false, reason: 'daemon not answering since 2026-12-03T10:00:00.000Z' } as const)),
});

test('serves /metrics and /healthz, 404 elsewhere, 405 for other methods; refreshes before answering', async (t) => {
	const port = await freePort();
	const h = handlers(true);
	const server = await MetricsServer.listen({ host: '127.0.0.1', port }, h);
	t.teardown(async () => server.close());
	const metrics = await fetch(`http://127.0.0.1:${port}/metrics`);
	t.is(metrics.status, 200);
	t.is(metrics.headers.get('content-type'), 'text/plain; version=0.0.4; charset=utf-8');
	t.is(await metrics.text(), 'docker_egress_daemon_up 1\n');
	const health = await fetch(`http://127.0.0.1:${port}/healthz`);
	t.is(health.status, 200);
	t.is(await health.text(), 'ok\n');
	t.is(h.refreshed, 2);
	t.is((await fetch(`http://127.0.0.1:${port}/`)).status, 404);
	t.is((await fetch(`http://127.0.0.1:${port}/metrics`, { method: 'POST' })).status, 405);
});

test('unhealthy: 503 and the reason on one line', async (t) => {
	const port = await freePort();
	const server = await MetricsServer.listen({ host: '127.0.0.1', port }, handlers(false));
	t.teardown(async () => server.close());
	const health = await fetch(`http://127.0.0.1:${port}/healthz`);
	t.is(health.status, 503);
	t.is(await health.text(), 'daemon not answering since 2026-12-03T10:00:00.000Z\n');
});

test('an address in use, or not of this host, is one line naming it', async (t) => {
	const port = await freePort();
	const first = await MetricsServer.listen({ host: '127.0.0.1', port }, handlers(true));
	t.teardown(async () => first.close());
	await t.throwsAsync(MetricsServer.listen({ host: '127.0.0.1', port }, handlers(true)), { message: `cannot serve metrics on 127.0.0.1:${port}: the address is already in use` });
	await t.throwsAsync(MetricsServer.listen({ host: '192.0.2.77', port }, handlers(true)), { message: `cannot serve metrics on 192.0.2.77:${port}: not an address of this host` });
});

test('close cuts kept-alive connections at once', async (t) => {
	const port = await freePort();
	const server = await MetricsServer.listen({ host: '127.0.0.1', port }, handlers(true));
	const { request } = await import('node:http');
	const agent = new (await import('node:http')).Agent({ keepAlive: true });
	await new Promise<void>((resolve, reject) => {
		request({ host: '127.0.0.1', port, path: '/healthz', agent }, (response) => {
			response.resume();
			response.on('end', resolve);
		})
			.on('error', reject)
			.end();
	});
	const started = Date.now();
	await server.close();
	t.true(Date.now() - started < 500, `close took ${Date.now() - started} ms`);
	agent.destroy();
});
