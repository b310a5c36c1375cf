import test from 'ava';
import { createLogger } from '../../src/service/logger.js';

test('text lines: time, level, message, key=value (quoted when needed)', (t) => {
	const lines: string[] = [];
	createLogger('text', (line) => lines.push(line)).info('rule added', { network: 'z_a', problem: 'a b', skip: undefined });
	t.regex(lines[0]!, /^\d{4}-\d\d-\d\dT[\d:.]+Z info {2}rule added network=z_a problem="a b"\n$/);
});

test('json lines: one object per line', (t) => {
	const lines: string[] = [];
	createLogger('json', (line) => lines.push(line)).warn('daemon lost', { endpoint: 'unix:///x' });
	const parsed = JSON.parse(lines[0]!) as Record<string, unknown>;
	t.like(parsed, { level: 'warn', msg: 'daemon lost', endpoint: 'unix:///x' });
	t.true(lines[0]!.endsWith('}\n'));
});

test('debug lines only at debug level', (t) => {
	const lines: string[] = [];
	createLogger('text', (line) => lines.push(line)).debug('docker event');
	t.deepEqual(lines, []);
});
