// The one reconcile path: read the whole current state (Docker networks, policies, host
// addresses and routes, the firewall backend's rules, our routing rules), compute what it asks
// for, and apply the difference: the backend's transaction (one `nft -f`, or one
// iptables-restore per family), then the policy-routing rules and tables. create, rm, set, unset,
// sync — and watch — all end here.
import type { FirewallBackend, FirewallPlan, FirewallState } from '../adapters/firewall.js';
import { forgetFlows, trackedSources } from '../adapters/conntrack.js';
import { readIpState } from '../adapters/ip-state.js';
import { applyRouting } from '../adapters/routing.js';
import type { DockerNetwork, EgressNetwork, Policy } from '../core/network.js';
import { egressContainers, type DockerContainer } from '../core/container.js';
import { ADDRESS_LABELS, dockerBridges, egressNetworks, uplinkAddresses } from '../core/network.js';
import { usesPerNodeValues, type NodeIdentity } from '../core/per-node.js';
import { attachUplinks, desiredRouting, diffRouting, isEmptyDiff, routingCommands, type RoutingDiff, type RoutingPlan } from '../core/routing.js';
import { desiredDrops } from '../core/drops.js';
import { desiredRules, ruleTag, type SnatRule } from '../core/rules.js';
import type { StateFileError } from '../adapters/policy-store.js';
import { debug } from '../log.js';
import type { Context } from './context.js';

export type ObservedState = {
	dockerNetworks: DockerNetwork[];
	containers: DockerContainer[];
	/** Who this node is: asked of the daemon only when some label has a per-node list (core/per-node.ts). */
	node?: NodeIdentity;
	policies: Policy[];
	/** Egress networks, then each labelled container's entry per network (`container` set). */
	networks: EgressNetwork[];
	/** What the firewall backend holds of ours (and what runs before it). */
	firewall: FirewallState;
	routing: RoutingPlan;
	/** Every Docker bridge: traffic leaving through one is not egress. */
	dockerBridges: Set<string>;
	/**
	 * The policy file could not be read: `policies` are the last good ones, or none
	 * (`policiesKnown` false). Labelled networks are served all the same; the caller reports the error.
	 */
	policyError?: StateFileError;
	/** False when the policies are unknown (a bad file and no last good read): see keepUnknown. */
	policiesKnown: boolean;
};

export type SyncResult = ObservedState & {
	backend: FirewallBackend;
	plan: FirewallPlan;
	routingDiff: RoutingDiff;
	/** The `ip` argument vectors for routingDiff. */
	routingCommands: string[][];
	applied: boolean;
};

/** What the daemon said last (watch keeps it to serve host changes while the daemon does not answer). */
export type DockerSnapshot = { networks: DockerNetwork[]; containers: DockerContainer[]; node?: NodeIdentity };

export async function observe(context: Context, snapshot?: DockerSnapshot): Promise<ObservedState> {
	// The host's processes (nft or iptables-save, ip) start first and run while the Docker client
	// loads: it is loaded only after this synchronous turn.
	const backend = context.firewall();
	const docker = snapshot ? undefined : Promise.resolve().then(async () => context.docker());
	const [dockerNetworks, containers, { host, routing }, firewall, read] = await Promise.all([
		docker ? docker.then(async (client) => client.listNetworks()) : snapshot!.networks,
		docker ? docker.then(async (client) => client.listContainers()) : snapshot!.containers,
		readIpState(),
		backend.then(async (fw) => fw.read({ ipv6: true, leftovers: true })),
		context.policies.readOrLastGood(),
	]);
	const policies = read.policies ?? [];
	// One more round trip (GET /info), only for hosts that use per-node labels.
	const perNode = usesPerNodeValues([...dockerNetworks, ...containers].map((item) => item.labels), ADDRESS_LABELS);
	const node = !perNode ? undefined : docker ? await docker.then(async (client) => client.nodeIdentity()) : snapshot!.node;
	const addresses = uplinkAddresses(host.addresses, dockerNetworks);
	const facts = { addresses, routes: host.mainRoutes, links: host.links };
	const served = attachUplinks(egressNetworks(dockerNetworks, addresses, policies, host.routes, node), facts);
	const networks = [...served, ...attachUplinks(egressContainers(containers, dockerNetworks, served, addresses, node), facts)];
	return {
		dockerNetworks,
		containers,
		...(node ? { node } : {}),
		policies,
		networks,
		firewall,
		routing,
		dockerBridges: dockerBridges(dockerNetworks),
		...(read.error ? { policyError: read.error } : {}),
		policiesKnown: read.policies !== undefined,
	};
}

/**
 * With the policies unknown (a bad file and no last good read), the rules of Docker networks that
 * no label asks for may be a policy's: they are kept as they are, not removed, since a policy
 * network without its rule loses its egress address. Rules of networks that are gone still go.
 */
function keepUnknown(removed: SnatRule[], state: ObservedState): SnatRule[] {
	const labelled = new Set(state.networks.filter((network) => !network.container).map((network) => network.name));
	// A rule read back names its network by name (nftables, older iptables rules) or short ID (iptables).
	const others = new Set(state.dockerNetworks.filter((network) => !labelled.has(network.name)).flatMap((network) => [network.name, network.id.slice(0, 12)]));
	return removed.filter((rule) => others.has(ruleTag(rule)) || others.has(rule.network));
}

export type ReconcileOptions = {
	dryRun?: boolean;
	/** For a dry run's preview: networks about to be created, and IDs of networks about to go. */
	extraNetworks?: EgressNetwork[];
	withoutNetworks?: string[];
	/** Docker's state as last read, instead of asking the daemon (watch, while it does not answer). */
	snapshot?: DockerSnapshot;
};

/**
 * Makes our rules and our routing exactly what the egress networks ask for. The caller holds
 * the rules lock. A failed apply is retried once from a fresh read (Docker may have changed the
 * firewall between our read and our write); each transaction itself is all-or-nothing.
 */
export async function reconcile(context: Context, options: ReconcileOptions = {}): Promise<SyncResult> {
	const backend = await context.firewall();
	for (let attempt = 1; ; attempt++) {
		const state = await observe(context, options.snapshot);
		const networks = [...state.networks.filter((network) => !options.withoutNetworks?.includes(network.id)), ...(options.extraNetworks ?? [])];
		const desired = { ipv4: desiredRules(networks), ipv6: desiredRules(networks, 'ipv6'), drops: [...desiredDrops(networks), ...desiredDrops(networks, 'ipv6')] };
		let plan = backend.plan(state.firewall, desired, state.dockerBridges);
		let routingDiff = diffRouting(state.routing, desiredRouting(networks));
		if (!state.policiesKnown) {
			const kept = keepUnknown(plan.removed, state);
			if (kept.length > 0) {
				plan = backend.plan(state.firewall, { ...desired, ipv4: [...desired.ipv4, ...kept.filter((rule) => !rule.subnet.includes(':'))], ipv6: [...desired.ipv6, ...kept.filter((rule) => rule.subnet.includes(':'))] }, state.dockerBridges);
			}

			// Policy routing does not say whose it is: remove none of it while the policies are unknown.
			routingDiff = { ...routingDiff, deleteRules: [], deleteRoutes: [] };
		}

		const result: SyncResult = { ...state, backend, plan, routingDiff, routingCommands: routingCommands(routingDiff), applied: false };
		if ((!plan.changed && isEmptyDiff(routingDiff)) || options.dryRun) {
			return result;
		}

		try {
			await backend.apply(plan);
			await applyRouting(routingDiff);
			await forgetContainerFlows(plan);
			return { ...result, applied: true };
		} catch (error) {
			if (attempt >= 2) {
				throw error;
			}

			debug(`apply failed, retrying from a fresh read: ${(error as Error).message}`);
		}
	}
}

/**
 * A container's rule that went (it stopped, was removed or disconnected, or its address changed)
 * or came: the flows tracked for that address are forgotten, so an address Docker gives to the next
 * container never carries the old translation, and a container's early flows take its own.
 */
async function forgetContainerFlows(plan: FirewallPlan): Promise<void> {
	// Added too: flows a container opened between its start and its rule keep their first
	// translation (Docker's masquerade, its network's address) for as long as they live otherwise.
	const addresses = new Set([...plan.removed, ...plan.added].filter((rule) => rule.container || /\/(32|128)$/.test(rule.subnet)).map((rule) => rule.subnet.split('/')[0]!));
	if (addresses.size === 0) {
		return;
	}

	// Many addresses (a first sync with many containers): list once, delete only where there are flows.
	const tracked = addresses.size > 4 ? await trackedSources().catch(() => undefined) : undefined;
	for (const address of addresses) {
		if (tracked && !tracked.has(address)) {
			continue;
		}

		await forgetFlows(address).catch((error: unknown) => {
			debug(`conntrack -D -s ${address}: ${(error as Error).message}`);
		});
	}
}
