import test from 'ava';
import { parseRouting } from '../../src/adapters/routing.js';
import { routeKey, ruleKey } from '../../src/core/routing.js';

// As printed by iproute2 6.1 (`ip -j -4 rule show`, `ip -j -4 route show table all proto 211`).
const rules =
	'[{"priority":0,"src":"all","table":"local"},{"priority":10000,"src":"10.140.0.0","srclen":24,"table":"main","suppress_prefixlen":0,"protocol":"211"},{"priority":10001,"src":"10.140.0.0","srclen":24,"table":"20003","protocol":"211"},{"priority":32766,"src":"all","table":"main"},{"priority":32767,"src":"all","table":"default"}]';
const routes =
	'[{"dst":"default","gateway":"198.51.100.254","dev":"d1","table":"20003","flags":[]},{"dst":"198.51.100.0/24","dev":"d1","table":"20003","scope":"link","prefsrc":"198.51.100.11","flags":[]}]';

test('only our rules are read, and they read back as the keys we write', (t) => {
	const parsed = parseRouting(rules, routes);
	t.deepEqual(parsed.rules.map((rule) => ruleKey(rule)), ['10000 from 10.140.0.0/24 lookup main suppress_prefixlength 0', '10001 from 10.140.0.0/24 lookup 20003']);
	t.deepEqual(parsed.routes.map((route) => routeKey(route)), ['table 20003 default dev d1 via 198.51.100.254', 'table 20003 198.51.100.0/24 dev d1']);
});

test("a container's host address (ip prints no length for /32 and /128) reads back as the /32 or /128 we write", (t) => {
	const hostRules = '[{"priority":10001,"src":"10.79.1.2","table":"20003","protocol":"211"}]';
	t.deepEqual(parseRouting(hostRules, '[]').rules.map((rule) => ruleKey(rule)), ['10001 from 10.79.1.2/32 lookup 20003']);
	const hostRules6 = '[{"priority":10001,"src":"2001:db8:2::9","table":"20003","protocol":"211"}]';
	t.deepEqual(parseRouting(hostRules6, '[]', 'ipv6').rules.map((rule) => ruleKey(rule)), ['-6 10001 from 2001:db8:2::9/128 lookup 20003']);
});
