import { mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import test from 'ava';
import { PolicyStore, StateFileError } from '../../src/adapters/policy-store.js';

const store = () => new PolicyStore(path.join(mkdtempSync(path.join(tmpdir(), 'egress-state-')), 'nested'));

test('no file is no policy; a written set reads back, sorted, and leaves no temp file', async (t) => {
	const policies = store();
	t.deepEqual(await policies.read(), []);
	await policies.write([
		{ network: 'z_b', sourceIp: '192.0.2.12' },
		{ network: 'kasm', sourceIp: '192.0.2.11' },
	]);
	t.deepEqual(await policies.read(), [
		{ network: 'kasm', sourceIp: '192.0.2.11' },
		{ network: 'z_b', sourceIp: '192.0.2.12' },
	]);
	t.deepEqual(readdirSync(policies.dir), ['policies.json']);
	t.deepEqual(JSON.parse(readFileSync(policies.file, 'utf8')), { version: 1, policies: { kasm: { sourceIp: '192.0.2.11' }, z_b: { sourceIp: '192.0.2.12' } } });
});

const corrupt = test.macro(async (t, content: string) => {
	const policies = store();
	await policies.write([]);
	writeFileSync(policies.file, content);
	const error = await t.throwsAsync(policies.read(), { instanceOf: StateFileError });
	t.regex(error!.message, /policies\.json is corrupt/);
	t.is(readFileSync(policies.file, 'utf8'), content, 'the file is left as it was');
});

test('truncated JSON is an error, not an empty set', corrupt, '{"version": 1, "polic');
test('wrong shape is an error', corrupt, '[1, 2, 3]');
test('a policy without an address is an error', corrupt, '{"version": 1, "policies": {"x": {}}}');
