// Network names up to Docker's limit converge with both backends: iptables tags a rule by short
// network ID (a comment is cut at 255 characters, so a long name never read back as ours), and
// nftables matches its elements by subnet, bridge and address. The name stays in the reports.
import anyTest from 'ava';
import { useSandbox } from '../helpers/sandbox.js';
import { firewallBackend } from './firewall.js';

const { test, sandbox } = useSandbox(anyTest);

const LONG = `z_${'c'.repeat(248)}`;

test.serial(`a 250-character name: created, then sync twice says nothing to change; ls says active; it egresses from its address (${firewallBackend()})`, async (t) => {
	const sb = sandbox();
	const create = await sb.egress(['create', LONG, '--source-ip', '192.0.2.12', '--subnet', '10.92.0.0/24']);
	t.is(create.exitCode, 0, create.stderr);
	t.teardown(async () => {
		await sb.egress(['rm', LONG]);
	});
	for (const round of [1, 2]) {
		const sync = await sb.egress(['sync']);
		t.is(sync.exitCode, 0, sync.stderr);
		t.regex(sync.stdout, /sync: 0 added, 0 removed, 1 unchanged \(nothing to change\)/, `sync ${round}:\n${sync.stdout}`);
		t.regex(sync.stdout, new RegExp(`^unchanged ${LONG}  10\\.92\\.0\\.0/24 -> 192\\.0\\.2\\.12`, 'm'), 'the report names the network');
	}

	const ls = await sb.egress(['ls', '--format', '{{.Status}} {{.Name}}']);
	t.is(ls.exitCode, 0, ls.stderr);
	t.is(ls.stdout.trim(), `active ${LONG.slice(0, 39)}…`);
	t.is(await sb.probe(LONG), '192.0.2.12');
});
