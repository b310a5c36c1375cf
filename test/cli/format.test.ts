import test from 'ava';
import { formatRows, type Columns } from '../../src/cli/format.js';

const columns: Columns = [
	{ field: 'ID', header: 'ID' },
	{ field: 'Name', header: 'NAME' },
	{ field: 'SourceIP', header: 'SOURCE IP' },
];
const rows = [
	{ ID: 'abc', Name: 'z_custom_a', SourceIP: '192.0.2.11', Containers: 2 },
	{ ID: 'def', Name: 'z_b', SourceIP: '192.0.2.12', Containers: 0 },
];

test('default table is aligned like docker (min width 10, padding 3)', (t) => {
	t.deepEqual(formatRows(rows, 'table', columns), ['ID        NAME         SOURCE IP', 'abc       z_custom_a   192.0.2.11', 'def       z_b          192.0.2.12']);
});

test('json is one object per line', (t) => {
	t.deepEqual(formatRows(rows, 'json', columns).map((line) => JSON.parse(line) as unknown), rows);
});

test('a template', (t) => {
	t.deepEqual(formatRows(rows, '{{.Name}} {{.SourceIP}}', columns), ['z_custom_a 192.0.2.11', 'z_b 192.0.2.12']);
});

test('a table template with \\t and json of a field', (t) => {
	t.deepEqual(formatRows(rows, 'table {{.Name}}\\t{{json .Containers}}', columns), ['NAME         CONTAINERS', 'z_custom_a   2', 'z_b          0']);
});

test('an unknown field is an error that lists the fields', (t) => {
	t.throws(() => formatRows(rows, '{{.Nope}}', columns), { message: /can't evaluate field Nope; fields: ID, Name, SourceIP, Containers/ });
});

test('an empty listing still prints the header', (t) => {
	t.deepEqual(formatRows([], 'table', columns), ['ID        NAME      SOURCE IP']);
});
