/**
 * The Jira export as `csv.import` understands it: one Zod schema per row
 * (the keys are the CSV's column names) and the mapping of a validated row
 * to the `imported_records` table.
 */
import { z } from 'zod';
import type { TableSpec } from './import.ts';

/** Statuses of the default Jira workflows; anything else is a bad row. */
export const JIRA_STATUSES = ['Backlog', 'To Do', 'Selected for Development', 'In Progress', 'In Review', 'Blocked', 'Done', 'Closed', 'Resolved', "Won't Do"] as const;

const ISO_DATE = /^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?)?\s*(Z|[+-]\d{2}:?\d{2})?$/;

/**
 * Parses an ISO 8601 date or date-time (`2024-03-05`, `2024-03-05 14:22`,
 * `2024-03-05T14:22:01.123+01:00`) to epoch ms, or null. A time without a
 * zone is UTC. Unlike `Date.parse`, impossible dates (Feb 30, hour 25) are
 * rejected instead of rolled over, and nothing else is guessed.
 */
export function parseIsoDate(text: string): number | null {
  const m = ISO_DATE.exec(text);
  if (!m) return null;
  const [year, month, day, hour = 0, minute = 0, second = 0] = [m[1], m[2], m[3], m[4], m[5], m[6]].map((v) => (v === undefined ? undefined : Number(v))) as number[];
  const ms = m[7] ? Number(m[7].slice(0, 3).padEnd(3, '0')) : 0;
  if (month! < 1 || month! > 12 || day! < 1 || hour > 23 || minute > 59 || second > 59) return null;
  const local = Date.UTC(year!, month! - 1, day!, hour, minute, second, ms);
  // Date.UTC rolls Feb 30 over to Mar 2: a changed day means it did not exist.
  if (new Date(local).getUTCDate() !== day) return null;
  let offset = 0;
  const zone = m[8];
  if (zone && zone !== 'Z') {
    const sign = zone[0] === '-' ? -1 : 1;
    const digits = zone.slice(1).replace(':', '');
    const h = Number(digits.slice(0, 2));
    const min = Number(digits.slice(2));
    if (h > 23 || min > 59) return null;
    offset = sign * (h * 60 + min) * 60_000;
  }
  return local - offset;
}

/**
 * One row of a Jira CSV export. The output is what is stored: `assignee`
 * empty becomes null, `created` becomes epoch ms.
 */
export const jiraRowSchema = z.object({
  key: z.string().regex(/^[A-Z][A-Z0-9_]*-[1-9][0-9]*$/, 'must be an issue key such as PROJ-123'),
  summary: z.string().trim().min(1, 'must not be empty').max(255, 'must be at most 255 characters'),
  status: z.enum(JIRA_STATUSES, { error: (issue) => `unknown status ${JSON.stringify(issue.input)}` }),
  assignee: z
    .string()
    .trim()
    .max(255)
    .optional()
    .transform((v) => (v ? v : null)),
  created: z.string().transform((text, ctx) => {
    const ms = parseIsoDate(text.trim());
    if (ms === null) {
      ctx.addIssue({ code: 'custom', message: `not an ISO 8601 date: ${JSON.stringify(text)}` });
      return z.NEVER;
    }
    return ms;
  }),
  // Jira's own limit for a multi-line text field.
  description: z
    .string()
    .max(32_767, 'must be at most 32,767 characters')
    .optional()
    .transform((v) => v ?? ''),
});

export type JiraRow = z.output<typeof jiraRowSchema>;

/** Jira's own header names, as its "Export CSV (all fields)" writes them. */
export const JIRA_HEADER_ALIASES: Readonly<Record<string, string>> = {
  'issue key': 'key',
  issue_key: 'key',
  created_at: 'created',
};

/** A row of `imported_records`, as read back. */
export interface ImportedRecord {
  job_id: string;
  line: number;
  key: string;
  summary: string;
  status: string;
  assignee: string | null;
  created_at: number;
  description: string;
}

/** `imported_records`: job_id and line come from the importer, the rest from the row. */
export const jiraTable: TableSpec<JiraRow> = {
  table: 'imported_records',
  columns: [
    { name: 'key', pgType: 'text' },
    { name: 'summary', pgType: 'text' },
    { name: 'status', pgType: 'text' },
    { name: 'assignee', pgType: 'text' },
    { name: 'created_at', pgType: 'bigint' },
    { name: 'description', pgType: 'text' },
  ],
  values: (row) => [row.key, row.summary, row.status, row.assignee, row.created, row.description],
};
