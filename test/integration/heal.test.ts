// Heal at once (issue 10): watch follows the host as well as Docker. With a drift check every
// 300 s, so that the periodic check cannot be what heals, a flushed or deleted rule set comes back
// from the kernel's own rule notification (`nft monitor`), and a source address that returns to the
// host gets its rule back from `ip monitor` — both without any Docker event, proved by the echo
// server. And while nothing happens, nothing happens: our own writes do not wake us up in a loop.
//
// iptables-legacy has no notifications: there the firewall half is the interval's (the log says
// so), and only the address half is tested.
import { readFileSync } from 'node:fs';
import anyTest, { type ExecutionContext } from 'ava';
import { useSandbox, type Sandbox } from '../helpers/sandbox.js';
import { deleteEgressTable, egressRules, firewallBackend, flushEgressRules, ruleFor, sleep } from './firewall.js';
import { Watch, childrenOf, commOf, egress, labelledNetwork, rewriteMark, stateDir, type LogLine } from './watch-helpers.js';

const { test, sandbox } = useSandbox(anyTest);

const backend = firewallBackend();
const NET = { name: 'z_heal', subnet: '10.71.0.0/24', ip: '192.0.2.12' };
/** Generous: this machine is shared and noisy. What it took is logged. */
const HEAL_WITHIN_MS = 10_000;

/** watch with a 300 s interval and debug lines (one `reconciled` line per reconcile, with its trigger). */
async function startSlowWatch(t: ExecutionContext, sb: Sandbox): Promise<Watch> {
	const args = ['watch', '--interval', '300', '--log-format', 'json', '--state-dir', stateDir(sb)];
	const watch = new Watch(egress(sb, args, { globalArgs: ['-l', 'debug'] }), true);
	t.teardown(async () => {
		await watch.stop();
	});
	await watch.waitFor('watch started', {}, 30_000);
	return watch;
}

/** Whether the firewall's changes are followed here (not with iptables-legacy), as watch says. */
function followsFirewall(watch: Watch): boolean {
	return /firewall rule changes/.test(String(watch.find('watch started')[0]?.['follows']));
}

function after(lines: LogLine[], since: number): LogLine[] {
	return lines.filter((line) => Date.parse(line.time) >= since);
}

/** Polls until our rule for NET is back; resolves to how long it took. */
async function ruleBack(sb: Sandbox, since: number): Promise<number> {
	for (;;) {
		if (ruleFor(await egressRules(sb), NET.subnet, NET.ip)) return Date.now() - since;
		if (Date.now() - since > HEAL_WITHIN_MS) throw new Error(`no ${backend} rule ${NET.subnet} -> ${NET.ip} within ${HEAL_WITHIN_MS} ms`);
		await sleep(50);
	}
}

/** CPU time (user + system, clock ticks) of a process and its children. */
function cpuTicks(pid: number): number {
	return [pid, ...childrenOf(pid)].reduce((sum, each) => {
		try {
			const stat = readFileSync(`/proc/${each}/stat`, 'utf8');
			const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
			return sum + Number(fields[11]) + Number(fields[12]);
		} catch {
			return sum;
		}
	}, 0);
}

test.serial('setup: one labelled egress network', async (t) => {
	const sb = sandbox();
	await labelledNetwork(sb, NET.name, NET.subnet, NET.ip);
	const sync = await egress(sb, ['sync', '--state-dir', stateDir(sb)]);
	t.is(sync.exitCode, 0, sync.stderr);
	t.is(await sb.probe(NET.name), NET.ip);
});

test.serial('watch runs ip monitor (and nft monitor where the firewall reports changes) as children, and stops them with itself', async (t) => {
	const sb = sandbox();
	const watch = await startSlowWatch(t, sb);
	const started = watch.find('watch started')[0]!;
	t.log(`${backend}: watch follows ${JSON.stringify(started['follows'])}`);
	const wanted = followsFirewall(watch) ? ['ip', 'nft'] : ['ip'];
	const deadline = Date.now() + 5_000;
	let children = childrenOf(watch.pid);
	while (!wanted.every((comm) => children.some((pid) => commOf(pid) === comm)) && Date.now() < deadline) {
		await sleep(100);
		children = childrenOf(watch.pid);
	}
	const monitors = children.filter((pid) => wanted.includes(commOf(pid)));
	t.deepEqual([...new Set(monitors.map(commOf))].sort(), wanted.sort(), `children: ${children.map((pid) => `${pid} ${commOf(pid)}`).join(', ')}`);
	t.deepEqual(watch.find('host monitor failed'), [], watch.stderr);

	const before = Date.now();
	const r = await watch.stop();
	t.is(r.exitCode, 0, r.stderr);
	t.true(Date.now() - before < 2_500, `stopped ${Date.now() - before} ms after SIGTERM`);
	t.deepEqual(monitors.filter((pid) => commOf(pid) !== ''), [], 'no monitor left behind');
});

test.serial('a flushed rule set, and a deleted table, come back at once from the firewall notification, not the interval', async (t) => {
	const sb = sandbox();
	const watch = await startSlowWatch(t, sb);
	if (!followsFirewall(watch)) {
		t.log(`${backend} (legacy flavour): no firewall notifications; the interval is the safety net (watch says: ${String(watch.find('watch started')[0]!['follows'])})`);
		t.pass();
		return;
	}

	const took: string[] = [];
	for (const [what, breakIt] of [
		['flush', async () => flushEgressRules(sb)],
		['delete', async () => deleteEgressTable(sb)],
	] as const) {
		await sleep(500); // the previous repair's own events have been looked at
		const since = Date.now();
		await breakIt();
		const ms = await ruleBack(sb, since);
		took.push(`${what}: rule back after ${ms} ms`);
		t.is(await sb.probe(NET.name), NET.ip);
		const repairs = after(watch.lines, since).filter((line) => ['rule added', 'firewall repaired'].includes(line.msg));
		t.true(repairs.length > 0, watch.stderr);
		t.true(
			repairs.every((line) => line['trigger'] === 'firewall'),
			`repaired because of the notification: ${JSON.stringify(repairs)}`,
		);
	}
	t.log(`${backend}: ${took.join('; ')}`);
	t.true(watch.running);
});

test.serial('a source address that leaves and comes back: reconciled from ip monitor at once, the rule is back with no Docker event', async (t) => {
	const sb = sandbox();
	const watch = await startSlowWatch(t, sb);
	const cidr = `${NET.ip}/24`;
	t.teardown(async () => {
		await sb.exec('ip', ['addr', 'add', cidr, 'dev', sb.uplink], { reject: false }); // whatever happened
	});

	const left = Date.now();
	await sb.exec('ip', ['addr', 'del', cidr, 'dev', sb.uplink]);
	await watch.until('a reconcile triggered by the address removal', () => after(watch.find('reconciled', { trigger: 'host' }), left).length > 0, HEAL_WITHIN_MS);
	const noticed = Date.parse(after(watch.find('reconciled', { trigger: 'host' }), left)[0]!.time) - left;
	// What status the network has meanwhile (fail closed) is another test's; here: it is not active.
	const ls = await egress(sb, ['ls', '--format', '{{.Name}} {{.Status}}', '--state-dir', stateDir(sb)]);
	t.notRegex(ls.stdout, new RegExp(`^${NET.name} active$`, 'm'), ls.stdout + ls.stderr);

	await sleep(300);
	const back = Date.now();
	await sb.exec('ip', ['addr', 'add', cidr, 'dev', sb.uplink]);
	const ms = await ruleBack(sb, back);
	t.log(`address removal reconciled after ${noticed} ms; rule back ${ms} ms after the address returned`);
	await watch.until('a reconcile triggered by the address return', () => after(watch.find('reconciled', { trigger: 'host' }), back).length > 0, HEAL_WITHIN_MS);
	t.is(await sb.probe(NET.name), NET.ip);
	t.deepEqual(
		after(watch.find('docker event'), left).filter((line) => Date.parse(line.time) < back + ms),
		[],
		'no Docker event explains it',
	);
	const added = after(watch.find('rule added', { network: NET.name }), back);
	t.true(added.every((line) => line['trigger'] === 'host'), JSON.stringify(added));
	t.true(watch.running);
});

test.serial('idle: no reconcile, no rewrite, no CPU to speak of — our own writes do not wake us up in a loop', async (t) => {
	const sb = sandbox();
	const watch = await startSlowWatch(t, sb);
	// One repair first (where the firewall is followed): its own write must not start a loop.
	if (followsFirewall(watch)) {
		await flushEgressRules(sb);
		await ruleBack(sb, Date.now());
	}
	await sleep(1_500);
	const since = Date.now();
	const mark = await rewriteMark(sb, backend, NET.subnet);
	const ticks = cpuTicks(watch.pid);
	await sleep(5_000);
	const spent = cpuTicks(watch.pid) - ticks;
	const reconciles = after(watch.find('reconciled'), since);
	t.log(`${backend}: ${reconciles.length} reconciles and ${spent} CPU ticks (watch and its monitors) in 5 s idle; all lines: ${after(watch.lines, since).length}`);
	t.deepEqual(reconciles, [], 'no reconcile while idle');
	t.deepEqual(after(watch.lines, since), [], 'not a single log line (debug included) while idle');
	t.is(await rewriteMark(sb, backend, NET.subnet), mark, 'the rules were not rewritten');
	t.true(spent < 50, `${spent} ticks of CPU in 5 s idle`);
	t.true(watch.running);
});
