// Progress, warnings and debug lines go to stderr; data goes to stdout (never from here).
import { escapeControls } from './core/text.js';

let level: 'debug' | 'info' | 'warn' | 'error' = 'info';

export function setLogLevel(value: string | undefined): void {
	if (value === 'debug' || value === 'info' || value === 'warn' || value === 'error') {
		level = value;
	} else if (value === 'fatal') {
		level = 'error';
	}
}

const order = { debug: 0, info: 1, warn: 2, error: 3 } as const;

export type Level = keyof typeof order;

export function enabled(wanted: Level): boolean {
	return order[wanted] >= order[level];
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
		// A warning can quote a label: its control characters must not reach the terminal raw.
		process.stderr.write(`warning: ${escapeControls(message)}\n`);
	}
}
