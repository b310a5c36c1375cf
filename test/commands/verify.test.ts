import test from 'ava';
import { observedAddress } from '../../src/commands/verify.js';

test('the address alone, in JSON, or in HTML', (t) => {
	t.is(observedAddress('192.0.2.11\n'), '192.0.2.11');
	t.is(observedAddress('{"ip":"198.51.100.7"}'), '198.51.100.7');
	t.is(observedAddress('<html><body>Your IP: 203.0.113.9</body></html>'), '203.0.113.9');
	t.is(observedAddress('2001:DB8:A::11\n'), '2001:db8:a::11');
	t.is(observedAddress('Segmentation fault'), undefined);
});
