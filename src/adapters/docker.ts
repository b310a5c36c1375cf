// The Docker Engine, through dockerode. Everything the commands need from the daemon goes
// through this one small class, which maps API answers to plain values and API failures to
// named errors.
import { readFileSync } from 'node:fs';
import { Agent } from 'node:http';
import type Dockerode from 'dockerode';
import type { DockerContainer } from '../core/container.js';
import type { NodeIdentity } from '../core/per-node.js';
import { SOURCE_IP_LABEL, SOURCE_IPV6_LABEL, type DockerNetwork } from '../core/network.js';
import { DaemonNotAnsweringError, DaemonUnreachableError, DockerApiError, InterruptedError, NetworkNotFoundError } from '../errors.js';
import { debug } from '../log.js';
import type { Endpoint } from './endpoint.js';

export type NetworkCreateBody = {
	Name: string;
	Driver: 'bridge';
	Attachable: boolean;
	EnableIPv6?: boolean;
	CheckDuplicate: boolean;
	Labels: Record<string, string>;
	Options: Record<string, string>;
	IPAM?: { Driver: 'default'; Config: Array<{ Subnet?: string; Gateway?: string; IPRange?: string }> };
};

export type ContainerOnNetwork = { id: string; name: string; networkId: string; ipv4Address: string };

/**
 * Longest wait for one answer of the daemon (connecting included): a hung daemon (SIGSTOP, a
 * deadlock) or a TCP endpoint whose packets are dropped would otherwise hold a command for the
 * kernel's connect timeout (minutes) and watch's reconcile forever.
 */
export const CALL_TIMEOUT_MS = 10_000;

export type ClientOptions = {
	/** Every call is abandoned (its request destroyed) when this aborts: SIGTERM, SIGINT, the CLI's socket close. */
	signal?: AbortSignal;
	/** Deadline of each call, ms (default CALL_TIMEOUT_MS). */
	callTimeoutMs?: number;
};

/** dockerode takes { abortSignal } where its types do not say so (ping, version). */
type WithSignal<T> = (options: { abortSignal: AbortSignal }) => Promise<T>;

type CallOptions = {
	/** This call's deadline, ms, instead of the client's. */
	timeoutMs?: number;
	/** false: the stop signal does not abandon this call (changes, clean-ups). */
	stoppable?: boolean;
};

const connectionErrors = new Set(['ENOENT', 'ECONNREFUSED', 'EACCES', 'ETIMEDOUT', 'ENOTFOUND', 'EHOSTUNREACH', 'ECONNRESET', 'EPIPE', 'EAI_AGAIN']);

export class DockerClient {
	private constructor(
		private readonly api: Dockerode,
		readonly endpoint: Endpoint,
		private readonly options: ClientOptions,
	) {}

	/**
	 * A client (dockerode is loaded only here). With `ping`, an unreachable daemon fails here;
	 * without, at the first call (one round trip less for short-lived commands).
	 */
	static async connect(endpoint: Endpoint, options: { ping?: boolean } & ClientOptions = {}): Promise<DockerClient> {
		const { default: Docker } = await import('dockerode');
		const client = new DockerClient(new Docker(dockerodeOptions(endpoint)), endpoint, options);
		if (options.ping) {
			await client.ping();
		}

		return client;
	}

	/** One round trip; `timeoutMs` for a shorter deadline than a call's (watch's liveness check). */
	async ping(timeoutMs?: number): Promise<void> {
		await this.call('ping', async (abortSignal) => (this.api.ping as WithSignal<unknown>).call(this.api, { abortSignal }), { timeoutMs });
	}

	async version(): Promise<{ Version: string; ApiVersion: string }> {
		return this.call('version', async (abortSignal) => (this.api.version as WithSignal<Dockerode.DockerVersion>).call(this.api, { abortSignal }));
	}

	/**
	 * Who this node is (GET /info): its hostname as Docker reports it (`docker info` Name, the
	 * HOSTNAME of `docker node ls`) and its Swarm node ID when it is in a swarm. For per-node labels.
	 */
	async nodeIdentity(): Promise<NodeIdentity> {
		const info = (await this.call('info', async (abortSignal) => (this.api.info as WithSignal<{ Name?: string; Swarm?: { NodeID?: string } }>).call(this.api, { abortSignal }))) ?? {};
		const nodeId = info.Swarm?.NodeID;
		return { hostname: info.Name ?? '', ...(nodeId ? { nodeId } : {}) };
	}

	async listNetworks(): Promise<DockerNetwork[]> {
		const list = await this.call('list networks', async (abortSignal) => this.api.listNetworks({ abortSignal }));
		return list.map((network) => toDockerNetwork(network));
	}

	/** Looks a network up by name, full ID or ID prefix, as `docker network inspect` does. */
	async inspectNetwork(nameOrId: string): Promise<DockerNetwork> {
		try {
			const network = (await this.call('inspect network', async () => this.api.getNetwork(nameOrId).inspect())) as Dockerode.NetworkInspectInfo;
			return toDockerNetwork(network);
		} catch (error) {
			if (error instanceof DockerApiError && error.statusCode === 404) {
				throw new NetworkNotFoundError(nameOrId);
			}

			throw error;
		}
	}

	async createNetwork(body: NetworkCreateBody): Promise<string> {
		const network = await this.call('create network', async (abortSignal) => this.api.createNetwork({ ...body, abortSignal } as Dockerode.NetworkCreateOptions), { stoppable: false });
		return network.id;
	}

	async removeNetwork(id: string): Promise<void> {
		await this.call('remove network', async (abortSignal) => this.api.getNetwork(id).remove({ abortSignal }), { stoppable: false });
	}

	/** Running containers, one entry per network they are attached to. */
	async containersOnNetworks(): Promise<ContainerOnNetwork[]> {
		const containers = await this.call('list containers', async (abortSignal) => this.api.listContainers({ abortSignal }));
		return containers.flatMap((container) =>
			Object.values(container.NetworkSettings?.Networks ?? {}).map((attachment) => ({
				id: container.Id,
				name: (container.Names?.[0] ?? container.Id).replace(/^\//, ''),
				networkId: attachment.NetworkID,
				ipv4Address: attachment.IPAddress ? `${attachment.IPAddress}/${attachment.IPPrefixLen}` : '',
			})),
		);
	}

	/**
	 * Every container, running or not, with its labels and its addresses on each network (what
	 * per-container egress needs), from one list call.
	 */
	async listContainers(): Promise<DockerContainer[]> {
		const containers = await this.call('list containers', async (abortSignal) => this.api.listContainers({ all: true, abortSignal } as Dockerode.ContainerListOptions));
		return containers.map((container) => toDockerContainer(container));
	}

	/**
	 * Runs a throwaway container on `network` until it exits or `timeoutMs` passes, and returns
	 * its output. The container is always removed, whatever happens.
	 */
	async runThrowaway(spec: { image: string; network: string; cmd: string[]; env: string[]; timeoutMs: number }): Promise<{ output: string; exitCode: number | undefined; timedOut: boolean }> {
		await this.ensureImage(spec.image);
		const container = await this.call('create container', async () =>
			this.api.createContainer({
				Image: spec.image,
				Cmd: spec.cmd,
				Env: spec.env,
				Tty: true,
				Labels: { 'docker-egress.verify': 'true' },
				HostConfig: { NetworkMode: spec.network },
			}),
			{ stoppable: false },
		);
		try {
			await this.call('start container', async () => container.start());
			let timer: NodeJS.Timeout | undefined;
			const timeout = new Promise<'timeout'>((resolve) => {
				timer = setTimeout(() => resolve('timeout'), spec.timeoutMs);
			});
			const waited = await Promise.race([this.call('wait container', async () => container.wait() as Promise<{ StatusCode: number }>, { timeoutMs: spec.timeoutMs + CALL_TIMEOUT_MS }), timeout]);
			clearTimeout(timer);
			const logs = await this.call('container logs', async () => container.logs({ stdout: true, stderr: true, follow: false }));
			const output = Buffer.isBuffer(logs) ? logs.toString('utf8') : String(logs);
			return waited === 'timeout' ? { output, exitCode: undefined, timedOut: true } : { output, exitCode: waited.StatusCode, timedOut: false };
		} finally {
			await this.call('remove container', async () => container.remove({ force: true }), { stoppable: false }).catch(() => undefined);
		}
	}

	private async ensureImage(image: string): Promise<void> {
		try {
			await this.call('inspect image', async () => this.api.getImage(image).inspect());
		} catch (error) {
			if (!(error instanceof DockerApiError && error.statusCode === 404)) {
				throw error;
			}

			const stream = await this.call('pull image', async () => this.api.pull(image));
			await new Promise<void>((resolve, reject) => {
				this.api.modem.followProgress(stream, (pullError: Error | null) => (pullError ? reject(this.mapError(pullError)) : resolve()));
			});
		}
	}

	/**
	 * Network events (create, destroy, connect, disconnect) as they happen. The iterator ends when
	 * the daemon closes the stream (it went away) and throws DaemonUnreachableError then; `signal`
	 * ends it quietly.
	 */
	async *networkEvents(signal: AbortSignal): AsyncGenerator<{ action: string; network: string }> {
		// Network events, and the container events that change a container's addresses (its egress rules).
		const filters = { type: ['network', 'container'] as Array<'network' | 'container'>, event: ['create', 'destroy', 'connect', 'disconnect', 'start', 'die', 'remove', 'delete'] };
		const stream = (await this.call('events', async () => this.api.getEvents({ filters }))) as NodeJS.ReadableStream & { destroy(): void };
		const stop = () => {
			stream.destroy();
		};

		signal.addEventListener('abort', stop, { once: true });
		let buffered = '';
		try {
			for await (const chunk of stream) {
				buffered += chunk.toString();
				let newline: number;
				while ((newline = buffered.indexOf('\n')) !== -1) {
					const line = buffered.slice(0, newline).trim();
					buffered = buffered.slice(newline + 1);
					if (line) {
						const event = JSON.parse(line) as { Type?: string; Action?: string; Actor?: { Attributes?: Record<string, string> } };
						const attributes = event.Actor?.Attributes ?? {};
						// A container's events matter only when it asks for an egress address of its own
						// (event attributes carry its labels), and only once it has addresses (start) or loses them.
						if (event.Type === 'container' && (event.Action === 'create' || !(SOURCE_IP_LABEL in attributes || SOURCE_IPV6_LABEL in attributes))) {
							continue;
						}

						yield { action: event.Type === 'container' ? `container ${event.Action ?? ''}` : (event.Action ?? ''), network: attributes['name'] ?? '' };
					}
				}
			}
		} catch (error) {
			if (!signal.aborted) {
				throw this.mapError(error);
			}
		} finally {
			signal.removeEventListener('abort', stop);
		}

		if (!signal.aborted) {
			throw new DaemonUnreachableError(this.describe(), new Error('the event stream ended'));
		}
	}

	/**
	 * Every call to the daemon: a deadline (connecting included) and the stop signal. Either one
	 * aborts the request (dockerode destroys it, a pending connect too) and rejects at once, even
	 * where dockerode does not take the abort signal (container and image calls): nothing waits
	 * on the daemon beyond its deadline or after a stop. Calls that change something (create,
	 * remove) are not abandoned at a stop, only at their deadline: the daemon carries them out
	 * anyway, and a command rolling back after a stop must still be able to remove what it made
	 * (lifecycle.ts ends the process if that overruns its grace period).
	 */
	private async call<T>(what: string, fn: (abortSignal: AbortSignal) => Promise<T>, options: CallOptions = {}): Promise<T> {
		debug(`docker api: ${what}`);
		const timeoutMs = options.timeoutMs ?? this.options.callTimeoutMs ?? CALL_TIMEOUT_MS;
		const stop = options.stoppable === false ? undefined : this.options.signal;
		if (stop?.aborted) {
			throw new InterruptedError();
		}

		const deadline = new AbortController();
		const abortSignal = stop ? AbortSignal.any([stop, deadline.signal]) : deadline.signal;
		let onAbort: (() => void) | undefined;
		const abandoned = new Promise<never>((_resolve, reject) => {
			onAbort = () => {
				reject(stop?.aborted ? new InterruptedError() : new DaemonNotAnsweringError(this.describe(), timeoutMs));
			};

			abortSignal.addEventListener('abort', onAbort, { once: true });
		});
		const timer = setTimeout(() => {
			deadline.abort();
		}, timeoutMs);
		try {
			return await Promise.race([fn(abortSignal), abandoned]);
		} catch (error) {
			if (error instanceof InterruptedError || error instanceof DaemonNotAnsweringError) {
				throw error;
			}

			if (abortSignal.aborted) {
				// dockerode's own AbortError for the request we abandoned: say why it was.
				throw stop?.aborted ? new InterruptedError() : new DaemonNotAnsweringError(this.describe(), timeoutMs);
			}

			throw this.mapError(error);
		} finally {
			clearTimeout(timer);
			abortSignal.removeEventListener('abort', onAbort!);
		}
	}

	private describe(): string {
		return `${this.endpoint.host} (${this.endpoint.source})`;
	}

	private mapError(error: unknown): Error {
		const err = error as { code?: string; statusCode?: number; json?: { message?: string } | null; message?: string; reason?: string };
		if (err.code && connectionErrors.has(err.code)) {
			return new DaemonUnreachableError(this.describe(), error);
		}

		if (typeof err.statusCode === 'number') {
			const message = err.json?.message ?? err.reason ?? err.message ?? 'unknown error';
			return new DockerApiError(`Error response from daemon: ${message}`, err.statusCode, error);
		}

		return error instanceof Error ? error : new Error(String(error));
	}
}

function toDockerNetwork(network: Dockerode.NetworkInspectInfo): DockerNetwork {
	return {
		id: network.Id,
		name: network.Name,
		driver: network.Driver,
		labels: network.Labels ?? {},
		options: network.Options ?? {},
		subnets: (network.IPAM?.Config ?? []).flatMap((config) => (config.Subnet ? [config.Subnet] : [])),
	};
}

/**
 * Node's global agent, except that it does not derive a TLS server name from the Host header
 * for every request: that test (net.isIP) compiles a large regular expression on first use,
 * ~8 ms of every command's start-up, for a unix socket that has no TLS.
 */
function unixSocketAgent(): Agent {
	return new Agent({ keepAlive: true, scheduling: 'lifo', timeout: 5000, servername: '' } as ConstructorParameters<typeof Agent>[0]);
}

/** Every connection option is set explicitly, so docker-modem never falls back to DOCKER_HOST. */
export function dockerodeOptions(endpoint: Endpoint): Dockerode.DockerOptions {
	const url = new URL(endpoint.host);
	const base = { host: undefined, port: undefined, socketPath: undefined, protocol: undefined } as Dockerode.DockerOptions;
	if (url.protocol === 'unix:') {
		return { ...base, socketPath: url.pathname, agent: unixSocketAgent() } as Dockerode.DockerOptions;
	}

	if (url.protocol === 'ssh:') {
		return { ...base, protocol: 'ssh', host: url.hostname, port: url.port || 22, username: url.username || undefined, sshOptions: { agent: process.env['SSH_AUTH_SOCK'] } } as Dockerode.DockerOptions;
	}

	const tls = endpoint.tls;
	if (!tls) {
		return { ...base, protocol: 'http', host: url.hostname, port: url.port || 2375 };
	}

	const read = (file: string | undefined) => (file ? readFileSync(file) : undefined);
	return {
		...base,
		protocol: 'https',
		host: url.hostname,
		port: url.port || 2376,
		ca: read(tls.ca),
		cert: read(tls.cert),
		key: read(tls.key),
		...(tls.verify ? {} : { agent: new (process.getBuiltinModule('node:https').Agent)({ rejectUnauthorized: false }) }),
	} as Dockerode.DockerOptions;
}

function toDockerContainer(container: Dockerode.ContainerInfo): DockerContainer {
	return {
		id: container.Id,
		name: (container.Names?.[0] ?? container.Id).replace(/^\//, ''),
		labels: container.Labels ?? {},
		// A paused container keeps its addresses (and gets its traffic back on unpause, with no event to tell).
		running: container.State === 'running' || container.State === 'paused',
		networkMode: container.HostConfig?.NetworkMode ?? '',
		endpoints: Object.entries(container.NetworkSettings?.Networks ?? {}).map(([name, attachment]) => ({
			network: name,
			networkId: attachment.NetworkID ?? '',
			ipv4: attachment.IPAddress || undefined,
			ipv6: attachment.GlobalIPv6Address || undefined,
		})),
	};
}
