/**
 * The workloads end to end, over real HTTP, as a client would use them:
 * uploads streamed with fetch, status polled, search queried.
 */
import { openAsBlob } from 'node:fs';
import { dirname, join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import type { App } from 'celerity';
import { buildServer } from 'celerity';
import { assessmentTasks, type AssessmentResult } from '../workloads/assessment/pipeline.ts';
import { writeJiraCsv } from '../workloads/csv/generate.ts';
import { countImported, csvImportTask } from '../workloads/csv/task.ts';
import { pdfIngestTask } from '../workloads/documents/ingest-task.ts';
import { makePdf } from './make-pdf.ts';
import { onCleanup, openTestApp, startWorker, stores, useCleanup, waitFor } from '../../../packages/celerity/test/helpers.ts';
import { documentsTables } from '../workloads/tables.ts';
import { searchRoutes } from '../workloads/search-routes.ts';

useCleanup();

async function documentsApp(kind: (typeof stores)[number]) {
  let app!: App;
  const store = () => app.tables(documentsTables);
  const assessment = assessmentTasks({ store });
  app = await openTestApp(kind, {
    tasks: [csvImportTask({ store }), pdfIngestTask({ store }), assessment.parse, assessment.evaluate],
    workflows: [assessment.validate],
    tables: [documentsTables],
    routes: [searchRoutes],
  });
  const server = await buildServer(app, { logger: false });
  onCleanup(() => server.close());
  const base = await server.listen({ port: 0, host: '127.0.0.1' });
  return { app, server, base };
}

async function upload(base: string, task: string, file: Blob, filename: string): Promise<string> {
  const form = new FormData();
  form.append('task', task);
  form.append('file', file, filename);
  const res = await fetch(`${base}/v1/uploads`, { method: 'POST', body: form });
  const body = (await res.json()) as { job_id: string };
  expect(res.status, JSON.stringify(body)).toBe(202);
  return body.job_id;
}

async function job(base: string, id: string): Promise<any> {
  return (await fetch(`${base}/v1/jobs/${id}`)).json();
}

async function finished(base: string, id: string, timeoutMs = 60_000): Promise<any> {
  return waitFor(
    async () => {
      const v = await job(base, id);
      return ['completed', 'failed', 'cancelled'].includes(v.status) ? v : null;
    },
    timeoutMs,
    50,
  );
}

describe.each(stores)('workloads end to end (%s)', (kind) => {
  it('a 200,000-row CSV upload: records_processed rises across polls, every good row is stored, bad rows are counted by line', async () => {
    const { app, server, base } = await documentsApp(kind);
    const path = join(dirname(app.config.sqlitePath), 'jira.csv');
    const generated = await writeJiraCsv(path, { rows: 200_000, badRows: 25, seed: 3 });
    const id = await upload(base, 'csv.import', await openAsBlob(path, { type: 'text/csv' }), 'jira.csv');
    await startWorker(app);
    const seen: number[] = [];
    const view = await waitFor(
      async () => {
        const v = await job(base, id);
        if (typeof v.progress?.records_processed === 'number') seen.push(v.progress.records_processed);
        return v.status === 'completed' || v.status === 'failed' ? v : null;
      },
      120_000,
      100,
    );
    expect(view.status).toBe('completed');
    const rising = [...new Set(seen)];
    expect(rising.length, `progress seen: ${rising.join(', ')}`).toBeGreaterThanOrEqual(3);
    expect(rising).toEqual([...rising].sort((a, b) => a - b));
    expect(view.result.records_processed).toBe(200_000);
    expect(view.result.records_failed).toBe(25);
    expect(view.result.bad_rows.map((b: { line: number }) => b.line)).toEqual(generated.bad.map((b) => b.line));
    expect(await countImported(await app.tables(documentsTables), id)).toBe(200_000 - 25);
    await server.close();
  }, 180_000);

  it('a generated 20-page PDF becomes searchable; an assessment of it quotes the right page', async () => {
    const { app, base } = await documentsApp(kind);
    await startWorker(app, { concurrency: 4 });
    const pages = Array.from({ length: 20 }, (_, i) =>
      i === 11
        ? 'Chapter 12. All administrator accounts require multi-factor authentication, enforced by the identity provider.'
        : `Chapter ${i + 1}. General notes about the operations of the platform, page ${i + 1}.`,
    );
    const pdf = new Blob([await makePdf({ pages, title: 'Handbook' })], { type: 'application/pdf' });
    const ingest = await upload(base, 'pdf.ingest', pdf, 'handbook.pdf');
    expect((await finished(base, ingest)).result).toMatchObject({ document_id: ingest, page_count: 20 });
    const search = (await (await fetch(`${base}/v1/search?q=${encodeURIComponent('multi-factor authentication')}`)).json()) as { results: { document_id: string; page: number }[] };
    expect(search.results[0]).toMatchObject({ document_id: ingest, page: 12 });

    const res = await fetch(`${base}/v1/jobs`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        task: 'assessment.validate',
        input: {
          documents: [ingest],
          criteria: [
            { id: 'mfa', name: 'MFA for administrators', description: 'Administrator accounts require multi-factor authentication' },
            { id: 'dr', name: 'Disaster recovery site', description: 'A secondary data centre takes over within an hour' },
          ],
        },
      }),
    });
    expect(res.status).toBe(202);
    const done = await finished(base, ((await res.json()) as { job_id: string }).job_id);
    expect(done.status).toBe('completed');
    expect(done.steps.map((s: { task: string; status: string }) => `${s.task}:${s.status}`)).toEqual(['assessment.parse:completed', 'assessment.evaluate:completed']);
    const [mfa, dr] = (done.result as AssessmentResult).criteria;
    expect(mfa).toMatchObject({ criterion_id: 'mfa', verdict: 'pass' });
    expect(mfa!.evidence[0]).toMatchObject({ document: 'handbook.pdf', page: 12 });
    expect(mfa!.evidence[0]!.quote).toContain('multi-factor authentication');
    expect(dr!.verdict).not.toBe('pass');
  }, 60_000);

  it('refuses a traversal name, an oversized file and an executable posing as a PDF, leaving nothing behind', async () => {
    const { app, base } = await documentsApp(kind);
    const elf = new Blob([Buffer.concat([Buffer.from([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1, 0]), Buffer.alloc(4096)])], { type: 'application/pdf' });
    const cases: [string, Blob, string, number, string][] = [
      ['pdf.ingest', new Blob(['%PDF-1.4 tiny'], { type: 'application/pdf' }), '../../etc/passwd', 400, 'invalid_filename'],
      ['pdf.ingest', elf, 'report.pdf', 415, 'unsupported_media_type'],
    ];
    for (const [task, blob, name, status, code] of cases) {
      const form = new FormData();
      form.append('task', task);
      form.append('file', blob, name);
      const res = await fetch(`${base}/v1/uploads`, { method: 'POST', body: form });
      expect(res.status, name).toBe(status);
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe(code);
    }
    const { readdirSync, existsSync } = await import('node:fs');
    const leftovers = existsSync(app.config.uploadDir) ? readdirSync(app.config.uploadDir) : [];
    expect(leftovers).toEqual([]);
    const counts = await app.broker.queue('documents').getJobCounts();
    expect(Object.values(counts).reduce((a, b) => a + b, 0)).toBe(0);
  });
});

describe('oversized upload', () => {
  it('answers 413 and keeps nothing', async () => {
    let app!: App;
    const store = () => app.tables(documentsTables);
    app = await openTestApp('sqlite', { tasks: [csvImportTask({ store })], tables: [documentsTables], routes: [searchRoutes] }, { uploadMaxBytes: '1000' });
    const server: FastifyInstance = await buildServer(app, { logger: false });
    onCleanup(() => server.close());
    const base = await server.listen({ port: 0, host: '127.0.0.1' });
    const form = new FormData();
    form.append('task', 'csv.import');
    form.append('file', new Blob([`key,summary\n${'x,y\n'.repeat(1000)}`], { type: 'text/csv' }), 'big.csv');
    const res = await fetch(`${base}/v1/uploads`, { method: 'POST', body: form });
    expect(res.status).toBe(413);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('payload_too_large');
    const { readdirSync, existsSync } = await import('node:fs');
    expect(existsSync(app.config.uploadDir) ? readdirSync(app.config.uploadDir) : []).toEqual([]);
  });
});
