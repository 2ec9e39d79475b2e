/**
 * A seeded fuzz of the HTTP API (issue 11): thousands of requests with odd
 * values, limits and the values just past them, broken encodings and broken
 * HTTP, against a real listening server with a worker and a recorder, on the
 * documents app (Celerity's routes plus an app route, webhooks and uploads).
 *
 * Every answer must be below 500; every 4xx carries `{"error": {code,
 * message}}`; no body shows a stack trace or a server path (but the 200 of
 * an admin's `GET /v1/jobs/{id}?stacks=true`, which asks for them). A webhook to the
 * demo's signed task without a valid signature must be 401, whatever else is
 * wrong with it. Afterwards the history must still record a normal job.
 *
 * The routes come from the server's OpenAPI document, so a new route is
 * fuzzed without touching this file.
 *
 *   FUZZ_SEED=<int>       replay a run (the seed is printed)
 *   FUZZ_REQUESTS=<int>   requests on SQLite (default 2000; PostgreSQL gets half)
 */
import { connect } from 'node:net';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { add, fail, flaky, progress, sleepTask, spin } from '../../../examples/quickstart/tasks.ts';
import { assessmentTasks } from '../../../examples/documents/workloads/assessment/pipeline.ts';
import { csvImportTask } from '../../../examples/documents/workloads/csv/task.ts';
import { pdfIngestTask } from '../../../examples/documents/workloads/documents/ingest-task.ts';
import { searchRoutes } from '../../../examples/documents/workloads/search-routes.ts';
import { documentsTables } from '../../../examples/documents/workloads/tables.ts';
import { TICKET_WEBHOOK_SECRET, ticketEnhanceTask } from '../../../examples/documents/workloads/tickets/task.ts';
import { buildServer } from '../src/api/server.ts';
import { createKey, revokeKey } from '../src/auth/key-store.ts';
import { signWebhook } from '../src/api/webhook-signature.ts';
import type { App } from '../src/app.ts';
import { MAX_DELAY_MS, MAX_JOB_ID_LENGTH, MAX_JSON_DEPTH, MAX_NAME_LENGTH, MAX_PARAM_LENGTH, MAX_PRIORITY, MAX_TIME_LIMIT_MS } from '../src/limits.ts';
import { seededRandom } from '../src/seeded-random.ts';
import { onCleanup, openTestApp, startRecorder, startWorker, stores, useCleanup, waitFor, type StoreKind } from './helpers.ts';

useCleanup();

const SEED = Number.parseInt(process.env.FUZZ_SEED ?? '11', 10);
const REQUESTS = Number.parseInt(process.env.FUZZ_REQUESTS ?? '2000', 10);
const REPO = resolve(import.meta.dirname, '../../..');

/** A JSON fragment written as is (deep nesting, 1e309): JSON.stringify cannot make them. */
class Raw {
  readonly text: string;
  constructor(text: string) {
    this.text = text;
  }
}

function jsonText(v: unknown): string {
  if (v instanceof Raw) return v.text;
  if (Array.isArray(v)) return `[${v.map(jsonText).join(',')}]`;
  if (v !== null && typeof v === 'object')
    return `{${Object.entries(v)
      .map(([k, x]) => `${JSON.stringify(k)}:${jsonText(x)}`)
      .join(',')}}`;
  return JSON.stringify(v) ?? 'null';
}

interface Operation {
  method: string;
  path: string;
  params: { name: string; in: 'path' | 'query' | 'header'; schema: Schema }[];
  body: { type: 'json' | 'multipart'; schema: Schema } | null;
}

interface Schema {
  type?: string | string[];
  enum?: unknown[];
  minimum?: number;
  maximum?: number;
  minLength?: number;
  maxLength?: number;
  properties?: Record<string, Schema>;
  items?: Schema;
}

/** Every operation of the OpenAPI document, with its parameters and body schema. */
function operations(doc: any): Operation[] {
  const ops: Operation[] = [];
  for (const [path, item] of Object.entries<any>(doc.paths)) {
    for (const [method, op] of Object.entries<any>(item)) {
      const content = op.requestBody?.content ?? {};
      const json = content['application/json']?.schema;
      const multipart = content['multipart/form-data']?.schema;
      ops.push({
        method: method.toUpperCase(),
        path,
        params: (op.parameters ?? []).map((p: any) => ({ name: p.name, in: p.in, schema: p.schema ?? {} })),
        body: json ? { type: 'json', schema: json } : multipart ? { type: 'multipart', schema: multipart } : null,
      });
    }
  }
  return ops;
}

interface Answer {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/**
 * One request on its own socket, as raw bytes: nothing between the fuzz and
 * the server's parser. The socket is not half-closed (Node's server drops a
 * pending answer when the client ends first); the answer is complete at its
 * Content-Length, the last chunk, or when the server closes.
 */
function send(port: number, request: Buffer, head: boolean): Promise<Answer> {
  return new Promise((done, reject) => {
    const socket = connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    let settled = false;
    const parse = (text: Buffer): Answer | null => {
      const end = text.indexOf('\r\n\r\n');
      if (end === -1) return null;
      const lines = text.subarray(0, end).toString('latin1').split('\r\n');
      const status = Number(lines[0]!.split(' ')[1]);
      const headers: Record<string, string> = {};
      for (const line of lines.slice(1)) {
        const i = line.indexOf(':');
        headers[line.slice(0, i).toLowerCase()] = line.slice(i + 1).trim();
      }
      let body: Buffer = text.subarray(end + 4);
      // An event stream (GET /v1/events) stays open: its answer is its status and headers.
      if (status === 200 && headers['content-type']?.startsWith('text/event-stream')) return { status, headers, body: '' };
      if (headers['transfer-encoding'] === 'chunked') {
        if (!body.includes('0\r\n\r\n')) return null;
        body = dechunk(body);
      } else if (!head && headers['content-length'] !== undefined && body.length < Number(headers['content-length'])) {
        return null;
      }
      return { status, headers, body: body.toString('utf8') };
    };
    const finish = (answer: Answer | null, err?: Error) => {
      if (settled) return;
      settled = true;
      socket.destroy();
      if (answer) done(answer);
      else if (chunks.length === 0 && err) reject(err);
      else done({ status: 0, headers: {}, body: Buffer.concat(chunks).toString('utf8') });
    };
    socket.setTimeout(5_000, () => finish(parse(Buffer.concat(chunks))));
    socket.on('data', (c) => {
      chunks.push(c);
      const answer = parse(Buffer.concat(chunks));
      if (answer) finish(answer);
    });
    socket.on('error', (err) => finish(parse(Buffer.concat(chunks)), err));
    socket.on('close', () => finish(parse(Buffer.concat(chunks))));
    socket.write(request);
  });
}

function dechunk(b: Buffer): Buffer {
  const out: Buffer[] = [];
  let at = 0;
  while (at < b.length) {
    const eol = b.indexOf('\r\n', at);
    if (eol === -1) break;
    const size = Number.parseInt(b.subarray(at, eol).toString(), 16);
    if (!(size > 0)) break;
    out.push(b.subarray(eol + 2, eol + 2 + size));
    at = eol + 2 + size + 2;
  }
  return Buffer.concat(out);
}

function fuzzer(seed: number, taskNames: string[], knownIds: string[]) {
  const rnd = seededRandom(seed);
  const int = (n: number) => Math.floor(rnd() * n);
  const chance = (p: number) => rnd() < p;
  const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)]!;
  const deep = (depth: number) => new Raw(`${'{"x":['.repeat(depth)}1${']}'.repeat(depth)}`);

  const oddStrings = (): string =>
    pick([
      '',
      ' ',
      '\u0000',
      'a\u0000b',
      '\ud800',
      'x\udfffy',
      '😀',
      'ünïcödé',
      '\u202e\u200b',
      'a'.repeat(MAX_JOB_ID_LENGTH),
      'a'.repeat(MAX_JOB_ID_LENGTH + 1),
      'b'.repeat(MAX_NAME_LENGTH),
      'b'.repeat(MAX_NAME_LENGTH + 1),
      'c'.repeat(257),
      'd'.repeat(MAX_PARAM_LENGTH + 1),
      'e'.repeat(70_000),
      '-1',
      '0',
      '42',
      '1e309',
      'NaN',
      'null',
      'true',
      '[]',
      '{}',
      'a:b',
      '../../etc/passwd',
      "' or 1=1 --",
      '<script>x</script>',
      '\n',
      '\r\n',
      '%',
      '%zz',
      'math.add',
      pick(taskNames),
      pick(knownIds.length > 0 ? knownIds : ['none']),
    ]);
  const oddNumbers = (): unknown =>
    pick([
      0,
      -1,
      1,
      1.5,
      -0.5,
      2 ** 31 - 1,
      2 ** 31,
      2 ** 53 + 1,
      MAX_PRIORITY,
      MAX_PRIORITY + 1,
      MAX_TIME_LIMIT_MS + 1,
      MAX_DELAY_MS + 1,
      1e21,
      new Raw('1e309'),
      new Raw('-1e309'),
      new Raw('1E400'),
    ]);
  const anyValue = (level = 0): unknown => {
    switch (int(level > 2 ? 5 : 8)) {
      case 0:
        return oddStrings();
      case 1:
        return oddNumbers();
      case 2:
        return pick([true, false, null]);
      case 3:
        return deep(pick([3, MAX_JSON_DEPTH - 3, MAX_JSON_DEPTH + 1, 500, 5000]));
      case 4:
        return int(100);
      case 5:
        return Array.from({ length: int(4) }, () => anyValue(level + 1));
      default:
        return Object.fromEntries(Array.from({ length: int(4) }, () => [pick(['a', 'b', 'x', '__proto__', 'constructor', 'file', '\u0000', '']), anyValue(level + 1)]));
    }
  };
  /** A value for a schema: often valid or at a limit, often just past it, sometimes anything. */
  const forSchema = (s: Schema, level = 0): unknown => {
    if (chance(0.15)) return anyValue(level);
    if (s.enum) return chance(0.8) ? pick(s.enum) : oddStrings();
    const type = Array.isArray(s.type) ? s.type[0] : s.type;
    switch (type) {
      case 'integer':
      case 'number': {
        const lo = s.minimum ?? 0;
        const hi = s.maximum ?? 1000;
        return chance(0.6) ? pick([lo, hi, lo + int(Math.max(1, Math.min(hi - lo, 1000)))]) : pick([lo - 1, hi + 1, 1.5, '7', oddNumbers()]);
      }
      case 'string': {
        if (chance(0.4)) return oddStrings();
        const max = s.maxLength ?? 20;
        return pick(['x', 'abc', 'job-1', 'a'.repeat(max), 'a'.repeat(max + 1), pick(taskNames)]);
      }
      case 'boolean':
        return chance(0.8) ? chance(0.5) : 'yes';
      case 'array':
        return Array.from({ length: int(3) }, () => forSchema(s.items ?? {}, level + 1));
      case 'object': {
        const out: Record<string, unknown> = {};
        for (const [k, sub] of Object.entries(s.properties ?? {})) if (chance(0.6)) out[k] = forSchema(sub, level + 1);
        if (chance(0.1)) out[pick(['extra', '\u0000', 'ü'])] = anyValue(level + 1);
        return out;
      }
      default:
        return anyValue(level);
    }
  };
  /** Percent-encodes the UTF-8 of a string, or leaves a broken encoding in on purpose. */
  const encode = (v: unknown): string => {
    const text = typeof v === 'string' ? v : v instanceof Raw ? v.text : jsonText(v);
    if (chance(0.08)) return pick(['%', '%E0%A4%A', '%zz', '%FF%FE', '%ED%A0%80', '%C0%80', '%00']);
    return [...Buffer.from(text, 'utf8')].map((b) => (/[A-Za-z0-9_.~-]/.test(String.fromCharCode(b)) ? String.fromCharCode(b) : `%${b.toString(16).padStart(2, '0').toUpperCase()}`)).join('');
  };
  return { rnd, int, chance, pick, forSchema, anyValue, oddStrings, encode };
}

type Fuzzer = ReturnType<typeof fuzzer>;

const METHODS = ['GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'HEAD', 'PROPFIND', 'QUERY', 'FOO', 'get', 'M-SEARCH', 'CONNECT', 'TRACE'];

/** The demo's task that takes signed webhooks. */
const SIGNED_HOOK = '/v1/hooks/ticket.enhance';

/** What a fuzzed request was, for failure reports and the checks that depend on it. */
interface FuzzedRequest {
  bytes: Buffer;
  label: string;
  route: string;
  /** A webhook to SIGNED_HOOK: validly signed, or not (no signature, a fuzzed one, a wrong secret, expired); null for other requests. */
  hook: 'signed' | 'unsigned' | null;
  /** The request reaches the route whole (POST, an honest Content-Length): an unsigned hook must then be 401. */
  intact: boolean;
}

/** One fuzzed request as raw bytes, and a one-line description of it for failure reports. */
function buildRequest(f: Fuzzer, ops: Operation[], tasksInputSchemas: Map<string, Schema>, keys: FuzzKeys): FuzzedRequest {
  // Broken HTTP, straight to the parser.
  if (f.chance(0.04)) {
    const text = f.pick([
      'GARBAGE\r\n\r\n',
      'GET /v1/jobs HTTP/9.9\r\nHost: x\r\n\r\n',
      `GET /v1/jobs HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`,
      `GET /v1/jobs?${'q'.repeat(20_000)} HTTP/1.1\r\nHost: x\r\n\r\n`,
      `GET /${'v'.repeat(9_000)} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`,
      'GET /v1/jobs HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n',
      'GET /v1/jobs HTTP/1.1\r\nHost: x\r\nX-Nul: a\u0000b\r\n\r\n',
      'POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}',
      'POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
      'POST /v1/jobs HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\nzz\r\n{}\r\n0\r\n\r\n',
      'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n',
      'GET /v1/jobs\r\n\r\n',
      'GET v1/jobs HTTP/1.1\r\nHost: x\r\n\r\n',
      'GET /v1/jobs HTTP/1.1\r\n\r\n',
    ]);
    return { bytes: Buffer.from(text, 'latin1'), label: `raw ${JSON.stringify(text.slice(0, 120))}`, route: 'raw HTTP', hook: null, intact: false };
  }

  const op = f.pick(ops);
  const method = f.chance(0.88) ? op.method : f.pick(METHODS);
  let path = op.path.replace(/\{(\w+)\}/g, (_, name: string) => {
    const param = op.params.find((p) => p.in === 'path' && p.name === name);
    return f.encode(param && f.chance(0.4) ? f.forSchema(param.schema) : f.oddStrings());
  });
  if (f.chance(0.03)) path += f.pick(['/', '//', '/extra', '%2F..%2F', '?']);
  const query: string[] = [];
  const headers: Record<string, string> = {};
  for (const p of op.params) {
    if (p.in === 'query' && f.chance(0.6)) query.push(`${p.name}=${f.encode(f.forSchema(p.schema))}`);
    if (p.in === 'header' && f.chance(0.4)) {
      const v = f.forSchema(p.schema);
      // A header value is bytes: UTF-8 of the value, CR/LF left out (they would split the request).
      headers[p.name] = String(v instanceof Raw ? v.text : typeof v === 'string' ? v : jsonText(v)).replace(/[\r\n]/g, ' ');
    }
  }
  if (f.chance(0.08)) query.push(`${f.pick(['unknown', 'limit', 'limit', 'q', '__proto__'])}=${f.encode(f.oddStrings())}`);
  if (f.chance(0.05)) headers['x-request-id'] = f.oddStrings().replace(/[\r\n]/g, ' ');
  // Mostly an admin key (to reach the routes' own checks), then a tenant's key, none, a revoked one, or junk.
  const who = f.int(20);
  if (who <= 13) headers.authorization = `Bearer ${keys.admin}`;
  else if (who <= 15) headers.authorization = `Bearer ${keys.tenant}`;
  else if (who === 16) headers.authorization = `Bearer ${keys.revoked}`;
  else if (who === 17) headers.authorization = f.oddStrings().replace(/[\r\n]/g, ' ');

  let body: Buffer | null = null;
  let hook: FuzzedRequest['hook'] = null;
  if (op.body?.type === 'json' || (method !== 'GET' && method !== 'HEAD' && f.chance(0.1))) {
    let value = f.forSchema(op.body?.schema ?? { type: 'object' });
    // POST /v1/jobs: a real task with an input from its own schema, most of the time.
    if (value && typeof value === 'object' && !(value instanceof Raw) && 'task' in (op.body?.schema.properties ?? {}) && f.chance(0.7)) {
      const task = f.pick([...tasksInputSchemas.keys()]);
      value = { ...(value as object), task, input: f.forSchema(tasksInputSchemas.get(task)!) };
    }
    // Webhooks: the body is the input of the task in the path; the demo's signed task half the time,
    // and then now and again a clean delivery (a valid ticket, validly signed), so that some are accepted.
    let clean = false;
    if (op.path.includes('/hooks/') && f.chance(0.5)) {
      const task = f.chance(0.5) && tasksInputSchemas.has('ticket.enhance') ? 'ticket.enhance' : f.pick([...tasksInputSchemas.keys()]);
      path = `/v1/hooks/${task}`;
      clean = path === SIGNED_HOOK && f.chance(0.3);
      value = clean ? { ticket_id: `SUP-${f.int(1e6)}`, tenant_id: 'acme', priority: 'low', description: 'A fuzzed ticket' } : f.forSchema(tasksInputSchemas.get(task)!);
    }
    let text = Buffer.from(jsonText(value), 'utf8');
    const damage = clean ? -1 : f.int(20);
    if (damage === 0) text = text.subarray(0, f.int(text.length)); // truncated
    if (damage === 1) text = Buffer.concat([text.subarray(0, 1), Buffer.from([0xff, 0xfe, 0xc0, 0x80, 0xed, 0xa0, 0x80]), text.subarray(1)]); // invalid UTF-8
    if (damage === 2) text = Buffer.alloc(0);
    if (damage === 3) text = Buffer.from('\ufeff{"task":"math.add","input":{"a":1,"b":2}}', 'utf8');
    body = text;
    if (path === SIGNED_HOOK) {
      // Signed over the bytes sent (damage included): half valid, the rest unsigned, fuzzed (the schema's header), a wrong secret or expired.
      if (clean) for (const name of ['x-tenant-id', 'idempotency-key', 'x-delivery-id', 'x-github-delivery']) delete headers[name];
      const how = clean ? 0 : f.int(6);
      if (how <= 2) headers['celerity-signature'] = signWebhook(TICKET_WEBHOOK_SECRET, text);
      if (how === 3) headers['celerity-signature'] = signWebhook('not-the-demo-secret-0123', text);
      if (how === 4) headers['celerity-signature'] = signWebhook(TICKET_WEBHOOK_SECRET, text, Math.floor(Date.now() / 1000) - 3_600);
      hook = how <= 2 ? 'signed' : 'unsigned';
    }
    headers['content-type'] =
      clean || f.chance(0.85)
        ? 'application/json'
        : f.pick(['text/plain', 'application/x-www-form-urlencoded', 'application/json; charset=utf-16', 'application/JSON', 'multipart/form-data', '', 'application/json; charset=latin1', '*/*']);
  } else if (op.body?.type === 'multipart') {
    ({ body, contentType: headers['content-type'] } = multipart(f, op.body.schema, [...tasksInputSchemas.keys()]));
  }
  // A declared length past the body leaves the server waiting for the rest: no answer is expected then.
  let incomplete = false;
  if (body !== null && f.chance(0.03)) {
    const extra = f.pick([-1, 1, 1e9]);
    headers['content-length'] = String(Math.max(0, body.length + extra));
    incomplete = extra > 0;
  }
  const url = `${path}${query.length > 0 ? `?${query.join('&')}` : ''}`;
  const lines = [`${method} ${url} HTTP/1.1`, 'Host: 127.0.0.1', 'Connection: close'];
  for (const [k, v] of Object.entries(headers)) lines.push(`${k}: ${v}`);
  if (body !== null && headers['content-length'] === undefined) lines.push(`content-length: ${body.length}`);
  const head = Buffer.from(`${lines.join('\r\n')}\r\n\r\n`, 'utf8');
  const label = `${method} ${url.slice(0, 300)} ${JSON.stringify(headers).slice(0, 300)} body=${JSON.stringify(body?.toString('utf8').slice(0, 300) ?? null)}`;
  const intact = method === 'POST' && headers['content-length'] === undefined;
  return { bytes: body ? Buffer.concat([head, body]) : head, label: `${label}${incomplete ? ' (incomplete)' : ''}`, route: `${op.method} ${op.path}`, hook, intact };
}

/**
 * True when the answer came before the route could look at the signature:
 * Node's or Fastify's refusal of the request line or headers, or of a
 * Content-Type header too broken to pick a parser by (an empty one).
 */
function refusedBeforeTheRoute(res: Answer, request: Buffer): boolean {
  let code: unknown;
  try {
    code = (JSON.parse(res.body) as { error?: { code?: unknown } }).error?.code;
  } catch {
    return false;
  }
  // bad_request: Node's HTTP parser refused the bytes (a NUL in a header value) before any route ran.
  if (code === 'headers_too_large' || code === 'uri_too_long' || code === 'invalid_url' || code === 'bad_request') return true;
  const head = request.subarray(0, request.indexOf('\r\n\r\n')).toString('latin1');
  return code === 'unsupported_media_type' && /\r\ncontent-type:[ \t]*(\r\n|$)/i.test(head);
}

function multipart(f: Fuzzer, schema: Schema, taskNames: string[]): { body: Buffer; contentType: string } {
  const boundary = `----fuzz${f.int(1e9)}`;
  const parts: Buffer[] = [];
  const field = (name: string, value: string | Buffer, extra = '') =>
    parts.push(Buffer.concat([Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="${name}"${extra}\r\n\r\n`, 'utf8'), Buffer.from(value), Buffer.from('\r\n')]));
  const names = Object.keys(schema.properties ?? { file: {}, task: {}, input: {}, options: {} });
  for (const name of names) {
    if (!f.chance(0.8)) continue;
    if (name === 'file') {
      const filename = f.chance(0.7) ? f.pick(['data.csv', 'doc.pdf', 'a.txt']) : f.oddStrings().replace(/["\r\n]/g, '');
      const type = f.pick(['text/csv', 'application/pdf', 'application/octet-stream', 'text/plain', '', 'image/png']);
      const content = f.pick(['key,summary\nA-1,hello\n', '%PDF-1.4\n%%EOF\n', '', '\u0000\u0001\u0002', Buffer.from([0xff, 0xd8, 0xff, 0xe0]).toString('latin1'), 'x'.repeat(5000)]);
      field('file', content, `; filename="${filename}"\r\nContent-Type: ${type}`);
    } else if (name === 'task') field('task', f.chance(0.7) ? f.pick(['csv.import', 'pdf.ingest', 'assessment.parse', ...taskNames]) : f.oddStrings());
    else field(name, jsonText(f.forSchema({ type: 'object' })));
  }
  if (f.chance(0.1)) field(f.pick(['extra', 'file', 'task']), 'dup');
  let body = Buffer.concat([...parts, Buffer.from(`--${boundary}--\r\n`)]);
  if (f.chance(0.1)) body = body.subarray(0, f.int(body.length)); // truncated
  return { body, contentType: f.chance(0.9) ? `multipart/form-data; boundary=${boundary}` : f.pick(['multipart/form-data', 'multipart/form-data; boundary=', 'application/json']) };
}

/** Bearer tokens the fuzz sends: an admin's, a tenant's (jobs scopes), a revoked one. */
interface FuzzKeys {
  admin: string;
  tenant: string;
  revoked: string;
}

async function fuzzKeys(app: App): Promise<FuzzKeys> {
  const admin = (await createKey(app.store, { name: 'fuzz-admin', scopes: ['admin'] })).token;
  const tenant = (await createKey(app.store, { name: 'fuzz-tenant', tenant: 'fuzz', scopes: ['jobs:submit', 'jobs:read', 'jobs:cancel'] })).token;
  const revoked = await createKey(app.store, { name: 'fuzz-revoked', scopes: ['admin'] });
  await revokeKey(app.store, revoked.key.id);
  return { admin, tenant, revoked: revoked.token };
}

async function fuzzApp(kind: StoreKind): Promise<App> {
  const store = () => app.tables(documentsTables);
  const assessment = assessmentTasks({ store });
  const app = await openTestApp(
    kind,
    {
      tasks: [add, progress, flaky, fail, spin, sleepTask, csvImportTask({ store }), pdfIngestTask({ store }), assessment.parse, assessment.evaluate, ticketEnhanceTask({ store })],
      workflows: [assessment.validate],
      tables: [documentsTables],
      routes: [searchRoutes],
    },
    { auth: 'keys' },
  );
  return app;
}

describe.each(stores)('HTTP API fuzz (%s store)', (kind) => {
  it(`answers fuzzed requests (${REQUESTS} on SQLite, half on PostgreSQL) below 500, in the error shape, without stack traces; the history keeps recording`, { timeout: 180_000 }, async () => {
    const requests = kind === 'sqlite' ? REQUESTS : Math.ceil(REQUESTS / 2);
    const seed = kind === 'sqlite' ? SEED : SEED + 1;
    console.log(`fuzz (${kind}): seed ${seed} (FUZZ_SEED=${SEED}), ${requests} requests`);
    const app = await fuzzApp(kind);
    // Room for the long jobs a fuzzed input may ask for (demo.sleep of an hour), so the final job still runs.
    await startWorker(app, { concurrency: 200 });
    await startRecorder(app);
    const keys = await fuzzKeys(app);
    const api = await buildServer(app, { logger: false });
    onCleanup(() => api.close());
    await api.listen({ port: 0, host: '127.0.0.1' });
    const port = (api.server.address() as { port: number }).port;

    const ops = operations((await api.inject({ method: 'GET', url: '/openapi.json' })).json());
    const covered = new Set(ops.map((o) => `${o.method} ${o.path}`));
    for (const route of ['POST /v1/jobs', 'GET /v1/jobs', 'GET /v1/jobs/{id}', 'POST /v1/jobs/{id}/cancel', 'GET /v1/search', 'POST /v1/hooks/{task}', 'POST /v1/uploads', 'GET /v1/tasks']) {
      expect(covered, route).toContain(route);
    }
    const tasks = (await api.inject({ method: 'GET', url: '/v1/tasks', headers: { authorization: `Bearer ${keys.admin}` } })).json().tasks as { name: string; input_schema: Schema }[];
    const inputSchemas = new Map(tasks.map((t) => [t.name, t.input_schema]));
    const knownIds: string[] = [];
    const f = fuzzer(seed, [...inputSchemas.keys()], knownIds);

    const statuses = new Map<number, number>();
    const perRoute = new Map<string, number>();
    const hooks = { signed: 0, accepted: 0, unsigned: 0 };
    const problems: string[] = [];
    const started = Date.now();
    let next = 0;
    const serverPath = new RegExp(`${REPO.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}|node_modules|file://|\\n\\s+at `);
    const one = async () => {
      while (next < requests && problems.length < 10) {
        next++;
        const { bytes, label, route, hook, intact } = buildRequest(f, ops, inputSchemas, keys);
        perRoute.set(route, (perRoute.get(route) ?? 0) + 1);
        const res = await send(port, bytes, /^head /i.test(label));
        statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
        const why: string[] = [];
        if (res.status >= 500) why.push(`status ${res.status}`);
        if (hook === 'signed' && intact) {
          hooks.signed++;
          if (res.status === 202) hooks.accepted++;
        }
        if (hook === 'unsigned' && intact) {
          hooks.unsigned++;
          if (res.status !== 401 && !refusedBeforeTheRoute(res, bytes)) why.push(`unsigned webhook answered ${res.status}, not 401`);
        }
        if (res.status === 0 && !label.endsWith('(incomplete)') && !label.startsWith('raw ')) why.push('no answer');
        if (res.status >= 400 && !label.startsWith('HEAD') && !label.startsWith('head')) {
          let error: { code?: unknown; message?: unknown } | undefined;
          try {
            error = JSON.parse(res.body).error;
          } catch {
            // reported below
          }
          if (!error || typeof error.code !== 'string' || error.code === '' || typeof error.message !== 'string' || error.message === '') why.push('not the error shape');
        }
        // Stacks are shown when an admin asks for them (GET /v1/jobs/{id}?stacks=true): anything else shows none.
        const askedStacks = res.status === 200 && /[?&]stacks=(?:true|1)(?:&|\s|$)/.test(label);
        if (serverPath.test(res.body) && !askedStacks) why.push('a stack trace or server path');
        if (res.status === 202) {
          const id = (JSON.parse(res.body) as { job_id?: string }).job_id;
          if (id && knownIds.length < 50) knownIds.push(id);
        }
        if (why.length > 0) problems.push(`${why.join(', ')}: ${label}\n  -> ${res.status} ${res.body.slice(0, 500)}`);
      }
    };
    await Promise.all(Array.from({ length: 8 }, one));
    const seconds = ((Date.now() - started) / 1000).toFixed(1);
    console.log(`fuzz (${kind}): ${next} requests in ${seconds} s; statuses ${JSON.stringify(Object.fromEntries([...statuses].sort()))}; per route ${JSON.stringify(Object.fromEntries(perRoute))}`);
    expect(problems, `seed ${seed}: replay with FUZZ_SEED=${SEED}`).toEqual([]);
    expect(statuses.get(202) ?? 0, 'some requests were valid submissions').toBeGreaterThan(0);
    console.log(`fuzz (${kind}): webhooks to ${SIGNED_HOOK}: ${JSON.stringify(hooks)}`);
    expect(hooks.unsigned, 'unsigned webhooks were sent').toBeGreaterThan(0);
    expect(hooks.accepted, 'some signed webhooks were accepted').toBeGreaterThan(0);
    for (const op of ops) expect(perRoute.get(`${op.method} ${op.path}`) ?? 0, `${op.method} ${op.path} fuzzed`).toBeGreaterThan(0);

    // The history still records: a normal job reaches its SQL row as completed.
    const handle = await app.enqueue(add, { a: 2, b: 3 });
    await waitFor(
      async () => {
        const row = await app.store.get(handle.id);
        if (row?.status !== 'completed') throw new Error(`after the fuzz, job ${handle.id} is ${row?.status ?? 'not in SQL'} rather than completed: is the recorder stuck on a value the fuzz sent?`);
        return row;
      },
      30_000,
      50,
    );
  });
});
