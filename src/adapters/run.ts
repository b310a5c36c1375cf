// Runs a system command with an argument vector (never a shell) and turns failure into a
// CommandError that carries the command line and its stderr. Node's child_process directly, not
// execa: execa costs ~45 ms of every command that runs a process (loading it, and its per-call
// work), 15 % of `ls` and `sync` (README "Packaging"); all we need is argv in, output out.
import { spawn } from 'node:child_process';
import { CommandError } from '../errors.js';
import { debug } from '../log.js';

export type ProcessResult = { exitCode: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string };

/**
 * Starts `file` with `args` — synchronously, within this call, so that callers can start their
 * processes before other slow work and let them run meanwhile — and resolves when it has ended
 * and closed its output. `input` goes to its stdin (closed at once without it). Rejects only when
 * the process could not be started (CommandError); its exit status is the caller's to judge.
 */
export async function runProcess(file: string, args: string[], input?: string): Promise<ProcessResult> {
	const line = [file, ...args].join(' ');
	debug(`exec: ${line}`);
	return new Promise((resolve, reject) => {
		const child = spawn(file, args, { stdio: [input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
		const stdout: Buffer[] = [];
		const stderr: Buffer[] = [];
		child.stdout!.on('data', (chunk: Buffer) => stdout.push(chunk));
		child.stderr!.on('data', (chunk: Buffer) => stderr.push(chunk));
		child.once('error', (error) => {
			reject(new CommandError(line, '', error)); // could not start: ENOENT, EACCES
		});
		child.once('close', (exitCode, signal) => {
			resolve({ exitCode, signal, stdout: Buffer.concat(stdout).toString('utf8'), stderr: Buffer.concat(stderr).toString('utf8') });
		});
		if (child.stdin) {
			child.stdin.on('error', () => undefined); // EPIPE when it exits without reading: its exit status tells
			child.stdin.end(input);
		}
	});
}

/** runProcess, and anything but exit status 0 is a CommandError. Resolves to stdout. */
export async function runCommand(file: string, args: string[], input?: string): Promise<string> {
	const result = await runProcess(file, args, input);
	if (result.exitCode !== 0) {
		const status = result.signal ? `killed by ${result.signal}` : `exit status ${result.exitCode}`;
		throw new CommandError([file, ...args].join(' '), result.stderr || status);
	}

	return result.stdout;
}

/** Runs firewall transactions (a command and the input it reads) one after the other; the first failure stops. */
export async function runTransactions(steps: ReadonlyArray<{ command: string[]; input: string }>): Promise<void> {
	for (const step of steps) {
		debug(`${step.command.join(' ')} input:\n${step.input}`);
		await runCommand(step.command[0]!, step.command.slice(1), step.input);
	}
}
