// Our policy-routing rules and tables in the kernel, read with `ip -j` and changed with `ip`
// argument vectors. Only rules and routes tagged with our protocol number are ever touched.
import { readFile } from 'node:fs/promises';
import { ROUTE_PROTOCOL, routingCommands, type PolicyRule, type RoutingDiff, type RoutingPlan, type TableRoute } from '../core/routing.js';
import { runCommand } from './run.js';

type IpRuleJson = Array<{ priority?: number; src?: string; srclen?: number; table?: string; suppress_prefixlen?: number; protocol?: string | number }>;
type IpRouteJson = Array<{ dst: string; gateway?: string; dev?: string; table?: string; prefsrc?: string; protocol?: string | number }>;

export async function readRouting(): Promise<RoutingPlan> {
	const { readIpState } = await import('./ip-state.js');
	return (await readIpState()).routing;
}

export function parseRouting(ruleText: string, routeText: string, family: 'ipv4' | 'ipv6' = 'ipv4'): RoutingPlan {
	const tag = family === 'ipv6' ? { family } : {};
	const ours = (protocol: string | number | undefined) => String(protocol) === String(ROUTE_PROTOCOL);
	const rules = (JSON.parse(ruleText || '[]') as IpRuleJson)
		.filter((rule) => ours(rule.protocol) && rule.src && rule.priority !== undefined)
		.map(
			(rule): PolicyRule => ({
				// ip leaves out the length of a host address (a container's /32 or /128).
				from: `${rule.src!}/${rule.srclen ?? (family === 'ipv6' ? 128 : 32)}`,
				priority: rule.priority!,
				table: rule.table === 'main' ? 'main' : Number(rule.table),
				...(rule.suppress_prefixlen === undefined ? {} : { suppressPrefixLength: rule.suppress_prefixlen }),
				...tag,
			}),
		);
	const routes = (JSON.parse(routeText || '[]') as IpRouteJson)
		// Read with `proto 211`, which ip then leaves out of each route.
		.filter((route) => (route.protocol === undefined || ours(route.protocol)) && route.table !== undefined)
		.map(
			(route): TableRoute => ({
				table: Number(route.table),
				destination: route.dst,
				interface: route.dev ?? '',
				...(route.gateway ? { gateway: route.gateway } : {}),
				...(route.prefsrc ? { source: route.prefsrc } : {}),
				...tag,
			}),
		);
	return { rules, routes };
}

export async function applyRouting(diff: RoutingDiff): Promise<void> {
	for (const args of routingCommands(diff)) {
		await runCommand('ip', args);
	}
}

/** rp_filter of an interface as the kernel applies it: the higher of `all` and the interface's. */
export async function rpFilter(iface: string): Promise<number | undefined> {
	const read = async (name: string) => Number((await readFile(`/proc/sys/net/ipv4/conf/${name}/rp_filter`, 'utf8')).trim());
	try {
		return Math.max(await read('all'), await read(iface));
	} catch {
		return undefined;
	}
}
