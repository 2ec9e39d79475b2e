import { describe, expect, it } from 'vitest';
import type { App } from 'celerity';
import { buildServer } from 'celerity';
import type { UploadRef } from 'celerity';
import { assessmentTasks, type AssessmentResult } from '../workloads/assessment/pipeline.ts';
import { LocalValidator } from '../workloads/assessment/local-validator.ts';
import { pdfIngestTask } from '../workloads/documents/ingest-task.ts';
import { makePdf } from './make-pdf.ts';
import { onCleanup, openTestApp, stageUpload, startWorker, stores, useCleanup, waitFor } from '../../../packages/celerity/test/helpers.ts';
import { documentsTables } from '../workloads/tables.ts';

useCleanup();

const POLICY = [
  'Information Security Policy. This document describes how Acme protects customer data.',
  'Access control. All administrator accounts require multi-factor authentication. Passwords are rotated every ninety days.',
  'Data protection. Customer data is encrypted at rest with AES-256 and encrypted in transit with TLS 1.3.',
];
const CONTINUITY = ['Business Continuity Plan. Backups are taken nightly and restored in a quarterly drill.', 'Incident response. The on-call engineer is paged within five minutes of an alert.'];

async function pdfFile(app: App, filename: string, pages: string[]): Promise<UploadRef> {
  return stageUpload(app, filename, await makePdf({ pages }), 'application/pdf');
}

describe.each(stores)('assessment.validate (%s)', (kind) => {
  it('parses ingested and uploaded PDFs, then returns verdicts with evidence quoting the right page', async () => {
    let app!: App;
    const store = () => app.tables(documentsTables);
    const a = assessmentTasks({ store, validator: () => new LocalValidator() });
    app = await openTestApp(kind, { tasks: [pdfIngestTask({ store }), a.parse, a.evaluate], workflows: [a.validate], tables: [documentsTables] });
    await startWorker(app, { concurrency: 4 });

    // One document ingested first (referenced by id), one given as an upload.
    const ingest = await app.enqueueByName('pdf.ingest', { file: await pdfFile(app, 'policy.pdf', POLICY) });
    const ingested = await ingest.wait({ timeoutMs: 20_000 });
    expect(ingested.status).toBe('completed');
    const continuity = await pdfFile(app, 'continuity.pdf', CONTINUITY);

    const server = await buildServer(app, { logger: false });
    onCleanup(() => server.close());
    const criteria = [
      { id: 'mfa', name: 'Multi-factor authentication', description: 'Administrator accounts require multi-factor authentication' },
      { id: 'encryption', name: 'Encryption at rest', description: 'Customer data is encrypted at rest' },
      { id: 'backups', name: 'Backups', description: 'Backups are taken and restored in a drill' },
      { id: 'pentest', name: 'Penetration testing', description: 'An external firm performs yearly penetration tests' },
    ];
    const res = await server.inject({ method: 'POST', url: '/v1/jobs', payload: { task: 'assessment.validate', input: { documents: [ingest.id, { file: continuity }], criteria } } });
    expect(res.statusCode).toBe(202);
    const id = res.json().job_id;
    const view = await waitFor(async () => {
      const v = (await server.inject({ url: `/v1/jobs/${id}` })).json();
      return v.status === 'completed' || v.status === 'failed' ? v : null;
    }, 30_000);
    expect(view.status).toBe('completed');
    expect(view.steps.map((s: { task: string; stage: string }) => `${s.task}:${s.stage}`)).toEqual(['assessment.parse:parsing', 'assessment.parse:parsing', 'assessment.evaluate:validating']);
    const result = view.result as AssessmentResult;
    const byId = Object.fromEntries(result.criteria.map((c) => [c.criterion_id, c]));
    expect(byId.mfa!.verdict).toBe('pass');
    expect(byId.mfa!.evidence[0]).toMatchObject({ document: 'policy.pdf', page: 2 });
    expect(byId.mfa!.evidence[0]!.quote).toContain('multi-factor authentication');
    expect(byId.encryption!.verdict).toBe('pass');
    expect(byId.encryption!.evidence[0]).toMatchObject({ document: 'policy.pdf', page: 3 });
    expect(byId.backups!.verdict).toBe('pass');
    expect(byId.backups!.evidence[0]).toMatchObject({ document: 'continuity.pdf', page: 1 });
    expect(byId.pentest!.verdict).not.toBe('pass');
    for (const c of result.criteria) expect(c.confidence).toBeGreaterThanOrEqual(0);
    expect(result.summary.pass).toBe(3);
  });

  it('fails naming the step when a document does not exist', async () => {
    let app!: App;
    const a = assessmentTasks({ store: () => app.tables(documentsTables), validator: () => new LocalValidator() });
    app = await openTestApp(kind, { tasks: [a.parse, a.evaluate], workflows: [a.validate], tables: [documentsTables] });
    await startWorker(app);
    const handle = await app.enqueueByName('assessment.validate', { documents: ['no-such-doc'], criteria: [{ id: 'c', name: 'x', description: 'y' }] });
    const done = await handle.wait({ timeoutMs: 15_000 });
    expect(done.status).toBe('failed');
    expect(done.error!.message).toMatch(/^step 1 \(assessment.parse\) failed: No ingested document "no-such-doc"/);
  });
});
