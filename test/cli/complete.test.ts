import test from 'ava';
import { completions } from '../../src/cli/complete.js';

const lookup = {
	egressNetworks: async () => ['z_a', 'z_b', 'kasm_egress'],
	bridgeNetworks: async () => ['bridge', 'z_a', 'compose_default'],
	policies: async () => ['compose_default'],
	hostAddresses: async () => ['192.0.2.1', '192.0.2.11', '2001:db8:a::11'],
};

const completes = test.macro(async (t, words: string[], expected: string[]) => {
	t.deepEqual(await completions(words, lookup), expected);
});

test('commands, with descriptions', async (t) => {
	const result = await completions(['s'], lookup);
	t.deepEqual(result.map((line) => line.split('\t')[0]), ['sync', 'set']);
	t.regex(result[0]!, /\tMake the firewall match/);
});

test('rm offers egress networks, not those already given', completes, ['rm', 'z_a', 'z'], ['z_b']);
test('inspect by prefix', completes, ['inspect', 'k'], ['kasm_egress']);
test('set offers bridge networks', completes, ['set', ''], ['bridge', 'z_a', 'compose_default']);
test('unset offers policies', completes, ['unset', ''], ['compose_default']);
test('--source-ip offers the host\'s IPv4 addresses', completes, ['create', 'z_new', '--source-ip', '192.0.2.1'], ['192.0.2.1', '192.0.2.11']);
test('--source-ipv6 offers IPv6 ones', completes, ['create', 'z_new', '--source-ip', '192.0.2.11', '--source-ipv6', ''], ['2001:db8:a::11']);
test('flags of a command', completes, ['rm', '--'], ['--dry-run', '--state-dir', '--help']);
test('a flag that takes a value gets nothing to complete from us', completes, ['ls', '--format', ''], []);
test('create names a new network: nothing to offer', completes, ['create', ''], []);
