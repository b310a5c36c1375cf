// The one reconcile path: read the whole current state (Docker networks, policies, host
// addresses and routes, the nat table, our routing rules), compute what it asks for, and apply
// the difference: the nat chain as one iptables-restore transaction, then the policy-routing
// rules and tables. create, rm, set, unset, sync — and watch — all end here.
import { applyRouting, readRouting } from '../adapters/routing.js';
import type { DockerNetwork, EgressNetwork, Policy } from '../core/network.js';
import { egressNetworks, uplinkAddresses } from '../core/network.js';
import { attachUplinks, desiredRouting, diffRouting, isEmptyDiff, routingCommands, type RoutingDiff, type RoutingPlan } from '../core/routing.js';
import { desiredRules, planSync, renderRestore, type NatState, type SyncPlan } from '../core/rules.js';
import { debug } from '../log.js';
import type { Context } from './context.js';

export type ObservedState = {
	dockerNetworks: DockerNetwork[];
	policies: Policy[];
	networks: EgressNetwork[];
	nat: NatState;
	routing: RoutingPlan;
};

export type SyncResult = ObservedState & {
	plan: SyncPlan;
	restoreInput: string;
	restoreCommand: string[];
	routingDiff: RoutingDiff;
	/** The `ip` argument vectors for routingDiff. */
	routingCommands: string[][];
	applied: boolean;
};

export async function observe(context: Context): Promise<ObservedState> {
	const [docker, firewall] = await Promise.all([context.docker(), context.firewall()]);
	const [dockerNetworks, host, nat, policies, routing] = await Promise.all([
		docker.listNetworks(),
		context.host(),
		firewall.readNat(),
		context.policies.read(),
		readRouting(),
	]);
	const addresses = uplinkAddresses(host.addresses, dockerNetworks);
	const networks = attachUplinks(egressNetworks(dockerNetworks, addresses, policies), { addresses, routes: host.mainRoutes, links: host.links });
	return { dockerNetworks, policies, networks, nat, routing };
}

export type ReconcileOptions = {
	dryRun?: boolean;
	/** For a dry run's preview: networks about to be created, and IDs of networks about to go. */
	extraNetworks?: EgressNetwork[];
	withoutNetworks?: string[];
};

/**
 * Makes our chain and our routing exactly what the egress networks ask for. The caller holds
 * the rules lock. A failed restore is retried once from a fresh read (Docker may have moved
 * POSTROUTING rules between our read and our write); iptables-restore itself is all-or-nothing.
 */
export async function reconcile(context: Context, options: ReconcileOptions = {}): Promise<SyncResult> {
	const firewall = await context.firewall();
	for (let attempt = 1; ; attempt++) {
		const state = await observe(context);
		const networks = [...state.networks.filter((network) => !options.withoutNetworks?.includes(network.id)), ...(options.extraNetworks ?? [])];
		const plan = planSync(state.nat, desiredRules(networks));
		const routingDiff = diffRouting(state.routing, desiredRouting(networks));
		const result: SyncResult = {
			...state,
			plan,
			restoreInput: renderRestore(plan),
			restoreCommand: firewall.restoreCommand(),
			routingDiff,
			routingCommands: routingCommands(routingDiff),
			applied: false,
		};
		if ((!plan.changed && isEmptyDiff(routingDiff)) || options.dryRun) {
			return result;
		}

		try {
			if (plan.changed) {
				await firewall.restore(result.restoreInput);
			}

			await applyRouting(routingDiff);
			return { ...result, applied: true };
		} catch (error) {
			if (attempt >= 2) {
				throw error;
			}

			debug(`apply failed, retrying from a fresh read: ${(error as Error).message}`);
		}
	}
}
