import { sql, type Kysely, type Migration } from 'kysely';
import type { Dialect } from 'celerity';

/**
 * Ingested documents (`pdf.ingest`): the document, the full text of each page
 * (for workloads that read whole pages) and the chunks, indexed for full-text
 * search: an FTS5 table on SQLite, a generated tsvector with a GIN index on
 * PostgreSQL. Both stem English (porter / the `english` configuration).
 */
export function migration(dialect: Dialect): Migration {
  const bigint = dialect === 'postgres' ? 'bigint' : 'integer';
  return {
    async up(db: Kysely<any>) {
      await db.schema
        .createTable('documents')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('job_id', 'text', (c) => c.notNull())
        .addColumn('filename', 'text', (c) => c.notNull())
        .addColumn('page_count', 'integer', (c) => c.notNull())
        .addColumn('metadata', 'text')
        .addColumn('created_at', sql.raw(bigint), (c) => c.notNull())
        .execute();
      await db.schema
        .createTable('document_pages')
        .addColumn('document_id', 'text', (c) => c.notNull().references('documents.id').onDelete('cascade'))
        .addColumn('page', 'integer', (c) => c.notNull())
        .addColumn('text', 'text', (c) => c.notNull())
        .addPrimaryKeyConstraint('document_pages_pk', ['document_id', 'page'])
        .execute();

      if (dialect === 'postgres') {
        await sql`
          create table document_chunks (
            id bigint generated always as identity primary key,
            document_id text not null references documents(id) on delete cascade,
            page integer not null,
            chunk_index integer not null,
            text text not null,
            tsv tsvector generated always as (to_tsvector('english', text)) stored,
            unique (document_id, chunk_index)
          )`.execute(db);
        await sql`create index document_chunks_tsv on document_chunks using gin (tsv)`.execute(db);
        return;
      }

      // The integer primary key is the rowid the FTS table points at.
      await sql`
        create table document_chunks (
          id integer primary key,
          document_id text not null references documents(id) on delete cascade,
          page integer not null,
          chunk_index integer not null,
          text text not null,
          unique (document_id, chunk_index)
        )`.execute(db);
      // External content: the text is stored once, in document_chunks; the
      // triggers keep the index in step with every insert, delete and update.
      await sql`
        create virtual table document_chunks_fts using fts5(
          text, content='document_chunks', content_rowid='id',
          tokenize='porter unicode61 remove_diacritics 2'
        )`.execute(db);
      await sql`
        create trigger document_chunks_ai after insert on document_chunks begin
          insert into document_chunks_fts(rowid, text) values (new.id, new.text);
        end`.execute(db);
      await sql`
        create trigger document_chunks_ad after delete on document_chunks begin
          insert into document_chunks_fts(document_chunks_fts, rowid, text) values ('delete', old.id, old.text);
        end`.execute(db);
      await sql`
        create trigger document_chunks_au after update on document_chunks begin
          insert into document_chunks_fts(document_chunks_fts, rowid, text) values ('delete', old.id, old.text);
          insert into document_chunks_fts(rowid, text) values (new.id, new.text);
        end`.execute(db);
    },
    async down(db: Kysely<any>) {
      if (dialect === 'sqlite') await sql`drop table if exists document_chunks_fts`.execute(db);
      await db.schema.dropTable('document_chunks').ifExists().execute();
      await db.schema.dropTable('document_pages').ifExists().execute();
      await db.schema.dropTable('documents').ifExists().execute();
    },
  };
}
