// The fault soak's bookkeeping (soak.test.ts): its settings, the seeded random sequence, what was
// injected (episodes), what the prober saw, and the invariant judged on that record. Pure: no
// sandbox, no processes; every time is in ms since the soak started.
//
// The invariant, per egress network and per probe: the echo server saw the network's own source
// address, or nothing (no answer). Any other answer is a breach — with one exception that nothing
// on the host can close: right after someone else deleted our rules (a flush of our chain, our
// table deleted), a new connection takes Docker's own path until watch writes them again, so it
// leaves as the primary address (Docker's masquerade on) or with its private address (masquerade
// off). Such an answer is an "exposure", not a breach, if it is exactly that address and its probe
// started before our rules were seen back in the firewall after the deletion (the prober looks
// every round), before the network was seen egressing from its own address again, and within
// `exposureMs` of the deletion (a backstop). So once watch has rewritten the rules, any foreign
// answer is a breach: a network left out of the rewrite (its source address gone) must not leak.
// SOAK_STRICT=1 counts exposures as breaches too.

export const FAULT_KINDS = ['address', 'stop', 'restart', 'flush', 'delete', 'churn'] as const;
export type FaultKind = (typeof FAULT_KINDS)[number];

/** Faults that remove our rules: the exposure window follows them. */
const RULE_REMOVALS: ReadonlySet<FaultKind> = new Set(['flush', 'delete']);

export interface SoakSettings {
	seed: number;
	/** How long faults are injected (the final heal and the checks come after). */
	faultMs: number;
	kinds: FaultKind[];
	/** watch --interval, in seconds. */
	interval: number;
	/** How long after the last fault every network must be egressing from its own address again. */
	healMs: number;
	exposureMs: number;
	strict: boolean;
	/** Print each fault and breach as it happens (console), not only in the report. */
	verbose: boolean;
}

function numberFrom(env: NodeJS.ProcessEnv, name: string, fallback: number): number {
	const raw = env[name];
	if (raw === undefined || raw === '') return fallback;
	const value = Number(raw);
	if (!Number.isFinite(value) || value < 0) throw new Error(`${name}=${raw}: expected a non-negative number`);
	return value;
}

/** SOAK_SECONDS, SOAK_SEED, SOAK_FAULTS, SOAK_INTERVAL, SOAK_HEAL_SECONDS, SOAK_EXPOSURE_SECONDS, SOAK_STRICT, SOAK_VERBOSE. */
export function soakSettings(env: NodeJS.ProcessEnv = process.env): SoakSettings {
	const kinds = (env['SOAK_FAULTS'] || FAULT_KINDS.join(','))
		.split(',')
		.map((kind) => kind.trim())
		.filter(Boolean);
	for (const kind of kinds) {
		if (!(FAULT_KINDS as readonly string[]).includes(kind)) throw new Error(`SOAK_FAULTS: unknown fault ${JSON.stringify(kind)} (known: ${FAULT_KINDS.join(', ')})`);
	}
	if (kinds.length === 0) throw new Error('SOAK_FAULTS: no fault kind selected');
	const interval = numberFrom(env, 'SOAK_INTERVAL', 2);
	const seedText = env['SOAK_SEED'];
	const seed = seedText ? Number(seedText) >>> 0 : Math.floor(Math.random() * 2 ** 32);
	if (seedText && !/^\d+$/.test(seedText)) throw new Error(`SOAK_SEED=${seedText}: expected a non-negative integer`);
	return {
		seed,
		faultMs: numberFrom(env, 'SOAK_SECONDS', 75) * 1000,
		kinds: kinds as FaultKind[],
		interval,
		healMs: numberFrom(env, 'SOAK_HEAL_SECONDS', 30) * 1000,
		// The periodic check twice over plus a hung daemon's deadline (issue 10: repair while it hangs).
		exposureMs: numberFrom(env, 'SOAK_EXPOSURE_SECONDS', 2 * interval + 10) * 1000,
		strict: env['SOAK_STRICT'] === '1',
		verbose: env['SOAK_VERBOSE'] === '1',
	};
}

/** mulberry32: a small seeded generator, so that SOAK_SEED replays a sequence. */
export class Random {
	private state: number;

	constructor(seed: number) {
		this.state = seed >>> 0;
	}

	/** In [0, 1). */
	next(): number {
		this.state = (this.state + 0x6d2b79f5) >>> 0;
		let z = this.state;
		z = Math.imul(z ^ (z >>> 15), z | 1);
		z ^= z + Math.imul(z ^ (z >>> 7), z | 61);
		return ((z ^ (z >>> 14)) >>> 0) / 2 ** 32;
	}

	/** An integer in [min, max]. */
	between(min: number, max: number): number {
		return min + Math.floor(this.next() * (max - min + 1));
	}

	pick<T>(items: readonly T[]): T {
		if (items.length === 0) throw new Error('pick from nothing');
		return items[Math.floor(this.next() * items.length)]!;
	}
}

/** An egress network the prober watches. */
export interface ProbedNetwork {
	name: string;
	subnet: string;
	sourceIp: string;
	/** Docker's masquerade: without our rule its traffic leaves as the primary address, else unchanged. */
	masquerade: boolean;
	how: string;
}

/** One injected fault, from its start to its end (an instant fault ends when its command is done). */
export interface Episode {
	kind: FaultKind;
	what: string;
	start: number;
	end?: number;
	/** The address taken away (kind 'address'). */
	address?: string;
	/** How it went, when that is worth a line (e.g. a refused create). */
	notes: string[];
}

export interface Probe {
	network: string;
	start: number;
	end: number;
	/** The address the echo server saw; undefined: no answer. */
	seen: string | undefined;
	/** Why there was no probe or no answer, when known (container down, netns gone). */
	note?: string;
	/**
	 * Not a probe's answer but the echo server's own record of a private source (the witness set,
	 * soak.test.ts): Docker 28+ drop the reply to a leaked private address before it reaches the
	 * container, so only the upstream sees such a leak. start..end: since the previous reading.
	 */
	witness?: boolean;
}

export type Verdict = 'own' | 'no answer' | 'exposure' | 'breach';

export interface Judged extends Probe {
	verdict: Verdict;
	/** For an exposure: the rule removal it followed. */
	after?: Episode;
}

function inSubnet(address: string, subnet: string): boolean {
	const [base, lengthText] = subnet.split('/');
	const toNumber = (a: string) => a.split('.').reduce((n, octet) => n * 256 + Number(octet), 0);
	const length = Number(lengthText);
	if (!base || !/^\d+\.\d+\.\d+\.\d+$/.test(address)) return false;
	const mask = length === 0 ? 0 : (2 ** 32 - 2 ** (32 - length));
	return (toNumber(address) & mask) >>> 0 === (toNumber(base) & mask) >>> 0;
}

/** What the echo server sees from a network whose rule of ours is missing. */
export function withoutOurRule(network: ProbedNetwork, primary: string, seen: string): boolean {
	return network.masquerade ? seen === primary : inSubnet(seen, network.subnet);
}

/** Which address an answer is, in words, for a breach line. */
export function describeAddress(network: ProbedNetwork, primary: string, seen: string): string {
	if (seen === primary) return `${seen} (the primary: Docker's masquerade)`;
	if (inSubnet(seen, network.subnet)) return `${seen} (its private address: a leak)`;
	return seen;
}

export class SoakRecord {
	readonly episodes: Episode[] = [];
	readonly judged: Judged[] = [];
	readonly adminMissing: { at: number; missing: string[] }[] = [];
	readonly problems: string[] = [];
	/** The prober's reads of the firewall: did our rules exist? */
	private readonly ruleReads: { start: number; end: number; present: boolean }[] = [];
	private readonly t0 = Date.now();

	constructor(
		readonly settings: SoakSettings,
		readonly networks: ProbedNetwork[],
		readonly primary: string,
		private readonly print: (line: string) => void = () => undefined,
	) {}

	now(): number {
		return Date.now() - this.t0;
	}

	static at(ms: number): string {
		return `+${(ms / 1000).toFixed(1).padStart(5)}s`;
	}

	begin(kind: FaultKind, what: string, extra: Partial<Episode> = {}): Episode {
		const episode: Episode = { kind, what, start: this.now(), notes: [], ...extra };
		this.episodes.push(episode);
		if (this.settings.verbose) this.print(`${SoakRecord.at(episode.start)} fault ${kind}: ${what}`);
		return episode;
	}

	finish(episode: Episode, note?: string): void {
		episode.end = this.now();
		if (note) episode.notes.push(note);
		if (this.settings.verbose) this.print(`${SoakRecord.at(episode.end)} end   ${episode.kind}: ${episode.what}${note ? ` (${note})` : ''}`);
	}

	problem(text: string): void {
		this.problems.push(`${SoakRecord.at(this.now())} ${text}`);
		if (this.settings.verbose) this.print(`${SoakRecord.at(this.now())} PROBLEM ${text}`);
	}

	/** Judges a probe as it comes in (only the past decides, so the live verdict is the final one). */
	add(probe: Probe): Judged {
		const network = this.networks.find((n) => n.name === probe.network);
		if (!network) throw new Error(`probe of an unknown network ${probe.network}`);
		const judged: Judged = { ...probe, verdict: 'breach' };
		if (probe.seen === undefined) judged.verdict = 'no answer';
		else if (probe.seen === network.sourceIp) judged.verdict = 'own';
		else {
			const removal = this.exposureWindow(network, probe);
			if (removal && !this.settings.strict) {
				judged.verdict = 'exposure';
				judged.after = removal;
			}
		}
		this.judged.push(judged);
		if (this.settings.verbose && (judged.verdict === 'breach' || judged.verdict === 'exposure')) {
			this.print(`${SoakRecord.at(probe.start)} ${judged.verdict.toUpperCase()} ${network.name} seen as ${describeAddress(network, this.primary, probe.seen!)}`);
		}
		return judged;
	}

	/** A read of our rules that began at `start` found them in place (or not). */
	rulesRead(start: number, present: boolean): void {
		this.ruleReads.push({ start, end: this.now(), present });
	}

	/** When our rules were first seen back after `since` (by a read that began after it), if they were. */
	private rulesBackAfter(since: number): number | undefined {
		return this.ruleReads.find((read) => read.start >= since && read.present)?.end;
	}

	/** The rule removal that explains this foreign answer, if one does (see the header). */
	private exposureWindow(network: ProbedNetwork, probe: Probe): Episode | undefined {
		if (probe.seen === undefined || !withoutOurRule(network, this.primary, probe.seen)) return undefined;
		const removal = this.episodes.filter((e) => RULE_REMOVALS.has(e.kind) && e.start <= probe.end).at(-1);
		if (!removal) return undefined;
		const removedAt = removal.end ?? probe.end;
		if (probe.start > removedAt + this.settings.exposureMs) return undefined;
		const back = this.rulesBackAfter(removedAt);
		if (back !== undefined && probe.start > back) return undefined;
		const healedSince = this.judged.some((j) => j.network === network.name && j.verdict === 'own' && j.start >= removedAt);
		return healedSince ? undefined : removal;
	}

	adminCheck(missing: string[]): void {
		if (missing.length === 0) return;
		const at = this.now();
		this.adminMissing.push({ at, missing });
		if (this.settings.verbose) this.print(`${SoakRecord.at(at)} ADMIN RULES MISSING: ${missing.join('; ')}`);
	}

	breaches(): Judged[] {
		return this.judged.filter((j) => j.verdict === 'breach');
	}

	/** Whether every episode has ended. */
	quiet(): boolean {
		return this.episodes.every((e) => e.end !== undefined);
	}

	lastFaultEnd(): number {
		return Math.max(0, ...this.episodes.map((e) => e.end ?? this.now()));
	}

	/** The networks not yet seen egressing from their own address since `since`. */
	unhealedSince(since: number): ProbedNetwork[] {
		return this.networks.filter((n) => !this.judged.some((j) => j.network === n.name && j.verdict === 'own' && j.start >= since));
	}

	/** Whether `episode` could have disturbed `network`'s egress. */
	private static affects(episode: Episode, network: ProbedNetwork): boolean {
		switch (episode.kind) {
			case 'address':
				return episode.address === network.sourceIp;
			case 'restart':
			case 'flush':
			case 'delete':
				return true;
			case 'stop':
			case 'churn':
				return false;
		}
	}

	/**
	 * Time to heal of each (fault, network): from the fault's end to the start of the first probe
	 * after it that saw the network's own address (so at most ~1 s, the probe period, late), unless
	 * another fault that disturbs that network was still going on at that end. undefined: never.
	 */
	heals(): { episode: Episode; network: ProbedNetwork; ms: number | undefined }[] {
		const result: { episode: Episode; network: ProbedNetwork; ms: number | undefined }[] = [];
		for (const episode of this.episodes) {
			const end = episode.end;
			if (end === undefined) continue;
			for (const network of this.networks) {
				const overlapped = this.episodes.some(
					(other) => other !== episode && other.start < end && (other.end ?? Infinity) > end && SoakRecord.affects(other, network),
				);
				if (overlapped) continue;
				const healed = this.judged.find((j) => j.network === network.name && j.verdict === 'own' && j.start >= end);
				result.push({ episode, network, ms: healed ? healed.start - end : undefined });
			}
		}
		return result;
	}

	/** The whole record, for the test log. */
	report(): string {
		const lines: string[] = [];
		const s = this.settings;
		lines.push(
			`fault soak: seed ${s.seed} (replay: SOAK_SEED=${s.seed}), faults ${s.kinds.join(',')}, ${s.faultMs / 1000} s of faults, ` +
				`watch --interval ${s.interval}, exposure window ${s.exposureMs / 1000} s${s.strict ? ' (strict: none allowed)' : ''}, heal bound ${s.healMs / 1000} s`,
		);
		lines.push('', 'injected:');
		for (const e of this.episodes) {
			const span = e.end === undefined ? 'not ended' : e.end - e.start > 300 ? `until ${SoakRecord.at(e.end)}` : '';
			lines.push(`  ${SoakRecord.at(e.start)} ${e.kind.padEnd(7)} ${e.what}${span ? ` (${span})` : ''}${e.notes.length ? ` — ${e.notes.join('; ')}` : ''}`);
		}
		const counts = new Map<FaultKind, number>();
		for (const e of this.episodes) counts.set(e.kind, (counts.get(e.kind) ?? 0) + 1);
		lines.push(`  ${this.episodes.length} faults: ${[...counts].map(([k, n]) => `${k} ${n}`).join(', ')}`);

		const heals = this.heals();
		lines.push('', 'invariant record (heal: fault end to the first probe seeing the own address; ~1 s resolution):');
		for (const n of this.networks) {
			const all = this.judged.filter((j) => j.network === n.name);
			const mine = all.filter((j) => !j.witness);
			const count = (v: Verdict) => all.filter((j) => j.verdict === v).length;
			const healed = heals.filter((h) => h.network === n && h.ms !== undefined).map((h) => h.ms!);
			const longest = healed.length ? `${(Math.max(...healed) / 1000).toFixed(1)} s` : '-';
			lines.push(
				`  ${n.name.padEnd(10)} ${n.sourceIp.padEnd(11)} ${(n.masquerade ? 'masq on' : 'masq off').padEnd(8)} ${n.how.padEnd(14)} ` +
					`probes ${mine.length}${all.length > mine.length ? ` (+${all.length - mine.length} leaks seen by the echo server only)` : ''}, own ${count('own')}, no answer ${count('no answer')}, exposures ${count('exposure')}, breaches ${count('breach')}, longest heal ${longest}`,
			);
		}
		const timelines = this.timelines();
		if (timelines.length) {
			lines.push("  timeline, one character a probe round (1 s; 2-3 s when a probe gets no answer; '.' own address, '_' no answer, 'e' exposure, 'x' breach; capital: seen by the echo server only):");
			lines.push(...timelines.map((line) => `    ${line}`));
		}
		lines.push('  longest heal by fault kind:');
		for (const kind of FAULT_KINDS) {
			const of = heals.filter((h) => h.episode.kind === kind);
			if (of.length === 0) continue;
			const worst = of.reduce((a, b) => ((b.ms ?? Infinity) > (a.ms ?? Infinity) ? b : a));
			const ms = worst.ms === undefined ? 'never' : `${(worst.ms / 1000).toFixed(1)} s`;
			lines.push(`    ${kind.padEnd(7)} ${ms} (${worst.network.name} after ${SoakRecord.at(worst.episode.start)} ${worst.episode.what})`);
		}
		const exposures = this.judged.filter((j) => j.verdict === 'exposure').sort((a, b) => a.start - b.start);
		if (exposures.length) {
			lines.push(`  exposures (a foreign answer right after our rules were removed by someone else, before watch rewrote them):`);
			for (const j of exposures.slice(0, 40)) {
				const n = this.networks.find((x) => x.name === j.network)!;
				const after = Math.max(0, j.start - (j.after!.end ?? j.start));
				lines.push(`    ${SoakRecord.at(j.start)} ${j.network} seen as ${describeAddress(n, this.primary, j.seen!)}${j.witness ? ' by the echo server' : ''}, ${(after / 1000).toFixed(1)} s after "${j.after!.what}"`);
			}
			if (exposures.length > 40) lines.push(`    … and ${exposures.length - 40} more`);
		}
		const total = this.judged.filter((j) => !j.witness).length;
		const healedAll = heals.filter((h) => h.ms !== undefined).map((h) => h.ms!);
		lines.push(
			`  summary: ${this.episodes.length} faults, ${total} probes, ${this.breaches().length} breaches, ${exposures.length} exposures, ` +
				`longest heal ${healedAll.length ? (Math.max(...healedAll) / 1000).toFixed(1) : '-'} s, admin rules missing at ${this.adminMissing.length} checks`,
		);
		if (this.problems.length) lines.push('', 'problems:', ...this.problems.map((p) => `  ${p}`));
		return lines.join('\n');
	}

	/** Per network, one character a probe (none past 900 rounds: too long to read). */
	private timelines(): string[] {
		const marks: Record<Verdict, string> = { own: '.', 'no answer': '_', exposure: 'e', breach: 'x' };
		const width = Math.max(...this.networks.map((n) => n.name.length));
		const result: string[] = [];
		for (const n of this.networks) {
			const probes = this.judged.filter((j) => j.network === n.name && !j.witness).sort((a, b) => a.start - b.start);
			if (probes.length > 900) return [];
			const chars = probes.map((j) => marks[j.verdict]);
			for (const w of this.judged.filter((j) => j.network === n.name && j.witness)) {
				const i = probes.findIndex((j) => j.start >= w.start && j.start <= w.end);
				if (i >= 0) chars[i] = marks[w.verdict].toUpperCase();
			}
			result.push(`${n.name.padEnd(width)} ${chars.join('')}`);
		}
		return result;
	}

	/** One line per breach (the first 40, then a count), for the failure message. */
	breachLines(): string[] {
		const all = this.breaches().sort((a, b) => a.start - b.start);
		const lines = all.slice(0, 40).map((j) => {
			const n = this.networks.find((x) => x.name === j.network)!;
			const active = this.episodes.filter((e) => e.start <= j.end && (e.end ?? Infinity) >= j.start).map((e) => `${e.kind}: ${e.what}`);
			const last = this.episodes.filter((e) => e.start <= j.start).at(-1);
			// The latest fault of each kind that touched this network, the two most recent kinds.
			const latest = new Map<FaultKind, Episode>();
			for (const e of this.episodes) if (e.start <= j.start && SoakRecord.affects(e, n)) latest.set(e.kind, e);
			const touching = [...latest.values()].sort((a, b) => a.start - b.start).slice(-2).filter((e) => e !== last);
			const cause = touching.length ? ` (before that, it was touched by: ${touching.map((e) => `${SoakRecord.at(e.start)} ${e.kind}: ${e.what}`).join(' | ')})` : '';
			return (
				`${SoakRecord.at(j.start)}${j.witness ? `..${SoakRecord.at(j.end).trim()}` : ''} ${n.name} (source ${n.sourceIp}) egressed as ${describeAddress(n, this.primary, j.seen!)}${j.witness ? ' (seen by the echo server)' : ''}; ` +
				(active.length ? `during: ${active.join(' | ')}` : `no fault going on; last: ${last ? `${SoakRecord.at(last.start)} ${last.kind}: ${last.what}` : 'none'}`) +
				cause
			);
		});
		if (all.length > 40) lines.push(`… and ${all.length - 40} more breaches`);
		return lines;
	}
}
