import { createServer, type IncomingHttpHeaders, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { NonRetryableError } from 'celerity';
import { AnthropicValidator, findVerbatim } from '../workloads/assessment/anthropic-validator.ts';
import { Bm25Index, splitPassages, stem, tokenize } from '../workloads/assessment/bm25.ts';
import { LOCAL_VALIDATOR_DESCRIPTION, LocalValidator } from '../workloads/assessment/local-validator.ts';
import { selectValidator } from '../workloads/assessment/select-validator.ts';
import { ValidatorRejectedError, ValidatorResponseError, ValidatorUnavailableError, criterionSchema, type Criterion, type CriterionResult, type PageText } from '../workloads/assessment/types.ts';

const pages: PageText[] = [
  {
    document: 'security.pdf',
    page: 1,
    text: 'Information Security Policy\n\nThis policy applies to all staff and contractors.\nAccess to production systems is reviewed quarterly by the security team.',
  },
  {
    document: 'security.pdf',
    page: 2,
    text: '3. Data protection\nAll customer data is encrypted at rest using AES-256,\nand in transit with TLS 1.2 or later. Backups are taken nightly and kept for 30 days.',
  },
  {
    document: 'handbook.pdf',
    page: 4,
    text: 'Employees receive onboarding training during their first week. The policy does not include encryption of laptops.',
  },
];

const encryptionAtRest: Criterion = { id: 'enc-rest', name: 'Encryption at rest', description: 'Customer data must be encrypted at rest.' };
const disasterRecovery: Criterion = {
  id: 'dr',
  name: 'Disaster recovery',
  description: 'The vendor must have a documented disaster recovery plan with RTO targets.',
};
const laptopEncryption: Criterion = { id: 'laptops', name: 'Laptop encryption', description: 'The policy includes encryption of laptops.' };

function pageOf(document: string, page: number, from: readonly PageText[] = pages): PageText {
  const p = from.find((x) => x.document === document && x.page === page);
  if (!p) throw new Error(`no page ${document}#${page}`);
  return p;
}

function expectWellFormed(r: CriterionResult, criterion: Criterion, from: readonly PageText[] = pages): void {
  expect(r.criterion_id).toBe(criterion.id);
  expect(['pass', 'fail', 'unclear']).toContain(r.verdict);
  expect(r.confidence).toBeGreaterThanOrEqual(0);
  expect(r.confidence).toBeLessThanOrEqual(1);
  expect(r.rationale.length).toBeGreaterThan(0);
  for (const e of r.evidence) {
    expect(e.quote.length).toBeGreaterThan(0);
    expect(e.quote.length).toBeLessThanOrEqual(300);
    expect(e.quote).toBe(e.quote.trim());
    expect(pageOf(e.document, e.page, from).text).toContain(e.quote);
  }
}

describe('bm25', () => {
  it('stems the usual suffixes to one form', () => {
    expect(new Set(['encrypt', 'encrypts', 'encrypted', 'encrypting', 'encryption'].map(stem))).toEqual(new Set(['encrypt']));
    expect(stem('policies')).toBe(stem('policy'));
    expect(tokenize('The data is NOT encrypted, at rest!')).toEqual(['data', 'encrypt', 'rest']);
  });

  it('splits pages into verbatim passages of at most 300 characters', () => {
    const long = { document: 'd', page: 7, text: `Intro.  ${'word '.repeat(200)}end. Short one here, with four words.` };
    for (const page of [...pages, long]) {
      const passages = splitPassages(page);
      expect(passages.length).toBeGreaterThan(0);
      for (const p of passages) {
        expect(p.text).toBe(page.text.slice(p.start, p.end));
        expect(p.text).toBe(p.text.trim());
        expect(p.text.length).toBeLessThanOrEqual(300);
        expect(p).toMatchObject({ document: page.document, page: page.page });
      }
    }
  });

  it('ranks the passage sharing the rarest terms first', () => {
    const index = Bm25Index.fromPages(pages);
    const [top] = index.search('encrypted at rest', 3);
    expect(top?.passage).toMatchObject({ document: 'security.pdf', page: 2 });
    expect(top?.passage.text).toContain('encrypted at rest');
    expect(index.search('quantum teleportation', 3)).toEqual([]);
  });
});

describe('LocalValidator', () => {
  const validator = new LocalValidator();

  it('says what it is', () => {
    expect(validator.name).toBe('local');
    expect(LOCAL_VALIDATOR_DESCRIPTION).toMatch(/lexical/i);
    expect(LOCAL_VALIDATOR_DESCRIPTION).toMatch(/not understand/i);
    expect(LOCAL_VALIDATOR_DESCRIPTION).toMatch(/anthropic/i);
  });

  it('passes a clearly satisfied criterion, quoting the right document and page', async () => {
    const r = await validator.validate(encryptionAtRest, pages, {});
    expectWellFormed(r, encryptionAtRest);
    expect(r.verdict).toBe('pass');
    expect(r.confidence).toBeGreaterThan(0.5);
    expect(r.evidence[0]).toMatchObject({ document: 'security.pdf', page: 2 });
    expect(r.evidence[0]!.quote).toContain('encrypted at rest');
    expect(r.evidence.length).toBeLessThanOrEqual(3);
  });

  it('fails a criterion whose topic is absent', async () => {
    const r = await validator.validate(disasterRecovery, pages, {});
    expectWellFormed(r, disasterRecovery);
    expect(r.verdict).toBe('fail');
    expect(r.evidence).toEqual([]);
  });

  it('does not pass a negated statement', async () => {
    const negated: PageText[] = [{ document: 'policy.pdf', page: 1, text: 'The policy does not include encryption.' }];
    const criterion: Criterion = { id: 'enc', name: 'Encryption', description: 'The policy includes encryption.' };
    const r = await validator.validate(criterion, negated, {});
    expectWellFormed(r, criterion, negated);
    expect(['fail', 'unclear']).toContain(r.verdict);

    const r2 = await validator.validate(laptopEncryption, pages, {});
    expectWellFormed(r2, laptopEncryption);
    expect(r2.verdict).toBe('fail');
    expect(r2.evidence[0]).toMatchObject({ document: 'handbook.pdf', page: 4 });
  });

  it('is unclear on a partial match, and on documents without text', async () => {
    const criterion: Criterion = { id: 'ar', name: 'Access reviews', description: 'Access rights are reviewed periodically.' };
    const r = await validator.validate(criterion, pages, {});
    expectWellFormed(r, criterion);
    expect(r.verdict).toBe('unclear');

    const empty = await validator.validate(encryptionAtRest, [{ document: 'scan.pdf', page: 1, text: '  \n ' }], {});
    expect(empty).toMatchObject({ verdict: 'unclear', confidence: 0, evidence: [] });
  });

  it('rejects when the signal is already aborted', async () => {
    const ac = new AbortController();
    ac.abort(new Error('cancelled'));
    await expect(validator.validate(encryptionAtRest, pages, { signal: ac.signal })).rejects.toThrow('cancelled');
  });

  it('validates criteria with a zod schema', () => {
    expect(criterionSchema.parse(encryptionAtRest)).toEqual(encryptionAtRest);
    expect(criterionSchema.safeParse({ id: '', name: 'x', description: 'y' }).success).toBe(false);
  });
});

// ---------------------------------------------------------------------------
// A local stand-in for POST /v1/messages.

interface Received {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  body: {
    model: string;
    max_tokens: number;
    tool_choice: unknown;
    tools: Array<{ name: string; input_schema: unknown }>;
    messages: Array<{ role: string; content: string }>;
  };
}

type Responder = (req: Received, res: ServerResponse) => void;

let server: Server;
let baseURL: string;
let received: Received[] = [];
let responder: Responder = (_req, res) => res.writeHead(500).end();

beforeAll(async () => {
  server = createServer((req, res) => {
    let raw = '';
    req.setEncoding('utf8');
    req.on('data', (chunk: string) => (raw += chunk));
    req.on('end', () => {
      const r: Received = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, body: JSON.parse(raw || '{}') };
      received.push(r);
      responder(r, res);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  baseURL = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

afterEach(() => {
  received = [];
});

function json(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json', 'request-id': 'req_test' });
  res.end(JSON.stringify(body));
}

function toolUse(res: ServerResponse, model: string, input: unknown): void {
  json(res, 200, {
    id: 'msg_test',
    type: 'message',
    role: 'assistant',
    model,
    content: [{ type: 'tool_use', id: 'toolu_test', name: 'record_verdict', input }],
    stop_reason: 'tool_use',
    stop_sequence: null,
    usage: { input_tokens: 100, output_tokens: 20 },
  });
}

function apiError(res: ServerResponse, status: number, type: string, message: string): void {
  json(res, status, { type: 'error', error: { type, message } });
}

/**
 * The API key a request carried. SDK 1.x (API version 2026-10-21) sends it as
 * `Authorization: Bearer`; older versions sent `x-api-key`. Either is the key.
 */
function sentKey(headers: IncomingHttpHeaders): string | undefined {
  const xApiKey = headers['x-api-key'];
  if (typeof xApiKey === 'string') return xApiKey;
  return /^Bearer (.+)$/.exec(headers.authorization ?? '')?.[1];
}

/** Number of the passage, in the prompt the stub received, whose text contains `needle`. */
function passageNumber(req: Received, needle: string): number {
  const prompt = req.body.messages[0]!.content;
  for (const m of prompt.matchAll(/<passage number="(\d+)"[^>]*>\n([\s\S]*?)\n<\/passage>/g)) {
    if (m[2]!.includes(needle)) return Number(m[1]);
  }
  throw new Error(`no passage contains ${needle}`);
}

function anthropic(opts: { maxRetries?: number } = {}): AnthropicValidator {
  return new AnthropicValidator({ apiKey: 'test-key', baseURL, model: 'claude-test', maxRetries: opts.maxRetries ?? 0, timeoutMs: 5_000 });
}

describe('AnthropicValidator', () => {
  it('sends the criterion and numbered passages, forces the tool, and maps evidence back to document and page', async () => {
    responder = (req, res) =>
      toolUse(res, req.body.model, {
        verdict: 'pass',
        confidence: 0.9,
        rationale: 'Customer data is encrypted at rest with AES-256.',
        evidence: [{ passage: passageNumber(req, 'encrypted at rest'), quote: 'All customer data is encrypted at rest using AES-256,' }],
      });
    const r = await anthropic().validate(encryptionAtRest, pages, {});

    expect(received).toHaveLength(1);
    const req = received[0]!;
    expect(req.method).toBe('POST');
    expect(req.url).toBe('/v1/messages');
    expect(sentKey(req.headers)).toBe('test-key');
    expect(req.body.model).toBe('claude-test');
    expect(req.body.tool_choice).toEqual({ type: 'tool', name: 'record_verdict' });
    expect(req.body.tools.map((t) => t.name)).toEqual(['record_verdict']);
    const prompt = req.body.messages[0]!.content;
    expect(prompt).toContain('Encryption at rest');
    expect(prompt).toContain('Customer data must be encrypted at rest.');
    expect(prompt).toMatch(/<passage number="\d+" document="security.pdf" page="2">\n[^<]*encrypted at rest/);
    // Few passages in all: every one is sent, the matching one included.
    expect(prompt).toContain('Employees receive onboarding training');

    expectWellFormed(r, encryptionAtRest);
    expect(r).toMatchObject({
      criterion_id: 'enc-rest',
      verdict: 'pass',
      confidence: 0.9,
      evidence: [{ document: 'security.pdf', page: 2, quote: 'All customer data is encrypted at rest using AES-256,' }],
    });
  });

  it('bounds the prompt to the best passages', async () => {
    const many: PageText[] = Array.from({ length: 40 }, (_, i) => ({
      document: `doc${i}.pdf`,
      page: 1,
      text: i === 33 ? 'Backups are encrypted at rest with customer-managed keys.' : `Filler paragraph number ${i} about office plants and parking.`,
    }));
    responder = (req, res) => toolUse(res, req.body.model, { verdict: 'unclear', confidence: 0.4, rationale: 'n/a', evidence: [] });
    await anthropic().validate(encryptionAtRest, many, {});
    const prompt = received[0]!.body.messages[0]!.content;
    expect(prompt.match(/<passage /g)).toHaveLength(12);
    expect(prompt).toContain('document="doc33.pdf"');
  });

  it('drops invented quotes, keeps whitespace-shifted ones as the page text, and downgrades an unsupported pass', async () => {
    responder = (req, res) =>
      toolUse(res, req.body.model, {
        verdict: 'pass',
        confidence: 0.95,
        rationale: 'Encrypted.',
        evidence: [
          { passage: passageNumber(req, 'encrypted at rest'), quote: 'All customer data is encrypted with quantum keys.' },
          // The page breaks the line after "AES-256,"; the model wrote a space.
          { passage: passageNumber(req, 'encrypted at rest'), quote: 'encrypted at rest using AES-256, and in transit' },
          { passage: 99, quote: 'All customer data' },
        ],
      });
    const r = await anthropic().validate(encryptionAtRest, pages, {});
    expectWellFormed(r, encryptionAtRest);
    expect(r.verdict).toBe('pass');
    expect(r.evidence).toEqual([{ document: 'security.pdf', page: 2, quote: 'encrypted at rest using AES-256,\nand in transit' }]);
    expect(r.rationale).toContain('2 quote(s) dropped');

    responder = (req, res) =>
      toolUse(res, req.body.model, {
        verdict: 'pass',
        confidence: 0.95,
        rationale: 'Encrypted.',
        evidence: [{ passage: passageNumber(req, 'encrypted at rest'), quote: 'Data is protected by quantum encryption.' }],
      });
    const downgraded = await anthropic().validate(encryptionAtRest, pages, {});
    expectWellFormed(downgraded, encryptionAtRest);
    expect(downgraded.verdict).toBe('unclear');
    expect(downgraded.evidence).toEqual([]);
    expect(downgraded.confidence).toBeLessThanOrEqual(0.3);
  });

  it('keeps a fail verdict with its evidence', async () => {
    responder = (req, res) =>
      toolUse(res, req.body.model, {
        verdict: 'fail',
        confidence: 0.8,
        rationale: 'Laptops are explicitly not encrypted.',
        evidence: [{ passage: passageNumber(req, 'laptops'), quote: 'The policy does not include encryption of laptops.' }],
      });
    const r = await anthropic().validate(laptopEncryption, pages, {});
    expectWellFormed(r, laptopEncryption);
    expect(r).toMatchObject({ verdict: 'fail', evidence: [{ document: 'handbook.pdf', page: 4 }] });
  });

  it('throws a retryable error on a malformed tool input', async () => {
    responder = (req, res) => toolUse(res, req.body.model, { verdict: 'maybe', confidence: 0.5, rationale: '', evidence: [] });
    const err = await anthropic()
      .validate(encryptionAtRest, pages, {})
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ValidatorResponseError);
    expect(err).not.toBeInstanceOf(NonRetryableError);
  });

  it('maps 401 to the non-retryable error', async () => {
    responder = (_req, res) => apiError(res, 401, 'authentication_error', 'invalid x-api-key');
    const err = await anthropic({ maxRetries: 2 })
      .validate(encryptionAtRest, pages, {})
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ValidatorRejectedError);
    expect(err).toBeInstanceOf(NonRetryableError);
    expect(err).toMatchObject({ code: 'validator_rejected', status: 401 });
    expect((err as Error).message).toContain('invalid x-api-key');
    expect(received).toHaveLength(1);
  });

  it('maps 500 and 429 to the retryable error', async () => {
    responder = (_req, res) => apiError(res, 500, 'api_error', 'internal error');
    const err = await anthropic()
      .validate(encryptionAtRest, pages, {})
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ValidatorUnavailableError);
    expect(err).not.toBeInstanceOf(NonRetryableError);
    expect(err).toMatchObject({ code: 'validator_unavailable', status: 500 });
    expect(received).toHaveLength(1);

    responder = (_req, res) => apiError(res, 429, 'rate_limit_error', 'slow down');
    await expect(anthropic().validate(encryptionAtRest, pages, {})).rejects.toMatchObject({ code: 'validator_unavailable', status: 429 });
  });

  it('maps a connection failure to the retryable error', async () => {
    const closed = new AnthropicValidator({ apiKey: 'k', baseURL: 'http://127.0.0.1:1', maxRetries: 0, timeoutMs: 2_000 });
    const err = await closed.validate(encryptionAtRest, pages, {}).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ValidatorUnavailableError);
    expect(err).toMatchObject({ status: undefined });
  });

  it('aborts the call when the signal aborts', async () => {
    let requestClosed!: Promise<void>;
    const arrived = new Promise<void>((resolve) => {
      responder = (_req, res) => {
        // Never answers: only the abort can end the call.
        requestClosed = new Promise((done) => res.on('close', () => done()));
        resolve();
      };
    });
    const ac = new AbortController();
    const call = anthropic({ maxRetries: 2 }).validate(encryptionAtRest, pages, { signal: ac.signal });
    const reason = new Error('job cancelled');
    await arrived;
    const t0 = Date.now();
    ac.abort(reason);
    await expect(call).rejects.toBe(reason);
    expect(Date.now() - t0).toBeLessThan(2_000);
    await requestClosed;
    expect(received).toHaveLength(1);
  });
});

describe('selectValidator', () => {
  it('picks the local validator without an API key', () => {
    expect(selectValidator({}).name).toBe('local');
    expect(selectValidator({ ANTHROPIC_API_KEY: '  ' }).name).toBe('local');
  });

  it('picks Anthropic with an API key, honouring ANTHROPIC_BASE_URL and ANTHROPIC_MODEL', async () => {
    const v = selectValidator({ ANTHROPIC_API_KEY: 'env-key', ANTHROPIC_BASE_URL: baseURL, ANTHROPIC_MODEL: 'claude-from-env' });
    expect(v).toBeInstanceOf(AnthropicValidator);
    expect(v.name).toBe('anthropic');
    responder = (req, res) => toolUse(res, req.body.model, { verdict: 'unclear', confidence: 0.5, rationale: 'n/a', evidence: [] });
    await v.validate(encryptionAtRest, pages, {});
    expect(sentKey(received[0]!.headers)).toBe('env-key');
    expect(received[0]!.body.model).toBe('claude-from-env');

    expect((selectValidator({ ANTHROPIC_API_KEY: 'k' }) as AnthropicValidator).model).toBe('claude-sonnet-4-5');
  });
});

describe('findVerbatim', () => {
  it('returns the page text for exact and whitespace-shifted quotes, null otherwise', () => {
    const text = 'Line one ends here\nand line two. (Brackets) [too] $5.';
    expect(findVerbatim(text, ' Line one ')).toBe('Line one');
    expect(findVerbatim(text, 'ends here and line')).toBe('ends here\nand line');
    expect(findVerbatim(text, '(Brackets) [too] $5.')).toBe('(Brackets) [too] $5.');
    expect(findVerbatim(text, 'line three')).toBeNull();
    expect(findVerbatim(text, '   ')).toBeNull();
    const long = 'word '.repeat(100).trim();
    const q = findVerbatim(long, long)!;
    expect(q.length).toBeLessThanOrEqual(300);
    expect(long).toContain(q);
  });
});
