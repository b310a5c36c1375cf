// docker egress ls: one row per egress network, through the shared printer.
import type { Argv } from 'yargs';
import { formatRows, type Columns, type Row } from '../cli/format.js';
import { warn } from '../log.js';
import type { Context } from '../service/context.js';
import { listEgressViews, type EgressView } from '../service/status.js';

export type LsOptions = { quiet: boolean; format: string; noTrunc: boolean };

const columns: Columns = [
	{ field: 'ID', header: 'ID' },
	{ field: 'Name', header: 'NAME' },
	{ field: 'Subnet', header: 'SUBNET' },
	{ field: 'SourceIP', header: 'SOURCE IP' },
	{ field: 'Bridge', header: 'BRIDGE' },
	{ field: 'Via', header: 'VIA' },
	{ field: 'Route', header: 'ROUTE' },
	{ field: 'Status', header: 'STATUS' },
	{ field: 'Containers', header: 'CONTAINERS' },
];

/** The fields that can hold a label's or an option's text as written (bounded unless --no-trunc). */
const freeText = ['Name', 'SourceIP', 'Bridge', 'Problem', 'StatusReason'];

export function lsBuilder(yargs: Argv): Argv {
	return yargs
		.option('quiet', { alias: 'q', type: 'boolean', default: false, describe: 'Only display network IDs' })
		.option('format', { type: 'string', default: 'table', describe: "table, json, or a template such as '{{.Name}} {{.SourceIP}}'", requiresArg: true })
		.option('no-trunc', { type: 'boolean', default: false, describe: 'Do not truncate IDs and long values' });
}

export async function runLs(options: LsOptions, context: Context): Promise<void> {
	// A bad policy file or a firewall that cannot be read: the networks are listed all the same,
	// then the error is the exit.
	const { views, policyError, firewallError } = await listEgressViews(context);
	const failure = policyError ?? firewallError;
	const rows = views.map((view) => lsRow(view, options.noTrunc));
	if (options.quiet) {
		for (const row of rows) {
			context.out(String(row['ID']));
		}

		if (failure) {
			throw failure;
		}

		return;
	}

	const lines = formatRows(rows, options.format, columns, { cut: freeText, noTrunc: options.noTrunc });
	if (lines.length > 0) {
		context.out(lines.join('\n'));
	}

	for (const view of views) {
		if (view.network.problem) {
			warn(`network ${view.network.name} is ${view.status}: ${view.statusReason ?? view.network.problem}`);
		} else if (view.status === 'shadowed') {
			warn(`network ${view.network.name} is ${view.statusReason ?? 'shadowed'}`);
		} else if (view.status === 'missing') {
			warn(`network ${view.network.name} is missing its rule: ${view.statusReason ?? 'not in place'}`);
		} else if (view.network.masquerade) {
			warn(failsOpenWarning(view.network.name));
		}
	}

	if (policyError && firewallError) {
		warn(firewallError.message);
	}

	if (failure) {
		throw failure;
	}
}

export function failsOpenWarning(network: string): string {
	return `network ${network} has Docker's masquerade on: it egresses from the host's primary address whenever its rule is missing (it fails open)`;
}

export function lsRow(view: EgressView, noTrunc = false): Row {
	const { network } = view;
	return {
		ID: noTrunc ? network.id : network.id.slice(0, 12),
		Name: network.name,
		Subnet: [...network.subnets, ...network.subnets6].join(',') || '-',
		SourceIP: [network.sourceIp, ...(network.sourceIpv6 === undefined ? [] : [network.sourceIpv6])].join(','),
		Bridge: network.bridge,
		Via: network.via,
		Route: [network.uplink, network.uplink6].flatMap((uplink) => (uplink ? [`${uplink.interface} via ${uplink.gateway}`] : [])).join(',') || 'main',
		Status: view.status,
		Containers: view.containers.length,
		Masquerade: network.masquerade,
		Problem: network.problem ?? '',
		StatusReason: view.statusReason ?? '',
		// New connections translated since its rules were written; null where not known.
		Connections: view.connections ?? null,
	};
}
