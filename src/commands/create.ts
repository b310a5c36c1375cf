// docker egress create NETWORK --source-ip IP …: validate everything, create the bridge network
// (attachable, masquerade off, labelled), install its rule through the shared reconcile path.
// Any failure after the network exists removes it again: a failed create leaves nothing.
import type { Argv } from 'yargs';
import type { NetworkCreateBody } from '../adapters/docker.js';
import { RULES_LOCK, acquireLock } from '../adapters/lock.js';
import { checkAgainstHost, checkSubnet6IsFree, checkSubnetIsFree, planCreate, type CreatePlan, type CreateRequest } from '../core/create-plan.js';
import { parseIpv4Cidr, parseIpv6Cidr } from '../core/address.js';
import { toEgressNetwork, uplinkAddresses, type EgressNetwork } from '../core/network.js';
import { EgressError, ValidationError, reason } from '../errors.js';
import { info, warn } from '../log.js';
import { requireLocalEndpoint, type Context } from '../service/context.js';
import { reconcile } from '../service/reconcile.js';
import { describeStep } from './sync.js';

export type CreateOptions = Omit<CreateRequest, 'labels' | 'opts'> & { label: string[]; opt: string[]; dryRun: boolean };

export function createBuilder(yargs: Argv): Argv {
	return yargs
		.positional('network', { type: 'string', describe: 'Name of the new network', demandOption: true })
		.option('source-ip', { type: 'string', describe: 'Address of this host that the network egresses from', demandOption: true, requiresArg: true })
		.option('subnet', { type: 'string', describe: 'IPv4 subnet in CIDR form (default: Docker picks one)', requiresArg: true })
		.option('gateway', { type: 'string', describe: 'Gateway of the subnet', requiresArg: true })
		.option('ip-range', { type: 'string', describe: 'Allocate container IPs from this sub-range', requiresArg: true })
		.option('source-ipv6', { type: 'string', describe: 'Dual stack: address of this host that the network\'s IPv6 traffic egresses from', requiresArg: true })
		.option('subnet6', { type: 'string', describe: 'IPv6 subnet of the network (with --source-ipv6)', requiresArg: true })
		.option('via', { type: 'string', describe: 'Gateway of the source IP\'s uplink, if it is not the default route\'s and not in the main table', requiresArg: true })
		.option('via6', { type: 'string', describe: 'The same for the IPv6 source\'s uplink', requiresArg: true })
		.option('bridge-name', { type: 'string', describe: 'Linux bridge name (default: the network name when it fits, 15 bytes)', requiresArg: true })
		.option('label', { type: 'string', array: true, default: [], describe: 'Network label key=value', requiresArg: true })
		.option('opt', { type: 'string', array: true, default: [], describe: 'Driver option key=value', requiresArg: true })
		.option('dry-run', { type: 'boolean', default: false, describe: 'Print the Docker call and the iptables-restore input; change nothing' });
}

export async function runCreate(options: CreateOptions, context: Context): Promise<void> {
	const plan = planCreate({ ...options, labels: options.label, opts: options.opt });
	requireLocalEndpoint(context);
	const docker = await context.docker();
	const lock = await acquireLock(RULES_LOCK, { signal: context.signal });
	try {
		const [host, networks] = await Promise.all([context.host(), docker.listNetworks()]);
		for (const warning of checkAgainstHost(plan, host, networks)) {
			warn(warning);
		}

		const body = createBody(plan);
		if (options.dryRun) {
			await printDryRun(body, plan, context);
			return;
		}

		if (context.signal.aborted) {
			throw new ValidationError('interrupted before any change');
		}

		const id = await docker.createNetwork(body);
		try {
			await finishCreate(id, plan, context);
		} catch (error) {
			await rollBack(id, plan.network, context);
			throw error;
		}

		context.out(id);
	} finally {
		await lock.release();
	}
}

/** Checks what Docker picked, then installs the rule; throws if the network cannot egress right. */
async function finishCreate(id: string, plan: CreatePlan, context: Context): Promise<void> {
	const docker = await context.docker();
	const [created, host, networks] = await Promise.all([docker.inspectNetwork(id), context.host(), docker.listNetworks()]);
	const egress = toEgressNetwork(created, uplinkAddresses(host.addresses, networks));
	if (!plan.subnet) {
		// Docker chose the subnet: check it as we would have checked a given one.
		for (const subnet of egress.subnets) {
			checkSubnetIsFree(parseIpv4Cidr(subnet)!, host, networks, id);
		}
	}

	if (plan.sourceIpv6 && !plan.subnet6) {
		for (const subnet of egress.subnets6) {
			checkSubnet6IsFree(parseIpv6Cidr(subnet)!, host, networks, id);
		}
	}

	if (egress.problem) {
		throw new ValidationError(`network ${plan.network}: ${egress.problem}`);
	}

	const result = await reconcile(context);
	if (result.policyError) {
		// The new network is labelled: it does not depend on the policy file, whose error is told.
		warn(result.policyError.message);
	}

	const present = result.plan.desired.ipv4.filter((rule) => rule.network === plan.network);
	const present6 = result.plan.desired.ipv6.filter((rule) => rule.network === plan.network);
	if (present.length !== egress.subnets.length || (plan.sourceIpv6 && present6.length !== egress.subnets6.length)) {
		throw new EgressError(`the rule for ${plan.network} was not installed`);
	}
}

async function rollBack(id: string, name: string, context: Context): Promise<void> {
	const docker = await context.docker();
	try {
		await docker.removeNetwork(id);
		info(`removed network ${name} again, as its rule could not be installed`);
		await reconcile(context);
	} catch (error) {
		warn(`could not roll back network ${name} (${id}): ${reason(error)}; remove it with: docker egress rm ${name}`);
	}
}

export function createBody(plan: CreatePlan): NetworkCreateBody {
	const config = [
		...(plan.subnet ? [{ Subnet: plan.subnet.text, ...(plan.gateway ? { Gateway: plan.gateway } : {}), ...(plan.ipRange ? { IPRange: plan.ipRange } : {}) }] : []),
		...(plan.subnet6 ? [{ Subnet: plan.subnet6.text }] : []),
	];
	return {
		Name: plan.network,
		Driver: 'bridge',
		Attachable: true,
		...(plan.sourceIpv6 ? { EnableIPv6: true } : {}),
		CheckDuplicate: true,
		Labels: plan.labels,
		Options: plan.options,
		...(config.length > 0 ? { IPAM: { Driver: 'default', Config: config } } : {}),
	};
}

async function printDryRun(body: NetworkCreateBody, plan: CreatePlan, context: Context): Promise<void> {
	context.out(`# Docker Engine API\nPOST /networks/create\n${JSON.stringify(body, null, 2)}`);
	const planned: EgressNetwork = {
		id: '',
		name: plan.network,
		via: 'label',
		bridge: plan.bridge,
		subnets: [plan.subnet?.text ?? '<subnet-docker-assigns>'],
		sourceIp: plan.sourceIp,
		subnets6: plan.sourceIpv6 ? [plan.subnet6?.text ?? '<subnet-docker-assigns>'] : [],
		...(plan.sourceIpv6 ? { sourceIpv6: plan.sourceIpv6 } : {}),
		masquerade: false,
	};
	const preview = await reconcile(context, { dryRun: true, extraNetworks: [planned] });
	context.out(preview.plan.steps.map((step) => describeStep(step)).join('\n') || '# no rule changes');
}
