// One printer for every listing, as docker's own: `table` (default), `json` (one object per
// line) or a Go-template-like string with {{.Field}}, {{json .}} / {{json .Field}}, and an
// optional `table ` prefix for aligned columns with headers. Tables and templates show values
// with their control characters escaped (\x1b, \n) and, unless --no-trunc, the free-text fields
// cut: a label is anyone's text and must not colour, forge or widen a row. `json` stays exact.
import { UsageError } from '../errors.js';
import { escapeControls, safeJson, truncate } from '../core/text.js';

/** null: not known (shown empty in tables and templates, null in JSON). */
export type Row = Record<string, string | number | boolean | null>;

export type Columns = Array<{ field: string; header: string }>;

/** Width of a cut value, `…` included. */
export const CELL_WIDTH = 40;

export type FormatOptions = {
	/** Fields whose values may be long free text (labels): cut to CELL_WIDTH unless noTrunc. */
	cut?: readonly string[];
	noTrunc?: boolean;
};

export function formatRows(rows: Row[], format: string, columns: Columns, options: FormatOptions = {}): string[] {
	if (format === 'json') {
		return rows.map((row) => safeJson(row));
	}

	const cut = new Set(options.noTrunc ? [] : options.cut);
	const show: Show = (field, value) => {
		const text = escapeControls(String(value ?? ''));
		return cut.has(field) ? truncate(text, CELL_WIDTH) : text;
	};

	const fields = new Set(rows.length > 0 ? Object.keys(rows[0]!) : columns.map((column) => column.field));
	const template = format === 'table' || format === '' ? `table ${columns.map((c) => `{{.${c.field}}}`).join('\t')}` : format;
	const isTable = template.startsWith('table');
	const body = unescape(isTable ? template.slice('table'.length).trimStart() : template);
	const render = compile(body, fields, show);
	if (!isTable) {
		return rows.map((row) => render(row));
	}

	const headerRow: Row = Object.fromEntries(columns.map((column) => [column.field, column.header]));
	const headers = compile(body, fields, show, (field) => headerRow[field] ?? field.toUpperCase());
	return alignColumns([headers({}), ...rows.map((row) => render(row))]);
}

type Renderer = (row: Row) => string;

/** One field's value as a table cell or template output shows it. */
type Show = (field: string, value: Row[string] | undefined) => string;

function compile(template: string, fields: Set<string>, show: Show, header?: (field: string) => string | number | boolean): Renderer {
	const parts: Array<string | ((row: Row) => string)> = [];
	let rest = template;
	for (;;) {
		const open = rest.indexOf('{{');
		if (open === -1) {
			parts.push(rest);
			break;
		}

		const close = rest.indexOf('}}', open);
		if (close === -1) {
			throw new UsageError(`template parsing error: unclosed action in ${JSON.stringify(template)}`);
		}

		parts.push(rest.slice(0, open));
		parts.push(action(rest.slice(open + 2, close).trim(), fields, show, header));
		rest = rest.slice(close + 2);
	}

	return (row) => parts.map((part) => (typeof part === 'string' ? part : part(row))).join('');
}

function action(text: string, fields: Set<string>, show: Show, header?: (field: string) => string | number | boolean): (row: Row) => string {
	const words = text.split(/\s+/);
	const field = (ref: string) => {
		if (ref === '.') {
			return Object.assign((row: Row) => row, { field: '' });
		}

		const match = /^\.(\w+)$/.exec(ref);
		if (!match || !fields.has(match[1]!)) {
			throw new UsageError(`template: can't evaluate field ${ref.replace(/^\./, '')}; fields: ${[...fields].join(', ')}`);
		}

		const name = match[1]!;
		return Object.assign((row: Row) => (header ? header(name) : row[name]), { field: name });
	};

	if (words.length === 1) {
		const get = field(words[0]!);
		return (row) => (typeof get(row) === 'object' ? safeJson(get(row)) : show(get.field, get(row) as Row[string]));
	}

	if (words.length === 2 && ['json', 'upper', 'lower'].includes(words[0]!)) {
		const get = field(words[1]!);
		const fn = words[0];
		return (row) => {
			const value = get(row);
			if (header) {
				return String(value);
			}

			return fn === 'json' ? safeJson(value) : show(get.field, fn === 'upper' ? String(value).toUpperCase() : String(value).toLowerCase());
		};
	}

	throw new UsageError(`template: unsupported action {{${text}}} (use {{.Field}}, {{json .}}, {{json .Field}}, {{upper .Field}}, {{lower .Field}})`);
}

function unescape(template: string): string {
	return template.replaceAll('\\t', '\t').replaceAll('\\n', '\n');
}

/** Like Go's tabwriter as docker uses it: min width 10, padding 3. */
export function alignColumns(lines: string[]): string[] {
	const cells = lines.map((line) => line.split('\t'));
	const widths: number[] = [];
	for (const row of cells) {
		for (const [i, cell] of row.slice(0, -1).entries()) {
			widths[i] = Math.max(widths[i] ?? 10, cell.length + 3);
		}
	}

	return cells.map((row) => row.map((cell, i) => (i < row.length - 1 ? cell.padEnd(widths[i]!) : cell)).join('').trimEnd());
}
