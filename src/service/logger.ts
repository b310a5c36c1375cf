// Structured log lines for the long-running `watch`: one line per action, on stderr, as text
// (`time level msg key=value…`) or JSON (`{"time","level","msg",…}`). Levels follow -l / -D.
import { enabled, type Level } from '../log.js';

export type Fields = Record<string, string | number | boolean | undefined>;

export type Logger = Record<Level, (msg: string, fields?: Fields) => void>;

/**
 * A closed stdout or stderr (EPIPE: the reader exited; EBADF) is reported as an 'error' event on
 * the stream, which would end the process: for watch, whose job is the rules and not its log,
 * such errors are dropped and the lines written meanwhile are lost.
 */
export function keepRunningWhenOutputCloses(): void {
	for (const stream of [process.stdout, process.stderr]) {
		if (stream.listenerCount('error') === 0) {
			stream.on('error', () => undefined);
		}
	}
}

function writeStderr(line: string): void {
	try {
		process.stderr.write(line);
	} catch {
		// a closed stderr: see keepRunningWhenOutputCloses
	}
}

export function createLogger(format: 'text' | 'json', write: (line: string) => void = writeStderr): Logger {
	const log = (level: Level) => (msg: string, fields: Fields = {}) => {
		if (!enabled(level)) {
			return;
		}

		const time = new Date().toISOString();
		const defined = Object.entries(fields).filter(([, value]) => value !== undefined);
		if (format === 'json') {
			write(`${JSON.stringify({ time, level, msg, ...Object.fromEntries(defined) })}\n`);
		} else {
			const rest = defined.map(([key, value]) => `${key}=${/^[\w.:/@+-]*$/.test(String(value)) ? String(value) : JSON.stringify(String(value))}`);
			write(`${[time, level.padEnd(5), msg, ...rest].join(' ')}\n`);
		}
	};

	return { debug: log('debug'), info: log('info'), warn: log('warn'), error: log('error') };
}
