// The process runner every adapter goes through: argv in (no shell), output out, failures as
// CommandError. Runs real, harmless programs (cat, true, sh as the program under test).
import test from 'ava';
import { runCommand, runProcess } from '../../src/adapters/run.js';
import { CommandError } from '../../src/errors.js';

test('input goes to stdin and stdout comes back whole, multibyte characters included', async (t) => {
	const text = `${'é→😀 '.repeat(50_000)}\n`; // ~650 KB: many chunks, characters split across them
	t.is(await runCommand('cat', [], text), text);
});

test('arguments are passed as they are, never through a shell', async (t) => {
	t.is(await runCommand('printf', ['%s|', '$(echo no)', 'a b', ';true']), '$(echo no)|a b|;true|');
});

test('a non-zero exit is a CommandError with the command line and the end of stderr', async (t) => {
	const error = await t.throwsAsync(runCommand('sh', ['-c', 'echo first >&2; echo last >&2; exit 3']), { instanceOf: CommandError });
	t.is(error.command, 'sh -c echo first >&2; echo last >&2; exit 3');
	t.regex(error.message, /failed: first \/ last$/);
});

test('without stderr the exit status is the message', async (t) => {
	await t.throwsAsync(runCommand('false', []), { instanceOf: CommandError, message: 'false failed: exit status 1' });
});

test('a program that cannot be started is a CommandError', async (t) => {
	await t.throwsAsync(runCommand('/nonexistent/docker-egress-test', ['x']), { instanceOf: CommandError, message: /^\/nonexistent\/docker-egress-test x failed: \/nonexistent\/docker-egress-test is not installed \(not found\)$/ });
	await t.throwsAsync(runCommand('docker-egress-test-nonexistent', []), { instanceOf: CommandError, message: /failed: docker-egress-test-nonexistent is not installed \(not found on PATH\)$/ });
});

test('runProcess leaves the exit status to the caller, and survives a program that does not read its input', async (t) => {
	const result = await runProcess('sh', ['-c', 'echo out; echo err >&2; exit 1'], 'x'.repeat(1 << 20));
	t.deepEqual(result, { exitCode: 1, signal: null, stdout: 'out\n', stderr: 'err\n' });
	t.is((await runProcess('true', [], 'y'.repeat(1 << 20))).exitCode, 0);
});
