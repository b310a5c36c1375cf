// Runs a system command with an argument vector (never a shell) and turns failure into a
// CommandError that carries the command line and its stderr.
import { CommandError } from '../errors.js';
import { debug } from '../log.js';

let execaModule: typeof import('execa') | undefined;

/**
 * Loads execa (on first use: commands that run nothing, like help, never pay for it). Once it is
 * loaded, runCommand starts its process synchronously, within the call: callers that await this
 * first can start their processes before other slow work (loading the Docker client) and let
 * them run meanwhile.
 */
export async function loadCommandRunner(): Promise<void> {
	execaModule ??= await import('execa');
}

export async function runCommand(file: string, args: string[], input?: string): Promise<string> {
	const line = [file, ...args].join(' ');
	debug(`exec: ${line}`);
	if (!execaModule) {
		await loadCommandRunner();
	}

	try {
		const result = await execaModule!.execa(file, args, { input: input ?? '', stripFinalNewline: false });
		return result.stdout;
	} catch (error) {
		const stderr = (error as { stderr?: unknown }).stderr;
		throw new CommandError(line, typeof stderr === 'string' ? stderr : '', error);
	}
}
