// The command line: docker's global flags, then yargs for our commands, then the one place that
// turns errors into a message line on stderr and an exit code.
import type { Argv } from 'yargs';
import { resolveEndpoint } from '../adapters/endpoint.js';
import { EgressError, reason } from '../errors.js';
import { isDebug, setLogLevel } from '../log.js';
import { parsedMetadata } from '../metadata.js';
import { createContext, type Context } from '../service/context.js';
import { splitGlobalFlags, type GlobalFlags } from './globals.js';
import { watchForStop } from './lifecycle.js';

type Handler = (options: never, context: Context) => Promise<void>;

export async function run(argv: string[]): Promise<number> {
	try {
		const { flags, args } = splitGlobalFlags(argv);
		setLogLevel(flags.debug ? 'debug' : flags.logLevel);
		const signal = watchForStop();
		if (args[0] === '__complete' || args[0] === '__completeNoDesc') {
			const { runComplete } = await import('./complete.js');
			const words = args[1] === 'egress' ? args.slice(2) : args.slice(1);
			const context = createContext(resolveEndpoint(flags), signal);
			await runComplete(words, context, args[0] === '__complete');
			return 0;
		}

		await parse(args, flags, signal);
		return 0;
	} catch (error) {
		return report(error);
	}
}

async function parse(args: string[], flags: GlobalFlags, signal: AbortSignal): Promise<void> {
	const { default: yargs } = await import('yargs');
	const commands = await import('../commands/index.js');
	const bind =
		(handler: Handler) =>
		async (options: unknown): Promise<void> => {
			const context = createContext(resolveEndpoint(flags), signal, (options as { stateDir?: string }).stateDir);
			await handler(options as never, context);
		};

	const parser: Argv = yargs(args)
		.scriptName('docker egress')
		.usage(`Usage:  docker egress COMMAND\n\n${parsedMetadata().ShortDescription}`)
		.command('create <network>', 'Create a bridge network that egresses from a fixed source IP', commands.createBuilder, bind(commands.runCreate))
		.command(['ls', 'list'], 'List egress networks and the state of their rules', commands.lsBuilder, bind(commands.runLs))
		.command('inspect <networks..>', 'Show egress networks in detail (JSON)', commands.inspectBuilder, bind(commands.runInspect))
		.command(['rm <networks..>', 'remove'], 'Remove egress networks and their rules', commands.rmBuilder, bind(commands.runRm))
		.command('sync', 'Make the firewall match the egress networks (one reconcile)', commands.syncBuilder, bind(commands.runSync))
		.command('watch', 'Keep every egress rule right: reconcile on Docker events and heal drift (runs until stopped)', commands.watchBuilder, bind(commands.runWatch))
		.command('set <network>', 'Set the egress source IP of a network docker egress did not create (a policy)', commands.setBuilder, bind(commands.runSet))
		.command('unset <network>', 'Remove the egress policy of a network', commands.unsetBuilder, bind(commands.runUnset))
		.command('verify <network>', 'Check from a throwaway container which address the network really egresses from', commands.verifyBuilder, bind(commands.runVerify))
		.command('version', 'Show the plugin, Docker API and iptables versions', commands.versionBuilder, bind(commands.runVersion))
		.option('state-dir', { type: 'string', global: true, describe: 'Where policies are kept (default $DOCKER_EGRESS_STATE_DIR or /var/lib/docker-egress)', requiresArg: true })
		.demandCommand(1, 'docker egress needs a command; see docker egress --help')
		.recommendCommands()
		.strict()
		.help()
		.alias('help', 'h')
		.version(false)
		.exitProcess(false)
		.parserConfiguration({ 'boolean-negation': false })
		.wrap(Math.min(100, process.stdout.columns || 100))
		.fail((message, error) => {
			throw error ?? new EgressError(message);
		});
	await parser.parseAsync();
}

function report(error: unknown): number {
	const message = reason(error).replaceAll(/\s*\n\s*/g, ' ');
	process.stderr.write(`${message.startsWith('Error') ? '' : 'Error: '}${message}\n`);
	if (isDebug() && error instanceof Error) {
		process.stderr.write(`${error.stack ?? ''}\n`);
		if (error.cause) {
			process.stderr.write(`cause: ${(error.cause as Error).stack ?? String(error.cause)}\n`);
		}
	}

	return error instanceof EgressError ? error.exitCode : 1;
}
