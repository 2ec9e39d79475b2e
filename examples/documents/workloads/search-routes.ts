import type { FastifyInstance } from 'fastify';
import { principalOf, tenantScopeOf, type App } from 'celerity';
import { searchChunks } from './documents/search-index.ts';
import { documentsTables } from './tables.ts';

interface SearchQuerystring {
  q: string;
  limit: number;
  document_id?: string;
}

const searchSchema = {
  summary: 'Full-text search over ingested documents (pdf.ingest)',
  description:
    'Returns the best-matching chunks, each with its document and page, among the documents of the API key\'s tenant (those its pdf.ingest jobs indexed; a key without a tenant searches the documents without one). An admin key searches every tenant\'s. Needs the scope `jobs:read`. `q` reads like a web search box: words (all required), "quoted phrases", `-word` to exclude, `or` between alternatives; any other punctuation is ignored, never a syntax error. Words are stemmed (English).',
  tags: ['search'],
  querystring: {
    type: 'object',
    additionalProperties: false,
    required: ['q'],
    properties: {
      // At least one non-blank character (a blank query is as missing as no
      // query), and no NUL, which PostgreSQL text cannot hold (a 400 here
      // rather than a failed statement).
      q: { type: 'string', minLength: 1, maxLength: 1000, pattern: '^(?!\\s*$)[^\\u0000]+$', description: 'The search query.' },
      limit: { type: 'integer', minimum: 1, maximum: 100, default: 20 },
      // A job id: what the API's own routes take.
      document_id: {
        type: 'string',
        minLength: 1,
        maxLength: 256,
        pattern: '^[A-Za-z0-9_.:\\-]+$',
        description: "Only chunks of this document (the pdf.ingest job id). Another tenant's document finds nothing, as an unknown id does.",
      },
    },
  },
  response: {
    200: {
      type: 'object',
      properties: {
        results: {
          type: 'array',
          items: {
            type: 'object',
            properties: {
              document_id: { type: 'string', description: 'The id of the pdf.ingest job that indexed the document.' },
              filename: { type: 'string' },
              page: { type: 'integer', description: '1-based page of the chunk.' },
              chunk: { type: 'string', description: "The chunk's text." },
              chunk_index: { type: 'integer', description: 'Position of the chunk in its document (0-based).' },
              snippet: { type: 'string', description: 'HTML: an escaped excerpt with each match in <mark>…</mark>.' },
              score: { type: 'number', description: 'Relevance, higher is better.' },
            },
            required: ['document_id', 'filename', 'page', 'chunk', 'chunk_index', 'snippet', 'score'],
          },
        },
      },
      required: ['results'],
    },
    '4xx': { $ref: 'Error#' },
    503: { $ref: 'Error#' },
  },
} as const;

/**
 * `GET /v1/search`: full-text search over the chunks indexed by `pdf.ingest`,
 * for keys with `jobs:read`: a tenant's key searches its tenant's documents
 * (a key without a tenant, the documents without one), an admin's every
 * tenant's.
 */
export async function searchRoutes(server: FastifyInstance, { app }: { app: App }): Promise<void> {
  server.get<{ Querystring: SearchQuerystring }>('/v1/search', { schema: searchSchema, config: { celerity: { scope: 'jobs:read' } } }, async (request) => {
    const { q, limit, document_id } = request.query;
    const store = await app.tables(documentsTables);
    const hits = await searchChunks(store, { q, limit, documentId: document_id, scope: tenantScopeOf(principalOf(request)) });
    return { results: hits };
  });
}
