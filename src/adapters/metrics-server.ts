// The HTTP endpoint of `watch --metrics-address HOST:PORT` (node:http, nothing else): GET /metrics
// (Prometheus text format) and GET /healthz (200 "ok", or 503 and one line saying why). It listens
// on that address only, and closes with watch: open connections are cut, so it never keeps watch
// running past its stop.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { isIP } from 'node:net';
import { EgressError, UsageError } from '../errors.js';

export type MetricsAddress = { host: string; port: number };

export type MetricsHandlers = {
	/** Called before either answer: brings what they show up to date (a ping of the daemon). */
	refresh(): Promise<void>;
	metrics(): Promise<{ contentType: string; body: string }>;
	health(): { ok: true } | { ok: false; reason: string };
};

/** HOST:PORT or [IPv6]:PORT, HOST an IP address (0.0.0.0 or [::] for every address) or `localhost`. */
export function parseMetricsAddress(text: string): MetricsAddress {
	const match = /^\[([^\]]+)\]:(\d{1,5})$/.exec(text) ?? /^([^:[\]]+):(\d{1,5})$/.exec(text);
	const port = Number(match?.[2]);
	const host = match?.[1] ?? '';
	if (!match || port < 1 || port > 65_535 || (isIP(host) === 0 && host !== 'localhost') || (text.startsWith('[') && isIP(host) !== 6)) {
		throw new UsageError(`invalid --metrics-address ${JSON.stringify(text)}: give HOST:PORT, such as 127.0.0.1:9469 or [::1]:9469 (0.0.0.0:9469 for every address)`);
	}

	return { host, port };
}

export class MetricsServer {
	private constructor(
		private readonly server: Server,
		readonly address: string,
	) {}

	/** Listens on `address`, or fails with one line saying why (in use, not an address of this host, no permission). */
	static async listen(address: MetricsAddress, handlers: MetricsHandlers): Promise<MetricsServer> {
		const server = createServer((request, response) => {
			void answer(request, response, handlers);
		});
		server.keepAliveTimeout = 5000;
		server.headersTimeout = 10_000;
		server.requestTimeout = 15_000;
		const shown = address.host.includes(':') ? `[${address.host}]:${address.port}` : `${address.host}:${address.port}`;
		await new Promise<void>((resolve, reject) => {
			server.once('error', (error: NodeJS.ErrnoException) => {
				const why = { EADDRINUSE: 'the address is already in use', EADDRNOTAVAIL: 'not an address of this host', EACCES: 'permission denied' }[error.code ?? ''] ?? error.message;
				reject(new EgressError(`cannot serve metrics on ${shown}: ${why}`, { cause: error }));
			});
			server.listen({ host: address.host, port: address.port, exclusive: true }, resolve);
		});
		server.unref(); // watch's own work keeps the process alive, never this endpoint
		return new MetricsServer(server, shown);
	}

	/** Stops listening and cuts open connections at once. */
	async close(): Promise<void> {
		const closed = new Promise<void>((resolve) => {
			this.server.close(() => {
				resolve();
			});
		});
		this.server.closeAllConnections();
		await closed;
	}
}

async function answer(request: IncomingMessage, response: ServerResponse, handlers: MetricsHandlers): Promise<void> {
	const path = (request.url ?? '/').split('?')[0];
	const send = (status: number, body: string, contentType = 'text/plain; charset=utf-8') => {
		response.writeHead(status, { 'Content-Type': contentType, 'Content-Length': Buffer.byteLength(body), 'Cache-Control': 'no-store' });
		response.end(request.method === 'HEAD' ? undefined : body);
	};

	try {
		if (path !== '/metrics' && path !== '/healthz') {
			send(404, 'not found: try /metrics or /healthz\n');
			return;
		}

		if (request.method !== 'GET' && request.method !== 'HEAD') {
			response.setHeader('Allow', 'GET, HEAD');
			send(405, 'method not allowed\n');
			return;
		}

		await handlers.refresh();
		if (path === '/metrics') {
			const { contentType, body } = await handlers.metrics();
			send(200, body, contentType);
			return;
		}

		const health = handlers.health();
		send(health.ok ? 200 : 503, health.ok ? 'ok\n' : `${health.reason}\n`);
	} catch (error) {
		if (!response.headersSent) {
			send(500, `${(error as Error).message}\n`);
		}
	}
}
