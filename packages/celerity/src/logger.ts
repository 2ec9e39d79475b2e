import { createRequire } from 'node:module';
import pino, { type Logger } from 'pino';

export type { Logger } from 'pino';

/**
 * JSON logs by default; `pretty` (dev mode) uses pino-pretty when it is
 * installed and falls back to JSON when it is not.
 */
export function createLogger(level: string, opts: { pretty?: boolean; name?: string } = {}): Logger {
  const base = { level, name: opts.name ?? 'celerity' };
  if (opts.pretty && hasPinoPretty()) {
    return pino({ ...base, transport: { target: 'pino-pretty', options: { colorize: true, ignore: 'pid,hostname', singleLine: true } } });
  }
  return pino(base);
}

function hasPinoPretty(): boolean {
  try {
    createRequire(import.meta.url).resolve('pino-pretty');
    return true;
  } catch {
    return false;
  }
}
