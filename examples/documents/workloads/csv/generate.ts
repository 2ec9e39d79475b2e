/**
 * Jira-like CSV exports for tests and the benchmark: deterministic for a
 * seed, with descriptions full of commas, quotes and line breaks (so that a
 * record's index is not its line), and optionally bad rows at known
 * positions whose line numbers are reported.
 */
import { seededRandom } from 'celerity';
import { createWriteStream } from 'node:fs';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { JIRA_STATUSES } from './jira.ts';

/** A generated row, as written (strings, before validation). */
export interface JiraCsvRow {
  key: string;
  summary: string;
  status: string;
  assignee: string;
  created: string;
  description: string;
}

/** Which column a bad row breaks. */
export type BadKind = 'status' | 'created' | 'key';

export interface GenerateJiraOptions {
  /** Data rows, bad ones included. */
  rows: number;
  /**
   * Bad rows: a count (placed at seeded positions) or the 0-based data-row
   * indexes to break. They cycle through an unknown status, an impossible
   * date and a malformed key.
   */
  badRows?: number | readonly number[];
  /** Default 1. */
  seed?: number;
  /** Write Jira's own header names (`Issue key`, `Summary`…) instead of the schema's. */
  jiraHeaders?: boolean;
  /** Sees each row as it is generated (tests keep small files' rows to compare). */
  onRow?: (row: JiraCsvRow, info: { index: number; line: number; bad: BadKind | null }) => void;
}

export interface GeneratedBadRow {
  /** 0-based index among data rows. */
  index: number;
  /** Line of the file where the record starts (the header is line 1). */
  line: number;
  kind: BadKind;
  /** The schema column the row breaks. */
  column: string;
}

/** Filled while the stream is read; complete once it has ended. */
export interface GeneratedCsv {
  rows: number;
  bad: GeneratedBadRow[];
  /** Lines in the file, header included. */
  lines: number;
  bytes: number;
}

const HEADER = ['key', 'summary', 'status', 'assignee', 'created', 'description'];
const JIRA_HEADER = ['Issue key', 'Summary', 'Status', 'Assignee', 'Created', 'Description'];
const PROJECTS = ['CEL', 'OPS', 'WEB', 'API', 'DATA'];
const PEOPLE = ['Ada Lovelace', 'Grace Hopper', 'Alan Turing', 'Katherine Johnson', 'Edsger Dijkstra', 'Barbara Liskov', 'Donald Knuth', "Conan O'Brien"];
const WORDS = (
  'worker queue retry backoff timeout redis cluster upload import export report dashboard login session cache index ' +
  'migration schema deploy rollback latency memory leak crash flaky test build pipeline token billing invoice user admin'
).split(' ');
const SENTENCES = [
  'Steps to reproduce: open the page, click "Save", wait.',
  'Expected: the job completes; actual: it hangs, then fails with "ETIMEDOUT".',
  'See the attached log, lines 10-20, and the "retry" policy.',
  'Happens on staging, not on prod, since Tuesday.',
  'The value was "50%, then 0%" according to the customer.',
  'Workaround: restart the worker, then re-run the import.',
  'He said: ""it works on my machine"", which it does, mostly.',
  'Stack: at run (worker.ts:42), at process (queue.ts:7)',
];
const KINDS: BadKind[] = ['status', 'created', 'key'];
const COLUMN: Record<BadKind, string> = { status: 'status', created: 'created', key: 'key' };
const CHUNK = 64 * 1024;
const EPOCH_2020 = Date.UTC(2020, 0, 1);
const FOUR_YEARS_S = 4 * 365 * 24 * 3600;

function badIndexes(rows: number, bad: number | readonly number[] | undefined, random: () => number): Map<number, BadKind> {
  const picked = new Set<number>();
  if (typeof bad === 'number') {
    const n = Math.min(rows, Math.max(0, Math.floor(bad)));
    while (picked.size < n) picked.add(Math.floor(random() * rows));
  } else if (bad) {
    for (const i of bad) if (Number.isInteger(i) && i >= 0 && i < rows) picked.add(i);
  }
  const sorted = [...picked].sort((a, b) => a - b);
  return new Map(sorted.map((index, i) => [index, KINDS[i % KINDS.length]!]));
}

function quote(field: string): string {
  return /[",\r\n]/.test(field) ? `"${field.replace(/"/g, '""')}"` : field;
}

function countLineBreaks(text: string): number {
  let n = 0;
  for (let i = text.indexOf('\n'); i !== -1; i = text.indexOf('\n', i + 1)) n++;
  return n;
}

function* chunks(opts: GenerateJiraOptions, info: GeneratedCsv): Generator<string> {
  const random = seededRandom(opts.seed ?? 1);
  const pick = <T>(list: readonly T[]): T => list[Math.floor(random() * list.length)]!;
  const bad = badIndexes(opts.rows, opts.badRows, random);
  let out = `${(opts.jiraHeaders ? JIRA_HEADER : HEADER).join(',')}\n`;
  let line = 2;
  for (let index = 0; index < opts.rows; index++) {
    const words = 3 + Math.floor(random() * 6);
    let summary = '';
    for (let w = 0; w < words; w++) summary += (w === 0 ? '' : w === 2 && random() < 0.3 ? ', ' : ' ') + pick(WORDS);
    summary = summary[0]!.toUpperCase() + summary.slice(1);
    const paragraphs = Math.floor(random() * 4);
    const description: string[] = [];
    for (let p = 0; p < paragraphs; p++) {
      const sentences = 1 + Math.floor(random() * 3);
      const parts: string[] = [];
      for (let s = 0; s < sentences; s++) parts.push(pick(SENTENCES));
      description.push(parts.join(' '));
    }
    const row: JiraCsvRow = {
      key: `${PROJECTS[index % PROJECTS.length]}-${index + 1}`,
      summary,
      status: pick(JIRA_STATUSES),
      assignee: random() < 0.2 ? '' : pick(PEOPLE),
      // Whole seconds, as Jira exports them.
      created: new Date(EPOCH_2020 + Math.floor(random() * FOUR_YEARS_S) * 1000).toISOString().replace('.000Z', 'Z'),
      // Blank lines inside a description are lines too.
      description: description.join(random() < 0.2 ? '\n\n' : '\n'),
    };
    const kind = bad.get(index) ?? null;
    if (kind === 'status') row.status = 'Unknown Status';
    else if (kind === 'created') row.created = `${row.created.slice(0, 4)}-02-30T10:00:00Z`;
    else if (kind === 'key') row.key = `bad key ${index}`;
    if (kind) info.bad.push({ index, line, kind, column: COLUMN[kind] });
    opts.onRow?.(row, { index, line, bad: kind });
    const text = `${quote(row.key)},${quote(row.summary)},${quote(row.status)},${quote(row.assignee)},${quote(row.created)},${quote(row.description)}\n`;
    line += 1 + countLineBreaks(row.description) + countLineBreaks(row.summary);
    out += text;
    if (out.length >= CHUNK) {
      info.bytes += Buffer.byteLength(out);
      yield out;
      out = '';
    }
  }
  info.bytes += Buffer.byteLength(out);
  info.lines = line - 1;
  if (out.length > 0) yield out;
}

/**
 * A Jira-like CSV export as a stream. `info` is filled as the stream is read
 * and complete once it has ended (the bad rows' lines are known only then).
 */
export function generateJiraCsv(opts: GenerateJiraOptions): { stream: Readable; info: GeneratedCsv } {
  const info: GeneratedCsv = { rows: opts.rows, bad: [], lines: 0, bytes: 0 };
  return { stream: Readable.from(chunks(opts, info), { objectMode: false }), info };
}

/** Writes a Jira-like CSV export to `path`; resolves with its bad rows and size once written. */
export async function writeJiraCsv(path: string, opts: GenerateJiraOptions): Promise<GeneratedCsv> {
  const { stream, info } = generateJiraCsv(opts);
  await pipeline(stream, createWriteStream(path));
  return info;
}
