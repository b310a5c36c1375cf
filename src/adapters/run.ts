// Runs a system command with an argument vector (never a shell) and turns failure into a
// CommandError that carries the command line and its stderr.
import { CommandError } from '../errors.js';
import { debug } from '../log.js';

export async function runCommand(file: string, args: string[], input?: string): Promise<string> {
	const line = [file, ...args].join(' ');
	debug(`exec: ${line}`);
	// execa is loaded on first use: commands that run nothing (help, metadata) never pay for it.
	const { execa } = await import('execa');
	try {
		const result = await execa(file, args, { input: input ?? '', stripFinalNewline: false });
		return result.stdout;
	} catch (error) {
		const stderr = (error as { stderr?: unknown }).stderr;
		throw new CommandError(line, typeof stderr === 'string' ? stderr : '', error);
	}
}
