// docker egress version: the plugin, the Docker API it talks to, and the iptables flavour.
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

	const iptables = isLocalEndpoint(context.endpoint) ? (await context.firewall()).flavour : 'unknown (remote daemon)';
	const info = {
		Plugin: plugin,
		Node: process.version,
		Endpoint: context.endpoint.host,
		Engine: 'error' in engine ? `unreachable: ${engine.error}` : engine.Version,
		ApiVersion: 'error' in engine ? '' : engine.ApiVersion,
		Iptables: iptables,
	};
	if (options.format === 'json') {
		context.out(JSON.stringify(info));
		return;
	}

	context.out(
		[
			`docker egress: ${info.Plugin} (node ${info.Node})`,
			`Docker Engine: ${info.Engine} (API ${info.ApiVersion || '-'}) at ${info.Endpoint}`,
			`iptables:      ${info.Iptables}`,
		].join('\n'),
	);
}
