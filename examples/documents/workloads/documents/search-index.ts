import { sql, type Generated, type Kysely } from 'kysely';
import { NonRetryableError, type SqliteDatabase, type TableHandle, type TenantScope } from 'celerity';
import { sameTenant } from '../tenant.ts';
import type { TextChunk } from './chunk.ts';
import type { PdfMetadata, PdfPage } from './pdf-text.ts';

/** Tables of migrations 0002_documents and 0004_document_tenant (workloads/tables.ts). Times are epoch milliseconds; metadata is JSON text. */
export type DocumentTables = {
  documents: { id: string; job_id: string; filename: string; page_count: number; metadata: string | null; created_at: number; tenant: string | null };
  document_pages: { document_id: string; page: number; text: string };
  document_chunks: { id: Generated<number>; document_id: string; page: number; chunk_index: number; text: string };
};

type DocumentsDb = Kysely<DocumentTables>;

function documentsDb(store: TableHandle): DocumentsDb {
  return store.db.withTables<DocumentTables>() as unknown as DocumentsDb;
}

export interface IndexedDocument {
  /** The ingesting job's id, so that a retried attempt replaces what an earlier one wrote. */
  id: string;
  jobId: string;
  /** The ingesting job's tenant: only reads of that tenant (or an admin's) see the document. */
  tenant: string | null;
  filename: string;
  pageCount: number;
  metadata: PdfMetadata | Record<string, unknown> | null;
  pages: readonly PdfPage[];
  chunks: readonly Pick<TextChunk, 'page' | 'index' | 'text'>[];
}

// Well under PostgreSQL's bound-parameter limit (4 columns a row).
const INSERT_BATCH = 500;

/**
 * The id of a document to index is already another tenant's. Document ids are
 * job ids, which only an admin may choose: reusing one (after its job was
 * pruned) must not overwrite, or hand over, that tenant's document.
 */
export class DocumentIdTakenError extends NonRetryableError {
  override readonly code = 'document_id_taken';
}

/**
 * Writes a document with its pages and chunks in one transaction, replacing
 * whatever was stored under its id: re-ingesting never duplicates chunks, and
 * a search never sees half a document. Throws DocumentIdTakenError, writing
 * nothing, when the id holds a document of another tenant.
 */
export async function indexDocument(store: TableHandle, doc: IndexedDocument): Promise<void> {
  const documentRow = {
    id: doc.id,
    job_id: doc.jobId,
    filename: doc.filename,
    page_count: doc.pageCount,
    metadata: doc.metadata ? JSON.stringify(doc.metadata) : null,
    created_at: Date.now(),
    tenant: doc.tenant,
  };
  const pageRows = doc.pages.map((p) => ({ document_id: doc.id, page: p.page, text: p.text }));
  const chunkRows = doc.chunks.map((c) => ({ document_id: doc.id, page: c.page, chunk_index: c.index, text: c.text }));

  const sqlite = rawSqlite(store);
  if (sqlite) {
    sqlite.transaction(() => {
      const existing = sqlite.prepare('select tenant from documents where id = ?').get(doc.id) as { tenant: string | null } | undefined;
      if (existing && existing.tenant !== doc.tenant) throw idTaken(doc.id);
      deleteSqlite(sqlite, doc.id);
      sqlite
        .prepare('insert into documents (id, job_id, filename, page_count, metadata, created_at, tenant) values (@id, @job_id, @filename, @page_count, @metadata, @created_at, @tenant)')
        .run(documentRow);
      const page = sqlite.prepare('insert into document_pages (document_id, page, text) values (@document_id, @page, @text)');
      for (const row of pageRows) page.run(row);
      const chunk = sqlite.prepare('insert into document_chunks (document_id, page, chunk_index, text) values (@document_id, @page, @chunk_index, @text)');
      for (const row of chunkRows) chunk.run(row);
    })();
    return;
  }
  await documentsDb(store)
    .transaction()
    .execute(async (trx) => {
      // Locked until commit: the tenant checked is the one of the row replaced.
      const existing = await trx.selectFrom('documents').select('tenant').where('id', '=', doc.id).forUpdate().executeTakeFirst();
      if (existing && existing.tenant !== doc.tenant) throw idTaken(doc.id);
      await deleteKysely(trx, doc.id);
      await trx.insertInto('documents').values(documentRow).execute();
      for (let i = 0; i < pageRows.length; i += INSERT_BATCH) {
        await trx
          .insertInto('document_pages')
          .values(pageRows.slice(i, i + INSERT_BATCH))
          .execute();
      }
      for (let i = 0; i < chunkRows.length; i += INSERT_BATCH) {
        await trx
          .insertInto('document_chunks')
          .values(chunkRows.slice(i, i + INSERT_BATCH))
          .execute();
      }
    });
}

function idTaken(documentId: string): DocumentIdTakenError {
  // Says nothing of the other tenant, not even its name.
  return new DocumentIdTakenError(`The document id "${documentId}" is already taken; ingest the file again under a new job id`);
}

/**
 * Removes a document, its pages and its chunks, when it is within `scope`.
 * Returns whether it existed there (another tenant's document is left alone,
 * and answers false like an unknown id).
 */
export async function deleteDocument(store: TableHandle, documentId: string, scope: TenantScope): Promise<boolean> {
  const sqlite = rawSqlite(store);
  if (sqlite) {
    return sqlite.transaction(() => {
      if (!scope.all && !sqlite.prepare('select 1 from documents where id = ? and tenant is ?').get(documentId, scope.tenant)) return false;
      return deleteSqlite(sqlite, documentId);
    })();
  }
  return documentsDb(store)
    .transaction()
    .execute(async (trx) => {
      if (!scope.all) {
        const visible = await trx
          .selectFrom('documents')
          .select('id')
          .where('id', '=', documentId)
          .where(sameTenant(store.dialect, 'tenant', scope.tenant))
          .forUpdate()
          .executeTakeFirst();
        if (!visible) return false;
      }
      return deleteKysely(trx, documentId);
    });
}

/**
 * On SQLite the recorder writes through the same connection with synchronous
 * better-sqlite3 transactions. An async (Kysely) transaction would stay open
 * across awaits, and a recorder batch landing meanwhile would become part of
 * it (a savepoint), to be rolled back with it. So SQLite writes here are
 * synchronous too: nothing can run between BEGIN and COMMIT.
 */
function rawSqlite(store: TableHandle): SqliteDatabase | undefined {
  return store.sqlite;
}

function deleteSqlite(sqlite: SqliteDatabase, documentId: string): boolean {
  // Children first: the foreign keys point at documents.
  sqlite.prepare('delete from document_chunks where document_id = ?').run(documentId);
  sqlite.prepare('delete from document_pages where document_id = ?').run(documentId);
  return sqlite.prepare('delete from documents where id = ?').run(documentId).changes > 0;
}

async function deleteKysely(trx: DocumentsDb, documentId: string): Promise<boolean> {
  await trx.deleteFrom('document_chunks').where('document_id', '=', documentId).execute();
  await trx.deleteFrom('document_pages').where('document_id', '=', documentId).execute();
  const res = await trx.deleteFrom('documents').where('id', '=', documentId).executeTakeFirst();
  return Number(res.numDeletedRows) > 0;
}

/**
 * The full text of each page of an ingested document, in page order; empty
 * when no document of `scope` has that id (its document id is the ingesting
 * job's id), as for another tenant's document.
 */
export async function readDocumentPages(store: TableHandle, documentId: string, scope: TenantScope): Promise<PdfPage[]> {
  let q = documentsDb(store).selectFrom('document_pages as p').innerJoin('documents as d', 'd.id', 'p.document_id').select(['p.page', 'p.text']).where('p.document_id', '=', documentId);
  if (!scope.all) q = q.where(sameTenant(store.dialect, 'd.tenant', scope.tenant));
  return q.orderBy('p.page').execute();
}

export interface StoredDocument {
  id: string;
  job_id: string;
  tenant: string | null;
  filename: string;
  page_count: number;
  metadata: PdfMetadata | null;
  created_at: number;
}

/** An ingested document's record, or null when no document of `scope` has that id (another tenant's document included). */
export async function readDocument(store: TableHandle, documentId: string, scope: TenantScope): Promise<StoredDocument | null> {
  let q = documentsDb(store).selectFrom('documents').selectAll().where('id', '=', documentId);
  if (!scope.all) q = q.where(sameTenant(store.dialect, 'tenant', scope.tenant));
  const row = await q.executeTakeFirst();
  if (!row) return null;
  return { ...row, metadata: row.metadata ? (JSON.parse(row.metadata) as PdfMetadata) : null };
}

export interface SearchQuery {
  /** The user's query: words, "quoted phrases", `-excluded` words, `or`. Never a syntax error. */
  q: string;
  /** Default 20. */
  limit?: number;
  /** Only chunks of this document. */
  documentId?: string | undefined;
  /**
   * Whose documents are searched: one tenant's (null: the documents without a
   * tenant) or every tenant's. Required, so that no caller searches every
   * tenant by omission; a route passes `tenantScopeOf(principalOf(request))`.
   */
  scope: TenantScope;
}

export interface SearchHit {
  document_id: string;
  filename: string;
  page: number;
  /** Position of the chunk in its document. */
  chunk_index: number;
  /** The chunk's whole text. */
  chunk: string;
  /**
   * An excerpt around the matches, as HTML: the text is escaped and each match
   * is wrapped in `<mark>`…`</mark>`.
   */
  snippet: string;
  /** Relevance, higher is better (bm25 on SQLite, ts_rank on PostgreSQL; not comparable across them). */
  score: number;
}

// Markers that cannot occur in extracted text; the snippet is escaped around them.
const START = '\u0002';
const STOP = '\u0003';

/**
 * Full-text search over the indexed chunks of the documents within
 * `query.scope`, best first. The query is interpreted like a web search box
 * on both dialects (PostgreSQL's `websearch_to_tsquery`; on SQLite the same
 * syntax is rebuilt as a quoted FTS5 query), so user input can never be an
 * FTS syntax error. A `documentId` outside the scope finds nothing, as an
 * unknown one does.
 */
export async function searchChunks(store: TableHandle, query: SearchQuery): Promise<SearchHit[]> {
  const limit = Math.max(1, Math.min(1000, Math.trunc(query.limit ?? 20)));
  const db = documentsDb(store);
  let rows: { document_id: string; filename: string; page: number; chunk_index: number; text: string; snippet: string | null; score: number | string }[];
  const docFilter = query.documentId !== undefined ? sql`and c.document_id = ${query.documentId}` : sql``;
  // Before the limit: another tenant's better matches never crowd out the caller's.
  const tenantFilter = query.scope.all ? sql`` : sql`and ${sameTenant(store.dialect, 'd.tenant', query.scope.tenant)}`;
  if (store.dialect === 'postgres') {
    // The headline is computed for the returned rows only, not for every match.
    const res = await sql<(typeof rows)[number]>`
      select m.document_id, m.filename, m.page, m.chunk_index, m.text, m.score,
             ts_headline('english', m.text, m.query, ${`StartSel=${START}, StopSel=${STOP}, MaxWords=35, MinWords=15, MaxFragments=2, FragmentDelimiter=" … "`}) as snippet
      from (
        select c.document_id, d.filename, c.page, c.chunk_index, c.text, q.query, ts_rank(c.tsv, q.query) as score
        from document_chunks c
        join documents d on d.id = c.document_id
        cross join websearch_to_tsquery('english', ${query.q}) as q(query)
        where c.tsv @@ q.query ${docFilter} ${tenantFilter}
        order by score desc, c.document_id, c.chunk_index
        limit ${limit}
      ) m
      order by m.score desc, m.document_id, m.chunk_index`.execute(db);
    rows = res.rows;
  } else {
    const match = toFts5Query(query.q);
    if (match === null) return [];
    const res = await sql<(typeof rows)[number]>`
      select c.document_id, d.filename, c.page, c.chunk_index, c.text,
             snippet(document_chunks_fts, 0, ${START}, ${STOP}, '…', 24) as snippet,
             -bm25(document_chunks_fts) as score
      from document_chunks_fts
      join document_chunks c on c.id = document_chunks_fts.rowid
      join documents d on d.id = c.document_id
      where document_chunks_fts match ${match} ${docFilter} ${tenantFilter}
      order by bm25(document_chunks_fts), c.document_id, c.chunk_index
      limit ${limit}`.execute(db);
    rows = res.rows;
  }
  return rows.map((r) => ({
    document_id: r.document_id,
    filename: r.filename,
    page: Number(r.page),
    chunk_index: Number(r.chunk_index),
    chunk: r.text,
    snippet: snippetHtml(r.snippet ?? ''),
    score: Number(r.score),
  }));
}

const HTML_ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

function snippetHtml(raw: string): string {
  // One line: the page's line breaks mean nothing in an excerpt.
  const escaped = raw
    .replace(/\s+/g, ' ')
    .trim()
    .replace(/[&<>"']/g, (c) => HTML_ESCAPES[c]!);
  return escaped.split(START).join('<mark>').split(STOP).join('</mark>');
}

/**
 * Rewrites a web-search-style query as an FTS5 query in which every term is a
 * quoted string, so that FTS5 operators and punctuation in the input (`"`,
 * `*`, `(`, `:`, `^`, NEAR, AND, NOT...) are only ever text. Supports what
 * `websearch_to_tsquery` does: words (all required), "quoted phrases",
 * `-word` to exclude, and `or` between alternatives. Returns null when no
 * searchable term remains (only punctuation, or only exclusions).
 */
export function toFts5Query(q: string): string | null {
  const groups: string[][] = [];
  const excluded: string[] = [];
  let pendingOr = false;
  for (const m of q.matchAll(/(-?)"([^"]*)"?|(\S+)/g)) {
    const bare = m[3];
    if (bare !== undefined && bare.toLowerCase() === 'or') {
      pendingOr = groups.length > 0;
      continue;
    }
    const negated = bare !== undefined ? bare.startsWith('-') : m[1] === '-';
    const words = (bare ?? m[2] ?? '').match(/[\p{L}\p{N}]+/gu);
    if (!words) continue;
    // Words only (no quotes survive), so the quoted string is a plain phrase.
    const phrase = `"${words.join(' ')}"`;
    if (negated) excluded.push(phrase);
    else if (pendingOr) groups[groups.length - 1]!.push(phrase);
    else groups.push([phrase]);
    pendingOr = false;
  }
  if (groups.length === 0) return null;
  const required = groups.map((g) => (g.length > 1 ? `(${g.join(' OR ')})` : g[0]!)).join(' AND ');
  return excluded.length > 0 ? `(${required}) NOT (${excluded.join(' OR ')})` : required;
}
