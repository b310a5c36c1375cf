// The host's addresses, routes and interfaces, read with `ip -j` (iproute2's JSON output).
import type { HostAddress } from '../core/network.js';
import type { Link, MainRoute } from '../core/routing.js';

export type HostRoute = { destination: string; interface: string };

export type HostFacts = {
	addresses: HostAddress[];
	/** Main-table IPv4 routes other than the default, for overlap checks. */
	routes: HostRoute[];
	/** Every main-table IPv4 route, default included, with gateways: for policy routing. */
	mainRoutes: MainRoute[];
	interfaces: string[];
	links: Link[];
};

type IpAddrJson = Array<{
	ifname: string;
	ifindex?: number;
	addr_info?: Array<{ family: string; local?: string; prefixlen?: number }>;
}>;

type IpRouteJson = Array<{ dst: string; dev?: string; gateway?: string; metric?: number }>;

export async function readHostFacts(): Promise<HostFacts> {
	const { readIpState } = await import('./ip-state.js');
	return (await readIpState()).host;
}

export function parseHostFacts(addrText: string, routeText: string, route6Text = '[]'): HostFacts {
	const links = JSON.parse(addrText || '[]') as IpAddrJson;
	const routes = JSON.parse(routeText || '[]') as IpRouteJson;
	const routes6 = JSON.parse(route6Text || '[]') as IpRouteJson;
	const addresses = links.flatMap((link) =>
		(link.addr_info ?? []).flatMap((info): HostAddress[] =>
			(info.family === 'inet' || info.family === 'inet6') && info.local
				? [{ interface: link.ifname, address: info.local, prefix: info.prefixlen ?? 0, family: info.family === 'inet' ? 'ipv4' : 'ipv6' }]
				: [],
		),
	);
	return {
		addresses,
		routes: routes.filter((route) => route.dst !== 'default').map((route) => ({ destination: route.dst, interface: route.dev ?? '' })),
		mainRoutes: [
			...routes.map((route) => mainRoute(route, 'ipv4')),
			...routes6.map((route) => mainRoute(route, 'ipv6')),
		],
		interfaces: links.map((link) => link.ifname),
		links: links.map((link) => ({ interface: link.ifname, index: link.ifindex ?? 0 })),
	};
}

function mainRoute(route: IpRouteJson[number], family: 'ipv4' | 'ipv6'): MainRoute {
	return {
		destination: route.dst,
		interface: route.dev ?? '',
		family,
		...(route.gateway ? { gateway: route.gateway } : {}),
		...(route.metric === undefined ? {} : { metric: route.metric }),
	};
}
