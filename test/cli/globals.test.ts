import test from 'ava';
import { splitGlobalFlags } from '../../src/cli/globals.js';

const split = test.macro((t, argv: string[], flags: Record<string, unknown>, args: string[]) => {
	const result = splitGlobalFlags(argv);
	t.deepEqual(result.flags as Record<string, unknown>, flags);
	t.deepEqual(result.args, args);
});

test('as the CLI runs it', split, ['egress', 'ls'], {}, ['ls']);
test('run directly', split, ['ls', '-q'], {}, ['ls', '-q']);
test('--context', split, ['--context', 'eg', 'egress', 'ls'], { context: 'eg' }, ['ls']);
test('-c=', split, ['-c=eg', 'egress', 'ls'], { context: 'eg' }, ['ls']);
test('-H and --config', split, ['--config', '/tmp/c', '-H', 'unix:///x.sock', 'egress', 'rm', 'a'], { config: '/tmp/c', host: 'unix:///x.sock' }, ['rm', 'a']);
test('-H glued', split, ['-Hunix:///x.sock', 'egress', 'ls'], { host: 'unix:///x.sock' }, ['ls']);
test('-D and -l', split, ['-D', '-l', 'warn', 'egress', 'sync'], { debug: true, logLevel: 'warn' }, ['sync']);
test('tls flags', split, ['--tlsverify', '--tlscacert=/c/ca.pem', 'egress', 'ls'], { tlsverify: true, tlscacert: '/c/ca.pem' }, ['ls']);
test('help egress', split, ['help', 'egress'], {}, ['--help']);
test('help egress create', split, ['help', 'egress', 'create'], {}, ['create', '--help']);
test('our own flag stops the scan', split, ['--help'], {}, ['--help']);
test('flags after egress are ours', split, ['egress', 'ls', '-H', 'x'], {}, ['ls', '-H', 'x']);

test('a value flag without its value is a usage error', (t) => {
	t.throws(() => splitGlobalFlags(['-H']), { message: /needs an argument: -H/ });
});
