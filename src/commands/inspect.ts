// docker egress inspect NETWORK…: a JSON array with everything ls knows, plus the exact rule
// text and the containers. Like docker's inspect, it prints what it found and fails on the rest.
import type { Argv } from 'yargs';
import { EgressError, NetworkNotFoundError, NotEgressNetworkError } from '../errors.js';
import type { Context } from '../service/context.js';
import { listEgressViews, type EgressView } from '../service/status.js';

export type InspectOptions = { networks: string[] };

export function inspectBuilder(yargs: Argv): Argv {
	return yargs.positional('networks', { type: 'string', array: true, describe: 'Egress networks (name or ID)', demandOption: true });
}

export async function runInspect(options: InspectOptions, context: Context): Promise<void> {
	const docker = await context.docker();
	const found: EgressView[] = [];
	const errors: Error[] = [];
	const { views: all, containerViews, policyError, firewallError } = await listEgressViews(context, undefined, { containers: true });
	if (policyError ?? firewallError) {
		throw policyError ?? firewallError;
	}

	for (const name of options.networks) {
		const view = all.find((candidate) => candidate.network.name === name || candidate.network.id === name) ?? all.find((candidate) => candidate.network.id.startsWith(name));
		if (view) {
			found.push(view);
			continue;
		}

		// Not an egress network: say whether it exists at all.
		try {
			await docker.inspectNetwork(name);
			errors.push(new NotEgressNetworkError(name));
		} catch (error) {
			errors.push(error instanceof NetworkNotFoundError ? error : (error as Error));
		}
	}

	context.out(JSON.stringify(found.map((view) => inspectObject(view, containerViews)), null, 4));
	if (errors.length === 1) {
		throw errors[0]!;
	}

	if (errors.length > 1) {
		for (const error of errors.slice(0, -1)) {
			process.stderr.write(`Error: ${error.message}\n`);
		}

		throw new EgressError(errors.at(-1)!.message);
	}
}

export function inspectObject(view: EgressView, containerViews: EgressView[] = []): Record<string, unknown> {
	const { network } = view;
	return {
		Name: network.name,
		ID: network.id,
		Subnets: network.subnets,
		SourceIP: network.sourceIp,
		...(network.sourceIpv6 === undefined ? {} : { SourceIPv6: network.sourceIpv6, Subnets6: network.subnets6 }),
		Via: network.via,
		Bridge: network.bridge,
		Masquerade: network.masquerade,
		...(network.uplink6 ? { Uplink6: { Interface: network.uplink6.interface, Gateway: network.uplink6.gateway, Table: network.uplink6.table } } : {}),
		Uplink: network.uplink ? { Interface: network.uplink.interface, Gateway: network.uplink.gateway, Table: network.uplink.table, RpFilter: view.rpFilter ?? null } : null,
		Status: view.status,
		...(view.statusReason && (!network.problem || network.blocked) ? { StatusReason: view.statusReason } : {}),
		...(network.problem ? { Problem: network.problem } : {}),
		FirewallBackend: view.backend || null,
		Rules: view.rules,
		// New connections its rules translated since they were written (their counters); null: not known.
		Connections: view.connections ?? null,
		Containers: view.containers.map((container) => ({ ID: container.id, Name: container.name, IPv4Address: container.ipv4Address })),
		// Containers on it with an egress address of their own (label on the container): theirs wins.
		ContainerEgress: containerViews
			.filter((own) => own.network.container?.networkId === network.id && own.status !== 'stopped')
			.map((own) => ({
				ID: own.network.id,
				Name: own.network.name,
				Address: [own.network.container?.address, own.network.container?.address6].filter((address) => address !== undefined).join(','),
				SourceIP: [own.network.sourceIp, own.network.sourceIpv6].filter((address) => address !== undefined && address !== '').join(','),
				Status: own.status,
				...(own.statusReason ? { StatusReason: own.statusReason } : {}),
				Connections: own.connections ?? null,
			})),
	};
}
