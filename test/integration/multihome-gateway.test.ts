// When the main table already has a route via uplink B's gateway, policy routing finds the
// gateway there: no --via needed.
import anyTest from 'ava';
import { useSandbox } from '../helpers/sandbox.js';

const { test, sandbox } = useSandbox(anyTest, { topology: 'multihome', uplinkBGatewayRoute: true });

test('the gateway of uplink B is taken from the main table', async (t) => {
	const sb = sandbox();
	const r = await sb.egress(['create', 'z_gw', '--source-ip', '198.51.100.12', '--subnet', '10.161.0.0/24']);
	t.is(r.exitCode, 0, r.stderr);
	t.is(await sb.probe('z_gw'), '198.51.100.12');
	t.is((await sb.egress(['ls', '--format', '{{.Route}}'])).stdout.trim(), 'eg-h2 via 198.51.100.254');
});
