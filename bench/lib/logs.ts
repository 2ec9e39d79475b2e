/**
 * Warnings and errors Celerity logs during a run (a recorder retrying a
 * batch after a deadlock, a worker error...) are part of the result: they
 * are gathered from the bench process's own app and from every child's
 * output, and reported as notes of the scenario.
 */
import pino, { type Logger } from 'pino';
import { isGcTraceLine } from './worker-gc.ts';

export interface LogSink {
  logger: Logger;
  lines: string[];
}

/** A pino logger (level warn) that keeps its lines in memory. */
export function memoryLogger(): LogSink {
  const lines: string[] = [];
  const logger = pino({ name: 'celerity', level: 'warn' }, { write: (line: string) => void lines.push(line) });
  return { logger, lines };
}

/**
 * Groups the pino lines of level warn and above by message and error, e.g.
 * `celerity-worker-2: 3× "recorder: batch not recorded, will retry" (deadlock detected)`.
 * Lines that are not pino JSON (a crash's stack) are counted as "other output".
 */
export function summariseLogs(source: string, text: string | string[]): string[] {
  const lines = (Array.isArray(text) ? text.join('\n') : text).split('\n').filter((l) => l.trim().length > 0);
  const groups = new Map<string, number>();
  let other = 0;
  let firstOther = '';
  for (const line of lines) {
    // V8's own trace of a collection (`--trace-gc-nvp`, asked by worker_gc).
    if (isGcTraceLine(line)) continue;
    let entry: { level?: number; msg?: string; err?: { message?: string } };
    try {
      entry = JSON.parse(line) as typeof entry;
    } catch {
      other++;
      firstOther ||= line.slice(0, 200);
      continue;
    }
    if ((entry.level ?? 0) < 40) continue;
    const key = `"${entry.msg ?? '?'}"${entry.err?.message ? ` (${entry.err.message.split('\n')[0]!.slice(0, 120)})` : ''}`;
    groups.set(key, (groups.get(key) ?? 0) + 1);
  }
  const out = [...groups].map(([key, n]) => `${source}: ${n}× ${key}`);
  if (other > 0) out.push(`${source}: ${other} other line(s) of output, first: ${firstOther}`);
  return out;
}
