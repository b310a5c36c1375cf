// Policy routing for source IPs on an uplink that the default route does not use. SNAT alone
// would send such packets out of the default uplink with an address its provider does not own,
// and anti-spoofing routers (BCP 38) drop them. For each such network we route its subnet
// through a table of our own that holds that uplink's real routes. Pure: facts come in as values.
import { isIPv6 } from 'node:net';
import { canonicalIpv6, cidr6Contains, cidrContains, parseIpv4Cidr, parseIpv6Cidr } from './address.js';
import { servesFamily, type EgressNetwork, type HostAddress } from './network.js';

/** Routes and rules we own carry this protocol number (see /etc/iproute2/rt_protos). */
export const ROUTE_PROTOCOL = 211;
/** `from SUBNET lookup main suppress_prefixlength 0`: the host's own routes, but not its default. */
export const RULE_PRIORITY_MAIN = 10_000;
/** `from SUBNET lookup TABLE`: then the uplink's table. */
export const RULE_PRIORITY_UPLINK = 10_001;
/**
 * A container's own address (a /32 or /128) is looked up before its network's subnet: the kernel
 * puts a rule after others of the same priority, so equal priorities would let the network's win.
 */
export const RULE_PRIORITY_CONTAINER_MAIN = 9_998;
export const RULE_PRIORITY_CONTAINER_UPLINK = 9_999;
/** Table of an uplink: TABLE_BASE + the interface's index. */
export const TABLE_BASE = 20_000;

export type Family = 'ipv4' | 'ipv6';
export type MainRoute = { destination: string; gateway?: string; interface: string; metric?: number; family?: Family };
export type Link = { interface: string; index: number };

export type RoutingFacts = {
	addresses: HostAddress[];
	/** Main-table routes, default included. */
	routes: MainRoute[];
	links: Link[];
};

export type PolicyRule = { from: string; priority: number; table: number | 'main'; suppressPrefixLength?: number; family?: Family };
export type TableRoute = { table: number; destination: string; gateway?: string; interface: string; source?: string; family?: Family };

export type Uplink = { interface: string; table: number; gateway: string; connected: string };

/**
 * The uplink a network must be routed through, undefined when the main table already sends its
 * traffic out of the right interface, or a problem when no gateway can be determined.
 */
export function uplinkFor(network: { sourceIp: string; gateway?: string }, facts: RoutingFacts, family: Family = 'ipv4'): Uplink | { problem: string } | undefined {
	const v6 = family === 'ipv6';
	const same = (a: string, b: string) => (v6 ? canonicalIpv6(a) === canonicalIpv6(b) : a === b);
	const address = facts.addresses.find((candidate) => candidate.family === family && same(candidate.address, network.sourceIp));
	if (!address) {
		return undefined;
	}

	const routes = facts.routes.filter((route) => (route.family ?? 'ipv4') === family);
	const defaults = routes.filter((route) => route.destination === 'default');
	if (defaults.length === 0 || defaults.some((route) => route.interface === address.interface)) {
		return undefined;
	}

	const connectedText = v6 ? parseIpv6Cidr(`${address.address}/${address.prefix}`)!.text : parseIpv4Cidr(`${address.address}/${address.prefix}`)!.text;
	const onLink = (ip: string) =>
		v6 ? isIPv6(ip) && cidr6Contains(parseIpv6Cidr(connectedText)!, ip) : Boolean(parseIpv4Cidr(`${ip}/32`)) && cidrContains(parseIpv4Cidr(connectedText)!, ip);
	const link = facts.links.find((candidate) => candidate.interface === address.interface);
	if (!link) {
		return { problem: `interface ${address.interface} of ${address.address} was not found` };
	}

	let gateway = network.gateway;
	const flag = v6 ? '--via6' : '--via';
	if (gateway !== undefined) {
		if (!onLink(gateway)) {
			return { problem: `gateway ${gateway} is not on ${connectedText}, the subnet of ${address.address} on ${address.interface}` };
		}
	} else {
		const viaRoutes = routes
			.filter((route) => route.interface === address.interface && route.gateway && onLink(route.gateway))
			.sort((a, b) => Number(b.destination === 'default') - Number(a.destination === 'default') || (a.metric ?? 0) - (b.metric ?? 0));
		gateway = viaRoutes[0]?.gateway;
		if (!gateway) {
			return {
				problem: `${address.address} is on ${address.interface}, which the default route does not use, and no gateway on ${address.interface} is in the main table; give it with ${flag} GATEWAY`,
			};
		}
	}

	return { interface: address.interface, table: TABLE_BASE + link.index, gateway, connected: connectedText };
}

/**
 * Gives each served family of each network its uplink. A family whose uplink cannot be found
 * cannot be served: it fails closed like a missing source address (its traffic is dropped).
 */
export function attachUplinks(networks: EgressNetwork[], facts: RoutingFacts): EgressNetwork[] {
	return networks.map((network) => {
		let result = network;
		if (servesFamily(network, 'ipv4') && network.subnets.length > 0) {
			const uplink = uplinkFor({ sourceIp: network.sourceIp, ...(network.gateway ? { gateway: network.gateway } : {}) }, facts);
			if (uplink !== undefined) {
				result = 'problem' in uplink ? blockFamily(result, 'ipv4', uplink.problem) : { ...result, uplink };
			}
		}

		if (network.sourceIpv6 !== undefined && servesFamily(result, 'ipv6') && network.subnets6.length > 0) {
			const uplink6 = uplinkFor({ sourceIp: network.sourceIpv6, ...(network.gateway6 ? { gateway: network.gateway6 } : {}) }, facts, 'ipv6');
			if (uplink6 !== undefined) {
				result = 'problem' in uplink6 ? blockFamily(result, 'ipv6', uplink6.problem) : { ...result, uplink6 };
			}
		}

		return result;
	});
}

function blockFamily(network: EgressNetwork, family: 'ipv4' | 'ipv6', problem: string): EgressNetwork {
	const { sourceMissing: _missing, ...rest } = network;
	return {
		...rest,
		problem: network.problem === undefined ? problem : `${network.problem}; ${problem}`,
		blocked: { ...(network.blocked ?? { ipv4: false, ipv6: false }), [family]: true },
	};
}

export type RoutingPlan = { rules: PolicyRule[]; routes: TableRoute[] };

/** What the kernel should hold for these networks (after attachUplinks). */
export function desiredRouting(networks: EgressNetwork[]): RoutingPlan {
	const entries = [
		...networks.filter((network) => servesFamily(network, 'ipv4')).flatMap((network) => (network.uplink ? [{ network, subnets: network.subnets, sourceIp: network.sourceIp, uplink: network.uplink, family: 'ipv4' as const }] : [])),
		...networks.filter((network) => servesFamily(network, 'ipv6')).flatMap((network) =>
			network.uplink6 && network.sourceIpv6 ? [{ network, subnets: network.subnets6, sourceIp: network.sourceIpv6, uplink: network.uplink6, family: 'ipv6' as const }] : [],
		),
	];
	const rules: PolicyRule[] = [];
	const routes = new Map<string, TableRoute>();
	for (const { network, subnets, sourceIp, uplink, family } of entries) {
		const tag = family === 'ipv6' ? { family } : {};
		const [main, up] = network.container ? [RULE_PRIORITY_CONTAINER_MAIN, RULE_PRIORITY_CONTAINER_UPLINK] : [RULE_PRIORITY_MAIN, RULE_PRIORITY_UPLINK];
		for (const subnet of subnets) {
			rules.push({ from: subnet, priority: main, table: 'main', suppressPrefixLength: 0, ...tag }, { from: subnet, priority: up, table: uplink.table, ...tag });
		}

		const connected: TableRoute = { table: uplink.table, destination: uplink.connected, interface: uplink.interface, source: sourceIp, ...tag };
		const defaultRoute: TableRoute = { table: uplink.table, destination: 'default', gateway: uplink.gateway, interface: uplink.interface, ...tag };
		routes.set(routeKey(connected), routes.get(routeKey(connected)) ?? connected);
		routes.set(routeKey(defaultRoute), defaultRoute);
	}

	// A container whose own address egresses through the main table, on a network routed through
	// another uplink: its address looks up main before the network's rule sends it elsewhere.
	const routed = new Set(entries.filter((entry) => !entry.network.container).map((entry) => `${entry.family} ${entry.network.id}`));
	for (const network of networks.filter((candidate) => candidate.container)) {
		for (const family of ['ipv4', 'ipv6'] as const) {
			const own = family === 'ipv4' ? network.uplink : network.uplink6;
			if (own || !servesFamily(network, family) || !routed.has(`${family} ${network.container!.networkId}`)) {
				continue;
			}

			for (const subnet of family === 'ipv4' ? network.subnets : network.subnets6) {
				rules.push({ from: subnet, priority: RULE_PRIORITY_CONTAINER_UPLINK, table: 'main', ...(family === 'ipv6' ? { family } : {}) });
			}
		}
	}

	return { rules, routes: [...routes.values()] };
}

export function ruleKey(rule: PolicyRule): string {
	return `${rule.family === 'ipv6' ? '-6 ' : ''}${rule.priority} from ${rule.from} lookup ${rule.table}${rule.suppressPrefixLength === undefined ? '' : ` suppress_prefixlength ${rule.suppressPrefixLength}`}`;
}

export function routeKey(route: TableRoute): string {
	return `${route.family === 'ipv6' ? '-6 ' : ''}table ${route.table} ${route.destination} dev ${route.interface}${route.gateway ? ` via ${route.gateway}` : ''}`;
}

export type RoutingDiff = { addRules: PolicyRule[]; deleteRules: PolicyRule[]; addRoutes: TableRoute[]; deleteRoutes: TableRoute[] };

export function diffRouting(actual: RoutingPlan, desired: RoutingPlan): RoutingDiff {
	const has = <T>(list: T[], key: (item: T) => string) => new Set(list.map(key));
	const actualRules = has(actual.rules, ruleKey);
	const desiredRules = has(desired.rules, ruleKey);
	const actualRoutes = has(actual.routes, routeKey);
	const desiredRoutes = has(desired.routes, routeKey);
	return {
		addRules: desired.rules.filter((rule) => !actualRules.has(ruleKey(rule))),
		deleteRules: actual.rules.filter((rule) => !desiredRules.has(ruleKey(rule))),
		addRoutes: desired.routes.filter((route) => !actualRoutes.has(routeKey(route))),
		deleteRoutes: actual.routes.filter((route) => !desiredRoutes.has(routeKey(route))),
	};
}

/** Whether the kernel holds every rule and route the network needs (trivially, if none). */
export function isRoutingActive(network: EgressNetwork, actual: RoutingPlan): boolean {
	const diff = diffRouting(actual, desiredRouting([network]));
	return diff.addRules.length === 0 && diff.addRoutes.length === 0;
}

export function isEmptyDiff(diff: RoutingDiff): boolean {
	return diff.addRules.length + diff.deleteRules.length + diff.addRoutes.length + diff.deleteRoutes.length === 0;
}

/** The `ip` argument vectors that carry a diff out: deletions first, then additions. */
export function routingCommands(diff: RoutingDiff): string[][] {
	const rule = (verb: string, r: PolicyRule) => [
		...(r.family === 'ipv6' ? ['-6'] : []),
		'rule',
		verb,
		'from',
		r.from,
		'lookup',
		String(r.table),
		...(r.suppressPrefixLength === undefined ? [] : ['suppress_prefixlength', String(r.suppressPrefixLength)]),
		'priority',
		String(r.priority),
		'protocol',
		String(ROUTE_PROTOCOL),
	];
	const route = (verb: string, r: TableRoute) => [
		...(r.family === 'ipv6' ? ['-6'] : []),
		'route',
		verb,
		r.destination,
		...(r.gateway ? ['via', r.gateway] : []),
		'dev',
		r.interface,
		...(r.source && verb !== 'del' ? ['src', r.source] : []),
		'table',
		String(r.table),
		'protocol',
		String(ROUTE_PROTOCOL),
	];
	return [
		...diff.deleteRules.map((r) => rule('del', r)),
		...diff.deleteRoutes.map((r) => route('del', r)),
		// Connected routes before default routes: the gateway must be reachable in the table.
		...[...diff.addRoutes].sort((a, b) => Number(a.destination === 'default') - Number(b.destination === 'default')).map((r) => route('replace', r)),
		...diff.addRules.map((r) => rule('add', r)),
	];
}
