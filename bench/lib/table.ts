import type { Row } from './types.ts';

export interface TableRow extends Row {
  scenario: string;
}

export function formatNumber(x: number | undefined, kind: 'value' | 'ratio' = 'value'): string {
  if (x === undefined || Number.isNaN(x)) return '-';
  if (kind === 'ratio') return x.toFixed(2);
  if (Math.abs(x) >= 100) return Math.round(x).toLocaleString('en-US');
  if (Math.abs(x) >= 10) return x.toFixed(1);
  return x.toFixed(2);
}

/** A plain-text table: scenario, metric, celerity, bullmq, ratio (celerity / bullmq). */
export function formatTable(rows: TableRow[]): string {
  const header = ['scenario', 'metric', 'celerity', 'bullmq', 'ratio'];
  const cells = rows.map((r) => [r.scenario, `${r.metric} (${r.unit})`, formatNumber(r.celerity), formatNumber(r.bullmq), formatNumber(r.ratio, 'ratio')]);
  const widths = header.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i]!.length)));
  const line = (c: string[]) => c.map((v, i) => (i < 2 ? v.padEnd(widths[i]!) : v.padStart(widths[i]!))).join('  ');
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...cells.map(line)].join('\n');
}

/** The same table in Markdown, for docs/benchmarks.md. */
export function formatMarkdown(rows: TableRow[]): string {
  const out = ['| scenario | metric | celerity | bullmq | ratio |', '|---|---|---:|---:|---:|'];
  for (const r of rows) {
    out.push(`| ${r.scenario} | ${r.metric} (${r.unit}) | ${formatNumber(r.celerity)} | ${formatNumber(r.bullmq)} | ${formatNumber(r.ratio, 'ratio')} |`);
  }
  return out.join('\n');
}
