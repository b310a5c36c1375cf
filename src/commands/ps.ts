// docker egress ps: one row per (container, network) of the containers that ask for an egress
// address of their own (label docker-egress.source-ip / -ipv6), with the state of their rules.
import type { Argv } from 'yargs';
import { formatRows, type Columns, type Row } from '../cli/format.js';
import { subjectOf } from '../core/network.js';
import { warn } from '../log.js';
import type { Context } from '../service/context.js';
import { listEgressViews, type EgressView } from '../service/status.js';

export type PsOptions = { all: boolean; quiet: boolean; format: string; noTrunc: boolean };

const columns: Columns = [
	{ field: 'ID', header: 'ID' },
	{ field: 'Name', header: 'NAME' },
	{ field: 'Network', header: 'NETWORK' },
	{ field: 'Address', header: 'ADDRESS' },
	{ field: 'SourceIP', header: 'SOURCE IP' },
	{ field: 'Status', header: 'STATUS' },
];

/** Fields holding text as written in a label (bounded unless --no-trunc). */
const freeText = ['Name', 'Network', 'SourceIP', 'Problem', 'StatusReason'];

export function psBuilder(yargs: Argv): Argv {
	return yargs
		.option('all', { alias: 'a', type: 'boolean', default: false, describe: 'Show stopped containers too' })
		.option('quiet', { alias: 'q', type: 'boolean', default: false, describe: 'Only display container IDs' })
		.option('format', { type: 'string', default: 'table', describe: "table, json, or a template such as '{{.Name}} {{.SourceIP}}'", requiresArg: true })
		.option('no-trunc', { type: 'boolean', default: false, describe: 'Do not truncate IDs and long values' });
}

export async function runPs(options: PsOptions, context: Context): Promise<void> {
	const { containerViews, policyError, firewallError } = await listEgressViews(context, undefined, { containers: true });
	const views = containerViews.filter((view) => options.all || view.status !== 'stopped');
	const rows = views.map((view) => psRow(view, options.noTrunc));
	if (options.quiet) {
		for (const id of new Set(rows.map((row) => String(row['ID'])))) {
			context.out(id);
		}
	} else {
		const lines = formatRows(rows, options.format, columns, { cut: freeText, noTrunc: options.noTrunc });
		if (lines.length > 0) {
			context.out(lines.join('\n'));
		}

		for (const view of views) {
			if (view.status !== 'active' && view.status !== 'stopped' && view.status !== 'unknown') {
				warn(`${subjectOf(view.network)} is ${view.status}: ${view.statusReason ?? view.network.problem ?? ''}`);
			}
		}
	}

	// A bad policy file concerns networks, not containers' own labels: said, not fatal here.
	if (policyError) {
		warn(policyError.message);
	}

	if (firewallError) {
		throw firewallError;
	}
}

export function psRow(view: EgressView, noTrunc = false): Row {
	const { network } = view;
	const container = network.container!;
	return {
		ID: noTrunc ? network.id : network.id.slice(0, 12),
		Name: network.name,
		Network: container.network,
		Address: [container.address, container.address6].filter((address) => address !== undefined).join(',') || '-',
		SourceIP: [network.sourceIp, network.sourceIpv6].filter((address) => address !== undefined && address !== '').join(','),
		Status: view.status,
		StatusReason: view.statusReason ?? '',
		Problem: network.problem ?? '',
		Connections: view.connections ?? null,
	};
}
