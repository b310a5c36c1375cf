// The Docker CLI runs a plugin as `docker-egress [docker global flags] egress <args>`. This
// splits those global flags off (they decide the endpoint and the log level) and finds where
// our own arguments start. Run directly, `docker-egress ls` works too (no `egress` word).
import type { EndpointFlags } from '../adapters/endpoint.js';
import { UsageError } from '../errors.js';

export type GlobalFlags = EndpointFlags & { debug?: boolean; logLevel?: string };

const valueFlags: Record<string, keyof GlobalFlags> = {
	'--context': 'context',
	'-c': 'context',
	'--host': 'host',
	'-H': 'host',
	'--config': 'config',
	'--log-level': 'logLevel',
	'-l': 'logLevel',
	'--tlscacert': 'tlscacert',
	'--tlscert': 'tlscert',
	'--tlskey': 'tlskey',
};

const booleanFlags: Record<string, keyof GlobalFlags> = {
	'--debug': 'debug',
	'-D': 'debug',
	'--tls': 'tls',
	'--tlsverify': 'tlsverify',
};

export function splitGlobalFlags(argv: string[]): { flags: GlobalFlags; args: string[] } {
	const flags: Record<string, string | boolean> = {};
	let i = 0;
	for (; i < argv.length; i++) {
		const word = argv[i]!;
		if (!word.startsWith('-') || word === '--') {
			break;
		}

		const equals = word.indexOf('=');
		const name = equals === -1 ? word : word.slice(0, equals);
		const inline = equals === -1 ? undefined : word.slice(equals + 1);
		const valueKey = valueFlags[name] ?? (name.length > 2 && !name.startsWith('--') ? valueFlags[name.slice(0, 2)] : undefined);
		if (valueKey) {
			if (inline !== undefined) {
				flags[valueKey] = inline;
			} else if (name.length > 2 && !name.startsWith('--') && valueFlags[name] === undefined) {
				flags[valueKey] = name.slice(2); // -Hunix:///x
			} else {
				const value = argv[++i];
				if (value === undefined) {
					throw new UsageError(`flag needs an argument: ${name}`);
				}

				flags[valueKey] = value;
			}

			continue;
		}

		const booleanKey = booleanFlags[name];
		if (booleanKey) {
			flags[booleanKey] = inline === undefined ? true : inline !== 'false';
			continue;
		}

		// Not a docker global flag: our own (e.g. `docker-egress --help`).
		break;
	}

	let args = argv.slice(i);
	if (args[0] === 'help') {
		// `docker help egress [COMMAND]` reaches us as `help egress [COMMAND]`.
		args = [...args.slice(1).filter((word, index) => !(index === 0 && word === 'egress')), '--help'];
	} else if (args[0] === 'egress') {
		args = args.slice(1);
	}

	return { flags: flags as GlobalFlags, args };
}
