// The one reconcile path: read the whole current state (Docker networks, policies, host
// addresses and routes, the nat table, our routing rules), compute what it asks for, and apply
// the difference: the nat chain as one iptables-restore transaction, then the policy-routing
// rules and tables. create, rm, set, unset, sync — and watch — all end here.
import { readIpState } from '../adapters/ip-state.js';
import { applyRouting } from '../adapters/routing.js';
import type { DockerNetwork, EgressNetwork, Policy } from '../core/network.js';
import { egressNetworks, uplinkAddresses } from '../core/network.js';
import { attachUplinks, desiredRouting, diffRouting, isEmptyDiff, routingCommands, type RoutingDiff, type RoutingPlan } from '../core/routing.js';
import { desiredRules, parseNatState, planSync, renderRestore, type NatState, type SyncPlan } from '../core/rules.js';
import { debug } from '../log.js';
import type { Context } from './context.js';

export type ObservedState = {
	dockerNetworks: DockerNetwork[];
	policies: Policy[];
	networks: EgressNetwork[];
	nat: NatState;
	/** The ip6tables nat table (empty when ip6tables cannot be read and nothing needs it). */
	nat6: NatState;
	routing: RoutingPlan;
};

export type SyncResult = ObservedState & {
	plan: SyncPlan;
	restoreInput: string;
	restoreCommand: string[];
	/** The same for IPv6 (ip6tables), for dual-stack networks. */
	plan6: SyncPlan;
	restoreInput6: string;
	restoreCommand6: string[];
	routingDiff: RoutingDiff;
	/** The `ip` argument vectors for routingDiff. */
	routingCommands: string[][];
	applied: boolean;
};

export async function observe(context: Context): Promise<ObservedState> {
	// The host's processes (iptables-save, ip) start first and run while the Docker client loads:
	// it is loaded only after this synchronous turn.
	const firewall = context.firewall();
	const docker = Promise.resolve().then(async () => context.docker());
	const [dockerNetworks, { host, routing }, nat, nat6, policies] = await Promise.all([
		docker.then(async (client) => client.listNetworks()),
		readIpState(),
		firewall.then(async (fw) => fw.readNat()),
		firewall.then(async (fw) =>
			fw.readNat('ipv6').catch((error: unknown) => {
				debug(`ip6tables nat table not readable: ${(error as Error).message}`);
				return undefined;
			}),
		),
		context.policies.read(),
	]);
	const addresses = uplinkAddresses(host.addresses, dockerNetworks);
	const networks = attachUplinks(egressNetworks(dockerNetworks, addresses, policies), { addresses, routes: host.mainRoutes, links: host.links });
	if (!nat6 && networks.some((network) => network.sourceIpv6 !== undefined && !network.problem)) {
		await (await firewall).readNat('ipv6'); // throws the real error: IPv6 egress needs ip6tables
	}

	return { dockerNetworks, policies, networks, nat, nat6: nat6 ?? parseNatState(''), routing };
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
		const plan6 = planSync(state.nat6, desiredRules(networks, 'ipv6'));
		const routingDiff = diffRouting(state.routing, desiredRouting(networks));
		const result: SyncResult = {
			...state,
			plan,
			restoreInput: renderRestore(plan),
			restoreCommand: firewall.restoreCommand(),
			plan6,
			restoreInput6: renderRestore(plan6),
			restoreCommand6: firewall.restoreCommand('ipv6'),
			routingDiff,
			routingCommands: routingCommands(routingDiff),
			applied: false,
		};
		if ((!plan.changed && !plan6.changed && isEmptyDiff(routingDiff)) || options.dryRun) {
			return result;
		}

		try {
			if (plan.changed) {
				await firewall.restore(result.restoreInput);
			}

			if (plan6.changed) {
				await firewall.restore(result.restoreInput6, 'ipv6');
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
