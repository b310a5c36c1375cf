// verify: a throwaway container fetches the echo URL and compares what the server saw with the
// network's source IP; it never leaves a container behind.
import anyTest from 'ava';
import { useSandbox, type Sandbox } from '../helpers/sandbox.js';
import { flushEgressRules } from './firewall.js';

const { test, sandbox } = useSandbox(anyTest);
const URL = 'http://192.0.2.254/cgi-bin/ip';

async function leftovers(sb: Sandbox): Promise<string> {
	return (await sb.docker(['ps', '-aq', '--filter', 'label=docker-egress.verify'])).stdout.trim();
}

test.serial('a correct network: match, exit 0', async (t) => {
	const sb = sandbox();
	t.is((await sb.egress(['create', 'z_ver1', '--source-ip', '192.0.2.11', '--subnet', '10.130.0.0/24'])).exitCode, 0);
	const r = await sb.egress(['verify', 'z_ver1', '--url', URL, '--image', 'egress-probe:latest'], { viaCli: true });
	t.is(r.exitCode, 0, r.stderr);
	t.is(r.stdout.trim(), 'network   z_ver1\nexpected  192.0.2.11\nobserved  192.0.2.11\nresult    match');
	t.is(await leftovers(sb), '');
});

test.serial('masquerade on and the rule deleted by hand: mismatch, non-zero exit, JSON for scripts', async (t) => {
	const sb = sandbox();
	await sb.docker(['network', 'create', '--label', 'docker-egress.source-ip=192.0.2.12', '--subnet', '10.131.0.0/24', 'z_ver2']);
	t.is((await sb.egress(['sync'])).exitCode, 0);
	const good = await sb.egress(['verify', 'z_ver2', '--url', URL, '--image', 'egress-probe:latest', '--format', 'json']);
	t.is(good.exitCode, 0, good.stderr);
	t.deepEqual(JSON.parse(good.stdout), { Network: 'z_ver2', Expected: ['192.0.2.12'], Observed: '192.0.2.12', Match: true });

	await flushEgressRules(sb);
	const bad = await sb.egress(['verify', 'z_ver2', '--url', URL, '--image', 'egress-probe:latest', '--format', 'json']);
	t.not(bad.exitCode, 0);
	t.deepEqual(JSON.parse(bad.stdout), { Network: 'z_ver2', Expected: ['192.0.2.12'], Observed: '192.0.2.1', Match: false });
	t.regex(bad.stderr, /egress is 192\.0\.2\.1, expected 192\.0\.2\.12/);
	t.is(await leftovers(sb), '');
	t.is((await sb.egress(['sync'])).exitCode, 0);
});

test.serial('no answer within the timeout: non-zero exit, and still no container left', async (t) => {
	const sb = sandbox();
	const r = await sb.egress(['verify', 'z_ver1', '--url', 'http://192.0.2.253/', '--image', 'egress-probe:latest', '--timeout', '2']);
	t.not(r.exitCode, 0);
	t.regex(r.stdout, /result {4}MISMATCH/);
	t.is(await leftovers(sb), '');
});

test.serial('verify of a network that is not an egress network is refused', async (t) => {
	const sb = sandbox();
	const r = await sb.egress(['verify', 'bridge', '--url', URL, '--image', 'egress-probe:latest']);
	t.not(r.exitCode, 0);
	t.regex(r.stderr, /not an egress network/);
});
