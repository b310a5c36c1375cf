// The command line: docker's global flags, then yargs for our commands, then the one place that
// turns errors into a message line on stderr and an exit code.
import type { Argv } from 'yargs';
import { resolveEndpoint } from '../adapters/endpoint.js';
import { requestedBackend } from '../adapters/firewall.js';
import { escapeControls } from '../core/text.js';
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

/** A command's module is loaded only when that command runs (or its help is asked for). */
type CommandModule = { builder: (yargs: Argv) => Argv; handler: Handler };
const load = {
	create: async () => import('../commands/create.js').then((m): CommandModule => ({ builder: m.createBuilder, handler: m.runCreate })),
	ls: async () => import('../commands/ls.js').then((m): CommandModule => ({ builder: m.lsBuilder, handler: m.runLs })),
	ps: async () => import('../commands/ps.js').then((m): CommandModule => ({ builder: m.psBuilder, handler: m.runPs })),
	inspect: async () => import('../commands/inspect.js').then((m): CommandModule => ({ builder: m.inspectBuilder, handler: m.runInspect })),
	rm: async () => import('../commands/rm.js').then((m): CommandModule => ({ builder: m.rmBuilder, handler: m.runRm })),
	sync: async () => import('../commands/sync.js').then((m): CommandModule => ({ builder: m.syncBuilder, handler: m.runSync })),
	watch: async () => import('../commands/watch.js').then((m): CommandModule => ({ builder: m.watchBuilder, handler: m.runWatch })),
	set: async () => import('../commands/set.js').then((m): CommandModule => ({ builder: m.setBuilder, handler: m.runSet })),
	unset: async () => import('../commands/set.js').then((m): CommandModule => ({ builder: m.unsetBuilder, handler: m.runUnset })),
	verify: async () => import('../commands/verify.js').then((m): CommandModule => ({ builder: m.verifyBuilder, handler: m.runVerify })),
	version: async () => import('../commands/version.js').then((m): CommandModule => ({ builder: m.versionBuilder, handler: m.runVersion })),
} as const;

async function parse(args: string[], flags: GlobalFlags, signal: AbortSignal): Promise<void> {
	const { default: yargs } = await import('yargs');
	const builder = (name: keyof typeof load) => async (y: Argv) => (await load[name]()).builder(y);
	const bind =
		(name: keyof typeof load) =>
		async (options: unknown): Promise<void> => {
			const { handler } = await load[name]();
			const { stateDir, firewallBackend } = options as { stateDir?: string; firewallBackend?: string };
			const context = createContext(resolveEndpoint(flags), signal, stateDir, requestedBackend(firewallBackend));
			await handler(options as never, context);
		};

	const parser: Argv = yargs(args)
		.scriptName('docker egress')
		.usage(`Usage:  docker egress COMMAND\n\n${parsedMetadata().ShortDescription}`)
		.command('create <network>', 'Create a bridge network that egresses from a fixed source IP', builder('create'), bind('create'))
		.command(['ls', 'list'], 'List egress networks and the state of their rules', builder('ls'), bind('ls'))
		.command('ps', 'List containers with an egress source IP of their own, and the state of their rules', builder('ps'), bind('ps'))
		.command('inspect <networks..>', 'Show egress networks in detail (JSON)', builder('inspect'), bind('inspect'))
		.command(['rm <networks..>', 'remove'], 'Remove egress networks and their rules', builder('rm'), bind('rm'))
		.command('sync', 'Make the firewall match the egress networks (one reconcile)', builder('sync'), bind('sync'))
		.command('watch', 'Keep every egress rule right: reconcile on Docker events and heal drift (runs until stopped)', builder('watch'), bind('watch'))
		.command('set <network>', 'Set the egress source IP of a network docker egress did not create (a policy)', builder('set'), bind('set'))
		.command('unset <network>', 'Remove the egress policy of a network', builder('unset'), bind('unset'))
		.command('verify [network]', 'Check from a throwaway container which address a network (or --container) really egresses from', builder('verify'), bind('verify'))
		.command('version', 'Show the plugin, Docker API and firewall backend versions', builder('version'), bind('version'))
		.option('firewall-backend', {
			type: 'string',
			global: true,
			describe: 'nftables, iptables or auto (default $DOCKER_EGRESS_FIREWALL_BACKEND, else nftables where nft works)',
			requiresArg: true,
		})
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
	const message = escapeControls(reason(error).replaceAll(/\s*\n\s*/g, ' '));
	process.stderr.write(`${message.startsWith('Error') ? '' : 'Error: '}${message}\n`);
	if (isDebug() && error instanceof Error) {
		process.stderr.write(`${error.stack ?? ''}\n`);
		if (error.cause) {
			process.stderr.write(`cause: ${(error.cause as Error).stack ?? String(error.cause)}\n`);
		}
	}

	return error instanceof EgressError ? error.exitCode : 1;
}
