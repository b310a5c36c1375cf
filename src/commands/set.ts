// docker egress set NETWORK --source-ip IP / unset NETWORK: egress policies for networks docker
// egress did not create (and cannot relabel), kept by name in the state dir and applied whenever
// a network of that name exists. Both end in the shared reconcile; a failed reconcile puts the
// policy file back as it was.
import type { Argv } from 'yargs';
import { forgetFlows } from '../adapters/conntrack.js';
import { RULES_LOCK, acquireLock } from '../adapters/lock.js';
import { parseIpv4Cidr, cidrContains } from '../core/address.js';
import { uplinkFor } from '../core/routing.js';
import { SOURCE_IP_LABEL, isEgressNetwork, sourceIpProblem, sourceIpv6Problem, toEgressNetwork, uplinkAddresses, type DockerNetwork, type Policy } from '../core/network.js';
import { ValidationError, reason } from '../errors.js';
import { info, warn } from '../log.js';
import { requireLocalEndpoint, type Context } from '../service/context.js';
import { reconcile } from '../service/reconcile.js';
import { failsOpenWarning } from './ls.js';

export type SetOptions = { network: string; sourceIp: string; sourceIpv6?: string; via?: string; via6?: string };
export type UnsetOptions = { network: string };

export function setBuilder(yargs: Argv): Argv {
	return yargs
		.positional('network', { type: 'string', describe: 'Network name (it need not exist yet)', demandOption: true })
		.option('source-ip', { type: 'string', describe: 'Address of this host that the network egresses from', demandOption: true, requiresArg: true })
		.option('source-ipv6', { type: 'string', describe: 'Dual stack: the IPv6 egress source (the network needs IPv6)', requiresArg: true })
		.option('via6', { type: 'string', describe: 'The same for the IPv6 source\'s uplink', requiresArg: true })
		.option('via', { type: 'string', describe: 'Gateway of the source IP\'s uplink, if it is not the default route\'s and not in the main table', requiresArg: true });
}

export function unsetBuilder(yargs: Argv): Argv {
	return yargs.positional('network', { type: 'string', describe: 'Network name', demandOption: true });
}

export async function runSet(options: SetOptions, context: Context): Promise<void> {
	const formatProblem = sourceIpProblem(options.sourceIp, undefined);
	if (formatProblem) {
		throw new ValidationError(`invalid --source-ip ${JSON.stringify(options.sourceIp)}: ${formatProblem}`);
	}

	const formatProblem6 = options.sourceIpv6 === undefined ? undefined : sourceIpv6Problem(options.sourceIpv6, undefined);
	if (formatProblem6) {
		throw new ValidationError(`invalid --source-ipv6 ${JSON.stringify(options.sourceIpv6)}: ${formatProblem6}`);
	}

	await changePolicy(context, options.network, (policies, network) => {
		if (network && isEgressNetwork(network)) {
			throw new ValidationError(`network ${network.name} is labelled ${SOURCE_IP_LABEL}=${network.labels[SOURCE_IP_LABEL]}; change its label instead of setting a policy`);
		}

		if (network && network.driver !== 'bridge') {
			throw new ValidationError(`network ${network.name} is a ${network.driver} network; only bridge networks can have an egress source IP`);
		}

		for (const subnet of network?.subnets ?? []) {
			const cidr = parseIpv4Cidr(subnet);
			if (cidr && cidrContains(cidr, options.sourceIp)) {
				throw new ValidationError(`--source-ip ${options.sourceIp} is inside the network's own subnet ${cidr.text}`);
			}
		}

		return [...policies.filter((policy) => policy.network !== options.network), { network: options.network, sourceIp: options.sourceIp, ...(options.sourceIpv6 ? { sourceIpv6: options.sourceIpv6 } : {}), ...(options.via ? { via: options.via } : {}), ...(options.via6 ? { via6: options.via6 } : {}) }];
	});
}

export async function runUnset(options: UnsetOptions, context: Context): Promise<void> {
	await changePolicy(context, options.network, (policies) => {
		if (!policies.some((policy) => policy.network === options.network)) {
			throw new ValidationError(`there is no egress policy for network ${options.network}`);
		}

		return policies.filter((policy) => policy.network !== options.network);
	});
}

type Change = (policies: Policy[], network: DockerNetwork | undefined) => Policy[];

async function changePolicy(context: Context, name: string, change: Change): Promise<void> {
	requireLocalEndpoint(context);
	const docker = await context.docker();
	const lock = await acquireLock(RULES_LOCK, { signal: context.signal });
	try {
		const [before, networks, host] = await Promise.all([context.policies.read(), docker.listNetworks(), context.host()]);
		const network = networks.find((candidate) => candidate.name === name);
		const after = change(before, network);
		const old = before.find((policy) => policy.network === name);
		const now = after.find((policy) => policy.network === name);
		if (now) {
			const addresses = uplinkAddresses(host.addresses, networks);
			const problem = sourceIpProblem(now.sourceIp, addresses);
			if (problem) {
				throw new ValidationError(`--source-ip: ${problem}`);
			}

			const problem6 = now.sourceIpv6 === undefined ? undefined : sourceIpv6Problem(now.sourceIpv6, addresses);
			if (problem6) {
				throw new ValidationError(`--source-ipv6: ${problem6}`);
			}

			const facts = { addresses, routes: host.mainRoutes, links: host.links };
			const uplink = uplinkFor({ sourceIp: now.sourceIp, ...(now.via ? { gateway: now.via } : {}) }, facts);
			const uplink6 = now.sourceIpv6 === undefined ? undefined : uplinkFor({ sourceIp: now.sourceIpv6, ...(now.via6 ? { gateway: now.via6 } : {}) }, facts, 'ipv6');
			for (const found of [uplink, uplink6]) {
				if (found && 'problem' in found) {
					throw new ValidationError(found.problem);
				}
			}
		}

		await context.policies.write(after);
		try {
			await reconcile(context);
		} catch (error) {
			await context.policies.write(before);
			throw error;
		}

		report(context, name, old, now, network);
		if (network && old && old.sourceIp !== now?.sourceIp) {
			await resetFlows(network, toEgressNetwork(network, undefined).subnets);
		}
	} finally {
		await lock.release();
	}
}

function report(context: Context, name: string, old: Policy | undefined, now: Policy | undefined, network: DockerNetwork | undefined): void {
	if (now) {
		context.out(old?.sourceIp === now.sourceIp ? `${name}: source IP ${now.sourceIp} (policy, unchanged)` : `${name}: source IP ${now.sourceIp} (policy)`);
		if (!network) {
			warn(`no network named ${name} exists yet; its rule is installed when it appears (docker egress watch does that, or run docker egress sync)`);
		} else if (toEgressNetwork(network, undefined).masquerade) {
			warn(failsOpenWarning(name));
		}
	} else {
		context.out(`${name}: policy removed`);
	}
}

async function resetFlows(network: DockerNetwork, subnets: string[]): Promise<void> {
	for (const subnet of subnets) {
		try {
			const count = await forgetFlows(subnet);
			info(`open connections from ${network.name} (${subnet}) will reset: ${count} tracked flow${count === 1 ? '' : 's'} forgotten, so new packets take the new source IP`);
		} catch (error) {
			warn(`could not clear tracked connections of ${subnet} (${reason(error)}); existing flows keep their old source address until they end`);
		}
	}
}
