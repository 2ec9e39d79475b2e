import { z } from 'zod';
import { NonRetryableError, defineTask, uploadRefSchema, chord, defineWorkflow, step, type TableHandle } from 'celerity';
import { extractPdfPages } from '../documents/pdf-text.ts';
import { readDocument, readDocumentPages } from '../documents/search-index.ts';
import { jobScope } from '../tenant.ts';
import { selectValidator } from './select-validator.ts';
import { criterionSchema, type VERDICTS, type CriterionResult, type PageText, type Validator } from './types.ts';

/** The document named by an assessment is not in the store (never ingested, or deleted), or is another tenant's. */
export class DocumentNotFoundError extends NonRetryableError {
  override readonly code = 'document_not_found';
}

const documentRefSchema = z.union([
  z.string().min(1).max(128).describe('id of a document ingested by pdf.ingest (its job id)'),
  z.object({ document_id: z.string().min(1).max(128) }).strict(),
  z.object({ file: uploadRefSchema }).strict(),
]);

const parsedDocumentSchema = z.object({
  document: z.string(),
  document_id: z.string().nullable(),
  pages: z.array(z.object({ page: z.number().int().positive(), text: z.string() })),
});

export type ParsedDocument = z.infer<typeof parsedDocumentSchema>;

export interface AssessmentResult {
  validator: string;
  summary: Record<(typeof VERDICTS)[number], number>;
  criteria: (CriterionResult & { name: string })[];
}

/**
 * The assessment pipeline: `assessment.validate` is a workflow (a chord):
 * one `assessment.parse` step per document, in parallel (stage `parsing`),
 * then `assessment.evaluate` with every document's pages (stage
 * `validating`), which asks the validator about each criterion and returns
 * verdicts, confidences and evidence quoting the page it came from.
 *
 * The validator is `selectValidator()` unless given: Anthropic's Messages API
 * when `ANTHROPIC_API_KEY` is set, else the offline BM25 validator.
 */
export function assessmentTasks(deps: { store: () => Promise<TableHandle>; validator?: () => Validator }) {
  const parse = defineTask({
    name: 'assessment.parse',
    queue: 'assessment',
    retries: 2,
    description: "One document's page texts: from the store (an ingested document) or extracted from an uploaded PDF.",
    input: documentRefSchema,
    handler: async (ref, ctx): Promise<ParsedDocument> => {
      if (typeof ref === 'string' || 'document_id' in ref) {
        const id = typeof ref === 'string' ? ref : ref.document_id;
        const store = await deps.store();
        // The step runs with the workflow's tenant: another tenant's document reads as unknown.
        const scope = jobScope(ctx);
        const doc = await readDocument(store, id, scope);
        if (!doc) throw new DocumentNotFoundError(`No ingested document "${id}" (ingest it with pdf.ingest first)`);
        return { document: doc.filename, document_id: id, pages: await readDocumentPages(store, id, scope) };
      }
      const text = await extractPdfPages(ref.file.path, {
        signal: ctx.signal,
        name: ref.file.filename,
        onPage: (done, total) => void ctx.progress({ stage: 'parsing', pages_done: done, pages_total: total }),
      });
      return { document: ref.file.filename, document_id: null, pages: text.pages };
    },
  });

  const evaluate = defineTask({
    name: 'assessment.evaluate',
    queue: 'assessment',
    retries: 3,
    description: 'Validates each criterion against the parsed documents: verdict, confidence and evidence.',
    input: z.object({
      criteria: z.array(criterionSchema).min(1).max(200),
      documents: z.array(parsedDocumentSchema).min(1),
    }),
    handler: async ({ criteria, documents }, ctx): Promise<AssessmentResult> => {
      const validator = (deps.validator ?? selectValidator)();
      // One array for every criterion: validators cache their index per pages array.
      const pages: PageText[] = documents.flatMap((d) => d.pages.map((p) => ({ document: d.document, page: p.page, text: p.text })));
      const results: AssessmentResult['criteria'] = [];
      for (const [i, criterion] of criteria.entries()) {
        void ctx.progress({ stage: 'validating', completed: i, total: criteria.length, message: `validating ${i + 1}/${criteria.length} criteria` });
        const result = await validator.validate(criterion, pages, { signal: ctx.signal });
        results.push({ ...result, name: criterion.name });
      }
      await ctx.progress({ stage: 'validating', completed: criteria.length, total: criteria.length, message: `validated ${criteria.length} criteria` });
      const summary = { pass: 0, fail: 0, unclear: 0 };
      for (const r of results) summary[r.verdict]++;
      return { validator: validator.name, summary, criteria: results };
    },
  });

  const validate = defineWorkflow({
    name: 'assessment.validate',
    queue: 'assessment',
    description: 'Assess documents against criteria: parse each document, then validate each criterion with evidence {document, page, quote}.',
    input: z.object({
      documents: z.array(documentRefSchema).min(1).max(50),
      criteria: z.array(criterionSchema).min(1).max(200),
    }),
    build: ({ documents, criteria }) =>
      chord(
        documents.map((d) => step(parse, d, { stage: 'parsing', unit: 'documents' })),
        step(evaluate, { criteria }, { resultAs: 'documents', stage: 'validating' }),
      ),
  });

  return { parse, evaluate, validate };
}
