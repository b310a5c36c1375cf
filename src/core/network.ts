// Egress networks: which Docker networks ask for a fixed source IP, and whether that ask is
// valid on this host. Pure: the Docker and host facts come in as plain values.
import { isIPv4, isIPv6 } from 'node:net';
import { addressFamily, canonicalIpv6, cidr6Contains, cidrContains, cidrs6Overlap, cidrsOverlap, parseIpv4Cidr, parseIpv6Cidr, unusableIpv4Reason, unusableIpv6Reason, type Cidr, type Cidr6 } from './address.js';
import { valueForNode, type NodeIdentity } from './per-node.js';

export const SOURCE_IP_LABEL = 'docker-egress.source-ip';
/** Optional, on a dual-stack network: the IPv6 egress source. */
export const SOURCE_IPV6_LABEL = 'docker-egress.source-ipv6';
/** Optional: the gateway of the source IP's uplink, when it cannot be found in the main table. */
export const VIA_LABEL = 'docker-egress.via';
export const VIA6_LABEL = 'docker-egress.via6';
/** The labels whose value may be a per-node list (core/per-node.ts). */
export const ADDRESS_LABELS = [SOURCE_IP_LABEL, SOURCE_IPV6_LABEL, VIA_LABEL, VIA6_LABEL] as const;
export const BRIDGE_NAME_OPTION = 'com.docker.network.bridge.name';
export const MASQUERADE_OPTION = 'com.docker.network.bridge.enable_ip_masquerade';

/** The facts of a Docker network this tool needs (mapped from the Engine API by the adapter). */
export type DockerNetwork = {
	id: string;
	name: string;
	driver: string;
	labels: Record<string, string>;
	options: Record<string, string>;
	/** IPAM subnets as Docker reports them, any family. */
	subnets: string[];
};

export type HostAddress = {
	interface: string;
	address: string;
	prefix: number;
	family: 'ipv4' | 'ipv6';
};

/** A main-table route of the host other than the default (IPv4). */
export type HostRoute = { destination: string; interface: string };

/** An egress source IP for a network docker egress did not create, by network name. */
export type Policy = { network: string; sourceIp: string; sourceIpv6?: string; via?: string; via6?: string };

export type EgressNetwork = {
	id: string;
	name: string;
	/** Where the intent comes from: the network's label, or a policy (`docker egress set`). */
	via: 'label' | 'policy';
	bridge: string;
	/** Canonical IPv4 subnets of the network. */
	subnets: string[];
	/** The source IP: the label's value as written, or this node's entry of a per-node list (the list when it has none). */
	sourceIp: string;
	/** Canonical IPv6 subnets of the network. */
	subnets6: string[];
	/** The IPv6 source (label docker-egress.source-ipv6 or the policy's), when the network has one. */
	sourceIpv6?: string;
	/** Whether Docker's own MASQUERADE is on for it (it then fails open without our rule). */
	masquerade: boolean;
	/** Gateway asked for (label docker-egress.via or the policy's via). */
	gateway?: string;
	/** IPv6 gateway asked for (label docker-egress.via6 or the policy's via6). */
	gateway6?: string;
	/** Set by attachUplinks: the uplink table its subnet is routed through, when not the main one. */
	uplink?: { interface: string; table: number; gateway: string; connected: string };
	uplink6?: { interface: string; table: number; gateway: string; connected: string };
	/** Why no rule can be made for it; undefined when the network is valid. */
	problem?: string;
	/**
	 * Fail closed: set when the problem is its source address (not on the host now, unusable, of the
	 * wrong family, no way out): the families whose outbound traffic is dropped until it can be
	 * served. A problem without it (not a bridge, overlapping subnets) leaves the network alone.
	 */
	blocked?: { ipv4: boolean; ipv6: boolean };
	/** The only source problem is that the address is not on the host now: status `source-missing`. */
	sourceMissing?: boolean;
	/**
	 * Set for a container's own egress address (core/container.ts): then id and name are the
	 * container's, and subnets are its addresses on that network (/32, /128).
	 */
	container?: { network: string; networkId: string; running: boolean; address?: string; address6?: string };
};

/** How messages name an entry: `network NAME`, or `container NAME (network NET)`. */
export function subjectOf(network: Pick<EgressNetwork, 'name' | 'container'>): string {
	return network.container ? `container ${network.name} (network ${network.container.network})` : `network ${network.name}`;
}

/** Whether the network's traffic of this family is served by an SNAT rule. */
export function servesFamily(network: EgressNetwork, family: 'ipv4' | 'ipv6'): boolean {
	if (family === 'ipv6' && network.sourceIpv6 === undefined) {
		return false;
	}

	return network.problem === undefined || (network.blocked !== undefined && !network.blocked[family]);
}

/** Whether the network's outbound traffic of this family is dropped (fail closed). */
export function blocksFamily(network: EgressNetwork, family: 'ipv4' | 'ipv6'): boolean {
	return network.problem !== undefined && network.blocked?.[family] === true;
}

export function bridgeName(network: Pick<DockerNetwork, 'id' | 'options'>): string {
	return network.options[BRIDGE_NAME_OPTION] ?? `br-${network.id.slice(0, 12)}`;
}

/** Every Docker bridge's interface name: traffic leaving through one of them is not egress. */
export function dockerBridges(networks: DockerNetwork[]): Set<string> {
	return new Set(networks.filter((network) => network.driver === 'bridge').map((network) => bridgeName(network)));
}

export function isEgressNetwork(network: Pick<DockerNetwork, 'labels'>): boolean {
	return SOURCE_IP_LABEL in network.labels;
}

/**
 * Every labelled network, and every network a policy names, each with its problem if it has one,
 * sorted by name. A label wins over a policy for the same network. Without `hostAddresses` (a
 * remote daemon), whether the host has each source IP is not checked. With `hostRoutes` too, a
 * subnet that overlaps the host's own addresses or routes is a problem, as `create` refuses it:
 * the network's rule would rewrite the host's own traffic to that subnet's addresses.
 */
export function egressNetworks(networks: DockerNetwork[], hostAddresses: HostAddress[] | undefined, policies: Policy[] = [], hostRoutes?: HostRoute[], node?: NodeIdentity): EgressNetwork[] {
	const byName = new Map(policies.map((policy) => [policy.network, policy]));
	const bridges = new Set(networks.map((network) => bridgeName(network)));
	return withoutOverlaps(
		networks
			.filter((network) => isEgressNetwork(network) || byName.has(network.name))
			.map((network) => toEgressNetwork(network, hostAddresses, byName.get(network.name), node))
			.map((network) => {
				const structural = network.problem !== undefined && network.blocked === undefined;
				const problem = structural || !hostAddresses || !hostRoutes ? undefined : hostOverlapProblem(network, { addresses: hostAddresses, routes: hostRoutes }, bridges);
				return problem ? withoutBlock({ ...network, problem }) : network;
			})
			.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)),
	);
}

function hostOverlapProblem(network: EgressNetwork, host: { addresses: HostAddress[]; routes: HostRoute[] }, dockerBridges: ReadonlySet<string>): string | undefined {
	for (const subnet of network.subnets) {
		const overlap = subnetHostOverlap(parseIpv4Cidr(subnet)!, host, dockerBridges);
		if (overlap) {
			return `${overlap}: its rule would rewrite the host's own traffic there`;
		}
	}

	for (const subnet of network.sourceIpv6 === undefined ? [] : network.subnets6) {
		const overlap = subnet6HostOverlap(parseIpv6Cidr(subnet)!, host.addresses, dockerBridges);
		if (overlap) {
			return `${overlap}: its rule would rewrite the host's own traffic there`;
		}
	}

	return undefined;
}

/**
 * How `subnet` overlaps the subnet of a host address or a host route outside Docker's bridges
 * (those are Docker's networks, checked against each other elsewhere), or undefined.
 */
/** A route shorter than this is taken for a default route (VPN clients split 0/0 into two /1). */
const DEFAULT_LIKE_PREFIX = 8;

export function subnetHostOverlap(subnet: Cidr, host: { addresses: HostAddress[]; routes: HostRoute[] }, dockerBridges: ReadonlySet<string>): string | undefined {
	for (const address of host.addresses) {
		const connected = address.family === 'ipv4' ? parseIpv4Cidr(`${address.address}/${address.prefix}`) : undefined;
		if (connected && cidrsOverlap(subnet, connected) && !dockerBridges.has(address.interface)) {
			return `subnet ${subnet.text} overlaps ${connected.text}, the subnet of ${address.address} on host interface ${address.interface}`;
		}
	}

	for (const route of host.routes) {
		const destination = parseIpv4Cidr(route.destination.includes('/') ? route.destination : `${route.destination}/32`);
		// Routes shorter than /8 are default routes in all but name (a VPN's 0.0.0.0/1 and 128.0.0.0/1):
		// they say nothing about the subnet. A site route (10.5.0.0/16 via eth1) does: it is the host's.
		if (destination && destination.prefix >= DEFAULT_LIKE_PREFIX && cidrsOverlap(subnet, destination) && !dockerBridges.has(route.interface)) {
			return `subnet ${subnet.text} overlaps the host route ${route.destination} via ${route.interface || 'unknown device'}`;
		}
	}

	return undefined;
}

/** The IPv6 half of subnetHostOverlap: the subnets of the host's global addresses. */
export function subnet6HostOverlap(subnet: Cidr6, addresses: HostAddress[], dockerBridges: ReadonlySet<string>): string | undefined {
	for (const address of addresses) {
		const connected = address.family === 'ipv6' && !unusableIpv6Reason(address.address) ? parseIpv6Cidr(`${address.address}/${address.prefix}`) : undefined;
		if (connected && cidrs6Overlap(subnet, connected) && !dockerBridges.has(address.interface)) {
			return `subnet ${subnet.text} overlaps the subnet of ${address.address} on host interface ${address.interface}`;
		}
	}

	return undefined;
}

/**
 * Two egress networks whose subnets overlap (possible with other IPAM drivers) cannot both be
 * served: a source address maps to one egress address. The later one (by name) is skipped.
 */
function withoutOverlaps(networks: EgressNetwork[]): EgressNetwork[] {
	const taken: Array<{ network: string; subnet: string; range: { start: bigint; end: bigint } }> = [];
	return networks.map((network) => {
		if (network.problem !== undefined && network.blocked === undefined) {
			return network;
		}

		const mine = [...network.subnets, ...(network.sourceIpv6 === undefined ? [] : network.subnets6)].map((subnet) => ({ subnet, range: subnetRange(subnet) }));
		for (const { subnet, range } of mine) {
			const other = taken.find((t) => t.range.start <= range.end && range.start <= t.range.end && subnet.includes(':') === t.subnet.includes(':'));
			if (other) {
				return withoutBlock({ ...network, problem: `subnet ${subnet} overlaps ${other.subnet} of egress network ${other.network}` });
			}
		}

		taken.push(...mine.map((entry) => ({ network: network.name, ...entry })));
		return network;
	});
}

/** A structural problem replaces a source problem: nothing is written for the network then. */
function withoutBlock(network: EgressNetwork): EgressNetwork {
	const { blocked: _blocked, sourceMissing: _missing, ...rest } = network;
	return rest;
}

function subnetRange(subnet: string): { start: bigint; end: bigint } {
	const cidr = subnet.includes(':') ? parseIpv6Cidr(subnet)! : parseIpv4Cidr(subnet)!;
	return { start: BigInt(cidr.start), end: BigInt(cidr.end) };
}

/**
 * The address labels of a network or container as they stand on `node`: per-node lists resolved
 * to this node's entry (core/per-node.ts). A list that is malformed, or names no address for this
 * node, is a source problem of its family (the network or container fails closed: a node without
 * an address of its own for it never lets its traffic out from another one); a list without this
 * node for `via`/`via6` just gives no gateway. A list without an entry keeps its text as the value.
 */
export function addressLabels(labels: Record<string, string>, node: NodeIdentity | undefined): { sourceIp?: string; sourceIpv6?: string; via?: string; via6?: string; problem4?: SourceProblem; problem6?: SourceProblem } {
	const result: ReturnType<typeof addressLabels> = {};
	const pick = (label: string, check: (value: string) => string | undefined, optional: boolean): { value?: string; problem?: SourceProblem } => {
		const raw = labels[label];
		if (raw === undefined) {
			return {};
		}

		const choice = valueForNode(label, raw, node, check);
		if ('value' in choice) {
			return { value: choice.value };
		}

		return optional && choice.notForNode ? {} : { ...(optional ? {} : { value: raw }), problem: { text: choice.problem, missing: choice.notForNode } };
	};
	const source4 = pick(SOURCE_IP_LABEL, (value) => sourceIpProblem(value, undefined), false);
	const source6 = pick(SOURCE_IPV6_LABEL, (value) => sourceIpv6Problem(value, undefined), false);
	const via4 = pick(VIA_LABEL, (value) => (isIPv4(value) ? undefined : 'not an IPv4 address'), true);
	const via6 = pick(VIA6_LABEL, (value) => (isIPv6(value) ? undefined : 'not an IPv6 address'), true);
	for (const [key, value] of [['sourceIp', source4.value], ['sourceIpv6', source6.value], ['via', via4.value], ['via6', via6.value]] as const) {
		if (value !== undefined) {
			result[key] = value;
		}
	}

	const problem4 = source4.problem ?? via4.problem;
	const problem6 = source6.problem ?? via6.problem;
	return { ...result, ...(problem4 ? { problem4 } : {}), ...(problem6 ? { problem6 } : {}) };
}

export function toEgressNetwork(network: DockerNetwork, hostAddresses: HostAddress[] | undefined, policy?: Policy, node?: NodeIdentity): EgressNetwork {
	const labelled = isEgressNetwork(network);
	const fromLabels = labelled ? addressLabels(network.labels, node) : undefined;
	const sourceIp = fromLabels ? (fromLabels.sourceIp ?? '') : (policy?.sourceIp ?? '');
	const subnets = network.subnets.flatMap((subnet) => {
		const cidr = parseIpv4Cidr(subnet);
		return cidr ? [cidr.text] : [];
	});
	const subnets6 = network.subnets.flatMap((subnet) => {
		const cidr = parseIpv6Cidr(subnet);
		return cidr ? [cidr.text] : [];
	});
	const egress: EgressNetwork = {
		id: network.id,
		name: network.name,
		via: labelled || !policy ? 'label' : 'policy',
		bridge: bridgeName(network),
		subnets,
		sourceIp,
		subnets6,
		masquerade: network.options[MASQUERADE_OPTION] !== 'false',
	};
	const sourceIpv6 = fromLabels ? fromLabels.sourceIpv6 : policy?.sourceIpv6;
	if (sourceIpv6 !== undefined) {
		egress.sourceIpv6 = isIPv6(sourceIpv6) ? canonicalIpv6(sourceIpv6) : sourceIpv6;
	}

	const gateway = fromLabels ? fromLabels.via : policy?.via;
	if (gateway) {
		egress.gateway = gateway;
	}

	const gateway6 = fromLabels ? fromLabels.via6 : policy?.via6;
	if (gateway6) {
		egress.gateway6 = gateway6;
	}

	const structural = structuralProblem(network, egress);
	if (structural) {
		return { ...egress, problem: structural };
	}

	// A per-node list that is malformed or names no address for this node: as a source problem.
	const ipv4 = fromLabels?.problem4 ?? sourceProblem4(egress, hostAddresses);
	const ipv6 = fromLabels?.problem6 ?? sourceProblem6(egress, hostAddresses);
	if (!ipv4 && !ipv6) {
		return egress;
	}

	// Fail closed: the network's traffic of that family leaves from no address until its own is back.
	return {
		...egress,
		problem: [ipv4?.text, ipv6?.text].filter((text) => text !== undefined).join('; '),
		blocked: { ipv4: ipv4 !== undefined, ipv6: ipv6 !== undefined && egress.subnets6.length > 0 },
		...((ipv4 === undefined || ipv4.missing) && (ipv6 === undefined || ipv6.missing) ? { sourceMissing: true } : {}),
	};
}

/** What makes the network unservable whatever its source: nothing is written for it. */
function structuralProblem(network: DockerNetwork, egress: EgressNetwork): string | undefined {
	if (network.driver !== 'bridge') {
		return `it is a ${network.driver} network; only bridge networks can have an egress source IP`;
	}

	if (!/^[\w.-]{1,15}$/.test(egress.bridge)) {
		// Linux takes more (quotes, backslashes, `*`), but in an nft interface match `*` is a wildcard
		// and quotes cannot be written at all: such a name could never be matched exactly.
		return `its bridge name ${JSON.stringify(egress.bridge)} has characters other than letters, digits, '_', '.', '-' (or is longer than 15)`;
	}

	if (egress.subnets.length === 0) {
		return 'it has no IPv4 subnet';
	}

	if (egress.sourceIpv6 !== undefined && egress.subnets6.length === 0) {
		return 'it has an IPv6 source but no IPv6 subnet (create it with --ipv6 and an IPv6 subnet)';
	}

	return undefined;
}

/** Why a source cannot be served; `missing`: only because it is not on this host (status `source-missing`). */
export type SourceProblem = { text: string; missing: boolean };

function sourceProblem4(egress: EgressNetwork, hostAddresses: HostAddress[] | undefined): SourceProblem | undefined {
	// Inside its own subnet first: that is never a matter of time (a bridge gateway is not a host address either).
	for (const subnet of egress.subnets) {
		if (isIPv4(egress.sourceIp) && cidrContains(parseIpv4Cidr(subnet)!, egress.sourceIp)) {
			return { text: `source IP ${egress.sourceIp} is inside the network's own subnet ${subnet}`, missing: false };
		}
	}

	const problem = sourceIpProblem(egress.sourceIp, hostAddresses);
	if (problem) {
		const source = egress.via === 'label' ? `label ${SOURCE_IP_LABEL}=${JSON.stringify(egress.sourceIp)}` : `policy source IP ${JSON.stringify(egress.sourceIp)}`;
		return { text: `${source}: ${problem}`, missing: sourceIpProblem(egress.sourceIp, undefined) === undefined };
	}

	return undefined;
}

function sourceProblem6(egress: EgressNetwork, hostAddresses: HostAddress[] | undefined): SourceProblem | undefined {
	if (egress.sourceIpv6 === undefined) {
		return undefined;
	}

	for (const subnet of egress.subnets6) {
		if (isIPv6(egress.sourceIpv6) && cidr6Contains(parseIpv6Cidr(subnet)!, egress.sourceIpv6)) {
			return { text: `source IPv6 ${egress.sourceIpv6} is inside the network's own subnet ${subnet}`, missing: false };
		}
	}

	const problem = sourceIpv6Problem(egress.sourceIpv6, hostAddresses);
	if (problem) {
		const text = `${egress.via === 'label' ? `label ${SOURCE_IPV6_LABEL}` : 'policy source IPv6'}=${JSON.stringify(egress.sourceIpv6)}: ${problem}`;
		return { text, missing: sourceIpv6Problem(egress.sourceIpv6, undefined) === undefined };
	}

	return undefined;
}

/** Why `ip` cannot be the IPv6 egress source on this host, or undefined when it can. */
export function sourceIpv6Problem(ip: string, hostAddresses: HostAddress[] | undefined): string | undefined {
	const family = addressFamily(ip);
	if (!family) {
		return 'not an IP address';
	}

	if (family === 'ipv4') {
		return 'an IPv4 address cannot be the source of IPv6 traffic; give an IPv6 address';
	}

	const unusable = unusableIpv6Reason(ip);
	if (unusable) {
		return `${ip} ${unusable}`;
	}

	const canonical = canonicalIpv6(ip);
	if (hostAddresses && !hostAddresses.some((host) => host.family === 'ipv6' && canonicalIpv6(host.address) === canonical)) {
		const usable = hostAddresses.filter((host) => host.family === 'ipv6' && !unusableIpv6Reason(host.address));
		return `${ip} is not an address of this host (its IPv6 addresses: ${usable.length === 0 ? 'none' : usable.map((host) => `${host.address} on ${host.interface}`).join(', ')})`;
	}

	return undefined;
}

/** Why `ip` cannot be the IPv4 egress source on this host, or undefined when it can. */
export function sourceIpProblem(ip: string, hostAddresses: HostAddress[] | undefined): string | undefined {
	const family = addressFamily(ip);
	if (!family) {
		return 'not an IP address';
	}

	if (family === 'ipv6') {
		return 'an IPv6 address cannot be the source of IPv4 traffic; give an IPv4 address';
	}

	const unusable = unusableIpv4Reason(ip);
	if (unusable) {
		return `${ip} ${unusable}`;
	}

	if (hostAddresses && !hostAddresses.some((host) => host.family === 'ipv4' && host.address === ip)) {
		return `${ip} is not an address of this host (its IPv4 addresses: ${describeHostAddresses(hostAddresses)})`;
	}

	return undefined;
}

/**
 * The host's own addresses, less those on Docker's bridges (a bridge gateway is not a way out of
 * the host, so it is never a usable egress source).
 */
export function uplinkAddresses(hostAddresses: HostAddress[], networks: DockerNetwork[]): HostAddress[] {
	const bridges = new Set(networks.filter((network) => network.driver === 'bridge').map((network) => bridgeName(network)));
	return hostAddresses.filter((address) => !bridges.has(address.interface));
}

export function describeHostAddresses(hostAddresses: HostAddress[]): string {
	const usable = hostAddresses.filter((host) => host.family === 'ipv4' && !unusableIpv4Reason(host.address));
	return usable.length === 0 ? 'none' : usable.map((host) => `${host.address} on ${host.interface}`).join(', ');
}
