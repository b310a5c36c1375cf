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

const hostile = { ID: 'ghi', Name: 'z_evil', SourceIP: '\u001b[31mRED\u001b[0m\nFAKE-LINE\t\u007f\u009b2J', Containers: 0 };

test('control characters are escaped in table cells and templates, never raw', (t) => {
	const table = formatRows([hostile], 'table', columns);
	t.deepEqual(table, ['ID        NAME      SOURCE IP', 'ghi       z_evil    \\x1b[31mRED\\x1b[0m\\nFAKE-LINE\\t\\x7f\\x9b2J']);
	t.deepEqual(formatRows([hostile], '{{.SourceIP}}|{{upper .SourceIP}}', columns), ['\\x1b[31mRED\\x1b[0m\\nFAKE-LINE\\t\\x7f\\x9b2J|\\x1b[31MRED\\x1b[0M\\nFAKE-LINE\\t\\x7f\\x9b2J']);
});

test('json (the format and the template function) stays exact, with no raw control character', (t) => {
	for (const line of [...formatRows([hostile], 'json', columns), ...formatRows([hostile], '{{json .SourceIP}}', columns)]) {
		t.notRegex(line, /[\u0000-\u001f\u007f-\u009f]/);
		const value = JSON.parse(line) as unknown;
		t.deepEqual(typeof value === 'string' ? value : (value as { SourceIP: string }).SourceIP, hostile.SourceIP);
	}
});

test('free-text fields are cut to 40 characters unless noTrunc; other fields are not', (t) => {
	const long = { ID: 'x'.repeat(50), Name: 'z', SourceIP: 'a'.repeat(5000), Containers: 0 };
	t.deepEqual(formatRows([long], '{{.SourceIP}} {{.ID}}', columns, { cut: ['SourceIP'] }), [`${'a'.repeat(39)}… ${'x'.repeat(50)}`]);
	t.deepEqual(formatRows([long], '{{.SourceIP}}', columns, { cut: ['SourceIP'], noTrunc: true }), ['a'.repeat(5000)]);
	// The cut counts the escapes: the row stays bounded whatever the value holds.
	t.is(formatRows([{ ...long, SourceIP: '\n'.repeat(5000) }], '{{.SourceIP}}', columns, { cut: ['SourceIP'] })[0]!.length, 40);
});
