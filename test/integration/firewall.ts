// Reading the sandbox's firewall the way an operator would, for assertions.
import type { Sandbox } from '../helpers/sandbox.js';

/** `iptables-save` of a table, without comments and packet counters, so two reads compare. */
export async function saveTable(sb: Sandbox, table = 'nat'): Promise<string> {
	const result = await sb.exec('iptables-save', ['-t', table]);
	return result.stdout
		.split('\n')
		.filter((line) => !line.startsWith('#'))
		.map((line) => line.replace(/\[\d+:\d+\]/, '[0:0]'))
		.join('\n');
}

/** Every table's rules, for "nothing mentions this subnet" checks. */
export async function saveAll(sb: Sandbox): Promise<string> {
	return (await sb.exec('iptables-save', [])).stdout;
}

export async function egressRules(sb: Sandbox): Promise<string[]> {
	return (await saveTable(sb)).split('\n').filter((line) => line.startsWith('-A DOCKER-EGRESS '));
}

export async function postrouting(sb: Sandbox): Promise<string[]> {
	return (await saveTable(sb)).split('\n').filter((line) => line.startsWith('-A POSTROUTING '));
}

export async function networkNames(sb: Sandbox): Promise<string[]> {
	const result = await sb.docker(['network', 'ls', '--format', '{{.Name}}']);
	return result.stdout.split('\n').filter(Boolean).sort();
}

export async function subnetOf(sb: Sandbox, network: string): Promise<string> {
	const result = await sb.docker(['network', 'inspect', network, '--format', '{{range .IPAM.Config}}{{.Subnet}}{{end}}']);
	return result.stdout.trim();
}
