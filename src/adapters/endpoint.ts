// Which Docker endpoint to talk to, resolved the way the docker CLI does it:
// --context > -H > $DOCKER_HOST > $DOCKER_CONTEXT > currentContext in config.json > default socket.
import { accessSync, constants, existsSync, readFileSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import path from 'node:path';
import { UsageError } from '../errors.js';

export const DEFAULT_HOST = 'unix:///var/run/docker.sock';

export type TlsFiles = { ca?: string; cert?: string; key?: string; verify: boolean };

export type Endpoint = {
	host: string;
	/** Where the endpoint came from, for error messages: `context "x"`, `-H`, `DOCKER_HOST`… */
	source: string;
	tls?: TlsFiles;
};

/** The docker global flags that decide the endpoint (parsed by cli/globals.ts). */
export type EndpointFlags = {
	context?: string;
	host?: string;
	config?: string;
	tls?: boolean;
	tlsverify?: boolean;
	tlscacert?: string;
	tlscert?: string;
	tlskey?: string;
};

type Env = Record<string, string | undefined>;

export function configDir(flags: EndpointFlags, env: Env = process.env): string {
	return flags.config ?? env['DOCKER_CONFIG'] ?? path.join(env['HOME'] ?? homedir(), '.docker');
}

export function resolveEndpoint(flags: EndpointFlags, env: Env = process.env): Endpoint {
	if (flags.context !== undefined && flags.host !== undefined) {
		throw new UsageError('conflicting options: either specify --host or --context, not both');
	}

	checkModemCertPath(env);
	const config = configDir(flags, env);
	if (flags.context !== undefined) {
		return contextEndpoint(flags.context, config, flags, env, `--context ${flags.context}`);
	}

	if (flags.host !== undefined) {
		return hostEndpoint(flags.host, '-H', flags, env, config);
	}

	if (env['DOCKER_HOST']) {
		return hostEndpoint(env['DOCKER_HOST'], 'DOCKER_HOST', flags, env, config);
	}

	if (env['DOCKER_CONTEXT']) {
		return contextEndpoint(env['DOCKER_CONTEXT'], config, flags, env, `DOCKER_CONTEXT=${env['DOCKER_CONTEXT']}`);
	}

	const current = currentContext(config);
	if (current) {
		return contextEndpoint(current, config, flags, env, `current context ${current}`);
	}

	return { host: DEFAULT_HOST, source: 'default' };
}

export function isLocalEndpoint(endpoint: Endpoint): boolean {
	return endpoint.host.startsWith('unix://');
}

function currentContext(config: string): string | undefined {
	const file = path.join(config, 'config.json');
	if (!existsSync(file)) {
		return undefined;
	}

	try {
		const parsed = JSON.parse(readFileSync(file, 'utf8')) as { currentContext?: unknown };
		return typeof parsed.currentContext === 'string' && parsed.currentContext !== '' ? parsed.currentContext : undefined;
	} catch (error) {
		throw new UsageError(`cannot read ${file}: ${(error as Error).message}`, { cause: error });
	}
}

function contextEndpoint(name: string, config: string, flags: EndpointFlags, env: Env, source: string): Endpoint {
	if (name === 'default') {
		// The default context is whatever -H / DOCKER_HOST say, else the default socket.
		return env['DOCKER_HOST'] ? hostEndpoint(env['DOCKER_HOST'], 'DOCKER_HOST', flags, env, config) : { host: DEFAULT_HOST, source };
	}

	// node:crypto only here (a named context): loading it costs every other start a few ms.
	const id = process.getBuiltinModule('node:crypto').createHash('sha256').update(name).digest('hex');
	const metaFile = path.join(config, 'contexts', 'meta', id, 'meta.json');
	if (!existsSync(metaFile)) {
		throw new UsageError(`context "${name}" does not exist (looked for ${metaFile})`);
	}

	let meta: { Endpoints?: { docker?: { Host?: string; SkipTLSVerify?: boolean } } };
	try {
		meta = JSON.parse(readFileSync(metaFile, 'utf8')) as typeof meta;
	} catch (error) {
		throw new UsageError(`context "${name}": cannot read ${metaFile}: ${(error as Error).message}`, { cause: error });
	}

	const docker = meta.Endpoints?.docker;
	if (!docker?.Host) {
		throw new UsageError(`context "${name}" has no docker endpoint`);
	}

	const tlsDir = path.join(config, 'contexts', 'tls', id, 'docker');
	const file = (base: string) => {
		const full = path.join(tlsDir, base);
		return existsSync(full) ? readableTlsFile(full, `context "${name}"`) : undefined;
	};

	const tls = { ca: file('ca.pem'), cert: file('cert.pem'), key: file('key.pem'), verify: !docker.SkipTLSVerify };
	checkKeyPair(tls, `context "${name}" (${tlsDir})`);
	const hasTls = tls.ca !== undefined || tls.cert !== undefined;
	return { host: normalizeHost(docker.Host), source, ...(hasTls ? { tls } : {}) };
}

function hostEndpoint(host: string, source: string, flags: EndpointFlags, env: Env, config: string): Endpoint {
	const verify = flags.tlsverify === true || Boolean(env['DOCKER_TLS_VERIFY']);
	const useTls = verify || flags.tls === true;
	const endpoint: Endpoint = { host: normalizeHost(host), source };
	if (!useTls) {
		return endpoint;
	}

	const certDir = env['DOCKER_CERT_PATH'] ?? config;
	const pick = (flag: string | undefined, base: string, name: string) => {
		if (flag !== undefined) {
			// Named on the command line: it must be there (never silently a connection without it).
			return readableTlsFile(flag, `--${name}`);
		}

		const full = path.join(certDir, base);
		return existsSync(full) ? readableTlsFile(full, env['DOCKER_CERT_PATH'] === undefined ? name : `${name} from DOCKER_CERT_PATH`) : undefined;
	};

	const tls = { ca: pick(flags.tlscacert, 'ca.pem', 'tlscacert'), cert: pick(flags.tlscert, 'cert.pem', 'tlscert'), key: pick(flags.tlskey, 'key.pem', 'tlskey'), verify };
	checkKeyPair(tls, certDir);
	return { ...endpoint, tls };
}

/** A TLS file the connection will read, checked now: one clear line instead of a raw ENOENT later. */
function readableTlsFile(file: string, what: string): string {
	try {
		accessSync(file, constants.R_OK);
		if (!statSync(file).isFile()) {
			throw new UsageError(`TLS file ${file} (${what}) is not a file`);
		}
	} catch (error) {
		if (error instanceof UsageError) {
			throw error;
		}

		const code = (error as NodeJS.ErrnoException).code;
		throw new UsageError(`cannot read TLS file ${file} (${what}): ${code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : (error as Error).message}`, { cause: error });
	}

	return file;
}

/** A client certificate without its key (or the reverse) cannot be used: name the missing one. */
function checkKeyPair(tls: TlsFiles, where: string): void {
	if ((tls.cert === undefined) !== (tls.key === undefined)) {
		const [have, missing] = tls.cert === undefined ? [tls.key!, 'cert.pem (--tlscert)'] : [tls.cert, 'key.pem (--tlskey)'];
		throw new UsageError(`TLS client ${tls.cert === undefined ? 'key' : 'certificate'} ${have} has no ${missing} beside it in ${where}`);
	}
}

/**
 * The Docker client library reads $DOCKER_CERT_PATH/{ca,cert,key}.pem by itself whenever
 * $DOCKER_HOST names a TCP host, whatever endpoint is used: check those files first.
 */
function checkModemCertPath(env: Env): void {
	const certPath = env['DOCKER_CERT_PATH'];
	const host = env['DOCKER_HOST'];
	if (!certPath || !host || host.startsWith('unix://') || host.startsWith('npipe://')) {
		return;
	}

	for (const base of ['ca.pem', 'cert.pem', 'key.pem']) {
		readableTlsFile(path.join(certPath, base), 'DOCKER_CERT_PATH');
	}
}

/** `host:port` and `tcp://host` get docker's defaults; unix/ssh URLs pass through. */
export function normalizeHost(host: string): string {
	if (!host.includes('://')) {
		return `tcp://${host}`;
	}

	return host;
}
