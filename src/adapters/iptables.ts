// The nat table, through the same iptables flavour (nft or legacy) that dockerd uses: read
// with iptables-save, changed only with one `iptables-restore --noflush` transaction.
import { readFileSync } from 'node:fs';
import { parseNatState, type NatState } from '../core/rules.js';
import { debug } from '../log.js';
import { runCommand } from './run.js';

export type Flavour = 'nft' | 'legacy';
export type Family = 'ipv4' | 'ipv6';

export class Firewall {
	/** The IPv4 nat table as read while detecting the flavour, served to the first readNat(). */
	private primed: string | undefined;

	constructor(
		readonly flavour: Flavour,
		primed?: string,
	) {
		this.primed = primed;
	}

	/**
	 * Picks the flavour whose nat table holds Docker's chains; without any, the one the
	 * `iptables` command on PATH is. DOCKER_EGRESS_IPTABLES=nft|legacy overrides.
	 */
	static async detect(env = process.env): Promise<Firewall> {
		const forced = env['DOCKER_EGRESS_IPTABLES'];
		if (forced === 'nft' || forced === 'legacy') {
			return new Firewall(forced);
		}

		// Reading a legacy table creates it, so legacy is read only where it is in use already.
		const flavours: Flavour[] = legacyTablesInUse() ? ['nft', 'legacy'] : ['nft'];
		const saves = await Promise.all(flavours.map(async (flavour) => readSave(flavour).catch(() => '')));
		const withDocker = flavours.filter((_, i) => /^:DOCKER /m.test(saves[i]!));
		if (withDocker.length === 1) {
			return new Firewall(withDocker[0]!, saves[flavours.indexOf(withDocker[0]!)]);
		}

		const version = await runCommand('iptables', ['--version']).catch(() => '');
		const flavour: Flavour = version.includes('legacy') ? 'legacy' : 'nft';
		debug(`iptables flavour: ${flavour} (no single flavour holds Docker's chains)`);
		return new Firewall(flavour);
	}

	async readNat(family: Family = 'ipv4'): Promise<NatState> {
		if (family === 'ipv4' && this.primed !== undefined) {
			const text = this.primed;
			this.primed = undefined;
			return parseNatState(text);
		}

		return parseNatState(await readSave(this.flavour, family));
	}

	/** The command line that applies restore input (shown by --dry-run). */
	restoreCommand(family: Family = 'ipv4'): string[] {
		return [`${family === 'ipv4' ? 'iptables' : 'ip6tables'}-${this.flavour}-restore`, '-w', '--noflush'];
	}

	async restore(input: string, family: Family = 'ipv4'): Promise<void> {
		const [file, ...args] = this.restoreCommand(family);
		debug(`iptables-restore input:\n${input}`);
		await runCommand(file!, args, input);
	}
}

function legacyTablesInUse(): boolean {
	try {
		return readFileSync('/proc/net/ip_tables_names', 'utf8').trim() !== '';
	} catch {
		return false;
	}
}

async function readSave(flavour: Flavour, family: Family = 'ipv4'): Promise<string> {
	return runCommand(`${family === 'ipv4' ? 'iptables' : 'ip6tables'}-${flavour}-save`, ['-t', 'nat']);
}
