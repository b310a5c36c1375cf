// What `ls` and `inspect` show: each egress network with the state of its rule in the kernel
// and the containers on it. Read-only; a remote daemon gets status "unknown", since the
// firewall that matters is on that other host.
import { isLocalEndpoint } from '../adapters/endpoint.js';
import type { ContainerOnNetwork } from '../adapters/docker.js';
import { egressNetworks, uplinkAddresses, type DockerNetwork, type EgressNetwork } from '../core/network.js';
import { desiredRules, isRuleActive, ruleText } from '../core/rules.js';
import type { Context } from './context.js';

export type RuleStatus = 'active' | 'missing' | 'invalid' | 'unknown';

export type EgressView = {
	network: EgressNetwork;
	status: RuleStatus;
	rules: string[];
	containers: ContainerOnNetwork[];
};

export async function egressViews(context: Context, select?: (network: DockerNetwork) => boolean): Promise<EgressView[]> {
	const docker = await context.docker();
	const local = isLocalEndpoint(context.endpoint);
	const [dockerNetworks, containers, host, nat, policies] = await Promise.all([
		docker.listNetworks(),
		docker.containersOnNetworks(),
		local ? context.host() : undefined,
		local ? context.firewall().then(async (firewall) => firewall.readNat()) : undefined,
		local ? context.policies.read() : [],
	]);
	const networks = egressNetworks(select ? dockerNetworks.filter(select) : dockerNetworks, host && uplinkAddresses(host.addresses, dockerNetworks), policies);
	return networks.map((network) => ({
		network,
		status: network.problem ? 'invalid' : nat ? (isRuleActive(network, nat) ? 'active' : 'missing') : 'unknown',
		rules: desiredRules([network]).map((rule) => ruleText(rule)),
		containers: containers.filter((container) => container.networkId === network.id),
	}));
}
