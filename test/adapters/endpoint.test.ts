import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import test from 'ava';
import { isLocalEndpoint, resolveEndpoint } from '../../src/adapters/endpoint.js';

function configWithContext(name: string, host: string, tls = false, current?: string): string {
	const dir = mkdtempSync(path.join(tmpdir(), 'egress-config-'));
	const id = createHash('sha256').update(name).digest('hex');
	mkdirSync(path.join(dir, 'contexts', 'meta', id), { recursive: true });
	writeFileSync(path.join(dir, 'contexts', 'meta', id, 'meta.json'), JSON.stringify({ Name: name, Metadata: {}, Endpoints: { docker: { Host: host, SkipTLSVerify: false } } }));
	if (tls) {
		const tlsDir = path.join(dir, 'contexts', 'tls', id, 'docker');
		mkdirSync(tlsDir, { recursive: true });
		for (const file of ['ca.pem', 'cert.pem', 'key.pem']) {
			writeFileSync(path.join(tlsDir, file), 'x');
		}
	}

	if (current) {
		writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ currentContext: current }));
	}

	return dir;
}

test('the default is the local socket', (t) => {
	const endpoint = resolveEndpoint({}, { HOME: mkdtempSync(path.join(tmpdir(), 'egress-home-')) });
	t.is(endpoint.host, 'unix:///var/run/docker.sock');
	t.true(isLocalEndpoint(endpoint));
});

test('--context beats -H is an error, like docker', (t) => {
	t.throws(() => resolveEndpoint({ context: 'a', host: 'unix:///x' }, {}), { message: /either specify --host or --context/ });
});

test('order: --context > -H > DOCKER_HOST > DOCKER_CONTEXT > currentContext', (t) => {
	const config = configWithContext('eg', 'unix:///tmp/eg.sock', false, 'eg');
	const env = { DOCKER_CONFIG: config };
	t.is(resolveEndpoint({}, env).host, 'unix:///tmp/eg.sock');
	t.is(resolveEndpoint({}, env).source, 'current context eg');
	t.is(resolveEndpoint({}, { ...env, DOCKER_CONTEXT: 'default' }).host, 'unix:///var/run/docker.sock');
	t.is(resolveEndpoint({}, { ...env, DOCKER_HOST: 'unix:///tmp/h.sock', DOCKER_CONTEXT: 'eg' }).host, 'unix:///tmp/h.sock');
	t.is(resolveEndpoint({ host: 'tcp://127.0.0.1:2375' }, { ...env, DOCKER_HOST: 'unix:///tmp/h.sock' }).host, 'tcp://127.0.0.1:2375');
	t.is(resolveEndpoint({ context: 'eg' }, { ...env, DOCKER_HOST: 'unix:///tmp/h.sock' }).host, 'unix:///tmp/eg.sock');
});

test('--config picks the config dir; a missing context is a clear error', (t) => {
	const config = configWithContext('eg', 'unix:///tmp/eg.sock');
	t.is(resolveEndpoint({ config, context: 'eg' }, {}).host, 'unix:///tmp/eg.sock');
	t.throws(() => resolveEndpoint({ config, context: 'nope' }, {}), { message: /context "nope" does not exist/ });
});

test('a TLS context brings its files; tcp endpoints are not local', (t) => {
	const config = configWithContext('remote', 'tcp://198.51.100.7:2376', true);
	const endpoint = resolveEndpoint({ config, context: 'remote' }, {});
	t.is(endpoint.tls?.ca, path.join(config, 'contexts', 'tls', createHash('sha256').update('remote').digest('hex'), 'docker', 'ca.pem'));
	t.true(endpoint.tls?.verify);
	t.false(isLocalEndpoint(endpoint));
	t.false(isLocalEndpoint(resolveEndpoint({ host: 'ssh://u@198.51.100.7' }, {})));
	t.is(resolveEndpoint({ host: '198.51.100.7:2375' }, {}).host, 'tcp://198.51.100.7:2375');
});

test('a TLS file named on the command line that is not there is one clear error naming it', (t) => {
	t.throws(() => resolveEndpoint({ host: 'tcp://198.51.100.7:2376', tlsverify: true, tlscacert: '/nope' }, {}), { message: /^cannot read TLS file \/nope \(--tlscacert\): no such file$/ });
	const dir = mkdtempSync(path.join(tmpdir(), 'egress-tls-'));
	t.throws(() => resolveEndpoint({ host: 'tcp://198.51.100.7:2376', tls: true, tlscert: dir }, {}), { message: /TLS file .* \(--tlscert\) is not a file/ });
});

test('DOCKER_CERT_PATH without its files, with DOCKER_HOST on TCP: one clear error naming the file (not a raw ENOENT)', (t) => {
	t.throws(() => resolveEndpoint({}, { DOCKER_HOST: 'tcp://127.0.0.1:9', DOCKER_TLS_VERIFY: '1', DOCKER_CERT_PATH: '/nope' }), { message: /^cannot read TLS file \/nope\/ca\.pem \(DOCKER_CERT_PATH\): no such file$/ });
	// A unix socket never reads them.
	t.is(resolveEndpoint({}, { DOCKER_HOST: 'unix:///tmp/h.sock', DOCKER_CERT_PATH: '/nope' }).host, 'unix:///tmp/h.sock');
});

test('a context TLS dir with a client certificate but no key names the missing file', (t) => {
	const config = configWithContext('halfpair', 'tcp://198.51.100.7:2376', true);
	const tlsDir = path.join(config, 'contexts', 'tls', createHash('sha256').update('halfpair').digest('hex'), 'docker');
	rmSync(path.join(tlsDir, 'key.pem'));
	t.throws(() => resolveEndpoint({ config, context: 'halfpair' }, {}), { message: /TLS client certificate .*cert\.pem has no key\.pem \(--tlskey\) beside it in context "halfpair"/ });
});
