// docker egress version: the plugin, the Docker API it talks to, and the firewall backend.
import type { Argv } from 'yargs';
import { isLocalEndpoint } from '../adapters/endpoint.js';
import { parsedMetadata } from '../metadata.js';
import { reason } from '../errors.js';
import type { Context } from '../service/context.js';

export type VersionOptions = { format: string };

export function versionBuilder(yargs: Argv): Argv {
	return yargs.option('format', { type: 'string', default: 'text', choices: ['text', 'json'], describe: 'text or json' });
}

export async function runVersion(options: VersionOptions, context: Context): Promise<void> {
	const plugin = parsedMetadata().Version;
	let engine: { Version: string; ApiVersion: string } | { error: string };
	try {
		engine = await (await context.docker()).version();
	} catch (error) {
		engine = { error: reason(error) };
	}

	const backend = isLocalEndpoint(context.endpoint) ? await context.firewall() : undefined;
	await backend?.read({ ipv6: false, leftovers: false }).catch(() => undefined); // learns the nft version
	const info = {
		Plugin: plugin,
		Node: process.version,
		Endpoint: context.endpoint.host,
		Engine: 'error' in engine ? `unreachable: ${engine.error}` : engine.Version,
		ApiVersion: 'error' in engine ? '' : engine.ApiVersion,
		FirewallBackend: backend?.name ?? 'unknown (remote daemon)',
		Firewall: backend?.describe() ?? 'unknown (remote daemon)',
	};
	if (options.format === 'json') {
		context.out(JSON.stringify(info));
		return;
	}

	context.out(
		[
			`docker egress: ${info.Plugin} (node ${info.Node})`,
			`Docker Engine: ${info.Engine} (API ${info.ApiVersion || '-'}) at ${info.Endpoint}`,
			`Firewall:      ${info.Firewall}`,
		].join('\n'),
	);
}
