// Strict reverse-path filtering on the uplinks does not drop the replies of a network routed
// through uplink B: the reverse-path lookup for a reply uses the container's address as its
// source, so it meets our `from SUBNET` rules and finds uplink B. inspect reports the setting.
import anyTest from 'ava';
import { useSandbox } from '../helpers/sandbox.js';

const { test, sandbox } = useSandbox(anyTest, { topology: 'multihome', rpFilter: 1 });

test('rp_filter=1 (strict) on uplink B: replies still arrive, and inspect says rp_filter is 1', async (t) => {
	const sb = sandbox();
	const r = await sb.egress(['create', 'z_rp', '--source-ip', '198.51.100.11', '--via', '198.51.100.254', '--subnet', '10.160.0.0/24']);
	t.is(r.exitCode, 0, r.stderr);
	t.is(await sb.probe('z_rp'), '198.51.100.11');
	const [view] = JSON.parse((await sb.egress(['inspect', 'z_rp'])).stdout) as Array<Record<string, any>>;
	t.like(view!['Uplink'], { Interface: 'eg-h2', RpFilter: 1 });
});
