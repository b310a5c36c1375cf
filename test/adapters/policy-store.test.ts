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

const illTyped = test.macro(async (t, entry: unknown, message: RegExp) => {
	const policies = store();
	await policies.write([]);
	writeFileSync(policies.file, JSON.stringify({ version: 1, policies: { z_pc: entry } }));
	const error = await t.throwsAsync(policies.read(), { instanceOf: StateFileError });
	t.regex(error!.message, message);
});

test('a numeric via is an error naming the network and the field', illTyped, { sourceIp: '192.0.2.11', via: 5 }, /policies\.json is corrupt \(policy z_pc: "via" is 5, not a string\)/);
test('a non-string sourceIp is an error naming the network and the field', illTyped, { sourceIp: ['192.0.2.11'] }, /policy z_pc: "sourceIp" is \["192\.0\.2\.11"\], not a string/);
test('a non-string sourceIpv6 or via6 is an error', illTyped, { sourceIp: '192.0.2.11', sourceIpv6: '2001:db8::11', via6: null }, /policy z_pc: "via6" is null, not a string/);
test('an entry that is not an object is an error', illTyped, 'z', /policy z_pc is "z", not an object/);

test('readOrLastGood: a bad file is returned as the error, with the last good policies of this store, or none', async (t) => {
	const policies = store();
	await policies.write([{ network: 'z_a', sourceIp: '192.0.2.11' }]);
	t.deepEqual(await policies.readOrLastGood(), { policies: [{ network: 'z_a', sourceIp: '192.0.2.11' }] });
	writeFileSync(policies.file, '{"version": 1, "polic');
	const bad = await policies.readOrLastGood();
	t.deepEqual(bad.policies, [{ network: 'z_a', sourceIp: '192.0.2.11' }]);
	t.true(bad.error instanceof StateFileError);
	const fresh = new PolicyStore(policies.dir);
	const none = await fresh.readOrLastGood();
	t.is(none.policies, undefined);
	t.regex(none.error?.message ?? '', /is corrupt/);
});
