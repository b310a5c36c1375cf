// Words of an iptables-save line: quoting as iptables-save writes it.
/** Splits an iptables-save line into words, honouring double quotes. */
export function tokenize(line: string): string[] {
	const words: string[] = [];
	let word = '';
	let inWord = false;
	let quoted = false;
	for (let i = 0; i < line.length; i++) {
		const char = line[i]!;
		if (quoted) {
			if (char === '\\' && i + 1 < line.length) {
				word += line[++i];
			} else if (char === '"') {
				quoted = false;
			} else {
				word += char;
			}
		} else if (char === '"') {
			quoted = true;
			inWord = true;
		} else if (char === ' ' || char === '\t') {
			if (inWord) {
				words.push(word);
			}

			word = '';
			inWord = false;
		} else {
			word += char;
			inWord = true;
		}
	}

	if (inWord) {
		words.push(word);
	}

	return words;
}

export function optionValue(words: string[], option: string): string | undefined {
	const index = words.indexOf(option);
	return index === -1 ? undefined : words[index + 1];
}
