// The Docker client's deadlines and stop signal, against a unix socket that accepts connections
// and never answers (what a SIGSTOPped dockerd looks like from here).
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { DockerClient } from '../../src/adapters/docker.js';
import { DaemonNotAnsweringError, DaemonUnreachableError, InterruptedError } from '../../src/errors.js';

async function silentDaemon(t: { teardown(fn: () => void): void }): Promise<string> {
	const dir = mkdtempSync(join(tmpdir(), 'egress-docker-test-'));
	const path = join(dir, 'docker.sock');
	const sockets = new Set<net.Socket>();
	const server = net.createServer((socket) => {
		sockets.add(socket); // read nothing, answer nothing
	});
	await new Promise<void>((resolve) => server.listen(path, resolve));
	t.teardown(() => {
		for (const socket of sockets) socket.destroy();
		server.close();
		rmSync(dir, { recursive: true, force: true });
	});
	return `unix://${path}`;
}

test('a call the daemon does not answer ends at its deadline, as DaemonNotAnsweringError (a DaemonUnreachableError)', async (t) => {
	const host = await silentDaemon(t);
	const client = await DockerClient.connect({ host, source: 'test' }, { callTimeoutMs: 300 });
	const started = Date.now();
	const error = await t.throwsAsync(client.listNetworks(), { instanceOf: DaemonNotAnsweringError });
	t.true(error instanceof DaemonUnreachableError);
	t.regex(error.message, /^cannot reach the Docker daemon at unix:\/\/.* \(test\): no answer within 0\.3 s$/);
	const took = Date.now() - started;
	t.true(took >= 250 && took < 2_000, `${took} ms`);
});

test('ping takes its own, shorter deadline', async (t) => {
	const host = await silentDaemon(t);
	const client = await DockerClient.connect({ host, source: 'test' }, { callTimeoutMs: 10_000 });
	const started = Date.now();
	await t.throwsAsync(client.ping(200), { instanceOf: DaemonNotAnsweringError });
	t.true(Date.now() - started < 2_000);
});

test('the stop signal abandons a waiting call at once (InterruptedError), and refuses new ones', async (t) => {
	const host = await silentDaemon(t);
	const stop = new AbortController();
	const client = await DockerClient.connect({ host, source: 'test' }, { signal: stop.signal });
	const pending = client.listNetworks();
	setTimeout(() => stop.abort(new Error('SIGTERM')), 100);
	const started = Date.now();
	await t.throwsAsync(pending, { instanceOf: InterruptedError });
	t.true(Date.now() - started < 1_000);
	await t.throwsAsync(client.version(), { instanceOf: InterruptedError });
});

test('a change (remove network) is not abandoned at a stop, only at its deadline', async (t) => {
	const host = await silentDaemon(t);
	const stop = new AbortController();
	const client = await DockerClient.connect({ host, source: 'test' }, { signal: stop.signal, callTimeoutMs: 400 });
	stop.abort(new Error('SIGTERM'));
	await t.throwsAsync(client.removeNetwork('abc'), { instanceOf: DaemonNotAnsweringError });
});

test('nodeIdentity: the hostname and Swarm node ID of GET /info (no ID outside a swarm)', async (t) => {
	const dir = mkdtempSync(join(tmpdir(), 'egress-docker-test-'));
	const path = join(dir, 'docker.sock');
	const answers = [{ Name: 'node-a', Swarm: { NodeID: 'x1y2z3', LocalNodeState: 'active' } }, { Name: 'solo', Swarm: { NodeID: '', LocalNodeState: 'inactive' } }];
	const seen: string[] = [];
	const { createServer } = await import('node:http');
	const server = createServer((request, response) => {
		seen.push(`${request.method} ${request.url}`);
		response.setHeader('Content-Type', 'application/json');
		response.end(JSON.stringify(answers.shift()));
	});
	await new Promise<void>((resolve) => server.listen(path, resolve));
	t.teardown(() => {
		server.close();
		rmSync(dir, { recursive: true, force: true });
	});
	const client = await DockerClient.connect({ host: `unix://${path}`, source: 'test' });
	t.deepEqual(await client.nodeIdentity(), { hostname: 'node-a', nodeId: 'x1y2z3' });
	t.deepEqual(await client.nodeIdentity(), { hostname: 'solo' });
	t.true(seen.every((line) => /^GET \/(v[\d.]+\/)?info$/.test(line)), seen.join(', '));
});
