// The one reconcile path: read the whole current state (Docker networks, host addresses, the nat
// table), compute the chain it asks for, and apply the difference as one iptables-restore
// transaction. create, rm, sync — and watch — all end here.
import type { DockerNetwork, EgressNetwork, Policy } from '../core/network.js';
import { egressNetworks, uplinkAddresses } from '../core/network.js';
import { desiredRules, planSync, renderRestore, type NatState, type SyncPlan } from '../core/rules.js';
import { debug } from '../log.js';
import type { Context } from './context.js';

export type ObservedState = {
	dockerNetworks: DockerNetwork[];
	policies: Policy[];
	networks: EgressNetwork[];
	nat: NatState;
};

export type SyncResult = ObservedState & {
	plan: SyncPlan;
	restoreInput: string;
	restoreCommand: string[];
	applied: boolean;
};

export async function observe(context: Context): Promise<ObservedState> {
	const [docker, firewall] = await Promise.all([context.docker(), context.firewall()]);
	const [dockerNetworks, host, nat, policies] = await Promise.all([docker.listNetworks(), context.host(), firewall.readNat(), context.policies.read()]);
	return { dockerNetworks, policies, networks: egressNetworks(dockerNetworks, uplinkAddresses(host.addresses, dockerNetworks), policies), nat };
}

export type ReconcileOptions = {
	dryRun?: boolean;
	/** For a dry run's preview: networks about to be created, and IDs of networks about to go. */
	extraNetworks?: EgressNetwork[];
	withoutNetworks?: string[];
};

/**
 * Makes our chain exactly what the egress networks ask for. The caller holds the rules lock.
 * A failed restore is retried once from a fresh read (Docker may have moved POSTROUTING rules
 * between our read and our write); iptables-restore itself is all-or-nothing.
 */
export async function reconcile(context: Context, options: ReconcileOptions = {}): Promise<SyncResult> {
	const firewall = await context.firewall();
	for (let attempt = 1; ; attempt++) {
		const state = await observe(context);
		const networks = [...state.networks.filter((network) => !options.withoutNetworks?.includes(network.id)), ...(options.extraNetworks ?? [])];
		const plan = planSync(state.nat, desiredRules(networks));
		const restoreInput = renderRestore(plan);
		const result = { ...state, plan, restoreInput, restoreCommand: firewall.restoreCommand(), applied: false };
		if (!plan.changed || options.dryRun) {
			return result;
		}

		try {
			await firewall.restore(restoreInput);
			return { ...result, applied: true };
		} catch (error) {
			if (attempt >= 2) {
				throw error;
			}

			debug(`iptables-restore failed, retrying from a fresh read: ${(error as Error).message}`);
		}
	}
}
