// One read of everything `ip` knows that we need (addresses, main routes, our rules and tables),
// in three `ip -j -batch` processes instead of one process per question: start-up time matters,
// since every docker egress command is also a fresh process.
import type { HostFacts } from './host.js';
import { parseHostFacts } from './host.js';
import { parseRouting } from './routing.js';
import type { RoutingPlan } from '../core/routing.js';
import { ROUTE_PROTOCOL } from '../core/routing.js';
import { runCommand } from './run.js';

export type IpState = { host: HostFacts; routing: RoutingPlan };

const perFamily = ['route show table main', 'rule show', `route show table all proto ${ROUTE_PROTOCOL}`];

export async function readIpState(): Promise<IpState> {
	const [addresses, four, six] = await Promise.all([
		runCommand('ip', ['-j', 'addr', 'show']),
		batch('-4'),
		batch('-6').catch(() => ['[]', '[]', '[]']), // no IPv6 on this host
	]);
	const [routes4 = '[]', rules4 = '[]', ours4 = '[]'] = four;
	const [routes6 = '[]', rules6 = '[]', ours6 = '[]'] = six;
	const v4 = parseRouting(rules4, ours4);
	const v6 = parseRouting(rules6, ours6, 'ipv6');
	return {
		host: parseHostFacts(addresses, routes4, routes6),
		routing: { rules: [...v4.rules, ...v6.rules], routes: [...v4.routes, ...v6.routes] },
	};
}

/** `ip -j -4|-6 -batch -`: one JSON document per line, one line per command. */
async function batch(family: '-4' | '-6'): Promise<string[]> {
	const output = await runCommand('ip', ['-j', family, '-batch', '-'], `${perFamily.join('\n')}\n`);
	return output.split('\n').filter((line) => line.trim() !== '');
}
