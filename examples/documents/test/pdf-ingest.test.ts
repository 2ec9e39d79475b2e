import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sql, type Kysely } from 'kysely';
import { describe, expect, it } from 'vitest';
import { buildServer } from 'celerity';
import type { App } from 'celerity';
import type { TableHandle } from 'celerity';
import type { TaskContext, TenantScope } from 'celerity';
import { chunkPages } from '../workloads/documents/chunk.ts';
import { pdfIngestTask } from '../workloads/documents/ingest-task.ts';
import { extractPdfPages, InvalidPdfError } from '../workloads/documents/pdf-text.ts';
import { readDocument, readDocumentPages, searchChunks, toFts5Query } from '../workloads/documents/search-index.ts';
import { makePdf } from './make-pdf.ts';
import { onCleanup, openTestApp, stageUpload, startWorker, waitFor, stores, useCleanup, type StoreKind } from '../../../packages/celerity/test/helpers.ts';
import { documentsTables } from '../workloads/tables.ts';
import { searchRoutes } from '../workloads/search-routes.ts';

useCleanup();

const FILLER = 'lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut labore et dolore magna aliqua'.split(' ');

/** About `words` words of filler, different on each page, with `extra` in the middle. */
function pageText(page: number, extra = '', words = 300): string {
  const out: string[] = [`Page ${page} of the quarterly report.`];
  for (let i = 0; i < words; i++) {
    if (i === Math.floor(words / 2) && extra) out.push(extra);
    out.push(FILLER[(i * 7 + page) % FILLER.length]!);
    if (i % 40 === 39) out.push('\n');
  }
  return out.join(' ');
}

// Distinctive words on given pages (1-based).
const SPECIAL: Record<number, string> = {
  3: 'the xylophone section',
  7: 'a quasar nebula appeared',
  15: 'one zeppelin landed',
  20: 'marmalade closing remarks on R&D <b>',
};

const PAGES = Array.from({ length: 20 }, (_, i) => pageText(i + 1, SPECIAL[i + 1]));

// The jobs here are enqueued without a tenant: their documents are those of the null tenant.
const NO_TENANT: TenantScope = { all: false, tenant: null };

function tmpDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'celerity-pdf-'));
  onCleanup(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

async function setup(kind: StoreKind) {
  let app!: App;
  const task = pdfIngestTask({ store: () => app.tables(documentsTables) });
  app = await openTestApp(kind, { tasks: [task], tables: [documentsTables], routes: [searchRoutes] });
  return { app, task };
}

async function api(app: App) {
  const server = await buildServer(app, { logger: false });
  onCleanup(() => server.close());
  await server.ready();
  return server;
}

async function chunkCount(store: TableHandle, documentId: string): Promise<number> {
  const db = store.db as unknown as Kysely<any>;
  const row = await sql<{ n: number | string }>`select count(*) as n from document_chunks where document_id = ${documentId}`.execute(db);
  return Number(row.rows[0]!.n);
}

describe.each(stores)('pdf.ingest (%s store)', (kind) => {
  it('ingests a 20-page PDF through a worker; search finds the right pages, directly and over HTTP; re-ingesting replaces', async () => {
    const { app, task } = await setup(kind);
    await startWorker(app);
    const bytes = await makePdf({ pages: PAGES, title: 'Quarterly Report', author: 'Ada Lovelace', subject: 'Testing', creationDate: new Date('2024-03-05T10:20:30Z') });
    const file = stageUpload(app, 'report.pdf', bytes, 'application/pdf');

    const handle = await app.enqueue(task, { file });
    const done = await handle.wait({ timeoutMs: 20_000, pollMs: 25 });
    expect(done.error).toBeNull();
    expect(done.status).toBe('completed');
    expect(done.result).toEqual({
      document_id: handle.id,
      filename: 'report.pdf',
      page_count: 20,
      chunks: expect.any(Number),
      metadata: {
        title: 'Quarterly Report',
        author: 'Ada Lovelace',
        subject: 'Testing',
        creator: expect.stringContaining('pdf-lib'),
        producer: expect.stringContaining('pdf-lib'),
        created_at: '2024-03-05T10:20:30.000Z',
      },
    });
    const chunks = done.result!.chunks;
    // ~300 words a page, 250-word chunks with a 40-word overlap: two a page.
    expect(chunks).toBe(40);
    expect(done.progress).toMatchObject({ stage: 'indexing', percent: 100, pages_done: 20, pages_total: 20, chunks });

    const store = await app.tables(documentsTables);
    const pages = await readDocumentPages(store, handle.id, NO_TENANT);
    expect(pages.map((p) => p.page)).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
    expect(pages[2]!.text.replace(/\s+/g, ' ')).toContain('the xylophone section');
    expect(pages[0]!.text.startsWith('Page 1 of the quarterly report.')).toBe(true);
    expect(await readDocument(store, handle.id, NO_TENANT)).toMatchObject({
      id: handle.id,
      job_id: handle.id,
      tenant: null,
      filename: 'report.pdf',
      page_count: 20,
      metadata: { title: 'Quarterly Report' },
    });
    expect(await readDocumentPages(store, 'no-such-document', NO_TENANT)).toEqual([]);

    const pagesOf = async (q: string) => (await searchChunks(store, { q, scope: NO_TENANT })).map((h) => h.page);
    expect(await pagesOf('xylophone')).toEqual([3]);
    expect(await pagesOf('zeppelins')).toEqual([15]); // stemmed
    expect(await pagesOf('"quasar nebula"')).toEqual([7]);
    expect(await pagesOf('"nebula quasar"')).toEqual([]);
    expect(await pagesOf('xylophone or marmalade')).toEqual(expect.arrayContaining([3, 20]));
    const excluded = await searchChunks(store, { q: 'lorem -xylophone', limit: 100, scope: NO_TENANT });
    expect(excluded.length).toBeGreaterThan(0);
    expect(excluded.filter((h) => h.chunk.includes('xylophone'))).toEqual([]);
    const [hit] = await searchChunks(store, { q: 'marmalade', documentId: handle.id, scope: NO_TENANT });
    expect(hit).toMatchObject({ document_id: handle.id, filename: 'report.pdf', page: 20, chunk: expect.stringMatching(/marmalade\s+closing\s+remarks/) });
    expect(hit!.snippet).toContain('<mark>marmalade</mark>');
    // Escaped HTML (PostgreSQL's headline drops tag-like text altogether).
    expect(hit!.snippet).toContain('R&amp;D');
    expect(hit!.snippet).not.toContain('<b>');
    expect(hit!.score).toBeGreaterThan(0);
    expect(await searchChunks(store, { q: 'marmalade', documentId: 'other', scope: NO_TENANT })).toEqual([]);

    const server = await api(app);
    const get = (query: string) => server.inject({ method: 'GET', url: `/v1/search?${query}` });
    const res = await get('q=xylophone');
    expect(res.statusCode).toBe(200);
    expect(res.json()).toEqual({
      results: [
        {
          document_id: handle.id,
          filename: 'report.pdf',
          page: 3,
          chunk: expect.stringContaining('xylophone'),
          chunk_index: expect.any(Number),
          snippet: expect.stringContaining('<mark>xylophone</mark>'),
          score: expect.any(Number),
        },
      ],
    });
    expect((await get(`q=${encodeURIComponent('"quasar nebula"')}&document_id=${handle.id}`)).json().results.map((r: { page: number }) => r.page)).toEqual([7]);
    expect((await get('q=lorem&limit=3')).json().results).toHaveLength(3);
    expect((await get('q=zeppelin')).json().results[0].snippet).toMatch(/^[^\n]*one <mark>zeppelin<\/mark> landed[^\n]*$/);
    expect((await server.inject({ method: 'GET', url: '/openapi.json' })).json().paths['/v1/search']).toBeDefined();
    expect((await get('q=lorem')).json().results).toHaveLength(20);

    // FTS syntax in the query is text, never a 500.
    for (const q of [
      '"',
      '"unclosed zeppelin',
      '*',
      'zeppelin*',
      '(',
      'zeppelin)',
      'NEAR',
      'NEAR(zeppelin landed)',
      '-',
      '-zeppelin',
      'zeppelin AND',
      'OR',
      'NOT zeppelin',
      'text:zeppelin',
      '^zeppelin',
      '&|!:<>',
      "o'brien",
    ]) {
      const r = await get(`q=${encodeURIComponent(q)}`);
      expect(r.statusCode, q).toBe(200);
      expect(Array.isArray(r.json().results), q).toBe(true);
    }
    expect((await get(`q=${encodeURIComponent('zeppelin)')}`)).json().results.map((r: { page: number }) => r.page)).toEqual([15]);

    for (const query of ['', 'q=', 'q=%20%20', 'limit=5']) {
      const r = await get(query);
      expect(r.statusCode, query).toBe(400);
      expect(r.json()).toEqual({
        error: { code: 'invalid_request', message: expect.stringContaining('querystring.q'), details: { issues: expect.arrayContaining([expect.objectContaining({ path: 'querystring.q' })]) } },
      });
    }
    for (const query of ['q=x&limit=0', 'q=x&limit=101', 'q=x&other=1']) expect((await get(query)).statusCode, query).toBe(400);

    // The worker removed the upload when the job ended.
    await waitFor(() => !existsSync(file.path));
    // A retried attempt of the same job replaces the document.
    const ctx: TaskContext = {
      jobId: handle.id,
      task: task.name,
      queue: task.queue,
      tenant: null,
      attempt: 2,
      maxAttempts: 4,
      signal: new AbortController().signal,
      progress: async () => {},
      log: app.logger,
      retry: () => {
        throw new Error('not used here');
      },
      rateLimited: () => {
        throw new Error('not used here');
      },
    };
    const again = await task.handler({ file: stageUpload(app, 'report.pdf', bytes, 'application/pdf') }, ctx);
    expect(again).toEqual(done.result);
    expect(await chunkCount(store, handle.id)).toBe(chunks);
    expect(await pagesOf('xylophone')).toEqual([3]);
    expect(await readDocumentPages(store, handle.id, NO_TENANT)).toHaveLength(20);
    if (kind === 'sqlite') {
      // The external-content index still agrees with its table after the replacement.
      await sql`insert into document_chunks_fts(document_chunks_fts, rank) values ('integrity-check', 1)`.execute(store.db as unknown as Kysely<any>);
    }
  });

  it('fails a file that is not a PDF at once, with a clear error', async () => {
    const { app, task } = await setup(kind);
    await startWorker(app);
    const file = stageUpload(app, 'notes.pdf', 'just some notes, not a PDF at all\n', 'application/pdf');
    const handle = await app.enqueue(task, { file });
    const done = await handle.wait({ timeoutMs: 20_000, pollMs: 25 });
    expect(done.status).toBe('failed');
    expect(done.attempts).toBe(1);
    expect(done.error).toMatchObject({ type: 'InvalidPdfError', message: expect.stringMatching(/^"notes\.pdf" is not a valid PDF/) });
    expect(await readDocumentPages(await app.tables(documentsTables), handle.id, NO_TENANT)).toEqual([]);
  });
});

describe('pdf text, chunks and queries', () => {
  it('extracts pages from bytes or a path, and stops on an aborted signal', async () => {
    const bytes = await makePdf({ pages: ['First page\nsecond line', '', `Third ${'word '.repeat(200)}`] });
    const path = join(tmpDir(), 'x.pdf');
    writeFileSync(path, bytes);
    const fromPath = await extractPdfPages(path);
    expect(fromPath.page_count).toBe(3);
    expect(fromPath.pages[0]).toEqual({ page: 1, text: 'First page\nsecond line' });
    expect(fromPath.pages[1]).toEqual({ page: 2, text: '' });
    expect(fromPath.metadata).toMatchObject({ title: null, author: null, subject: null });
    expect((await extractPdfPages(bytes)).pages).toEqual(fromPath.pages);
    expect(bytes.byteLength).toBeGreaterThan(0); // not detached

    const seen: number[] = [];
    const controller = new AbortController();
    const onPage = (n: number) => {
      seen.push(n);
      controller.abort(new Error('stop'));
    };
    const stopped = extractPdfPages(bytes, { signal: controller.signal, onPage });
    await expect(stopped).rejects.toThrow('stop');
    expect(seen).toEqual([1]);

    const bad = extractPdfPages(new Uint8Array([1, 2, 3]), { name: 'x.bin' });
    await expect(bad).rejects.toBeInstanceOf(InvalidPdfError);
    await expect(bad).rejects.toMatchObject({ code: 'invalid_pdf', message: expect.stringContaining('"x.bin" is not a valid PDF') });
  });

  it('chunks each page with overlap, keeping page numbers and line breaks', () => {
    const words = (n: number, p: string) => Array.from({ length: n }, (_, i) => `${p}${i}`).join(' ');
    const chunks = chunkPages(
      [
        { page: 1, text: words(25, 'a') },
        { page: 2, text: '  ' },
        { page: 3, text: 'x\ny z' },
      ],
      { maxWords: 10, overlapWords: 2 },
    );
    expect(chunks.map((c) => [c.page, c.index, c.words])).toEqual([
      [1, 0, 10],
      [1, 1, 10],
      [1, 2, 9],
      [3, 3, 3],
    ]);
    expect(chunks[1]!.text.startsWith('a8 a9 a10')).toBe(true);
    expect(chunks[2]!.text.endsWith('a24')).toBe(true);
    expect(chunks[3]!.text).toBe('x\ny z');
    expect(chunkPages([{ page: 1, text: words(10, 'a') }], { maxWords: 10, overlapWords: 2 })).toHaveLength(1);
  });

  it('turns web-search syntax into quoted FTS5 queries', () => {
    expect(toFts5Query('zeppelin landed')).toBe('"zeppelin" AND "landed"');
    expect(toFts5Query('"quasar nebula" -lorem')).toBe('("quasar nebula") NOT ("lorem")');
    expect(toFts5Query('a or b c')).toBe('("a" OR "b") AND "c"');
    expect(toFts5Query('NEAR(x y) col:z "un"closed*')).toBe('"NEAR x" AND "y" AND "col z" AND "un" AND "closed"');
    expect(toFts5Query('* ( - or "')).toBeNull();
    expect(toFts5Query('-only')).toBeNull();
  });
});
