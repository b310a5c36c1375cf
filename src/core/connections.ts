// Connections translated per rule: the kernel's counters of our rules (nftables map elements,
// iptables rule counters), joined with the rules a network or container asks for. A NAT rule sees
// only the first packet of a connection, so its packet count is the count of new connections.
import { canonicalIpv6 } from './address.js';
import type { SnatRule } from './rules.js';

/** One rule of ours as read back, with its counter (packets: new connections) when it has one. */
export type RuleCounter = { subnet: string; sourceIp: string; packets?: number; bytes?: number };

/**
 * The counts of the rules as read, by counterKey: a rewrite writes them back for the rules it
 * keeps, so a change elsewhere does not start them at zero.
 */
export function carriedCounts(counters: readonly RuleCounter[]): Map<string, { packets: number; bytes: number }> {
	return new Map(counters.filter((counter) => counter.packets !== undefined).map((counter) => [counterKey(counter), { packets: counter.packets!, bytes: counter.bytes ?? 0 }]));
}

/**
 * The new connections the rules of one network (or container entry) translated: the sum of their
 * counters, or undefined when none of its rules is in place with a counter.
 */
export function connectionsOf(rules: readonly SnatRule[], counters: readonly RuleCounter[]): number | undefined {
	const byKey = new Map(counters.filter((counter) => counter.packets !== undefined).map((counter) => [counterKey(counter), counter.packets!]));
	let total: number | undefined;
	for (const rule of rules) {
		const packets = byKey.get(counterKey(rule));
		if (packets !== undefined) {
			total = (total ?? 0) + packets;
		}
	}

	return total;
}

/**
 * Subnet and source address (a container's rule is its address as a host prefix, /32 or /128,
 * which no network's subnet can be: they are /30 or larger).
 */
export function counterKey(counter: { subnet: string; sourceIp: string }): string {
	const [address = '', length] = counter.subnet.split('/');
	const v6 = address.includes(':');
	return `${v6 ? canonicalIpv6(address) : address}/${length ?? (v6 ? '128' : '32')} ${v6 ? canonicalIpv6(counter.sourceIp) : counter.sourceIp}`;
}
