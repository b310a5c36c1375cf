// What `ls` and `inspect` show: each egress network with the state of its rule in the kernel
// and the containers on it. Read-only; a remote daemon gets status "unknown", since the
// firewall that matters is on that other host.
import { isLocalEndpoint } from '../adapters/endpoint.js';
import type { ContainerOnNetwork } from '../adapters/docker.js';
import type { RuleCheck } from '../adapters/firewall.js';
import type { PoliciesRead, StateFileError } from '../adapters/policy-store.js';
import { egressContainers } from '../core/container.js';
import { ADDRESS_LABELS, SOURCE_IPV6_LABEL, dockerBridges, egressNetworks, uplinkAddresses, type DockerNetwork, type EgressNetwork } from '../core/network.js';
import { usesPerNodeValues } from '../core/per-node.js';
import { connectionsOf } from '../core/connections.js';
import { cidr6Contains, cidrContains, parseIpv4Cidr, parseIpv6Cidr } from '../core/address.js';
import { desiredDrops, type DropRule } from '../core/drops.js';
import { desiredRules } from '../core/rules.js';
import { readIpState } from '../adapters/ip-state.js';
import { rpFilter } from '../adapters/routing.js';
import { attachUplinks, isRoutingActive, type RoutingPlan } from '../core/routing.js';
import { EgressError, reason } from '../errors.js';
import type { Context } from './context.js';

/** The firewall backend could not be read: every rule's state is unknown. */
export class FirewallUnreadableError extends EgressError {
	constructor(error: Error) {
		super(`cannot read the firewall, so rule states are unknown: ${reason(error)}`, { cause: error });
	}
}

export type RuleStatus = 'active' | 'missing' | 'shadowed' | 'invalid' | 'source-missing' | 'stopped' | 'unknown';

export type EgressView = {
	network: EgressNetwork;
	status: RuleStatus;
	/** Why the status is not `active` (what shadows the rule, what is missing). */
	statusReason?: string;
	/** The firewall backend that serves the rules ('' for a remote daemon). */
	backend: string;
	rules: string[];
	containers: ContainerOnNetwork[];
	/** rp_filter of the uplink, for networks routed through one (1 strict, 2 loose, 0 off). */
	rpFilter?: number;
	/**
	 * New connections its rules translated since they were written (their counters), or undefined
	 * where no rule of it is in place with a counter (none, a remote daemon, an unreadable firewall).
	 */
	connections?: number;
};

/**
 * One network's (or container entry's) status: its own problem first, then what the firewall
 * backend found of its rules (`check`), then its policy routing (undefined: not known).
 */
export function ruleStatus(network: EgressNetwork, check: RuleCheck | undefined, routing: RoutingPlan | undefined): RuleStatus {
	if (network.container && !network.container.running) {
		return 'stopped';
	}

	if (network.problem) {
		return network.sourceMissing ? 'source-missing' : 'invalid';
	}

	if (!check || !routing) {
		return 'unknown';
	}

	if (check.status !== 'active') {
		return check.status;
	}

	return isRoutingActive(network, routing) ? 'active' : 'missing';
}

/** The views; a policy file or a firewall that cannot be read fails the call (see listEgressViews). */
export async function egressViews(context: Context, select?: (network: DockerNetwork) => boolean): Promise<EgressView[]> {
	const { views, policyError, firewallError } = await listEgressViews(context, select);
	if (policyError ?? firewallError) {
		throw policyError ?? firewallError;
	}

	return views;
}

/**
 * Every egress network's view. A policy file that cannot be read costs only the policies: the
 * labelled networks are listed all the same (and the last good policies, if this process has
 * them), and the error comes back for the caller to report after its output.
 */
export async function listEgressViews(
	context: Context,
	select?: (network: DockerNetwork) => boolean,
	options: { containers?: boolean } = {},
): Promise<{ views: EgressView[]; containerViews: EgressView[]; policyError?: StateFileError; firewallError?: FirewallUnreadableError }> {
	const local = isLocalEndpoint(context.endpoint);
	// The host's processes (nft or iptables-save, ip) start first and run while the Docker client
	// loads: it is loaded only after this synchronous turn.
	const backendReady = local ? context.firewall() : undefined;
	const docker = Promise.resolve().then(async () => context.docker());
	const listed = docker.then(async (client) => client.listNetworks());
	const policyRead: Promise<PoliciesRead> = local ? context.policies.readOrLastGood() : Promise.resolve({ policies: [] });
	const policiesRead = policyRead.then((read) => read.policies ?? []);
	// The IPv6 half of the host's state only where some network egresses over IPv6.
	const listedContainers = options.containers ? docker.then(async (client) => client.listContainers()) : Promise.resolve([]);
	const wantsIpv6 = Promise.all([listed, policiesRead, listedContainers]).then(
		([all, policies, labelled]) => egressNetworks(all, undefined, policies).some((network) => network.sourceIpv6 !== undefined) || labelled.some((container) => SOURCE_IPV6_LABEL in container.labels),
		() => false, // the command fails on that error anyway
	);
	// A firewall that cannot be read (no iptables or nft at all, no permission) leaves the rules'
	// state unknown, not the listing: the networks are shown, and the error told after them.
	const firewallRead = backendReady
		?.then(async (fw) => ({ backend: fw, state: await fw.read({ ipv6: await wantsIpv6, leftovers: false }) }))
		.catch((error: unknown) => ({ error: error as Error }));
	// Who this node is, only where some label has a per-node list.
	const nodeRead = Promise.all([listed, listedContainers]).then(async ([all, labelled]) =>
		usesPerNodeValues([...all, ...labelled].map((item) => item.labels), ADDRESS_LABELS) ? (await docker).nodeIdentity() : undefined,
	);
	const [dockerNetworks, containers, labelledContainers, ipState, read, policies, { error: policyError }, node] = await Promise.all([
		listed,
		docker.then(async (client) => client.containersOnNetworks()),
		listedContainers,
		local ? readIpState({ ipv6: wantsIpv6 }) : undefined,
		firewallRead,
		policiesRead,
		policyRead,
		nodeRead,
	]);
	const [backend, firewall] = read && 'backend' in read ? [read.backend, read.state] : [undefined, undefined];
	const firewallError = read && 'error' in read ? new FirewallUnreadableError(read.error) : undefined;
	const host = ipState?.host;
	const routing = ipState?.routing;
	const addresses = host && uplinkAddresses(host.addresses, dockerNetworks);
	const labelled = egressNetworks(select ? dockerNetworks.filter(select) : dockerNetworks, addresses, policies, host?.routes, node);
	const networks = host && addresses ? attachUplinks(labelled, { addresses, routes: host.mainRoutes, links: host.links }) : labelled;
	// Containers are judged against every egress network (a container on one that fails closed fails with it).
	const allNetworks = select ? egressNetworks(dockerNetworks, addresses, policies, host?.routes, node) : labelled;
	const networkDrops = [...desiredDrops(allNetworks), ...desiredDrops(allNetworks, 'ipv6')];
	const ownAddresses = egressContainers(labelledContainers, dockerNetworks, allNetworks, addresses, node);
	const containerEntries = host && addresses ? attachUplinks(ownAddresses, { addresses, routes: host.mainRoutes, links: host.links }) : ownAddresses;
	const bridges = dockerBridges(dockerNetworks);
	const counters = backend && firewall ? backend.counters(firewall) : [];
	const rpFilters = new Map<string, number | undefined>();
	for (const network of networks) {
		if (network.uplink && !rpFilters.has(network.uplink.interface)) {
			rpFilters.set(network.uplink.interface, await rpFilter(network.uplink.interface));
		}
	}

	const view = (network: EgressNetwork): EgressView => {
		const rules = [...desiredRules([network]), ...desiredRules([network], 'ipv6')];
		// A container inside a subnet its network drops has no drop of its own: the network's covers it.
		const drops = [...desiredDrops([network]), ...desiredDrops([network], 'ipv6')].map((drop) => (network.container ? (networkDrops.find((covering) => covers(covering.subnet, drop.subnet)) ?? drop) : drop));
		const check: RuleCheck | undefined = network.problem || !backend || !firewall ? undefined : backend.check(firewall, rules, bridges);
		const connections = network.problem ? undefined : connectionsOf(rules, counters);
		const status = ruleStatus(network, check, routing);
		const statusReason = network.problem
			? `${network.problem}${failClosedText(network, drops, backend && firewall ? backend.checkDrops(firewall, drops) : firewallError?.message ?? 'the firewall is not on this host')}`
			: firewallError
				? firewallError.message
				: check?.status === 'shadowed'
					? `shadowed by ${check.by}`
					: check?.status === 'missing'
						? check.why
						: status === 'missing'
							? 'policy routing is missing'
							: undefined;
		return {
			...(network.uplink && rpFilters.get(network.uplink.interface) !== undefined ? { rpFilter: rpFilters.get(network.uplink.interface)! } : {}),
			network,
			status,
			...(statusReason === undefined ? {} : { statusReason }),
			backend: backend?.name ?? '',
			rules: backend ? backend.ruleTexts(rules, drops) : [],
			containers: network.container ? [] : containers.filter((container) => container.networkId === network.id),
			...(connections === undefined ? {} : { connections }),
		};
	};

	return { views: networks.map(view), containerViews: containerEntries.map(view), ...(policyError ? { policyError } : {}), ...(firewallError ? { firewallError } : {}) };
}

/** What fail-closed does for a network with a source problem: its traffic dropped, or why not. */
function failClosedText(network: EgressNetwork, drops: DropRule[], notHeld: string | undefined): string {
	if (network.blocked === undefined || drops.length === 0) {
		return '';
	}

	const families = [network.blocked.ipv4 ? 'IPv4' : '', network.blocked.ipv6 ? 'IPv6' : ''].filter(Boolean).join(' and ');
	return notHeld === undefined ? `; its outbound ${families} traffic is dropped until it can be served (fail closed)` : `; its outbound ${families} traffic is NOT blocked: ${notHeld}`;
}

/** Whether `subnet` (a drop of a network) holds the address of `address` (a /32 or /128). */
function covers(subnet: string, address: string): boolean {
	const ip = address.split('/')[0]!;
	if (ip.includes(':')) {
		const cidr = parseIpv6Cidr(subnet);
		return cidr !== undefined && cidr6Contains(cidr, ip);
	}

	const cidr = parseIpv4Cidr(subnet);
	return cidr !== undefined && cidrContains(cidr, ip);
}
