/**
 * The documents app under API keys: each tenant's documents and imported
 * rows are its own. Searches see only the key's tenant (an admin's, every
 * tenant), and a job reads only its own tenant's documents, whatever ids its
 * input names: another tenant's id behaves as an unknown one.
 */
import { describe, expect, it } from 'vitest';
import { ALL_TENANTS, buildServer, createKey, type App, type TaskContext, type TenantScope } from 'celerity';
import { onCleanup, openTestApp, stageUpload, startWorker, stores, useCleanup, waitFor, type StoreKind } from '../../../packages/celerity/test/helpers.ts';
import { LocalValidator } from '../workloads/assessment/local-validator.ts';
import { assessmentTasks } from '../workloads/assessment/pipeline.ts';
import { countImported, csvImportTask, listImported } from '../workloads/csv/task.ts';
import { pdfIngestTask } from '../workloads/documents/ingest-task.ts';
import { DocumentIdTakenError, readDocument, readDocumentPages, searchChunks } from '../workloads/documents/search-index.ts';
import { searchRoutes } from '../workloads/search-routes.ts';
import { documentsTables } from '../workloads/tables.ts';
import { makePdf } from './make-pdf.ts';

useCleanup();

// `heliotrope` is in every document; each also has a word of its own.
const ACME_PAGES = ['Acme handbook. The heliotrope garden is watered daily.', 'Every administrator account requires multi-factor authentication, says the aardvark clause.'];
const GLOBEX_PAGES = ['Globex handbook. The heliotrope terrace faces south.', 'The quokka committee meets on Mondays.'];
const UNTENANTED_PAGES = ['Shared handbook. A heliotrope hedge, and the narwhal fountain.'];

const scopeOf = (tenant: string | null): TenantScope => ({ all: false, tenant });

interface Hit {
  document_id: string;
  page: number;
}

async function setup(kind: StoreKind) {
  let app!: App;
  const store = () => app.tables(documentsTables);
  const assessment = assessmentTasks({ store, validator: () => new LocalValidator() });
  const ingest = pdfIngestTask({ store });
  app = await openTestApp(
    kind,
    { tasks: [ingest, csvImportTask({ store }), assessment.parse, assessment.evaluate], workflows: [assessment.validate], tables: [documentsTables], routes: [searchRoutes] },
    { auth: 'keys' },
  );
  const scopes = ['jobs:submit', 'jobs:read'];
  const keys = {
    acme: (await createKey(app.store, { name: 'acme', tenant: 'acme', scopes })).token,
    globex: (await createKey(app.store, { name: 'globex', tenant: 'globex', scopes })).token,
    untenanted: (await createKey(app.store, { name: 'no tenant', scopes })).token,
    admin: (await createKey(app.store, { name: 'admin', scopes: ['admin'] })).token,
    submitOnly: (await createKey(app.store, { name: 'submit only', tenant: 'acme', scopes: ['jobs:submit'] })).token,
  };
  const server = await buildServer(app, { logger: false });
  onCleanup(() => server.close());
  const base = await server.listen({ port: 0, host: '127.0.0.1' });
  await startWorker(app, { concurrency: 4 });

  const auth = (key: string) => ({ authorization: `Bearer ${key}` });
  const finished = (key: string, id: string) =>
    waitFor(
      async () => {
        const v = (await server.inject({ url: `/v1/jobs/${id}`, headers: auth(key) })).json();
        return ['completed', 'failed', 'cancelled'].includes(v.status) ? v : null;
      },
      20_000,
      25,
    );
  /** A PDF ingested through POST /v1/uploads with the key; its document id. */
  const ingestPdf = async (key: string, filename: string, pages: string[]): Promise<string> => {
    const form = new FormData();
    form.append('task', 'pdf.ingest');
    form.append('file', new Blob([await makePdf({ pages })], { type: 'application/pdf' }), filename);
    const res = await fetch(`${base}/v1/uploads`, { method: 'POST', body: form, headers: auth(key) });
    const body = (await res.json()) as { job_id: string };
    expect(res.status, JSON.stringify(body)).toBe(202);
    const done = await finished(key, body.job_id);
    expect(done.status, JSON.stringify(done.error)).toBe('completed');
    return done.result.document_id as string;
  };
  const search = async (key: string, query: string): Promise<Hit[]> => {
    const res = await server.inject({ url: `/v1/search?${query}`, headers: auth(key) });
    expect(res.statusCode, res.body).toBe(200);
    return res.json().results;
  };
  /**
   * An assessment of `tenant`, as POST /v1/jobs with that tenant's key would
   * submit it, read back with the key. Enqueued through the app: Celerity
   * refuses a workflow submitted over HTTP under keys (the `keyId` the route
   * adds is not a workflow option), which is not this app's to fix.
   */
  const assess = async (key: string, tenant: string | null, documents: unknown[]) => {
    const criteria = [{ id: 'mfa', name: 'MFA', description: 'Administrator accounts require multi-factor authentication' }];
    const handle = await app.enqueueByName('assessment.validate', { documents, criteria }, tenant === null ? {} : { tenant });
    return finished(key, handle.id);
  };
  return { app, ingest, server, keys, auth, ingestPdf, search, assess };
}

describe.each(stores)('tenants of the documents app (%s)', (kind) => {
  it('a key searches only its tenant’s documents (no tenant: the documents without one); an admin searches all', async () => {
    const { app, server, keys, auth, ingestPdf, search } = await setup(kind);
    const acme = await ingestPdf(keys.acme, 'acme.pdf', ACME_PAGES);
    const globex = await ingestPdf(keys.globex, 'globex.pdf', GLOBEX_PAGES);
    const untenanted = await ingestPdf(keys.untenanted, 'shared.pdf', UNTENANTED_PAGES);

    const store = await app.tables(documentsTables);
    expect((await readDocument(store, acme, ALL_TENANTS))?.tenant).toBe('acme');
    expect((await readDocument(store, globex, ALL_TENANTS))?.tenant).toBe('globex');
    expect((await readDocument(store, untenanted, ALL_TENANTS))?.tenant).toBeNull();

    const ids = (hits: Hit[]) => [...new Set(hits.map((h) => h.document_id))].sort();
    expect(ids(await search(keys.acme, 'q=heliotrope'))).toEqual([acme]);
    expect(ids(await search(keys.globex, 'q=heliotrope'))).toEqual([globex]);
    expect(ids(await search(keys.untenanted, 'q=heliotrope'))).toEqual([untenanted]);
    expect(ids(await search(keys.admin, 'q=heliotrope'))).toEqual([acme, globex, untenanted].sort());

    // Each tenant's own word: found by its tenant and admins only.
    expect(await search(keys.acme, 'q=aardvark')).toMatchObject([{ document_id: acme, page: 2 }]);
    expect(await search(keys.globex, 'q=aardvark')).toEqual([]);
    expect(await search(keys.untenanted, 'q=aardvark')).toEqual([]);
    expect(await search(keys.acme, 'q=quokka')).toEqual([]);
    expect(await search(keys.acme, 'q=narwhal')).toEqual([]);
    expect(await search(keys.admin, 'q=quokka')).toMatchObject([{ document_id: globex, page: 2 }]);
    expect(await search(keys.admin, 'q=narwhal')).toMatchObject([{ document_id: untenanted, page: 1 }]);

    // Another tenant's document id finds nothing, exactly as an unknown id.
    for (const [key, other] of [
      [keys.acme, globex],
      [keys.globex, acme],
      [keys.untenanted, acme],
      [keys.acme, untenanted],
    ] as const) {
      const theirs = await server.inject({ url: `/v1/search?q=heliotrope&document_id=${other}`, headers: auth(key) });
      const unknown = await server.inject({ url: '/v1/search?q=heliotrope&document_id=no-such-document', headers: auth(key) });
      expect(theirs.statusCode).toBe(200);
      expect(theirs.json()).toEqual({ results: [] });
      expect(theirs.body).toBe(unknown.body);
    }
    expect(ids(await search(keys.acme, `q=heliotrope&document_id=${acme}`))).toEqual([acme]);
    expect(ids(await search(keys.admin, `q=heliotrope&document_id=${globex}`))).toEqual([globex]);

    // The route needs a key, and one with jobs:read.
    expect((await server.inject({ url: '/v1/search?q=heliotrope' })).statusCode).toBe(401);
    const refused = await server.inject({ url: '/v1/search?q=heliotrope', headers: auth(keys.submitOnly) });
    expect(refused.statusCode).toBe(403);
    expect(refused.json().error).toMatchObject({ code: 'forbidden', details: { scope: 'jobs:read' } });

    // The same scoping, called directly.
    expect(ids(await searchChunks(store, { q: 'heliotrope', scope: scopeOf('acme') }))).toEqual([acme]);
    expect(ids(await searchChunks(store, { q: 'heliotrope', scope: scopeOf(null) }))).toEqual([untenanted]);
    expect(ids(await searchChunks(store, { q: 'heliotrope', scope: scopeOf('initech') }))).toEqual([]);
    expect(await searchChunks(store, { q: 'heliotrope', documentId: acme, scope: scopeOf('globex') })).toEqual([]);
    expect(await readDocument(store, acme, scopeOf('globex'))).toBeNull();
    expect(await readDocument(store, acme, scopeOf(null))).toBeNull();
    expect(await readDocumentPages(store, acme, scopeOf('globex'))).toEqual([]);
    expect(await readDocumentPages(store, acme, scopeOf('acme'))).toHaveLength(2);
  }, 60_000);

  it('an assessment reads only its own tenant’s documents: another tenant’s id fails as an unknown one', async () => {
    const { keys, ingestPdf, assess } = await setup(kind);
    const acme = await ingestPdf(keys.acme, 'acme.pdf', ACME_PAGES);

    // Its own tenant's document: the steps run with the workflow's tenant.
    const own = await assess(keys.acme, 'acme', [acme]);
    expect(own.status, JSON.stringify(own.error)).toBe('completed');
    expect(own.result.criteria[0]).toMatchObject({ criterion_id: 'mfa', verdict: 'pass', evidence: [expect.objectContaining({ document: 'acme.pdf', page: 2 })] });

    const unknown = await assess(keys.globex, 'globex', ['no-such-doc']);
    expect(unknown.status).toBe('failed');
    const asUnknown = (error: { type: string; message: string }, id: string) => ({ type: error.type, message: error.message.replaceAll(id, '<id>') });
    for (const [key, tenant, ref] of [
      [keys.globex, 'globex', acme],
      [keys.globex, 'globex', { document_id: acme }],
      [keys.untenanted, null, acme],
    ] as const) {
      const theirs = await assess(key, tenant, [ref]);
      expect(theirs.status).toBe('failed');
      expect(theirs.attempts).toBe(unknown.attempts);
      expect(asUnknown(theirs.error, acme)).toEqual(asUnknown(unknown.error, 'no-such-doc'));
      expect(theirs.steps.map((s: { status: string }) => s.status)).toEqual(unknown.steps.map((s: { status: string }) => s.status));
    }
    expect(asUnknown(unknown.error, 'no-such-doc').message).toMatch(/^step 1 \(assessment\.parse\) failed: No ingested document "<id>"/);
  }, 60_000);

  it('a reused document id of another tenant is refused, leaving its document as it was', async () => {
    const { app, ingest, keys, ingestPdf } = await setup(kind);
    const acme = await ingestPdf(keys.acme, 'acme.pdf', ACME_PAGES);
    const ctx = (tenant: string | null): TaskContext => ({
      jobId: acme,
      task: ingest.name,
      queue: ingest.queue,
      tenant,
      attempt: 1,
      maxAttempts: 1,
      signal: new AbortController().signal,
      progress: async () => {},
      log: app.logger,
      retry: () => {
        throw new Error('not used here');
      },
      rateLimited: () => {
        throw new Error('not used here');
      },
    });
    const bytes = await makePdf({ pages: GLOBEX_PAGES });
    const upload = () => stageUpload(app, 'globex.pdf', bytes, 'application/pdf');
    await expect(ingest.handler({ file: upload() }, ctx('globex'))).rejects.toBeInstanceOf(DocumentIdTakenError);
    await expect(ingest.handler({ file: upload() }, ctx(null))).rejects.toMatchObject({ code: 'document_id_taken', message: expect.not.stringContaining('acme') });
    const store = await app.tables(documentsTables);
    expect(await readDocument(store, acme, ALL_TENANTS)).toMatchObject({ tenant: 'acme', filename: 'acme.pdf' });
    // A retry by its own tenant still replaces it.
    await ingest.handler({ file: upload() }, ctx('acme'));
    expect(await readDocument(store, acme, scopeOf('acme'))).toMatchObject({ tenant: 'acme', filename: 'globex.pdf' });
  }, 60_000);

  it('csv.import stores its job’s tenant with each row; reads by job id are held to a scope', async () => {
    const { app } = await setup(kind);
    const csv = ['key,summary,status,assignee,created,description', 'CEL-1,First,Done,,2024-01-01,a', 'CEL-2,Second,To Do,,2024-01-02,b'].join('\n');
    const acme = await app.enqueueByName('csv.import', { file: stageUpload(app, 'a.csv', csv, 'text/csv') }, { tenant: 'acme' });
    const untenanted = await app.enqueueByName('csv.import', { file: stageUpload(app, 'b.csv', csv, 'text/csv') });
    for (const h of [acme, untenanted]) expect((await h.wait({ timeoutMs: 20_000, pollMs: 25 })).status).toBe('completed');

    const store = await app.tables(documentsTables);
    expect(await countImported(store, acme.id, scopeOf('acme'))).toBe(2);
    expect(await countImported(store, acme.id, scopeOf('globex'))).toBe(0);
    expect(await countImported(store, acme.id, scopeOf(null))).toBe(0);
    expect(await countImported(store, acme.id)).toBe(2);
    expect(await countImported(store, untenanted.id, scopeOf(null))).toBe(2);
    expect(await countImported(store, untenanted.id, scopeOf('acme'))).toBe(0);
    expect((await listImported(store, acme.id, { scope: scopeOf('acme') })).map((r) => r.key)).toEqual(['CEL-1', 'CEL-2']);
    expect(await listImported(store, acme.id, { scope: scopeOf('globex') })).toEqual([]);
    expect(await listImported(store, untenanted.id, { scope: scopeOf('acme') })).toEqual([]);
  });
});
