/**
 * The contract between the `assessment.validate` pipeline and its validators.
 * Validators are pure of BullMQ and SQL: they get page texts and a criterion
 * and return a verdict, so they can be tested and swapped on their own.
 */
import { z } from 'zod';
import { NonRetryableError } from 'celerity';

/** One criterion a set of documents is assessed against. */
export interface Criterion {
  id: string;
  name: string;
  description: string;
}

/** Schema of a {@link Criterion}, for task inputs and API payloads. */
export const criterionSchema = z.object({
  id: z.string().min(1).max(200),
  name: z.string().min(1).max(500),
  description: z.string().max(10_000),
});

/** The extracted text of one page of one document. */
export interface PageText {
  /** Document id or filename; echoed back in {@link Evidence}. */
  document: string;
  /** 1-based page number. */
  page: number;
  text: string;
}

/** A verbatim quote supporting a verdict, and where it was found. */
export interface Evidence {
  document: string;
  /** 1-based page number. */
  page: number;
  /** An exact substring of that page's text (trimmed, at most {@link MAX_QUOTE_CHARS} characters). */
  quote: string;
}

/** The possible outcomes for one criterion. */
export const VERDICTS = ['pass', 'fail', 'unclear'] as const;

/** `pass`: the documents satisfy the criterion; `fail`: they do not; `unclear`: the text does not settle it. */
export type Verdict = (typeof VERDICTS)[number];

/** The assessment of one criterion. */
export interface CriterionResult {
  criterion_id: string;
  verdict: Verdict;
  /** In [0, 1]: how sure the validator is of this verdict. */
  confidence: number;
  evidence: Evidence[];
  /** A short human-readable reason for the verdict. */
  rationale: string;
}

/** Options of one {@link Validator.validate} call. */
export interface ValidateOptions {
  /** Aborts the assessment (job cancelled or out of time); the call then rejects. */
  signal?: AbortSignal;
}

/** Decides one criterion against the page texts of a set of documents. */
export interface Validator {
  /** Short name recorded with results, e.g. `local` or `anthropic`. */
  readonly name: string;
  validate(criterion: Criterion, pages: PageText[], opts: ValidateOptions): Promise<CriterionResult>;
}

/** Longest quote a validator returns as evidence. */
export const MAX_QUOTE_CHARS = 300;

/**
 * The validator's backend refused the request (bad credentials, no access,
 * malformed request, unknown model). Retrying the same request cannot help,
 * so the job fails at once.
 */
export class ValidatorRejectedError extends NonRetryableError {
  override readonly code = 'validator_rejected';
  /** HTTP status the backend answered with, when there was one. */
  readonly status: number | undefined;

  constructor(message: string, status: number | undefined, options?: ErrorOptions) {
    super(message, options);
    this.status = status;
  }
}

/**
 * The validator's backend is unavailable for now (rate limited, overloaded,
 * a server error, a connection failure). A plain retryable error: the job's
 * retries and backoff apply.
 */
export class ValidatorUnavailableError extends Error {
  readonly code: string = 'validator_unavailable';
  /** HTTP status the backend answered with; undefined for connection failures. */
  readonly status: number | undefined;

  constructor(message: string, status: number | undefined, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
    this.status = status;
  }
}

/**
 * The backend answered, but not in the expected shape (no tool call, or a
 * tool input failing its schema). Retryable: model output varies between calls.
 */
export class ValidatorResponseError extends ValidatorUnavailableError {
  override readonly code: string = 'validator_bad_response';

  constructor(message: string, options?: ErrorOptions) {
    super(message, undefined, options);
  }
}
