// One read of everything `ip` knows that we need (addresses, main routes, our rules and tables),
// in one `ip -j -batch` process per address family instead of one process per question: start-up
// time matters, since every docker egress command is also a fresh process.
import type { HostFacts } from './host.js';
import { parseHostFacts } from './host.js';
import { parseRouting } from './routing.js';
import type { RoutingPlan } from '../core/routing.js';
import { ROUTE_PROTOCOL } from '../core/routing.js';
import { runCommand } from './run.js';

export type IpState = { host: HostFacts; routing: RoutingPlan };

const perFamily = ['addr show', 'route show table main', 'rule show', `route show table all proto ${ROUTE_PROTOCOL}`, 'link show'];

/**
 * `ipv6: false` (or a promise of it) skips the IPv6 half: a read-only caller that knows no
 * network egresses over IPv6 saves a process (each costs several ms of the caller's own time).
 */
export async function readIpState(options: { ipv6?: boolean | Promise<boolean> } = {}): Promise<IpState> {
	const none = ['[]', '[]', '[]', '[]', '[]'];
	const [four, six] = await Promise.all([
		batch('-4'),
		Promise.resolve(options.ipv6 ?? true).then(async (wanted) => (wanted ? batch('-6').catch(() => none) : none)), // catch: no IPv6 on this host
	]);
	const [addresses4 = '[]', routes4 = '[]', rules4 = '[]', ours4 = '[]', links = '[]'] = four;
	const [addresses6 = '[]', routes6 = '[]', rules6 = '[]', ours6 = '[]'] = six;
	const v4 = parseRouting(rules4, ours4);
	const v6 = parseRouting(rules6, ours6, 'ipv6');
	return {
		host: mergeFamilies(parseHostFacts(addresses4, routes4, routes6), parseHostFacts(addresses6, '[]'), parseHostFacts(links, '[]')),
		routing: { rules: [...v4.rules, ...v6.rules], routes: [...v4.routes, ...v6.routes] },
	};
}

/**
 * Addresses come per family (`-4 addr show` lists only IPv4 ones, and only interfaces that have
 * one): put both together, with every interface from `link show`.
 */
function mergeFamilies(four: HostFacts, six: HostFacts, all: HostFacts): HostFacts {
	return { ...four, addresses: [...four.addresses, ...six.addresses], interfaces: all.interfaces, links: all.links };
}

/** `ip -j -4|-6 -batch -`: one JSON document per line, one line per command. */
async function batch(family: '-4' | '-6'): Promise<string[]> {
	const output = await runCommand('ip', ['-j', family, '-batch', '-'], `${perFamily.join('\n')}\n`);
	return output.split('\n').filter((line) => line.trim() !== '');
}
