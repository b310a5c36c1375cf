// Which lines of the host's own change notifications concern us: `ip -o monitor address route`
// (an address or route came or went) and `nft -j monitor rules` (a rule of a table we care about
// was added or deleted: a flush, a deleted table, a deleted jump, a rule above it). Pure and
// defensive: a line is anyone's text. What cannot be read is taken as a change, since acting on a
// change costs one debounced check, and missing one costs egress.

/** A table of the firewall whose rule changes matter: ours (nftables), or iptables-nft's nat. */
export type NftTableRef = { family: string; table: string };

const ROUTE_TYPES = new Set(['unicast', 'local', 'broadcast', 'multicast', 'anycast', 'unreachable', 'blackhole', 'prohibit', 'throw', 'nat']);

/** IPv6 link-local (fe80::/10) or multicast (ff00::/8): never a source address, nor a subnet of ours. */
function linkScopedIpv6(text: string): boolean {
	const address = text.toLowerCase().split('/')[0]!;
	return address.includes(':') && /^(fe[89ab][0-9a-f]|ff[0-9a-f]{2}):/.test(address);
}

/**
 * Whether a line of `ip -o monitor address route` may change what a reconcile decides: an address
 * or a route came or went. Link-local and multicast IPv6 (every new veth of a container brings
 * some) cannot, and are left out, so that container starts cost nothing.
 */
export function ipMonitorLineMatters(line: string): boolean {
	let rest = line.trim().replace(/^\[[A-Z]+\]\s*/, '');
	if (rest === '') {
		return false;
	}

	rest = rest.replace(/^Deleted\s+/, '');
	const address = /^\d+:\s+\S+\s+inet6?\s+(\S+)/.exec(rest);
	if (address) {
		return !linkScopedIpv6(address[1]!);
	}

	const words = rest.split(/\s+/);
	if (words[0] === 'multicast') {
		return false;
	}

	const destination = ROUTE_TYPES.has(words[0]!) ? words[1] : words[0];
	return destination === undefined || !linkScopedIpv6(destination);
}

/**
 * Whether a line of `nft -j monitor …` concerns one of `tables`: a JSON object such as
 * `{"delete": {"rule": {"family": "ip", "table": "docker-egress", …}}}` (a table names itself in
 * `name`). A line that is not such an object counts as a change.
 */
export function nftMonitorLineMatters(line: string, tables: readonly NftTableRef[]): boolean {
	const text = line.trim();
	if (text === '') {
		return false;
	}

	let event: unknown;
	try {
		event = JSON.parse(text);
	} catch {
		return true;
	}

	const objects = isRecord(event) ? Object.values(event).filter(isRecord) : [];
	if (objects.length === 0) {
		return true;
	}

	return objects.some((wrapper) => {
		const entries = Object.entries(wrapper);
		if (entries.length === 0) {
			return true;
		}

		return entries.some(([kind, object]) => {
			if (!isRecord(object)) {
				return true;
			}

			const family = object['family'];
			const table = kind === 'table' ? object['name'] : object['table'];
			if (typeof family !== 'string' || typeof table !== 'string') {
				return true;
			}

			return tables.some((wanted) => wanted.family === family && wanted.table === table);
		});
	});
}

function isRecord(value: unknown): value is Record<string, unknown> {
	return typeof value === 'object' && value !== null && !Array.isArray(value);
}
