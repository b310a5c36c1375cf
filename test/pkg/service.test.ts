// `make install-service` installs the binary and a systemd unit bound to docker.service.
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import test from 'ava';
import { execa } from 'execa';
import { repoRoot } from '../helpers/sandbox.js';

test('install-service with DESTDIR writes the unit with the installed binary path', async (t) => {
	const destdir = mkdtempSync(path.join(tmpdir(), 'egress-service-'));
	const r = await execa('make', ['-s', 'install-service', `DESTDIR=${destdir}`], { cwd: repoRoot });
	t.regex(r.stdout, /systemctl daemon-reload && systemctl enable --now docker-egress/);
	const unit = readFileSync(path.join(destdir, 'etc/systemd/system/docker-egress.service'), 'utf8');
	t.regex(unit, /^ExecStart=\/usr\/local\/lib\/docker\/cli-plugins\/docker-egress watch/m);
	t.regex(unit, /^After=docker\.service$/m);
	t.regex(unit, /^BindsTo=docker\.service$/m);
	t.regex(unit, /^Restart=on-failure$/m);
	t.true(existsSync(path.join(destdir, 'usr/local/lib/docker/cli-plugins/docker-egress')));
});
