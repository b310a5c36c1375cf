// `docker egress watch`: the controller that keeps every egress rule right while it runs — networks
// made by others (plain `docker network create --label …`), rules removed by someone else (on the
// backend in use; the iptables jump's own repairs are in iptables.test.ts), a daemon restart, a bad label, a SIGKILL in the middle of a large write — and that stops
// cleanly on SIGTERM/SIGINT, leaving the rules in place. Every positive claim about egress is
// proved by the upstream echo server (sb.probe).
//
// Every command gets an explicit state dir under the sandbox (never the machine's
// /var/lib/docker-egress): --state-dir where the contract has it, DOCKER_EGRESS_STATE_DIR always.
import anyTest from 'ava';
import { useSandbox } from '../helpers/sandbox.js';
import { egressRules, firewallBackend, flushEgressRules, iptablesChainExists, nftChain, postrouting, ruleFor, sleep, waitForNoRule, waitForRule } from './firewall.js';
import { egress, labelledNetwork, rewriteMark, sigkillMidApply, startWatch, stateDir } from './watch-helpers.js';


const { test, sandbox } = useSandbox(anyTest);

const JUMP = '-A POSTROUTING -j DOCKER-EGRESS';
const backend = firewallBackend();
const KEEP = { name: 'z_keep', subnet: '10.70.0.0/24', ip: '192.0.2.11' };

// ---------------------------------------------------------------------------------------------
// Tests (serial: they share one Docker host and its firewall)

test.serial('setup: one labelled egress network, in place before watch', async (t) => {
	const sb = sandbox();
	await labelledNetwork(sb, KEEP.name, KEEP.subnet, KEEP.ip);
	const sync = await egress(sb, ['sync', '--state-dir', stateDir(sb)]);
	t.is(sync.exitCode, 0, sync.stderr);
	t.is(await sb.probe(KEEP.name), KEEP.ip);
});

test.serial('watch logs JSON lines to stderr, says "watch started", and a second watch is refused', async (t) => {
	const sb = sandbox();
	const watch = await startWatch(t, sb);
	const started = watch.find('watch started')[0]!;
	t.false(Number.isNaN(Date.parse(started.time)), `time is a timestamp: ${started.time}`);
	t.is(started.level, 'info');

	const before = Date.now();
	const second = await egress(sb, ['watch', '--interval', '0.5', '--state-dir', stateDir(sb)], { timeout: 20_000 });
	t.log(`second watch: exit ${String(second.exitCode)} after ${Date.now() - before} ms; stderr: ${second.stderr.trim()}`);
	t.false(second.timedOut, 'the second watch must exit by itself');
	t.not(second.exitCode, 0);
	t.regex(second.stderr, /another docker egress watch is already running/);
	t.true(Date.now() - before < 10_000, 'refused promptly');
	t.true(watch.running, 'the first watch keeps running');

	// The first one still works.
	await flushEgressRules(sb);
	await waitForRule(sb, KEEP.subnet, KEEP.ip);
	t.is(await sb.probe(KEEP.name), KEEP.ip);

	const r = await watch.stop();
	t.is(r.exitCode, 0, r.stderr);
	t.deepEqual(watch.unparsed, [], 'every stderr line is a JSON object with time, level and msg');
	t.is(r.stdout, '', 'logs go to stderr, not stdout');
});

test.serial('a network created with plain docker network create --label while watch runs gets its rule from the event; rm removes it', async (t) => {
	const sb = sandbox();
	// A long interval: within the 5 s below only the event stream can explain the rule.
	const watch = await startWatch(t, sb, { interval: '60' });
	const net = { name: 'z_w_event', subnet: '10.70.1.0/24', ip: '192.0.2.13' };
	await labelledNetwork(sb, net.name, net.subnet, net.ip);
	t.teardown(async () => {
		await sb.docker(['network', 'rm', net.name], { reject: false });
	});
	await waitForRule(sb, net.subnet, net.ip, 5_000);
	const added = await watch.waitFor('rule added', { network: net.name }, 5_000);
	t.like(added, { level: 'info', network: net.name, subnet: net.subnet, source_ip: net.ip });
	t.truthy(added['trigger'], 'rule added says what triggered it');
	t.log(`trigger of an event-driven add: ${JSON.stringify(added['trigger'])}`);
	t.is(await sb.probe(net.name), net.ip);

	await sb.docker(['network', 'rm', net.name]);
	await waitForNoRule(sb, net.subnet, 5_000);
	const removed = await watch.waitFor('rule removed', { network: net.name }, 5_000);
	t.like(removed, { network: net.name, subnet: net.subnet, source_ip: net.ip });
	t.truthy(removed['trigger']);
	t.true(ruleFor(await egressRules(sb), KEEP.subnet, KEEP.ip), 'the other network keeps its rule');
	t.is(await sb.probe(KEEP.name), KEEP.ip);
	t.true(watch.running);
});

test.serial('self-healing: a flushed rule set is restored within the interval', async (t) => {
	const sb = sandbox();
	const watch = await startWatch(t, sb);
	await flushEgressRules(sb);
	await waitForRule(sb, KEEP.subnet, KEEP.ip);
	t.is(await sb.probe(KEEP.name), KEEP.ip);
	if (backend === 'iptables') {
		const added = await watch.waitFor('rule added', { network: KEEP.name });
		t.like(added, { subnet: KEEP.subnet, source_ip: KEEP.ip });
		t.log(`trigger of a drift repair: ${JSON.stringify(added['trigger'])}`);
	} else {
		// The map kept its element; the chain lost its rules: the table is rebuilt, and logged.
		const repaired = await watch.waitFor('firewall repaired', { backend: 'nftables' });
		t.regex(String(repaired['change']), /^rebuilt table ip docker-egress \(chain postrouting does not hold exactly our two rules/);
		t.log(`trigger of a drift repair: ${JSON.stringify(repaired['trigger'])}`);
	}
});

test.serial('idle drift checks log nothing and do not rewrite the chain', async (t) => {
	const sb = sandbox();
	const watch = await startWatch(t, sb);
	t.is(await sb.probe(KEEP.name), KEEP.ip); // counts a packet on our rule
	// Let the probe's network events settle, then watch six intervals go by.
	await sleep(1_500);
	const linesBefore = watch.lines.length;
	const mark = await rewriteMark(sb, backend, KEEP.subnet);
	t.truthy(mark);
	if (backend === 'iptables') t.not(mark, '0:0', 'the probe went through our rule');
	await sleep(3_000);
	t.is(await rewriteMark(sb, backend, KEEP.subnet), mark, backend === 'iptables' ? 'counters not reset: the chain was not rewritten' : 'same table handle: the table was not replaced');
	t.deepEqual(watch.lines.slice(linesBefore), [], 'no log line for an idle drift check');
	t.true(watch.running);
});

test.serial('SIGTERM: exit 0 within a second or two, "watch stopped", rules stay in place', async (t) => {
	const sb = sandbox();
	const watch = await startWatch(t, sb);
	const before = Date.now();
	const r = await watch.stop('SIGTERM');
	const took = Date.now() - before;
	t.log(`SIGTERM to exit: ${took} ms`);
	t.is(r.exitCode, 0, r.stderr);
	t.true(took < 2_500, `exited ${took} ms after SIGTERM`);
	t.truthy(watch.find('watch stopped')[0], r.stderr);
	t.true(ruleFor(await egressRules(sb), KEEP.subnet, KEEP.ip));
	if (backend === 'iptables') {
		t.is((await postrouting(sb))[0], JUMP);
	} else {
		t.like((await nftChain(sb))?.chain, { hook: 'postrouting', prio: 90 });
	}
	t.is(await sb.probe(KEEP.name), KEEP.ip, 'egress keeps working while watch is down');
});

test.serial('SIGINT (text log format): exit 0 within a second or two, "watch stopped", rules stay in place', async (t) => {
	const sb = sandbox();
	const watch = await startWatch(t, sb, { format: 'text' });
	t.notRegex(watch.stderr.trim().split('\n')[0] ?? '', /^\{/, 'text, not JSON');
	const before = Date.now();
	const r = await watch.stop('SIGINT');
	const took = Date.now() - before;
	t.log(`SIGINT to exit: ${took} ms; stderr:\n${r.stderr}`);
	t.is(r.exitCode, 0, r.stderr);
	t.true(took < 2_500, `exited ${took} ms after SIGINT`);
	t.regex(r.stderr, /watch stopped/);
	t.true(ruleFor(await egressRules(sb), KEEP.subnet, KEEP.ip));
	t.is(await sb.probe(KEEP.name), KEEP.ip);
});

test.serial('under the docker CLI: SIGTERM to the CLI closes the plugin socket, and watch stops cleanly (exit 0, rules in place)', async (t) => {
	const sb = sandbox();
	const watch = await startWatch(t, sb, { viaCli: true });
	const before = Date.now();
	const r = await watch.stop('SIGTERM'); // to the docker CLI, which does not forward it
	const took = Date.now() - before;
	t.log(`SIGTERM to the CLI to exit: ${took} ms; exit ${String(r.exitCode)}`);
	t.is(r.exitCode, 0, r.stderr);
	t.true(took < 2_500, `exited ${took} ms after SIGTERM`);
	t.truthy(watch.find('watch stopped')[0], r.stderr);
	// The plugin itself is gone too (not left behind by the CLI): its watch lock is free again.
	const again = await startWatch(t, sb);
	t.is((await again.stop()).exitCode, 0);
	t.true(ruleFor(await egressRules(sb), KEEP.subnet, KEEP.ip));
	t.is(await sb.probe(KEEP.name), KEEP.ip);
});

test.serial('a network labelled docker-egress.source-ip=banana: logged once, fails closed; watch and the other networks carry on', async (t) => {
	const sb = sandbox();
	const watch = await startWatch(t, sb);
	const bad = { name: 'z_w_banana', subnet: '10.70.4.0/24' };
	const good = { name: 'z_w_good', subnet: '10.70.5.0/24', ip: '192.0.2.12' };
	t.teardown(async () => {
		await sb.docker(['network', 'rm', bad.name, good.name], { reject: false });
	});
	await labelledNetwork(sb, bad.name, bad.subnet, 'banana');
	const skipped = await watch.waitFor('network fails closed', { network: bad.name, status: 'invalid', dropped: 'ipv4' }, 10_000);
	t.is(skipped.level, 'warn');
	t.truthy(skipped['problem']);
	t.log(`problem: ${JSON.stringify(skipped['problem'])}`);

	// A network that appears after it still gets its rule; the one that was there keeps it.
	await labelledNetwork(sb, good.name, good.subnet, good.ip);
	await waitForRule(sb, good.subnet, good.ip);
	t.is(await sb.probe(good.name), good.ip);
	t.is(await sb.probe(KEEP.name), KEEP.ip);

	// More reconciles (a flush, events, many drift checks) do not repeat the warning.
	await flushEgressRules(sb);
	await waitForRule(sb, good.subnet, good.ip);
	await waitForRule(sb, KEEP.subnet, KEEP.ip);
	await sleep(2_000);
	t.is(watch.find('network fails closed', { network: bad.name }).length, 1, watch.stderr);
	t.false((await egressRules(sb)).some((rule) => rule.subnet === bad.subnet), 'no rule for the bad network');
	t.true(watch.running);
});

test.serial('SIGKILL while applying a large change: the rules are old or new, never half-written; the next start converges', async (t) => {
	t.timeout(600_000);
	await sigkillMidApply(t, sandbox(), firewallBackend(), KEEP);
});

test.serial('dockerd restarts while watch runs: watch survives, logs "daemon lost" once and "daemon back", and a new network gets its rule', async (t) => {
	t.timeout(180_000);
	const sb = sandbox();
	// A long interval: what follows the restart is due to the reconnect, not the periodic check.
	const watch = await startWatch(t, sb, { interval: '60' });

	await sb.stopDockerd();
	const lost = await watch.waitFor('daemon lost', {}, 20_000);
	t.is(lost.level, 'warn');
	await sleep(4_000); // several reconnection attempts while the daemon is away
	t.true(watch.running, 'watch survives the daemon going away');
	await sb.startDockerd();
	await watch.waitFor('daemon back', {}, 60_000);
	t.is(watch.find('daemon lost').length, 1, `"daemon lost" once per outage:\n${watch.stderr}`);
	t.is(watch.find('daemon back').length, 1);

	// A full reconcile after the daemon came back, and the event stream is live again. (Docker
	// re-creates the default bridge on start and inserts its MASQUERADE of 172.17.0.0/16 at the top
	// of POSTROUTING: another subnet's, so the iptables backend leaves its jump below it.)
	await waitForRule(sb, KEEP.subnet, KEEP.ip, 5_000);
	if (backend === 'iptables') {
		t.true((await postrouting(sb)).includes(JUMP), 'the jump is there');
	} else {
		t.false(await iptablesChainExists(sb), 'no iptables chain beside the nft table');
	}
	t.is((await egress(sb, ['ls', '--format', '{{.Name}} {{.Status}}'])).stdout.trim(), `${KEEP.name} active`);
	t.is(await sb.probe(KEEP.name), KEEP.ip);
	const net = { name: 'z_w_after', subnet: '10.70.3.0/24', ip: '192.0.2.12' };
	await labelledNetwork(sb, net.name, net.subnet, net.ip);
	t.teardown(async () => {
		await sb.docker(['network', 'rm', net.name], { reject: false });
	});
	await waitForRule(sb, net.subnet, net.ip, 5_000);
	t.is(await sb.probe(net.name), net.ip);
	t.true(watch.running);
});
