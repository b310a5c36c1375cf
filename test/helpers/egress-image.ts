// The image docker-egress:latest on a sandbox's daemon, without pulling anything.
//
// With $DOCKER_EGRESS_IMAGE_TAR (a `docker save` of the real image, e.g. from `make image`): that
// tarball is loaded. Otherwise a stand-in is imported: a root filesystem holding the plugin's
// executable (dist/docker-egress) as /usr/local/bin/docker-egress and the host tools it runs —
// nft, ip, conntrack, iptables/ip6tables in both flavours (xtables-*-multi and their names), the
// iptables extensions — with the shared libraries `ldd` lists for them. Entrypoint
// `docker-egress egress`, command `watch`, as the real image runs.
//
//   const tar = await standInImageTar(dir);   // once (a file in dir)
//   await loadEgressImage(sb, tar);           // on each daemon
import { copyFileSync, existsSync, mkdirSync, readdirSync, realpathSync, statSync, symlinkSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { execa } from 'execa';
import type { Sandbox } from './sandbox.js';
import { findExecutable } from './prereqs.js';
import { pluginBinary } from './sandbox.js';

export const EGRESS_IMAGE = 'docker-egress:latest';
export const IMAGE_TAR_ENV = 'DOCKER_EGRESS_IMAGE_TAR';

const XTABLES_NAMES = ['iptables', 'ip6tables', 'iptables-save', 'iptables-restore', 'ip6tables-save', 'ip6tables-restore'];

/** The tarball to load: $DOCKER_EGRESS_IMAGE_TAR, or a stand-in built into `dir` (`import: true`). */
export async function egressImageTar(dir: string): Promise<{ path: string; import: boolean }> {
	const given = process.env[IMAGE_TAR_ENV];
	if (given) {
		return { path: given, import: false };
	}

	return { path: await standInImageTar(dir), import: true };
}

/** Loads (or imports the stand-in) on the sandbox's daemon as docker-egress:latest. */
export async function loadEgressImage(sb: Sandbox, tar: { path: string; import: boolean }): Promise<void> {
	const args = tar.import
		? ['import', '--change', 'ENTRYPOINT ["/usr/local/bin/docker-egress", "egress"]', '--change', 'CMD ["watch"]', tar.path, EGRESS_IMAGE]
		: ['load', '-i', tar.path];
	await sb.docker(args, { timeout: 120_000 });
}

/** Builds the stand-in root filesystem as `dir`/egress-image.tar. */
export async function standInImageTar(dir: string): Promise<string> {
	const root = join(dir, 'egress-rootfs');
	const bin = join(root, 'usr', 'local', 'bin');
	mkdirSync(bin, { recursive: true });
	const sbin = join(root, 'usr', 'sbin');
	mkdirSync(sbin, { recursive: true });
	for (const link of ['bin', 'sbin', 'lib', 'lib64']) {
		if (!existsSync(join(root, link))) symlinkSync(`usr/${link}`, join(root, link));
	}

	for (const sub of ['usr/bin', 'usr/lib', 'usr/lib64', 'tmp', 'etc', 'var/lib/docker-egress', 'run']) mkdirSync(join(root, sub), { recursive: true });
	const binaries: string[] = [];
	copyFileSync(pluginBinary(), join(bin, 'docker-egress'));
	binaries.push(pluginBinary());
	for (const tool of ['nft', 'ip', 'conntrack', 'xtables-nft-multi', 'xtables-legacy-multi']) {
		const path = findExecutable(tool);
		if (!path) throw new Error(`stand-in image: ${tool} not found on $PATH`);
		copyFileSync(realpathSync(path), join(sbin, tool));
		binaries.push(realpathSync(path));
	}

	for (const flavour of ['nft', 'legacy']) {
		for (const name of XTABLES_NAMES) {
			const [tool, action] = name.split('-') as [string, string | undefined];
			symlinkSync(`xtables-${flavour}-multi`, join(sbin, `${tool}-${flavour}${action ? `-${action}` : ''}`));
		}
	}

	for (const name of XTABLES_NAMES) symlinkSync('xtables-nft-multi', join(sbin, name));
	// iptables' extensions are loaded at run time: ldd cannot see them.
	const extensions = ['/usr/lib/x86_64-linux-gnu/xtables', '/usr/lib/aarch64-linux-gnu/xtables', '/usr/lib/xtables'].find((path) => existsSync(path));
	if (extensions) {
		mkdirSync(join(root, extensions), { recursive: true });
		for (const file of readdirSync(extensions)) {
			copyFileSync(join(extensions, file), join(root, extensions, file));
			binaries.push(join(extensions, file));
		}
	}

	for (const library of await sharedLibraries(binaries)) {
		const target = join(root, library);
		if (existsSync(target)) continue;
		mkdirSync(dirname(target), { recursive: true });
		copyFileSync(library, target);
	}

	const tar = join(dir, 'egress-image.tar');
	await execa('tar', ['-C', root, '-cf', tar, '.'], { timeout: 120_000 });
	return tar;
}

/** Every shared library (and the loader) the binaries need, as paths on this machine. */
async function sharedLibraries(binaries: string[]): Promise<string[]> {
	const found = new Set<string>();
	for (const binary of binaries) {
		const r = await execa('ldd', [binary], { reject: false });
		for (const match of r.stdout.matchAll(/(?:=>\s*)?(\/\S+)\s+\(0x[0-9a-f]+\)/g)) {
			const path = match[1]!;
			if (existsSync(path) && statSync(path).isFile()) {
				found.add(path);
				// The name it is linked by may be a symlink to a versioned file: keep both names working.
				found.add(realpathSync(path));
			}
		}
	}

	return [...found];
}
