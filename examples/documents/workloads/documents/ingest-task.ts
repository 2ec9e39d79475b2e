import { readFile } from 'node:fs/promises';
import { z } from 'zod';
import { defineTask, uploadRefSchema, type TableHandle, type Task } from 'celerity';
import { chunkPages, type ChunkOptions } from './chunk.ts';
import { extractPdfPages, type PdfMetadata } from './pdf-text.ts';
import { indexDocument } from './search-index.ts';

export const pdfIngestInput = z.object({ file: uploadRefSchema });

export interface PdfIngestResult {
  /** The job's id: a retry of the job replaces the document instead of adding another. */
  document_id: string;
  filename: string;
  page_count: number;
  /** Number of chunks indexed. */
  chunks: number;
  metadata: PdfMetadata;
}

export interface PdfIngestDeps {
  /** The store the document and its index are written to (normally `() => app.openStore()`). */
  store: () => Promise<TableHandle>;
  chunking?: ChunkOptions;
}

// Extraction is most of the work; indexing takes the rest of the bar.
const EXTRACTING_SHARE = 90;

/**
 * The `pdf.ingest` task: extracts the text of each page of an uploaded PDF,
 * chunks it and indexes the chunks for `GET /v1/search`. The document id is
 * the job id, so that a retried attempt replaces what an earlier one wrote.
 * The document belongs to the job's tenant (that of the key that submitted
 * it): only that tenant's searches and assessments, and admins' searches,
 * see it. A file pdfjs cannot parse fails at once with `InvalidPdfError`.
 */
export function pdfIngestTask(deps: PdfIngestDeps): Task<z.input<typeof pdfIngestInput>, PdfIngestResult> {
  return defineTask({
    name: 'pdf.ingest',
    queue: 'documents',
    description: 'Extracts the text of an uploaded PDF page by page and indexes it for full-text search (GET /v1/search).',
    input: pdfIngestInput,
    accepts: ['application/pdf'],
    handler: async ({ file }, ctx): Promise<PdfIngestResult> => {
      // The upload belongs to the worker, which deletes it after the final attempt; only read it.
      const bytes = await readFile(file.path);
      await ctx.progress({ stage: 'extracting', pages_done: 0, pages_total: null, percent: 0 });
      const extracted = await extractPdfPages(bytes, {
        signal: ctx.signal,
        name: file.filename,
        onPage: (done, total) => ctx.progress({ stage: 'extracting', pages_done: done, pages_total: total, percent: Math.floor((done / total) * EXTRACTING_SHARE) }),
      });
      ctx.signal.throwIfAborted();

      const chunks = chunkPages(extracted.pages, deps.chunking);
      await ctx.progress({ stage: 'indexing', chunks: chunks.length, percent: EXTRACTING_SHARE });
      const store = await deps.store();
      ctx.signal.throwIfAborted();
      await indexDocument(store, {
        id: ctx.jobId,
        jobId: ctx.jobId,
        tenant: ctx.tenant,
        filename: file.filename,
        pageCount: extracted.page_count,
        metadata: extracted.metadata,
        pages: extracted.pages,
        chunks,
      });
      await ctx.progress({ stage: 'indexing', chunks: chunks.length, percent: 100 });
      ctx.log.info({ pages: extracted.page_count, chunks: chunks.length }, 'pdf indexed');
      return { document_id: ctx.jobId, filename: file.filename, page_count: extracted.page_count, chunks: chunks.length, metadata: extracted.metadata };
    },
  });
}
