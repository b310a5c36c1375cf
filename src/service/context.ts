// What every command gets: the resolved endpoint, lazily connected adapters, the stop signal,
// and the one rule that changing commands need the local daemon.
import type { DockerClient } from '../adapters/docker.js';
import { isLocalEndpoint, type Endpoint } from '../adapters/endpoint.js';
import { selectBackend, type BackendName, type FirewallBackend } from '../adapters/firewall.js';
import type { HostFacts } from '../adapters/host.js';
import { PolicyStore } from '../adapters/policy-store.js';
import { RemoteEndpointError } from '../errors.js';

export type Context = {
	endpoint: Endpoint;
	signal: AbortSignal;
	docker(): Promise<DockerClient>;
	/** The firewall backend: --firewall-backend, $DOCKER_EGRESS_FIREWALL_BACKEND, or nftables where it works. */
	firewall(): Promise<FirewallBackend>;
	host(): Promise<HostFacts>;
	/** Policies for networks we did not create (`set` / `unset`), in the state dir. */
	policies: PolicyStore;
	out(text: string): void;
};

export function requireLocalEndpoint(context: Context): void {
	if (!isLocalEndpoint(context.endpoint)) {
		throw new RemoteEndpointError(`${context.endpoint.host} (${context.endpoint.source})`);
	}
}

export function createContext(endpoint: Endpoint, signal: AbortSignal, stateDir?: string, backend?: BackendName): Context {
	let docker: Promise<DockerClient> | undefined;
	let firewall: Promise<FirewallBackend> | undefined;
	return {
		endpoint,
		signal,
		policies: PolicyStore.fromEnv(stateDir),
		async docker() {
			const { DockerClient } = await import('../adapters/docker.js');
			docker ??= DockerClient.connect(endpoint, { signal }); // every call ends at a stop or its deadline
			return docker;
		},
		async firewall() {
			firewall ??= selectBackend(backend); // starts its first read within this call (see runProcess)
			return firewall;
		},
		async host() {
			// Read fresh each time: addresses and routes change under us.
			const { readHostFacts } = await import('../adapters/host.js');
			return readHostFacts();
		},
		out(text) {
			process.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
		},
	};
}
