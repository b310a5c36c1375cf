// Per-node address values, for a label one Swarm stack (or compose file) puts on every node:
// `docker-egress.source-ip=node-a=192.0.2.11,node-b=198.51.100.11` names each node's own address;
// a plain `192.0.2.11` is every node's. A node is named by its hostname as Docker reports it
// (`docker info` Name, the HOSTNAME of `docker node ls`; case-insensitive) or by its Swarm node ID.
// A node the list does not name has no address for that network or container: its traffic fails
// closed there, as for a source address that is not on the host. Pure.

/** Who this node is, from the Engine's GET /info. */
export type NodeIdentity = {
	/** `docker info` Name: the host's name, the node's hostname in Swarm. */
	hostname: string;
	/** Swarm.NodeID, when the Engine is a Swarm node. */
	nodeId?: string;
};

export type NodeEntry = { node: string; value: string };

/** What a label's value means on this node. */
export type NodeChoice =
	/** The address for this node: the plain value, or this node's entry of a list. */
	| { value: string; node?: string }
	/** No address for this node: a malformed list (`notForNode` false), or a list that does not name it. */
	| { problem: string; notForNode: boolean };

/** Node names: hostnames (letters, digits, '-', '_', '.') or Swarm node IDs. */
const NODE_NAME = /^[A-Za-z0-9][\w.-]*$/;

/** Whether a label's value is a per-node list (an address never holds '='). */
export function isPerNodeValue(raw: string): boolean {
	return raw.includes('=');
}

/** Whether any of these label sets uses a per-node value for one of `keys` (then the node's identity is needed). */
export function usesPerNodeValues(labelSets: Iterable<Record<string, string>>, keys: readonly string[]): boolean {
	for (const labels of labelSets) {
		if (keys.some((key) => labels[key] !== undefined && isPerNodeValue(labels[key]))) {
			return true;
		}
	}

	return false;
}

/**
 * The entries of `node=value,node=value` (whitespace around items, names and values ignored), or
 * why it is no such list: an empty item, an item without '=', an empty or odd node name, an empty
 * value, a node named twice (case-insensitively).
 */
export function parsePerNodeList(raw: string): { entries: NodeEntry[] } | { problem: string } {
	const entries: NodeEntry[] = [];
	const items = raw.split(',');
	for (const [index, item] of items.entries()) {
		const text = item.trim();
		const where = `item ${index + 1} of ${items.length}`;
		if (text === '') {
			return { problem: `${where} is empty (write node=address, separated by commas)` };
		}

		const equals = text.indexOf('=');
		if (equals < 0) {
			return { problem: `${where} ${JSON.stringify(text)} has no '=' (write node=address)` };
		}

		const node = text.slice(0, equals).trim();
		const value = text.slice(equals + 1).trim();
		if (!NODE_NAME.test(node)) {
			return { problem: `${where} ${JSON.stringify(text)}: ${node === '' ? 'no node name before =' : `${JSON.stringify(node)} is not a node hostname or ID`}` };
		}

		if (value === '') {
			return { problem: `${where} ${JSON.stringify(text)}: no address after =` };
		}

		const twice = entries.find((entry) => entry.node.toLowerCase() === node.toLowerCase());
		if (twice) {
			return { problem: `node ${node} is named twice` };
		}

		entries.push({ node, value });
	}

	return { entries };
}

/** Whether `name` (a list's node name) names this node: its hostname (any case) or its Swarm node ID. */
export function namesNode(name: string, node: NodeIdentity): boolean {
	return name.toLowerCase() === node.hostname.toLowerCase() || (node.nodeId !== undefined && name === node.nodeId);
}

export function describeNode(node: NodeIdentity): string {
	return node.nodeId ? `hostname ${node.hostname}, Swarm node ID ${node.nodeId}` : `hostname ${node.hostname}, not a Swarm node`;
}

/**
 * What the value of label `label` means on `node`. A plain value is returned as it is (the usual
 * checks judge it). A list is judged the same on every node, so that a typo shows everywhere:
 * its shape, and every entry's value with `check` (family and kind of address; whether the host
 * has it is checked by the node that uses it); then this node's entry is picked. Without the
 * node's identity (the daemon did not say), a list cannot be resolved.
 */
export function valueForNode(label: string, raw: string, node: NodeIdentity | undefined, check: (value: string) => string | undefined): NodeChoice {
	if (!isPerNodeValue(raw)) {
		return { value: raw };
	}

	const subject = `label ${label}=${JSON.stringify(raw)}`;
	const parsed = parsePerNodeList(raw);
	if ('problem' in parsed) {
		return { problem: `${subject}: ${parsed.problem}`, notForNode: false };
	}

	for (const entry of parsed.entries) {
		const problem = check(entry.value);
		if (problem) {
			return { problem: `${subject}: node ${entry.node}: ${JSON.stringify(entry.value)}: ${problem}`, notForNode: false };
		}
	}

	if (!node) {
		return { problem: `${subject}: the Docker daemon did not say which node this is`, notForNode: false };
	}

	const mine = parsed.entries.filter((entry) => namesNode(entry.node, node));
	if (mine.length > 1 && new Set(mine.map((entry) => entry.value)).size > 1) {
		return { problem: `${subject}: this node is named twice with different addresses (${mine.map((entry) => entry.node).join(' and ')})`, notForNode: false };
	}

	if (mine.length === 0) {
		const named = parsed.entries.map((entry) => entry.node).join(', ');
		return { problem: `${subject} has no address for this node (${describeNode(node)}; it names ${named})`, notForNode: true };
	}

	return { value: mine[0]!.value, node: mine[0]!.node };
}
