// Progress, warnings and debug lines go to stderr; data goes to stdout (never from here).
let level: 'debug' | 'info' | 'warn' | 'error' = 'info';

export function setLogLevel(value: string | undefined): void {
	if (value === 'debug' || value === 'info' || value === 'warn' || value === 'error') {
		level = value;
	} else if (value === 'fatal') {
		level = 'error';
	}
}

export function isDebug(): boolean {
	return level === 'debug';
}

export function debug(message: string): void {
	if (level === 'debug') {
		process.stderr.write(`debug: ${message}\n`);
	}
}

export function info(message: string): void {
	if (level === 'debug' || level === 'info') {
		process.stderr.write(`${message}\n`);
	}
}

export function warn(message: string): void {
	if (level !== 'error') {
		process.stderr.write(`warning: ${message}\n`);
	}
}
