import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { describe, expect, it, vi } from 'vitest';
import { z } from 'zod';
import { buildServer } from '../src/api/server.ts';
import { uploadRoutes } from '../src/api/routes/uploads.ts';
import type { App } from '../src/app.ts';
import { BrokerUnavailableError, NonRetryableError } from '../src/errors.ts';
import { newJobId } from '../src/ids.ts';
import type { RawConfig } from '../src/config.ts';
import { defineTask } from '../src/task.ts';
import { checkContentType, looksLikeText } from '../src/uploads/sniff.ts';
import { releaseUpload, sanitizeFilename, sweepUploads, uploadIdOf } from '../src/uploads/store.ts';
import { uploadRefSchema } from '../src/uploads/upload-ref.ts';
import { onCleanup, openTestApp, startWorker, useCleanup, waitFor } from './helpers.ts';

useCleanup();

const countLines = defineTask({
  name: 'csv.count',
  accepts: ['text/csv'],
  input: z.object({ file: uploadRefSchema, has_header: z.boolean() }),
  handler: async ({ file, has_header }) => {
    const lines = (await readFile(file.path, 'utf8')).split('\n').filter(Boolean).length;
    return { lines: has_header ? lines - 1 : lines, content_type: file.content_type, filename: file.filename };
  },
});

const pdfSize = defineTask({
  name: 'pdf.size',
  accepts: ['application/pdf'],
  input: z.object({ file: uploadRefSchema }),
  handler: async ({ file }) => ({ bytes: file.size }),
});

const csvFail = defineTask({
  name: 'csv.fail',
  accepts: ['text/csv'],
  retries: 0,
  input: z.object({ file: uploadRefSchema }),
  handler: async () => {
    throw new Error('cannot parse');
  },
});

// Records, per attempt, whether its file was there; fails the first attempt.
const seen: boolean[] = [];
const csvFlaky = defineTask({
  name: 'csv.flaky',
  accepts: ['text/csv'],
  retries: 2,
  backoff: { base: 50, max: 50, jitter: 'none' },
  input: z.object({ file: uploadRefSchema }),
  handler: async ({ file }, ctx) => {
    seen.push(existsSync(file.path));
    if (ctx.attempt === 1) throw new Error('transient');
    if (ctx.attempt === 2) throw new NonRetryableError('give up');
    return { ok: true };
  },
});

const noUploads = defineTask({
  name: 'math.add',
  input: z.object({ a: z.number(), b: z.number() }),
  handler: async ({ a, b }) => ({ sum: a + b }),
});

const TASKS = [countLines, pdfSize, csvFail, csvFlaky, noUploads];
const CSV = 'name,qty\napple,3\npear,5\nplum,7\n';
const PDF = Buffer.from('%PDF-1.4\n1 0 obj\n<< /Type /Catalog >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n');
const ELF = Buffer.concat([Buffer.from([0x7f, 0x45, 0x4c, 0x46, 0x02, 0x01, 0x01, 0x00]), Buffer.alloc(120, 0)]);

async function setup(overrides: RawConfig = {}, opts: { worker?: boolean } = {}) {
  const uploadDir = mkdtempSync(join(tmpdir(), 'celerity-uploads-'));
  onCleanup(() => rmSync(uploadDir, { recursive: true, force: true }));
  const app = await openTestApp('sqlite', TASKS, { uploadDir, ...overrides });
  if (opts.worker) await startWorker(app);
  const server = await buildServer(app, { logger: false });
  onCleanup(() => server.close());
  // server.ts may already register the route (once its patch is in).
  if (!server.hasRoute({ method: 'POST', url: '/v1/uploads' })) await server.register(uploadRoutes, { app });
  await server.ready();
  return { app, server, uploadDir };
}

type PartSpec = { name: string; value: string } | { name: string; filename: string; type?: string; data: Buffer | string };

/** A multipart/form-data body built by hand, for names and shapes FormData would not send. */
function multipart(parts: PartSpec[]): { payload: Buffer; headers: Record<string, string> } {
  const boundary = `----celerity${newJobId()}`;
  const chunks: Buffer[] = [];
  for (const part of parts) {
    if ('filename' in part) {
      chunks.push(
        Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="${part.name}"; filename="${part.filename}"\r\n${part.type ? `Content-Type: ${part.type}\r\n` : ''}\r\n`, 'latin1'),
      );
      chunks.push(Buffer.isBuffer(part.data) ? part.data : Buffer.from(part.data));
      chunks.push(Buffer.from('\r\n'));
    } else {
      chunks.push(Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="${part.name}"\r\n\r\n${part.value}\r\n`));
    }
  }
  chunks.push(Buffer.from(`--${boundary}--\r\n`));
  return { payload: Buffer.concat(chunks), headers: { 'content-type': `multipart/form-data; boundary=${boundary}` } };
}

function upload(server: FastifyInstance, parts: PartSpec[], headers: Record<string, string> = {}) {
  const body = multipart(parts);
  return server.inject({ method: 'POST', url: '/v1/uploads', payload: body.payload, headers: { ...body.headers, ...headers } });
}

function csvParts(extra: PartSpec[] = [], input: unknown = { has_header: true }): PartSpec[] {
  return [{ name: 'task', value: 'csv.count' }, { name: 'input', value: JSON.stringify(input) }, ...extra, { name: 'file', filename: 'fruit.csv', type: 'text/csv', data: CSV }];
}

/** The upload directories on disk (none when the upload dir does not exist yet). */
function onDisk(uploadDir: string): string[] {
  return existsSync(uploadDir) ? readdirSync(uploadDir) : [];
}

async function waitStatus(app: App, id: string, status: string) {
  return waitFor(async () => {
    const job = await app.getJob(id);
    return job?.status === status ? job : undefined;
  }, 15_000);
}

describe('POST /v1/uploads', () => {
  it('stores a CSV sent with FormData, runs the job on it, then removes it', async () => {
    const { app, server, uploadDir } = await setup({}, { worker: true });
    const address = await server.listen({ port: 0, host: '127.0.0.1' });
    const form = new FormData();
    form.append('task', 'csv.count');
    form.append('input', JSON.stringify({ has_header: true }));
    form.append('options', JSON.stringify({ tenant: 'acme', priority: 3 }));
    form.append('file', new Blob([CSV], { type: 'text/csv; charset=utf-8' }), 'fruit.csv');
    const res = await fetch(`${address}/v1/uploads`, { method: 'POST', body: form });
    expect(res.status).toBe(202);
    const body = (await res.json()) as { job_id: string; status: string; status_url: string };
    expect(body).toEqual({ job_id: expect.any(String), status: 'queued', status_url: `/v1/jobs/${body.job_id}` });
    expect(res.headers.get('location')).toBe(body.status_url);

    const done = await waitStatus(app, body.job_id, 'completed');
    expect(done.result).toEqual({ lines: 3, content_type: 'text/csv', filename: 'fruit.csv' });
    expect(done.tenant).toBe('acme');
    const ref = (done.input as { file: { upload_id: string; path: string; size: number } }).file;
    expect(ref.path).toBe(join(resolve(uploadDir), ref.upload_id, 'fruit.csv'));
    // The job view shows which file it was, not where the server keeps it.
    const view = (await (await fetch(`${address}${body.status_url}`)).json()) as { input: { has_header: boolean; file: Record<string, unknown> } };
    expect(view.input).toEqual({ has_header: true, file: { upload_id: ref.upload_id, filename: 'fruit.csv', content_type: 'text/csv', size: ref.size } });
    expect(ref.size).toBe(Buffer.byteLength(CSV));
    await waitFor(() => onDisk(uploadDir).length === 0);
  });

  it('keeps the file while no worker has run the job, with the handle in the input', async () => {
    const { app, server, uploadDir } = await setup();
    const res = await upload(server, csvParts());
    expect(res.statusCode).toBe(202);
    const job = await app.getJob(res.json().job_id);
    const file = (job!.input as { file: unknown }).file;
    expect(uploadRefSchema.parse(file)).toMatchObject({ filename: 'fruit.csv', content_type: 'text/csv', size: Buffer.byteLength(CSV) });
    expect(readFileSync((file as { path: string }).path, 'utf8')).toBe(CSV);
    expect(onDisk(uploadDir)).toEqual([(file as { upload_id: string }).upload_id]);
  });

  it('removes the file after the final failure of a job without retries', async () => {
    const { app, server, uploadDir } = await setup({}, { worker: true });
    const res = await upload(server, [
      { name: 'task', value: 'csv.fail' },
      { name: 'file', filename: 'a.csv', type: 'text/csv', data: CSV },
    ]);
    expect(res.statusCode).toBe(202);
    await waitStatus(app, res.json().job_id, 'failed');
    await waitFor(() => onDisk(uploadDir).length === 0);
  });

  it('keeps the file between the retries of a job, and removes it when the last attempt fails', async () => {
    seen.length = 0;
    const { app, server, uploadDir } = await setup({}, { worker: true });
    const res = await upload(server, [
      { name: 'task', value: 'csv.flaky' },
      { name: 'file', filename: 'a.csv', type: 'text/csv', data: CSV },
    ]);
    expect(res.statusCode).toBe(202);
    const done = await waitStatus(app, res.json().job_id, 'failed');
    expect(done.attempts).toBe(2);
    // Attempt 2 (after a retry) still found the file; the non-retryable failure ended the job.
    expect(seen).toEqual([true, true]);
    await waitFor(() => onDisk(uploadDir).length === 0);
  });

  it('removes the file of a queued job that is cancelled', async () => {
    const { server, uploadDir } = await setup();
    const res = await upload(server, csvParts([{ name: 'options', value: JSON.stringify({ delay: 60_000 }) }]));
    expect(res.statusCode).toBe(202);
    expect(onDisk(uploadDir)).toHaveLength(1);
    const cancel = await server.inject({ method: 'POST', url: `/v1/jobs/${res.json().job_id}/cancel` });
    expect(cancel.json()).toMatchObject({ status: 'cancelled' });
    expect(onDisk(uploadDir)).toEqual([]);
  });

  it('accepts a CSV sent as application/vnd.ms-excel, or as a generic type with a .csv name', async () => {
    const { app, server } = await setup();
    for (const type of ['application/vnd.ms-excel', 'application/octet-stream']) {
      const res = await upload(server, [
        { name: 'task', value: 'csv.count' },
        { name: 'input', value: '{"has_header":false}' },
        { name: 'file', filename: 'x.csv', type, data: CSV },
      ]);
      expect(res.statusCode, type).toBe(202);
      const job = await app.getJob(res.json().job_id);
      expect((job!.input as { file: { content_type: string } }).file.content_type).toBe('text/csv');
    }
  });

  it('takes a real PDF for a task that accepts PDFs, whatever the order of the parts', async () => {
    const { server } = await setup();
    const res = await upload(server, [
      { name: 'file', filename: 'doc.pdf', type: 'application/pdf', data: PDF },
      { name: 'task', value: 'pdf.size' },
    ]);
    expect(res.statusCode).toBe(202);
  });

  describe('refuses, leaving nothing on disk and nothing enqueued', () => {
    async function refused(parts: PartSpec[], expected: { status: number; code: string; field: string }, overrides: RawConfig = {}, headers: Record<string, string> = {}) {
      const { app, server, uploadDir } = await setup(overrides);
      const add = vi.spyOn(app, 'enqueueByName');
      const res = await upload(server, parts, headers);
      expect(res.statusCode, res.body).toBe(expected.status);
      const body = res.json();
      expect(body.error.code).toBe(expected.code);
      expect(body.error.details.field ?? body.error.details.issues?.[0]?.path).toBe(expected.field);
      expect(onDisk(uploadDir)).toEqual([]);
      expect(add).not.toHaveBeenCalled();
      return body;
    }

    it('a traversal file name (400 invalid_filename)', async () => {
      for (const filename of ['../../etc/passwd', '/etc/passwd', '..\\..\\boot.ini', 'C:\\x\\y.csv', '..']) {
        await refused(
          [
            { name: 'task', value: 'csv.count' },
            { name: 'input', value: '{"has_header":true}' },
            { name: 'file', filename, type: 'text/csv', data: CSV },
          ],
          { status: 400, code: 'invalid_filename', field: 'file' },
        );
      }
    });

    it('a file over the size limit (413), the partial file removed', async () => {
      const body = await refused(
        [
          { name: 'task', value: 'csv.count' },
          { name: 'input', value: '{"has_header":true}' },
          { name: 'file', filename: 'big.csv', type: 'text/csv', data: 'a,b\n'.repeat(2000) },
        ],
        { status: 413, code: 'payload_too_large', field: 'file' },
        { uploadMaxBytes: 1024 },
      );
      expect(body.error.details.limit_bytes).toBe(1024);
    });

    it('a file over the size limit sent before the task field (413)', async () => {
      await refused(
        [
          { name: 'file', filename: 'big.csv', type: 'text/csv', data: 'a,b\n'.repeat(2000) },
          { name: 'task', value: 'csv.count' },
        ],
        { status: 413, code: 'payload_too_large', field: 'file' },
        { uploadMaxBytes: 1024 },
      );
    });

    it('a "PDF" whose bytes are an ELF executable (415)', async () => {
      const body = await refused(
        [
          { name: 'task', value: 'pdf.size' },
          { name: 'file', filename: 'doc.pdf', type: 'application/pdf', data: ELF },
        ],
        {
          status: 415,
          code: 'unsupported_media_type',
          field: 'file',
        },
      );
      expect(body.error.details).toMatchObject({ declared: 'application/pdf', detected: 'application/x-elf' });
    });

    it('a "CSV" that is a zip, or has NUL bytes (415)', async () => {
      const zip = Buffer.concat([Buffer.from([0x50, 0x4b, 0x03, 0x04, 0x14, 0x00]), Buffer.alloc(200, 0x41)]);
      await refused(csvParts().slice(0, 2).concat({ name: 'file', filename: 'a.csv', type: 'text/csv', data: zip }), { status: 415, code: 'unsupported_media_type', field: 'file' });
      await refused(csvParts().slice(0, 2).concat({ name: 'file', filename: 'a.csv', type: 'text/csv', data: 'a,b\n\0\0,c\n' }), { status: 415, code: 'unsupported_media_type', field: 'file' });
    });

    it('a type the task does not accept (415), checked before storing', async () => {
      await refused(
        [
          { name: 'task', value: 'csv.count' },
          { name: 'file', filename: 'doc.pdf', type: 'application/pdf', data: PDF },
        ],
        { status: 415, code: 'unsupported_media_type', field: 'file' },
      );
    });

    it('a task that takes no uploads (422 uploads_not_accepted)', async () => {
      await refused(
        [
          { name: 'task', value: 'math.add' },
          { name: 'file', filename: 'a.csv', type: 'text/csv', data: CSV },
        ],
        { status: 422, code: 'uploads_not_accepted', field: 'task' },
      );
    });

    it('an unknown task (422 unknown_task, as POST /v1/jobs)', async () => {
      await refused(
        [
          { name: 'file', filename: 'a.csv', type: 'text/csv', data: CSV },
          { name: 'task', value: 'nope' },
        ],
        { status: 422, code: 'unknown_task', field: 'task' },
      );
    });

    it('input that is not JSON (400 invalid_json)', async () => {
      await refused(
        csvParts().map((p) => (p.name === 'input' ? { name: 'input', value: '{has_header:' } : p)),
        { status: 400, code: 'invalid_json', field: 'input' },
      );
    });

    it('options that are not JSON, or break the options schema (400)', async () => {
      await refused(csvParts([{ name: 'options', value: '[' }]), { status: 400, code: 'invalid_json', field: 'options' });
      const body = await refused(csvParts([{ name: 'options', value: '{"priority":0,"colour":"red"}' }]), { status: 400, code: 'invalid_request', field: 'options' });
      expect(body.error.details.issues).toEqual([
        { path: 'options.priority', message: 'must be >= 1' },
        { path: 'options.colour', message: 'is not an allowed field' },
      ]);
    });

    it('input failing the task schema (422, the field named)', async () => {
      const body = await refused(csvParts([], { has_header: 'yes' }), { status: 422, code: 'invalid_input', field: 'input.has_header' });
      expect(body.error.details.issues.map((i: { path: string }) => i.path)).toEqual(['input.has_header']);
    });

    it('input that sets `file` itself (422)', async () => {
      await refused(csvParts([], { has_header: true, file: { upload_id: 'x', path: '/etc/passwd' } }), { status: 422, code: 'invalid_input', field: 'input.file' });
    });

    it('a missing file (400 missing_file)', async () => {
      await refused(
        [
          { name: 'task', value: 'csv.count' },
          { name: 'input', value: '{"has_header":true}' },
        ],
        { status: 400, code: 'missing_file', field: 'file' },
      );
    });

    it('two files (400 too_many_files)', async () => {
      await refused(csvParts([{ name: 'file', filename: 'b.csv', type: 'text/csv', data: CSV }]), { status: 400, code: 'too_many_files', field: 'file' });
    });

    it('an unknown field (400, named)', async () => {
      await refused(csvParts([{ name: 'colour', value: 'red' }]), { status: 400, code: 'invalid_request', field: 'colour' });
    });

    it('a missing task (400)', async () => {
      await refused([{ name: 'file', filename: 'a.csv', type: 'text/csv', data: CSV }], { status: 400, code: 'invalid_request', field: 'task' });
    });

    it('a delay longer than the upload TTL (422)', async () => {
      await refused(csvParts([{ name: 'options', value: '{"delay":120000}' }]), { status: 422, code: 'invalid_options', field: 'options.delay' }, { uploadTtl: 60 });
    });

    it('a JSON body (415)', async () => {
      const { server } = await setup();
      const res = await server.inject({ method: 'POST', url: '/v1/uploads', payload: { task: 'csv.count' } });
      expect(res.statusCode).toBe(415);
      expect(res.json().error.code).toBe('unsupported_media_type');
    });
  });

  it('removes the file when the enqueue fails (Redis down: 503)', async () => {
    const { app, server, uploadDir } = await setup();
    vi.spyOn(app, 'enqueueByName').mockRejectedValueOnce(new BrokerUnavailableError(new Error('connect ECONNREFUSED')));
    const res = await upload(server, csvParts());
    expect(res.statusCode).toBe(503);
    expect(res.json().error.code).toBe('broker_unavailable');
    expect(onDisk(uploadDir)).toEqual([]);
  });

  it('an idempotent replay answers the first job and keeps one copy; another file with the key is a conflict', async () => {
    const { server, uploadDir } = await setup();
    const first = await upload(server, csvParts(), { 'idempotency-key': 'k-1' });
    expect(first.statusCode).toBe(202);
    const again = await upload(server, csvParts(), { 'idempotency-key': 'k-1' });
    expect(again.statusCode).toBe(202);
    expect(again.json().job_id).toBe(first.json().job_id);
    expect(again.headers['idempotent-replayed']).toBe('true');
    expect(onDisk(uploadDir)).toHaveLength(1);

    const other = csvParts().map((p) => ('filename' in p ? { ...p, data: 'x,y\n1,2\n' } : p));
    const conflict = await upload(server, other, { 'idempotency-key': 'k-1' });
    expect(conflict.statusCode).toBe(409);
    expect(onDisk(uploadDir)).toHaveLength(1);
  });

  it('documents the multipart body in the OpenAPI document', async () => {
    const { server } = await setup();
    const doc = (await server.inject({ method: 'GET', url: '/openapi.json' })).json();
    const op = doc.paths['/v1/uploads'].post;
    expect(Object.keys(op.requestBody.content)).toEqual(['multipart/form-data']);
    expect(op.requestBody.content['multipart/form-data'].schema.properties.file).toMatchObject({ type: 'string', format: 'binary' });
    expect(op.responses['202']).toBeDefined();
  });
});

describe('upload storage', () => {
  it('sanitises odd names and refuses paths', () => {
    expect(sanitizeFilename('report 2024.csv')).toBe('report 2024.csv');
    expect(sanitizeFilename('.bashrc')).toBe('bashrc');
    expect(sanitizeFilename('a\u0001b<c>.csv')).toBe('a_b_c_.csv');
    expect(sanitizeFilename('invoice\u202Efdp.exe')).toBe('invoice_fdp.exe');
    expect(sanitizeFilename('CON.csv')).toBe('_CON.csv');
    const long = sanitizeFilename(`${'é'.repeat(300)}.csv`);
    expect(Buffer.byteLength(long)).toBeLessThanOrEqual(200);
    expect(long.endsWith('.csv')).toBe(true);
    for (const bad of ['../../etc/passwd', '/etc/passwd', 'a/b.csv', 'a\\b.csv', 'C:evil', 'a\0.csv', '', '..', '...']) {
      expect(() => sanitizeFilename(bad), JSON.stringify(bad)).toThrow(expect.objectContaining({ code: 'invalid_filename' }));
    }
  });

  it('releaseUpload is idempotent and refuses anything that is not an upload id', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'celerity-uploads-'));
    onCleanup(() => rmSync(dir, { recursive: true, force: true }));
    const id = newJobId();
    mkdirSync(join(dir, id));
    writeFileSync(join(dir, id, 'a.csv'), CSV);
    writeFileSync(join(dir, 'precious'), 'keep');
    expect(await releaseUpload(dir, { upload_id: id })).toBe(true);
    expect(await releaseUpload(dir, id)).toBe(true);
    expect(existsSync(join(dir, id))).toBe(false);
    for (const bad of ['..', '../x', '/', 'precious', '', id.toUpperCase()]) expect(await releaseUpload(dir, bad)).toBe(false);
    expect(existsSync(join(dir, 'precious'))).toBe(true);
    const handle = { upload_id: id, path: join(dir, id, 'a.csv'), filename: 'a.csv', content_type: 'text/csv', size: 1 };
    expect(uploadIdOf(dir, { file: handle })).toBe(id);
    // Not where Celerity puts uploads: not Celerity's to remove.
    expect(uploadIdOf(dir, { file: { ...handle, path: '/etc/passwd' } })).toBeUndefined();
    expect(uploadIdOf(dir, { file: { ...handle, upload_id: '../..' } })).toBeUndefined();
    expect(uploadIdOf(dir, { a: 1 })).toBeUndefined();
  });

  it('the janitor removes only upload directories older than the TTL', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'celerity-uploads-'));
    onCleanup(() => rmSync(dir, { recursive: true, force: true }));
    const now = Date.now();
    const old = newJobId(now - 7_200_000);
    const fresh = newJobId(now);
    for (const name of [old, fresh, 'not-an-upload']) {
      mkdirSync(join(dir, name));
      writeFileSync(join(dir, name, 'f.csv'), CSV);
    }
    const past = new Date(now - 7_200_000);
    for (const name of [old, 'not-an-upload']) utimesSync(join(dir, name), past, past);
    const info = vi.fn();
    expect(await sweepUploads(dir, 3_600_000, now, { info, warn: vi.fn() })).toBe(1);
    expect(readdirSync(dir).sort()).toEqual([fresh, 'not-an-upload'].sort());
    expect(info).toHaveBeenCalledWith(expect.objectContaining({ removed: 1 }), expect.any(String));
    expect(await sweepUploads(join(dir, 'missing'), 1, now)).toBe(0);
  });

  it('checks content by magic bytes and text, ignoring header parameters', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'celerity-sniff-'));
    onCleanup(() => rmSync(dir, { recursive: true, force: true }));
    const file = (name: string, data: Buffer | string) => {
      writeFileSync(join(dir, name), data);
      return join(dir, name);
    };
    expect(await checkContentType(file('a.csv', CSV), 'text/csv; charset=utf-8', ['text/csv'], 'a.csv')).toBe('text/csv');
    expect(await checkContentType(file('b.pdf', PDF), 'application/pdf', ['application/pdf'], 'b.pdf')).toBe('application/pdf');
    await expect(checkContentType(file('c.pdf', ELF), 'application/pdf', ['application/pdf'], 'c.pdf')).rejects.toMatchObject({ code: 'unsupported_media_type' });
    const pe = Buffer.concat([Buffer.from('MZ'), Buffer.alloc(200, 0)]);
    await expect(checkContentType(file('d.pdf', pe), 'application/pdf', ['application/pdf'], 'd.pdf')).rejects.toMatchObject({ code: 'unsupported_media_type' });
    await expect(checkContentType(file('e.json', Buffer.from([0xc3, 0x28])), 'application/json', ['application/json'], 'e.json')).rejects.toMatchObject({
      details: { field: 'file' },
    });
    // A multi-byte character cut by the sample's end is still text.
    expect(looksLikeText(Buffer.from('héllo').subarray(0, 2))).toBe(true);
    expect(looksLikeText(Buffer.from([0x61, 0x00]))).toBe(false);
  });

  it('a worker refuses a forged upload handle: a task never reads a path outside the upload directory', async () => {
    const { server, app } = await setup({}, { worker: true });
    const forged = [
      { upload_id: newJobId(), path: '/etc/passwd', filename: 'passwd', content_type: 'text/csv', size: 1 },
      { upload_id: newJobId(), path: join(app.config.uploadDir, '..', 'x.csv'), filename: 'x.csv', content_type: 'text/csv', size: 1 },
      { upload_id: '../..', path: '/etc/passwd', filename: 'passwd', content_type: 'text/csv', size: 1 },
    ];
    for (const file of forged) {
      const res = await server.inject({ method: 'POST', url: '/v1/jobs', payload: { task: 'csv.count', input: { file, has_header: false } } });
      expect(res.statusCode).toBe(202);
      const view = await waitFor(async () => {
        const v = (await server.inject({ url: `/v1/jobs/${res.json().job_id}` })).json();
        return v.status === 'failed' ? v : null;
      });
      expect(view.attempts).toBe(1);
      expect(view.error.type).toBe('InvalidUploadHandleError');
      expect(view.result).toBeNull();
    }
  });
});
