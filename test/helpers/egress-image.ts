// The image docker-egress:latest on a sandbox's daemon, without pulling anything.
//
// With $DOCKER_EGRESS_IMAGE_TAR (a `docker save` of the real image, e.g. from `make image`): that
// tarball is loaded. Otherwise the real image's root filesystem is made with `pkg/image.sh --tar`
// and imported with the same settings as `make image` uses.
//
//   const tar = await egressImageTar(dir);    // once (a file in dir)
//   await loadEgressImage(sb, tar);           // on each daemon
import { join } from 'node:path';
import { execa } from 'execa';
import type { Sandbox } from './sandbox.js';
import { pluginBinary, repoRoot } from './sandbox.js';

export const EGRESS_IMAGE = 'docker-egress:latest';
export const IMAGE_TAR_ENV = 'DOCKER_EGRESS_IMAGE_TAR';


/** The tarball to load: $DOCKER_EGRESS_IMAGE_TAR, or a stand-in built into `dir` (`import: true`). */
export async function egressImageTar(dir: string): Promise<{ path: string; import: boolean }> {
	const given = process.env[IMAGE_TAR_ENV];
	if (given) {
		return { path: given, import: false };
	}

	// The real image's root filesystem (pkg/image.sh, what `make image` imports).
	const path = join(dir, 'egress-image.tar');
	await execa('bash', [join(repoRoot, 'pkg', 'image.sh'), '--tar', path, pluginBinary()], { timeout: 300_000 });
	return { path, import: true };
}

/** Loads (or imports the stand-in) on the sandbox's daemon as docker-egress:latest. */
export async function loadEgressImage(sb: Sandbox, tar: { path: string; import: boolean }): Promise<void> {
	const args = tar.import
		? [
				'import',
				// As pkg/image.sh imports it.
				'--change',
				'ENTRYPOINT ["/usr/local/bin/docker-egress"]',
				'--change',
				'CMD ["watch"]',
				'--change',
				'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
				'--change',
				'ENV DOCKER_HOST=unix:///var/run/docker.sock',
				'--change',
				'ENV DOCKER_EGRESS_STATE_DIR=/var/lib/docker-egress',
				tar.path,
				EGRESS_IMAGE,
			]
		: ['load', '-i', tar.path];
	await sb.docker(args, { timeout: 120_000 });
}

