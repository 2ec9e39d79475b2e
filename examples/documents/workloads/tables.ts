import { defineTables } from 'celerity';
import { migration as imports } from './migrations/0001_imports.ts';
import { migration as documents } from './migrations/0002_documents.ts';
import { migration as ticketEnhancements } from './migrations/0003_ticket_enhancements.ts';
import { migration as documentTenant } from './migrations/0004_document_tenant.ts';
import { migration as importTenant } from './migrations/0005_import_tenant.ts';

/**
 * The documents app's tables, beside Celerity's history: imported CSV
 * records, indexed documents with their full-text index, ticket
 * enhancements. Documents and imported records carry the tenant of the job
 * that wrote them (see tenant.ts). On PostgreSQL they live in the schema
 * `<CELERITY_DB_SCHEMA>_documents` (`celerity_documents` by default), with a
 * migration history of their own.
 */
export const documentsTables = defineTables({
  name: 'documents',
  migrations: (dialect) => ({
    '0001_imports': imports(dialect),
    '0002_documents': documents(dialect),
    '0003_ticket_enhancements': ticketEnhancements(dialect),
    '0004_document_tenant': documentTenant(dialect),
    '0005_import_tenant': importTenant(dialect),
  }),
});
