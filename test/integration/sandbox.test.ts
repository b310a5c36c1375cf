// Proves the test harness itself (test/helpers/sandbox.ts): a real dockerd in its own network
// namespace, an upstream echo server that reports the source address, and isolation between
// sandboxes running at once. Needs no plugin binary.
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import anyTest from 'ava';
import { execa } from 'execa';
import { realDockerTest } from '../helpers/prereqs.js';
import { PRIMARY_ADDRESS, Sandbox, useSandbox } from '../helpers/sandbox.js';

const { test, sandbox } = useSandbox(anyTest);

test.serial('a container on the default bridge egresses as the primary address', async (t) => {
	t.is(await sandbox().probe('bridge'), PRIMARY_ADDRESS);
});

test.serial('the manual recipe (masquerade off + SNAT) gives the chosen address', async (t) => {
	const sb = sandbox();
	await sb.docker([
		'network', 'create', '--driver', 'bridge',
		'--opt', 'com.docker.network.bridge.name=eg_man',
		'--opt', 'com.docker.network.bridge.enable_ip_masquerade=false',
		'--subnet', '10.99.0.0/24',
		'eg_man',
	]);
	t.teardown(async () => {
		await sb.exec('iptables', ['-w', '-t', 'nat', '-D', 'POSTROUTING', '-s', '10.99.0.0/24', '!', '-o', 'eg_man', '-j', 'SNAT', '--to-source', '192.0.2.12'], { reject: false });
		await sb.docker(['network', 'rm', 'eg_man'], { reject: false });
	});
	await sb.exec('iptables', ['-w', '-t', 'nat', '-I', 'POSTROUTING', '1', '-s', '10.99.0.0/24', '!', '-o', 'eg_man', '-j', 'SNAT', '--to-source', '192.0.2.12']);
	t.is(await sb.probe('eg_man'), '192.0.2.12');
	const nat = await sb.exec('iptables-save', ['-t', 'nat']);
	t.regex(nat.stdout, /-A POSTROUTING -s 10\.99\.0\.0\/24 ! -o eg_man -j SNAT --to-source 192\.0\.2\.12/);
});

test.serial('the sandbox has the documented layout', async (t) => {
	const sb = sandbox();
	t.regex(sb.id, /^[a-z0-9]{6}$/);
	t.is(sb.hostNs, `egh-${sb.id}`);
	t.is(sb.nsPath, `/var/run/netns/egh-${sb.id}`);
	t.is(sb.dockerHost, `unix://${sb.socket}`);
	t.true(sb.socket.length < 100);
	const addrs = JSON.parse((await sb.exec('ip', ['-j', '-4', 'addr', 'show', 'dev', sb.uplink])).stdout) as Array<{
		addr_info: Array<{ local: string; prefixlen: number }>;
	}>;
	t.deepEqual(
		addrs[0]?.addr_info.map((a) => `${a.local}/${a.prefixlen}`),
		['192.0.2.1/24', '192.0.2.11/24', '192.0.2.12/24', '192.0.2.13/24'],
	);
	const images = await sb.docker(['image', 'ls', '--format', '{{.Repository}}:{{.Tag}}']);
	t.true(images.stdout.split('\n').includes('egress-probe:latest'));
	t.regex((await sb.exec('ip', ['-o', 'link', 'show', 'docker0'])).stdout, /docker0/);
	// The machine's own namespace has none of this.
	const own = await execa('ip', ['-o', 'link'], { reject: false });
	t.false(/\beg-h\b/.test(own.stdout), 'the uplink must live only in the sandbox namespace');
});

// (c) Two more sandboxes at once, each with its own daemon, firewall and uplink addresses; one
// breaks its own firewall and the other is unaffected. Then both are gone without a trace.
realDockerTest(anyTest)('two sandboxes at once are isolated and leave nothing behind', async (t) => {
	const [a, b] = await Promise.all([
		Sandbox.start(),
		Sandbox.start({ extraHostAddresses: ['198.51.100.7'] }),
	]);
	let stopped = false;
	t.teardown(async () => {
		if (!stopped) await Promise.allSettled([a.stop(), b.stop()]);
	});
	t.not(a.id, b.id);
	t.not(a.socket, b.socket);

	// b routes egress through its extra, off-link address; a must not see that rule.
	await b.exec('iptables', ['-w', '-t', 'nat', '-I', 'POSTROUTING', '1', '-s', '172.17.0.0/16', '!', '-o', 'docker0', '-j', 'SNAT', '--to-source', '198.51.100.7']);
	const [seenA, seenB] = await Promise.all([a.probe('bridge'), b.probe('bridge')]);
	t.is(seenA, PRIMARY_ADDRESS);
	t.is(seenB, '198.51.100.7');
	t.false((await a.exec('iptables-save', ['-t', 'nat'])).stdout.includes('198.51.100.7'));

	// Containers are per daemon.
	await a.docker(['run', '-d', '--name', 'only_in_a', 'egress-probe:latest', 'sleep', '600']);
	t.is((await b.docker(['ps', '-aq', '--filter', 'name=only_in_a'])).stdout.trim(), '');

	const started = Date.now();
	await Promise.all([a.stop(), b.stop()]);
	stopped = true;
	t.log(`stopping two sandboxes (one with a running container) took ${Date.now() - started} ms`);
	await a.stop(); // idempotent

	const netns = (await execa('ip', ['netns', 'list'])).stdout;
	for (const sb of [a, b]) {
		t.false(netns.includes(sb.hostNs), `${sb.hostNs} left behind`);
		t.false(netns.includes(sb.upstreamNs), `${sb.upstreamNs} left behind`);
		t.false(existsSync(sb.dir), `${sb.dir} left behind`);
		t.false(readFileSync('/proc/self/mountinfo', 'utf8').includes(sb.dir), `mounts under ${sb.dir} left behind`);
		const procs = readdirSync('/proc').filter((p) => /^\d+$/.test(p)).filter((p) => {
			try {
				return readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(sb.dir);
			} catch {
				return false;
			}
		});
		t.deepEqual(procs, [], `processes of ${sb.id} left behind`);
	}
});
