// docker egress verify NETWORK --url URL: the one-command answer to "what address do my
// containers really leave with?". A throwaway container on the network fetches URL (a service
// that answers with the caller's address) and the answer is compared with the source IP.
import type { Argv } from 'yargs';
import { EgressError, NotEgressNetworkError, UsageError } from '../errors.js';
import type { Context } from '../service/context.js';
import { egressViews, listEgressViews } from '../service/status.js';

export type VerifyOptions = { network?: string; container?: string; url: string; image: string; timeout: number; format: 'text' | 'json' };

export const DEFAULT_VERIFY_IMAGE = 'busybox:stable';

// Tries curl, then wget, then (for http:// URLs) plain HTTP/1.0 over nc: images differ.
const FETCH_SCRIPT = [
	'if command -v curl >/dev/null 2>&1; then curl -fsS --max-time "$T" "$URL"; exit $?; fi',
	'if wget -q -T "$T" -O - "$URL" 2>/dev/null; then exit 0; fi',
	'case "$URL" in http://*) ;; *) echo "no curl or wget in the image for $URL" >&2; exit 3;; esac',
	'rest=${URL#http://}; hostport=${rest%%/*}; path=/${rest#*/}; [ "$rest" = "$hostport" ] && path=/',
	'case "$hostport" in \\[*\\]:*) host=${hostport%]:*}; host=${host#[}; port=${hostport##*]:};; \\[*\\]) host=${hostport#[}; host=${host%]}; port=80;; *:*) host=${hostport%:*}; port=${hostport##*:};; *) host=$hostport; port=80;; esac',
	'cr=$(printf "\\r")',
	'printf "GET %s HTTP/1.0\\r\\nHost: %s\\r\\n\\r\\n" "$path" "$hostport" | timeout "$T" nc "$host" "$port" | { while IFS= read -r line; do case "$line" in ""|"$cr") break;; esac; done; cat; }',
].join('\n');

export function verifyBuilder(yargs: Argv): Argv {
	return yargs
		.positional('network', { type: 'string', describe: 'Egress network to check (or --container)' })
		.option('container', { type: 'string', describe: 'Check a container with an egress address of its own: the fetch runs in its network namespace', requiresArg: true })
		.option('url', { type: 'string', describe: 'A URL that answers with the caller\'s IP address', demandOption: true, requiresArg: true })
		.option('image', { type: 'string', default: DEFAULT_VERIFY_IMAGE, describe: 'Image of the throwaway container (needs sh and curl, wget or nc)', requiresArg: true })
		.option('timeout', { type: 'number', default: 10, describe: 'Seconds to wait for the answer', requiresArg: true })
		.option('format', { type: 'string', choices: ['text', 'json'], default: 'text', describe: 'Output format' });
}

export async function runVerify(options: VerifyOptions, context: Context): Promise<void> {
	if (!/^https?:\/\//.test(options.url)) {
		throw new UsageError(`invalid --url ${JSON.stringify(options.url)}: give an http:// or https:// URL`);
	}

	if (!(options.timeout > 0 && options.timeout <= 600)) {
		throw new UsageError(`invalid --timeout ${String(options.timeout)}: give seconds between 0 and 600`);
	}

	if ((options.network === undefined) === (options.container === undefined)) {
		throw new UsageError('verify needs a NETWORK or --container NAME (one of them)');
	}

	const docker = await context.docker();
	const target = options.container === undefined ? await networkTarget(options.network!, context) : await containerTarget(options.container, context);
	const view = { network: { name: target.name } };
	const expected = target.expected;
	const run = await docker.runThrowaway({
		image: options.image,
		network: target.networkMode,
		cmd: ['sh', '-c', FETCH_SCRIPT],
		env: [`URL=${options.url}`, `T=${Math.ceil(options.timeout)}`],
		timeoutMs: options.timeout * 1000 + 2000,
	});
	const observed = run.timedOut ? undefined : observedAddress(run.output);
	const match = observed !== undefined && expected.includes(observed);
	const result = {
		...(target.kind === 'container' ? { Container: view.network.name } : { Network: view.network.name }),
		Expected: expected,
		Observed: observed ?? null,
		Match: match,
		...(run.timedOut ? { Error: `no answer within ${options.timeout} s` } : observed === undefined ? { Error: `no address in the answer: ${JSON.stringify(run.output.trim().slice(0, 200))}` } : {}),
	};
	if (options.format === 'json') {
		context.out(JSON.stringify(result));
	} else {
		context.out(
			[
				`${target.kind.padEnd(10)}${view.network.name}`,
				`expected  ${expected.join(', ')}`,
				`observed  ${observed ?? '-'}`,
				`result    ${match ? 'match' : 'MISMATCH'}${result.Error ? ` (${result.Error})` : ''}`,
			].join('\n'),
		);
	}

	if (!match) {
		throw new EgressError(run.timedOut ? `verify ${view.network.name}: no answer from ${options.url} within ${options.timeout} s` : `verify ${view.network.name}: egress is ${observed ?? 'unknown'}, expected ${expected.join(' or ')}`);
	}
}

type Target = { kind: 'network' | 'container'; name: string; expected: string[]; networkMode: string };

async function networkTarget(network: string, context: Context): Promise<Target> {
	const views = await egressViews(context);
	const view = views.find((candidate) => candidate.network.name === network || candidate.network.id === network);
	if (!view) {
		await (await context.docker()).inspectNetwork(network); // NetworkNotFoundError when it does not exist
		throw new NotEgressNetworkError(network);
	}

	return { kind: 'network', name: view.network.name, expected: [view.network.sourceIp, ...(view.network.sourceIpv6 === undefined ? [] : [view.network.sourceIpv6])], networkMode: view.network.name };
}

/** A running container with an egress address of its own: the fetch joins its network namespace. */
async function containerTarget(container: string, context: Context): Promise<Target> {
	const { containerViews } = await listEgressViews(context, undefined, { containers: true });
	const matches = (id: string, name: string) => name === container || id === container;
	const view = containerViews.find((candidate) => matches(candidate.network.id, candidate.network.name)) ?? containerViews.find((candidate) => candidate.network.id.startsWith(container));
	if (!view) {
		throw new EgressError(`container ${container} has no egress address of its own (no running container with the label docker-egress.source-ip or docker-egress.source-ipv6 has that name or ID)`);
	}

	if (view.status === 'stopped') {
		throw new EgressError(`container ${view.network.name} is not running`);
	}

	const expected = [view.network.sourceIp, view.network.sourceIpv6].filter((address): address is string => address !== undefined && address !== '');
	return { kind: 'container', name: view.network.name, expected, networkMode: `container:${view.network.id}` };
}

/** The first IPv4 or IPv6 address in the answer (services print it alone, or inside JSON/HTML). */
export function observedAddress(output: string): string | undefined {
	const ipv4 = /\b(?:\d{1,3}\.){3}\d{1,3}\b/.exec(output)?.[0];
	if (ipv4) {
		return ipv4;
	}

	return /\b[0-9a-fA-F]{0,4}(?::[0-9a-fA-F]{0,4}){2,7}\b/.exec(output)?.[0]?.toLowerCase();
}

