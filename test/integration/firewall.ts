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

export function sleep(ms: number): Promise<void> {
	return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `read` every 100 ms until `ok` holds; throws with the last value after `timeoutMs`. */
export async function eventually<T>(what: string, read: () => Promise<T>, ok: (value: T) => boolean, timeoutMs = 10_000): Promise<T> {
	const deadline = Date.now() + timeoutMs;
	for (;;) {
		const value = await read();
		if (ok(value)) return value;
		if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms; last seen:\n${JSON.stringify(value, null, 2)}`);
		await sleep(100);
	}
}

export function ruleFor(rules: string[], subnet: string, ip: string): boolean {
	return rules.some((line) => line.includes(` -s ${subnet} `) && line.endsWith(`--to-source ${ip}`));
}

export function rulesOf(rules: string[], subnet: string): string[] {
	return rules.filter((line) => line.includes(` -s ${subnet} `));
}

export async function waitForRule(sb: Sandbox, subnet: string, ip: string, timeoutMs = 10_000): Promise<void> {
	await eventually(`rule ${subnet} -> ${ip}`, async () => egressRules(sb), (rules) => ruleFor(rules, subnet, ip), timeoutMs);
}

export async function waitForNoRule(sb: Sandbox, subnet: string, timeoutMs = 10_000): Promise<void> {
	await eventually(`no rule for ${subnet}`, async () => egressRules(sb), (rules) => rulesOf(rules, subnet).length === 0, timeoutMs);
}
