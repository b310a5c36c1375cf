// Shell completion, in cobra's protocol, which the Docker CLI uses for plugins: for
// `docker egress rm z_<TAB>` it runs `docker-egress __complete egress rm z_` and reads one
// candidate per line ("value\tdescription"), then `:<directive>`. 4 = no file completion.
import type { Context } from '../service/context.js';

const NO_FILE_COMPLETION = 4;

export const commandDescriptions: Record<string, string> = {
	create: 'Create a bridge network that egresses from a fixed source IP',
	ls: 'List egress networks and the state of their rules',
	ps: 'List containers with an egress source IP of their own',
	inspect: 'Show egress networks in detail (JSON)',
	rm: 'Remove egress networks and their rules',
	sync: 'Make the firewall match the egress networks',
	watch: 'Keep every egress rule right (runs until stopped)',
	set: 'Set the egress source IP of a network docker egress did not create',
	unset: 'Remove the egress policy of a network',
	verify: 'Check which address a network (or --container) really egresses from',
	version: 'Show the plugin, Docker API and iptables versions',
};

const commandFlags: Record<string, string[]> = {
	create: ['--source-ip', '--subnet', '--gateway', '--ip-range', '--source-ipv6', '--subnet6', '--via', '--via6', '--bridge-name', '--label', '--opt', '--dry-run'],
	ls: ['--quiet', '--format', '--no-trunc'],
	ps: ['--all', '--quiet', '--format', '--no-trunc'],
	inspect: [],
	rm: ['--dry-run'],
	sync: ['--dry-run'],
	watch: ['--interval', '--log-format', '--metrics-address'],
	set: ['--source-ip', '--source-ipv6', '--via', '--via6'],
	unset: [],
	verify: ['--container', '--url', '--image', '--timeout', '--format'],
	version: ['--format'],
};

/** What to offer, as a pure function of the words and of lookups done only when needed. */
export async function completions(
	words: string[],
	lookup: { egressNetworks(): Promise<string[]>; bridgeNetworks(): Promise<string[]>; policies(): Promise<string[]>; hostAddresses(): Promise<string[]>; egressContainers?(): Promise<string[]> },
): Promise<string[]> {
	const toComplete = words.at(-1) ?? '';
	const before = words.slice(0, -1);
	const command = before[0];
	const starts = (candidates: string[]) => candidates.filter((candidate) => candidate.split('\t')[0]!.startsWith(toComplete));
	if (!command) {
		return starts(Object.entries(commandDescriptions).map(([name, description]) => `${name}\t${description}`));
	}

	const flags = commandFlags[command];
	if (!flags) {
		return [];
	}

	const previous = before.at(-1);
	if (previous === '--source-ip' || previous === '--source-ipv6') {
		const addresses = await lookup.hostAddresses();
		return starts(addresses.filter((address) => address.includes(':') === (previous === '--source-ipv6')));
	}

	if (previous === '--container' && command === 'verify') {
		return starts((await lookup.egressContainers?.()) ?? []);
	}

	if (previous !== undefined && previous.startsWith('--') && !['--dry-run', '--quiet', '--no-trunc', '--all'].includes(previous) && flags.includes(previous)) {
		return [];
	}

	if (toComplete.startsWith('-')) {
		return starts([...flags, '--state-dir', '--help']);
	}

	const positionals = before.slice(1).filter((word, i, all) => !word.startsWith('-') && !(all[i - 1]?.startsWith('--') && !['--dry-run', '--quiet', '--no-trunc', '--all'].includes(all[i - 1]!)));
	switch (command) {
		case 'rm':
		case 'inspect': {
			return starts((await lookup.egressNetworks()).filter((name) => !positionals.includes(name)));
		}

		case 'verify': {
			return positionals.length === 0 && !before.includes('--container') ? starts(await lookup.egressNetworks()) : [];
		}

		case 'set': {
			return positionals.length === 0 ? starts(await lookup.bridgeNetworks()) : [];
		}

		case 'unset': {
			return positionals.length === 0 ? starts(await lookup.policies()) : [];
		}

		default: {
			return [];
		}
	}
}

export async function runComplete(words: string[], context: Context, descriptions = true): Promise<void> {
	const quietly = async (fn: () => Promise<string[]>) => fn().catch(() => []);
	const candidates = await completions(words, {
		egressNetworks: async () =>
			quietly(async () => {
				// Names only: Docker's list and the policies, no host state (no ip, no iptables).
				const { egressNetworks } = await import('../core/network.js');
				const [networks, policies] = await Promise.all([(await context.docker()).listNetworks(), context.policies.read().catch(() => [])]);
				return egressNetworks(networks, undefined, policies).map((network) => network.name);
			}),
		bridgeNetworks: async () =>
			quietly(async () => {
				const networks = await (await context.docker()).listNetworks();
				return networks.filter((network) => network.driver === 'bridge').map((network) => network.name);
			}),
		policies: async () => quietly(async () => (await context.policies.read()).map((policy) => policy.network)),
		egressContainers: async () =>
			quietly(async () => {
				// Running containers that ask for an egress address of their own.
				const { hasEgressLabel } = await import('../core/container.js');
				const containers = await (await context.docker()).listContainers();
				return containers.filter((container) => container.running && hasEgressLabel(container)).map((container) => container.name);
			}),
		hostAddresses: async () =>
			quietly(async () => {
				const host = await context.host();
				return host.addresses.filter((address) => address.interface !== 'lo' && !address.address.startsWith('fe80')).map((address) => address.address);
			}),
	});
	const lines = descriptions ? candidates : candidates.map((candidate) => candidate.split('\t')[0]!);
	process.stdout.write([...lines, `:${NO_FILE_COMPLETION}`, ''].join('\n'));
}
