// Text from outside (labels, options, names) on its way to a terminal: control characters made
// visible, and long values cut. Labels are anyone's free text: raw, an escape sequence would
// recolour or rewrite the screen and a newline would forge a row of a listing.

/**
 * C0 controls, DEL, C1 controls (a terminal may act on U+009B as CSI), the line and paragraph
 * separators, and the bidirectional overrides and isolates (they reorder what follows them).
 */
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/gu;

const NAMED: Record<string, string> = { '\n': '\\n', '\r': '\\r', '\t': '\\t' };

/** Every control character as a visible escape: `\n`, `\t`, `\r`, `\x1b`, `\x9b`, `\u202e`. */
export function escapeControls(text: string): string {
	return text.replaceAll(CONTROL, (character) => {
		const code = character.codePointAt(0)!;
		return NAMED[character] ?? (code <= 0xff ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u${code.toString(16).padStart(4, '0')}`);
	});
}

/** At most `width` characters (code points), the cut marked with `…`. */
export function truncate(text: string, width: number): string {
	const characters = [...text];
	return characters.length <= width ? text : `${characters.slice(0, width - 1).join('')}…`;
}

/**
 * JSON text that is safe on a terminal and still parses to the exact value: JSON.stringify leaves
 * DEL, C1 controls and U+2028/9 raw, so they become \u escapes too.
 */
export function safeJson(value: unknown): string {
	return (JSON.stringify(value) ?? 'null').replaceAll(CONTROL, (character) => `\\u${character.codePointAt(0)!.toString(16).padStart(4, '0')}`);
}
