// What `docker egress create` will ask Docker for, checked before anything changes. Two pure
// steps: `planCreate` checks the request on its own; `checkAgainstHost` checks it against the
// host's addresses and routes and the networks Docker already has.
import { createHash } from 'node:crypto';
import { ValidationError } from '../errors.js';
import { canonicalIpv6, cidr6Contains, cidrContains, cidrs6Overlap, cidrsOverlap, ipv4ToInt, parseIpv4Cidr, parseIpv6Cidr, type Cidr, type Cidr6 } from './address.js';
import { uplinkFor, type Link, type MainRoute } from './routing.js';
import { BRIDGE_NAME_OPTION, MASQUERADE_OPTION, SOURCE_IP_LABEL, SOURCE_IPV6_LABEL, VIA6_LABEL, VIA_LABEL, bridgeName, sourceIpv6Problem, isEgressNetwork, sourceIpProblem, subnet6HostOverlap, subnetHostOverlap, uplinkAddresses, type DockerNetwork, type HostAddress } from './network.js';

export type CreateRequest = {
	network: string;
	sourceIp: string;
	subnet?: string;
	gateway?: string;
	ipRange?: string;
	bridgeName?: string;
	/** Gateway of the source IP's uplink, when it is not the default route's and not in the main table. */
	via?: string;
	/** The same for the IPv6 source's uplink. */
	via6?: string;
	/** Dual stack: the IPv6 egress source, and optionally the network's IPv6 subnet. */
	sourceIpv6?: string;
	subnet6?: string;
	labels: string[];
	opts: string[];
};

export type CreatePlan = {
	network: string;
	sourceIp: string;
	bridge: string;
	subnet?: Cidr;
	gateway?: string;
	ipRange?: string;
	via?: string;
	via6?: string;
	sourceIpv6?: string;
	subnet6?: Cidr6;
	labels: Record<string, string>;
	options: Record<string, string>;
};

const NETWORK_NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;
const MAX_IFNAME_BYTES = 15;
const SMALLEST_SUBNET = 30;

export function planCreate(request: CreateRequest): CreatePlan {
	if (!NETWORK_NAME.test(request.network)) {
		throw new ValidationError(`invalid network name ${JSON.stringify(request.network)}: use letters, digits, and _ . - (not first)`);
	}

	const sourceProblem = sourceIpProblem(request.sourceIp, [{ interface: '', address: request.sourceIp, prefix: 32, family: 'ipv4' }]);
	if (sourceProblem) {
		throw new ValidationError(`invalid --source-ip ${JSON.stringify(request.sourceIp)}: ${sourceProblem}`);
	}

	const subnet = request.subnet === undefined ? undefined : parseSubnet(request.subnet);
	if (subnet && cidrContains(subnet, request.sourceIp)) {
		throw new ValidationError(`--source-ip ${request.sourceIp} is inside the network's own subnet ${subnet.text}; use an address of the host outside it`);
	}

	if ((request.gateway !== undefined || request.ipRange !== undefined) && !subnet) {
		throw new ValidationError('--gateway and --ip-range need --subnet');
	}

	let sourceIpv6: string | undefined;
	let subnet6: Cidr6 | undefined;
	if (request.subnet6 !== undefined && request.sourceIpv6 === undefined) {
		throw new ValidationError('--subnet6 needs --source-ipv6');
	}

	if (request.sourceIpv6 !== undefined) {
		const problem6 = sourceIpv6Problem(request.sourceIpv6, undefined);
		if (problem6) {
			throw new ValidationError(`invalid --source-ipv6 ${JSON.stringify(request.sourceIpv6)}: ${problem6}`);
		}

		sourceIpv6 = canonicalIpv6(request.sourceIpv6);
		if (request.subnet6 !== undefined) {
			subnet6 = parseIpv6Cidr(request.subnet6);
			if (!subnet6) {
				throw new ValidationError(`invalid --subnet6 ${JSON.stringify(request.subnet6)}: not an IPv6 CIDR such as 2001:db8:1::/64`);
			}

			if (subnet6.hostBitsSet) {
				throw new ValidationError(`invalid --subnet6 ${request.subnet6}: host bits are set; did you mean ${subnet6.text}?`);
			}

			if (subnet6.prefix > 126) {
				throw new ValidationError(`--subnet6 ${request.subnet6} is too small (use /126 or larger, /64 is usual)`);
			}

			if (cidr6Contains(subnet6, sourceIpv6)) {
				throw new ValidationError(`--source-ipv6 ${sourceIpv6} is inside the network's own subnet ${subnet6.text}; use an address of the host outside it`);
			}
		}
	}

	if (request.via6 !== undefined && (request.sourceIpv6 === undefined || !parseIpv6Cidr(`${request.via6}/128`))) {
		throw new ValidationError(`invalid --via6 ${JSON.stringify(request.via6)}: give the IPv6 gateway of --source-ipv6's uplink`);
	}

	if (request.via !== undefined && !parseIpv4Cidr(`${request.via}/32`)) {
		throw new ValidationError(`invalid --via ${JSON.stringify(request.via)}: not an IPv4 address`);
	}

	if (request.gateway !== undefined && subnet) {
		checkGateway(request.gateway, subnet);
	}

	if (request.ipRange !== undefined && subnet) {
		checkIpRange(request.ipRange, subnet);
	}

	const labels = parsePairs(request.labels, '--label');
	for (const key of Object.keys(labels)) {
		if (key.startsWith('docker-egress.')) {
			throw new ValidationError(`--label ${key}: the docker-egress.* labels are set by docker egress itself`);
		}
	}

	const options = parsePairs(request.opts, '--opt');
	const bridge = chooseBridgeName(request, options);
	if (options[MASQUERADE_OPTION] !== undefined && options[MASQUERADE_OPTION] !== 'false') {
		throw new ValidationError(`--opt ${MASQUERADE_OPTION}=${options[MASQUERADE_OPTION]}: egress networks keep masquerade off so that a missing rule fails closed`);
	}

	return {
		network: request.network,
		sourceIp: request.sourceIp,
		bridge,
		...(subnet ? { subnet } : {}),
		...(request.gateway === undefined ? {} : { gateway: request.gateway }),
		...(request.ipRange === undefined ? {} : { ipRange: parseIpv4Cidr(request.ipRange)!.text }),
		labels: {
			...labels,
			[SOURCE_IP_LABEL]: request.sourceIp,
			...(request.via === undefined ? {} : { [VIA_LABEL]: request.via }),
			...(sourceIpv6 === undefined ? {} : { [SOURCE_IPV6_LABEL]: sourceIpv6 }),
			...(request.via6 === undefined ? {} : { [VIA6_LABEL]: request.via6 }),
		},
		...(request.via6 === undefined ? {} : { via6: request.via6 }),
		...(request.via === undefined ? {} : { via: request.via }),
		...(sourceIpv6 === undefined ? {} : { sourceIpv6 }),
		...(subnet6 === undefined ? {} : { subnet6 }),
		options: { ...options, [BRIDGE_NAME_OPTION]: bridge, [MASQUERADE_OPTION]: 'false' },
	};
}

function parseSubnet(text: string): Cidr {
	if (text.includes(':')) {
		throw new ValidationError(`--subnet ${text}: IPv6 subnets are not supported yet; give an IPv4 subnet`);
	}

	const cidr = parseIpv4Cidr(text);
	if (!cidr) {
		throw new ValidationError(`invalid --subnet ${JSON.stringify(text)}: not an IPv4 CIDR such as 172.30.5.0/24`);
	}

	if (cidr.hostBitsSet) {
		throw new ValidationError(`invalid --subnet ${text}: host bits are set; did you mean ${cidr.text}?`);
	}

	if (cidr.prefix > SMALLEST_SUBNET) {
		throw new ValidationError(`--subnet ${text} is too small: a /${cidr.prefix} has no room for a gateway and a container (use /${SMALLEST_SUBNET} or larger)`);
	}

	return cidr;
}

function checkGateway(gateway: string, subnet: Cidr): void {
	if (!parseIpv4Cidr(`${gateway}/32`)) {
		throw new ValidationError(`invalid --gateway ${JSON.stringify(gateway)}: not an IPv4 address`);
	}

	const n = ipv4ToInt(gateway);
	if (!cidrContains(subnet, gateway) || n === subnet.start || n === subnet.end) {
		throw new ValidationError(`--gateway ${gateway} is not a usable address of --subnet ${subnet.text}`);
	}
}

function checkIpRange(ipRange: string, subnet: Cidr): void {
	const range = parseIpv4Cidr(ipRange);
	if (!range) {
		throw new ValidationError(`invalid --ip-range ${JSON.stringify(ipRange)}: not an IPv4 CIDR`);
	}

	if (range.hostBitsSet) {
		throw new ValidationError(`invalid --ip-range ${ipRange}: host bits are set; did you mean ${range.text}?`);
	}

	if (range.start < subnet.start || range.end > subnet.end) {
		throw new ValidationError(`--ip-range ${ipRange} is not inside --subnet ${subnet.text}`);
	}
}

function parsePairs(pairs: string[], flag: string): Record<string, string> {
	const result: Record<string, string> = {};
	for (const pair of pairs) {
		const equals = pair.indexOf('=');
		if (equals <= 0) {
			throw new ValidationError(`invalid ${flag} ${JSON.stringify(pair)}: expected key=value`);
		}

		result[pair.slice(0, equals)] = pair.slice(equals + 1);
	}

	return result;
}

function chooseBridgeName(request: CreateRequest, options: Record<string, string>): string {
	const fromOption = options[BRIDGE_NAME_OPTION];
	if (request.bridgeName !== undefined && fromOption !== undefined && fromOption !== request.bridgeName) {
		throw new ValidationError(`--bridge-name ${request.bridgeName} and --opt ${BRIDGE_NAME_OPTION}=${fromOption} disagree`);
	}

	const explicit = request.bridgeName ?? fromOption;
	if (explicit !== undefined) {
		const problem = bridgeNameProblem(explicit);
		if (problem) {
			throw new ValidationError(`invalid bridge name ${JSON.stringify(explicit)}: ${problem}`);
		}

		return explicit;
	}

	return bridgeNameProblem(request.network) ? derivedBridgeName(request.network) : request.network;
}

/** Why Linux (or iptables) would refuse `name` as an interface name. */
export function bridgeNameProblem(name: string): string | undefined {
	if (name === '' || name === '.' || name === '..') {
		return 'not a valid interface name';
	}

	if (Buffer.byteLength(name) > MAX_IFNAME_BYTES) {
		return `longer than ${MAX_IFNAME_BYTES} bytes, the limit of a Linux interface name`;
	}

	if (!/^[a-zA-Z0-9_.-]+$/.test(name) || name.startsWith('-')) {
		return 'use only letters, digits and _ . - (not first)';
	}

	return undefined;
}

/** A readable name for a network whose own name cannot be an interface name: prefix + hash. */
export function derivedBridgeName(network: string): string {
	const hash = createHash('sha256').update(network).digest('hex').slice(0, 6);
	const stem = network.replaceAll(/[^a-zA-Z0-9_.-]/g, '').slice(0, 8).replace(/^[-.]+/, '') || 'egress';
	return `${stem}-${hash}`;
}

export type HostView = {
	addresses: HostAddress[];
	routes: Array<{ destination: string; interface: string }>;
	mainRoutes: MainRoute[];
	interfaces: string[];
	links: Link[];
};

/** Checks the plan against the host and Docker; returns warnings, throws on a conflict. */
export function checkAgainstHost(plan: CreatePlan, host: HostView, networks: DockerNetwork[]): string[] {
	const addresses = uplinkAddresses(host.addresses, networks);
	const sourceProblem = sourceIpProblem(plan.sourceIp, addresses);
	if (sourceProblem) {
		throw new ValidationError(`--source-ip: ${sourceProblem}`);
	}

	const uplink = uplinkFor({ sourceIp: plan.sourceIp, ...(plan.via ? { gateway: plan.via } : {}) }, { addresses, routes: host.mainRoutes, links: host.links });
	if (uplink && 'problem' in uplink) {
		throw new ValidationError(uplink.problem);
	}

	if (networks.some((network) => network.name === plan.network)) {
		throw new ValidationError(`network with name ${plan.network} already exists`);
	}

	const bridgeOwner = networks.find((network) => network.driver === 'bridge' && bridgeName(network) === plan.bridge);
	if (bridgeOwner) {
		throw new ValidationError(`bridge name ${plan.bridge} is already used by network ${bridgeOwner.name}; choose another with --bridge-name`);
	}

	if (host.interfaces.includes(plan.bridge)) {
		throw new ValidationError(`an interface named ${plan.bridge} already exists on this host; choose another with --bridge-name`);
	}

	if (plan.subnet) {
		checkSubnetIsFree(plan.subnet, host, networks);
	}

	if (plan.sourceIpv6 !== undefined) {
		const problem6 = sourceIpv6Problem(plan.sourceIpv6, addresses);
		if (problem6) {
			throw new ValidationError(`--source-ipv6: ${problem6}`);
		}
	}

	if (plan.sourceIpv6 !== undefined) {
		const uplink6 = uplinkFor({ sourceIp: plan.sourceIpv6, ...(plan.via6 ? { gateway: plan.via6 } : {}) }, { addresses, routes: host.mainRoutes, links: host.links }, 'ipv6');
		if (uplink6 && 'problem' in uplink6) {
			throw new ValidationError(uplink6.problem);
		}
	}

	if (plan.subnet6) {
		checkSubnet6IsFree(plan.subnet6, host, networks);
	}

	return defaultRouteWarnings(plan.network, networks);
}

export function checkSubnetIsFree(subnet: Cidr, host: HostView, networks: DockerNetwork[], self?: string): void {
	for (const network of networks) {
		if (network.id === self) {
			continue;
		}

		for (const text of network.subnets) {
			const other = parseIpv4Cidr(text);
			if (other && cidrsOverlap(subnet, other)) {
				throw new ValidationError(`subnet ${subnet.text} overlaps ${other.text} of Docker network ${network.name}`);
			}
		}
	}

	const overlap = subnetHostOverlap(subnet, host, new Set(networks.map((network) => bridgeName(network))));
	if (overlap) {
		throw new ValidationError(overlap);
	}
}

export function checkSubnet6IsFree(subnet: Cidr6, host: HostView, networks: DockerNetwork[], self?: string): void {
	for (const network of networks) {
		for (const text of network.id === self ? [] : network.subnets) {
			const other = parseIpv6Cidr(text);
			if (other && cidrs6Overlap(subnet, other)) {
				throw new ValidationError(`subnet ${subnet.text} overlaps ${other.text} of Docker network ${network.name}`);
			}
		}
	}

	const overlap = subnet6HostOverlap(subnet, host.addresses, new Set(networks.map((network) => bridgeName(network))));
	if (overlap) {
		throw new ValidationError(overlap);
	}
}

/**
 * Docker gives a container on several networks its default route from the network whose name
 * sorts first (when priorities tie). A new network that sorts before existing ones can take it.
 * Other egress networks are left out: a container is not meant to be on two of them.
 */
export function defaultRouteWarnings(name: string, networks: DockerNetwork[]): string[] {
	const later = networks
		.filter((network) => network.driver === 'bridge' && !isEgressNetwork(network) && network.name > name)
		.map((network) => network.name)
		.sort();
	if (later.length === 0) {
		return [];
	}

	const shown = later.slice(0, 3).join(', ') + (later.length > 3 ? `, … (${later.length} in all)` : '');
	return [
		`network name ${name} sorts before ${shown}: a container attached to both may take its default route from ${name}. To avoid it, give egress networks a name that sorts last (a z_ prefix), or on Docker 28+ set --gw-priority when connecting.`,
	];
}
