// Per-container egress: a container labelled `docker-egress.source-ip` (and/or `-ipv6`) egresses
// from that address on every bridge network it is on — an egress network (the container's label
// wins), any other user-defined bridge, the default bridge. Each (container, network) pair becomes
// an EgressNetwork whose "subnets" are the container's own addresses there (/32, /128), so the one
// reconcile path, validation, fail closed, policy routing and status serve containers as they serve
// networks. Pure: Docker and host facts come in as plain values.
import { isIPv4, isIPv6 } from 'node:net';
import { canonicalIpv6, cidr6Contains, cidrContains, parseIpv4Cidr, parseIpv6Cidr } from './address.js';
import type { NodeIdentity } from './per-node.js';
import {
	addressLabels,
	bridgeName,
	MASQUERADE_OPTION,
	SOURCE_IP_LABEL,
	SOURCE_IPV6_LABEL,
	sourceIpProblem,
	sourceIpv6Problem,
	type DockerNetwork,
	type EgressNetwork,
	type HostAddress,
	type SourceProblem,
} from './network.js';

/** The facts of a Docker container this tool needs (mapped from the Engine API by the adapter). */
export type DockerContainer = {
	id: string;
	name: string;
	labels: Record<string, string>;
	running: boolean;
	/** HostConfig.NetworkMode: `host`, `none`, `container:…`, `default`, `bridge`, a network name. */
	networkMode: string;
	/** Its attachment to each network, by network name, with the addresses Docker gave it there. */
	endpoints: Array<{ network: string; networkId: string; ipv4?: string | undefined; ipv6?: string | undefined }>;
};

export function hasEgressLabel(container: Pick<DockerContainer, 'labels'>): boolean {
	return SOURCE_IP_LABEL in container.labels || SOURCE_IPV6_LABEL in container.labels;
}

/**
 * One entry per network of every labelled container (running or not; a stopped one has no
 * address, so no rule), each with its problem if it has one. `networks` are the egress networks
 * as computed for this host: a container on one that fails closed fails closed with it. `node`:
 * this node, for labels whose value is a per-node list (core/per-node.ts).
 */
export function egressContainers(containers: DockerContainer[], dockerNetworks: DockerNetwork[], networks: EgressNetwork[], hostAddresses: HostAddress[] | undefined, node?: NodeIdentity): EgressNetwork[] {
	const byId = new Map(dockerNetworks.map((network) => [network.id, network]));
	const byName = new Map(dockerNetworks.map((network) => [network.name, network]));
	const egressById = new Map(networks.map((network) => [network.id, network]));
	return containers
		.filter((container) => hasEgressLabel(container))
		.flatMap((container) => {
			if (container.endpoints.length === 0) {
				const mode = container.networkMode.startsWith('container:') ? 'it shares the network namespace of another container' : `it has no network of its own (network mode ${container.networkMode || 'none'})`;
				return [entry(container, { network: container.networkMode || 'none', networkId: '' }, undefined, hostAddresses, node, `${mode}: no address to egress from`)];
			}

			return container.endpoints.map((endpoint) => {
				const network = byId.get(endpoint.networkId) ?? byName.get(endpoint.network);
				const item = entry(container, endpoint, network, hostAddresses, node);
				if (item.problem !== undefined || !network) {
					return item;
				}

				// Its network fails closed (its own source cannot be served): so does the container,
				// whose traffic the network's drop covers.
				const egress = egressById.get(network.id);
				if (egress?.blocked && egress.problem) {
					const blocked = { ipv4: egress.blocked.ipv4 && item.subnets.length > 0, ipv6: egress.blocked.ipv6 && item.subnets6.length > 0 };
					if (blocked.ipv4 || blocked.ipv6) {
						return { ...item, problem: `its network ${network.name} fails closed: ${egress.problem}`, blocked, ...(egress.sourceMissing ? { sourceMissing: true } : {}) };
					}
				}

				return item;
			});
		})
		.sort((a, b) => compare(a.name, b.name) || compare(a.container!.network, b.container!.network));
}

function entry(
	container: DockerContainer,
	endpoint: { network: string; networkId: string; ipv4?: string | undefined; ipv6?: string | undefined },
	network: DockerNetwork | undefined,
	hostAddresses: HostAddress[] | undefined,
	node: NodeIdentity | undefined,
	fixedProblem?: string,
): EgressNetwork {
	const fromLabels = addressLabels(container.labels, node);
	const sourceIp = fromLabels.sourceIp;
	const rawIpv6 = fromLabels.sourceIpv6;
	const sourceIpv6 = rawIpv6 === undefined ? undefined : isIPv6(rawIpv6) ? canonicalIpv6(rawIpv6) : rawIpv6;
	const address = container.running && sourceIp !== undefined ? endpoint.ipv4 : undefined;
	const address6 = container.running && sourceIpv6 !== undefined && endpoint.ipv6 ? canonicalIpv6(endpoint.ipv6) : undefined;
	const base: EgressNetwork = {
		id: container.id,
		name: container.name,
		via: 'label',
		bridge: network ? bridgeName(network) : '',
		subnets: address ? [`${address}/32`] : [],
		sourceIp: sourceIp ?? '',
		subnets6: address6 ? [`${address6}/128`] : [],
		...(sourceIpv6 === undefined ? {} : { sourceIpv6 }),
		masquerade: network?.options[MASQUERADE_OPTION] !== 'false',
		...(fromLabels.via ? { gateway: fromLabels.via } : {}),
		...(fromLabels.via6 ? { gateway6: fromLabels.via6 } : {}),
		container: { network: network?.name ?? endpoint.network, networkId: network?.id ?? endpoint.networkId, running: container.running, ...(endpoint.ipv4 ? { address: endpoint.ipv4 } : {}), ...(endpoint.ipv6 ? { address6: canonicalIpv6(endpoint.ipv6) } : {}) },
	};
	const structural = fixedProblem ?? structuralProblem(container, endpoint, network, base);
	if (structural) {
		return { ...base, subnets: [], subnets6: [], problem: structural };
	}

	if (!container.running) {
		return base;
	}

	// A per-node list that is malformed or names no address for this node: as a source problem.
	const ipv4 = sourceIp === undefined ? undefined : (fromLabels.problem4 ?? source4Problem(sourceIp, network!, hostAddresses));
	const ipv6 = sourceIpv6 === undefined ? undefined : (fromLabels.problem6 ?? source6Problem(sourceIpv6, network!, hostAddresses));
	if (!ipv4 && !ipv6) {
		return base;
	}

	return {
		...base,
		problem: [ipv4?.text, ipv6?.text].filter((text) => text !== undefined).join('; '),
		blocked: { ipv4: ipv4 !== undefined && base.subnets.length > 0, ipv6: ipv6 !== undefined && base.subnets6.length > 0 },
		...((ipv4 === undefined || ipv4.missing) && (ipv6 === undefined || ipv6.missing) ? { sourceMissing: true } : {}),
	};
}

function structuralProblem(container: DockerContainer, endpoint: { network: string }, network: DockerNetwork | undefined, base: EgressNetwork): string | undefined {
	if (!network) {
		return `its network ${endpoint.network} was not found`;
	}

	if (network.driver !== 'bridge') {
		const what = network.driver === 'host' ? 'the host network (it has no address of its own)' : network.driver === 'null' ? 'no network (none)' : `the ${network.driver} network ${network.name}`;
		return `it is on ${what}: only containers on bridge networks can have an egress source IP`;
	}

	if (!/^[\w.-]{1,15}$/.test(base.bridge)) {
		return `the bridge name ${JSON.stringify(base.bridge)} of network ${network.name} cannot be matched exactly`;
	}

	if (container.running && container.labels[SOURCE_IP_LABEL] !== undefined && base.subnets.length === 0) {
		return `it has no IPv4 address on network ${network.name}`;
	}

	return undefined;
}

function source4Problem(ip: string, network: DockerNetwork, hostAddresses: HostAddress[] | undefined): SourceProblem | undefined {
	// Inside its own subnet first: that is never a matter of time (a bridge gateway is not a host address either).
	for (const subnet of network.subnets) {
		const cidr = parseIpv4Cidr(subnet);
		if (cidr && isIPv4(ip) && cidrContains(cidr, ip)) {
			return { text: `source IP ${ip} is inside the subnet ${cidr.text} of its network ${network.name}`, missing: false };
		}
	}

	const problem = sourceIpProblem(ip, hostAddresses);
	if (problem) {
		return { text: `label ${SOURCE_IP_LABEL}=${JSON.stringify(ip)}: ${problem}`, missing: sourceIpProblem(ip, undefined) === undefined };
	}

	return undefined;
}

function source6Problem(ip: string, network: DockerNetwork, hostAddresses: HostAddress[] | undefined): SourceProblem | undefined {
	for (const subnet of network.subnets) {
		const cidr = parseIpv6Cidr(subnet);
		if (cidr && isIPv6(ip) && cidr6Contains(cidr, ip)) {
			return { text: `source IPv6 ${ip} is inside the subnet ${cidr.text} of its network ${network.name}`, missing: false };
		}
	}

	const problem = sourceIpv6Problem(ip, hostAddresses);
	if (problem) {
		return { text: `label ${SOURCE_IPV6_LABEL}=${JSON.stringify(ip)}: ${problem}`, missing: sourceIpv6Problem(ip, undefined) === undefined };
	}

	return undefined;
}

function compare(a: string, b: string): number {
	return a < b ? -1 : a > b ? 1 : 0;
}
