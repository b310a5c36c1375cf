// The monitor's process handling, with small shell scripts standing in for `ip monitor`.
import test from 'ava';
import { addressMonitor, firewallMonitor, runMonitor, type MonitorOptions, type MonitorSpec } from '../../src/adapters/host-monitor.js';
import { Firewall, IptablesBackend } from '../../src/adapters/iptables.js';
import { NftablesBackend } from '../../src/adapters/nftables.js';

function script(text: string, matters: (line: string) => boolean = () => true): MonitorSpec {
	return { name: 'test monitor', file: '/bin/sh', args: ['-c', text], matters };
}

type Seen = { changes: string[]; restarts: number; failures: Array<{ why: string; repeated: boolean }> };

function recorder(signal: AbortSignal, extra: Partial<MonitorOptions> = {}): { seen: Seen; options: MonitorOptions } {
	const seen: Seen = { changes: [], restarts: 0, failures: [] };
	const options: MonitorOptions = {
		signal,
		onChange: (line) => seen.changes.push(line),
		onRestart: () => seen.restarts++,
		onFailure: (why, repeated) => seen.failures.push({ why, repeated }),
		minBackoffMs: 20,
		maxBackoffMs: 80,
		...extra,
	};
	return { seen, options };
}

async function until(check: () => boolean, ms = 5000): Promise<void> {
	const deadline = Date.now() + ms;
	while (!check()) {
		if (Date.now() > deadline) throw new Error('not in time');
		await new Promise((resolve) => setTimeout(resolve, 10));
	}
}

test('lines that matter are passed on, split whatever the chunks', async (t) => {
	const stop = new AbortController();
	const { seen, options } = recorder(stop.signal);
	const done = runMonitor(script("printf 'a 1\\nskip\\na '; sleep 0.1; printf '2\\n'; exec sleep 30", (line) => line.startsWith('a')), options);
	await until(() => seen.changes.length === 2);
	t.deepEqual(seen.changes, ['a 1', 'a 2']);
	stop.abort();
	await done;
	t.deepEqual(seen.failures, []);
});

test('stops its child when the signal aborts, promptly', async (t) => {
	const stop = new AbortController();
	const { seen, options } = recorder(stop.signal);
	let pid = 0;
	const done = runMonitor(script('echo $$; exec sleep 30'), { ...options, onChange: (line) => (pid = Number(line)) });
	await until(() => pid > 0);
	const before = Date.now();
	stop.abort();
	await done;
	t.true(Date.now() - before < 1000);
	t.throws(() => process.kill(pid, 0), undefined, 'the child is gone');
	t.deepEqual(seen.failures, []);
});

test('a child that exits is started again with backoff; the first failure of a spell is not "repeated"', async (t) => {
	const stop = new AbortController();
	const { seen, options } = recorder(stop.signal);
	const done = runMonitor(script('echo up; echo broken >&2; exit 3'), options);
	await until(() => seen.failures.length >= 4);
	stop.abort();
	await done;
	t.regex(seen.failures[0]!.why, /exit status 3: broken; retrying in 20 ms$/);
	t.false(seen.failures[0]!.repeated);
	t.true(seen.failures.slice(1).every((failure) => failure.repeated));
	t.regex(seen.failures[3]!.why, /retrying in 80 ms$/, 'capped');
	t.true(seen.restarts >= 3, 'each restart is reported, so missed changes get looked at');
});

test('a tool that is not there is one failure per spell, never a throw', async (t) => {
	const stop = new AbortController();
	const { seen, options } = recorder(stop.signal);
	const done = runMonitor({ name: 'missing', file: '/nonexistent/ip', args: ['monitor'], matters: () => true }, options);
	await until(() => seen.failures.length >= 2);
	stop.abort();
	await done;
	t.regex(seen.failures[0]!.why, /^\/nonexistent\/ip monitor: spawn \/nonexistent\/ip ENOENT; retrying in 20 ms$/);
	t.is(seen.failures.filter((failure) => !failure.repeated).length, 1);
	t.is(seen.restarts, 0);
});

test('a killed child says so (nft 1.0.6 can segfault)', async (t) => {
	const stop = new AbortController();
	const { seen, options } = recorder(stop.signal);
	const done = runMonitor(script('kill -SEGV $$'), options);
	await until(() => seen.failures.length >= 1);
	stop.abort();
	await done;
	t.regex(seen.failures[0]!.why, /killed by SIGSEGV/);
});

test('an endless line is cut, not kept whole', async (t) => {
	const stop = new AbortController();
	const { seen, options } = recorder(stop.signal);
	const done = runMonitor(script("head -c 300000 /dev/zero | tr '\\0' x; printf '\\nok\\n'; exec sleep 30"), options);
	await until(() => seen.changes.includes('ok'));
	stop.abort();
	await done;
	t.true(seen.changes.every((line) => line.length <= 64 * 1024));
	t.true(seen.changes.length >= 2);
});

test('which firewall is followed: our nft tables, iptables-nft nat and filter tables (our drops), and nothing for iptables-legacy', (t) => {
	const nftables = firewallMonitor(new NftablesBackend());
	t.deepEqual(nftables?.args, ['-j', 'monitor', 'rules'], 'rule events only: nft 1.0.6 misprints our set elements');
	t.true(nftables?.matters('{"delete": {"rule": {"family": "ip", "table": "docker-egress", "chain": "postrouting", "handle": 4}}}'));
	t.false(nftables?.matters('{"delete": {"rule": {"family": "ip", "table": "nat", "chain": "POSTROUTING", "handle": 4}}}'));

	const iptablesNft = firewallMonitor(new IptablesBackend(new Firewall('nft')));
	t.true(iptablesNft?.matters('{"delete": {"rule": {"family": "ip", "table": "nat", "chain": "DOCKER-EGRESS", "handle": 4}}}'));
	t.true(iptablesNft?.matters('{"delete": {"rule": {"family": "ip", "table": "filter", "chain": "DOCKER-EGRESS", "handle": 4}}}'));
	t.false(iptablesNft?.matters('{"delete": {"rule": {"family": "ip", "table": "mangle", "chain": "PREROUTING", "handle": 4}}}'));

	t.is(firewallMonitor(new IptablesBackend(new Firewall('legacy'))), undefined);
	t.deepEqual(addressMonitor().args, ['-o', 'monitor', 'address', 'route']);
});
