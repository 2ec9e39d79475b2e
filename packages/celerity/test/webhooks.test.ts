import { spawnSync } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Fastify, { type FastifyInstance } from 'fastify';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { celerityApi } from '../src/api/plugin.ts';
import { buildServer } from '../src/api/server.ts';
import { signWebhook, verifyWebhook } from '../src/api/webhook-signature.ts';
import type { App } from '../src/app.ts';
import { signCommand } from '../src/cli/hooks.ts';
import { InvalidSignatureError, TaskDefinitionError } from '../src/errors.ts';
import { defineTask } from '../src/task.ts';
import { defineWorkflow, step } from '../src/workflows/workflow.ts';
import { onCleanup, openTestApp, useCleanup } from './helpers.ts';

useCleanup();

const SECRET = 'whsec-test-0123456789abcdef';
const OLD_SECRET = 'whsec-old-0123456789abcdef';
const TENANT_SECRETS: Record<string, string> = { acme: 'acme-secret-0123456789', globex: 'globex-secret-0123456789' };
const QUEUE = 'hooks';
const now = () => Math.floor(Date.now() / 1000);

const input = z.object({ id: z.string(), note: z.string().optional() });
const handler = async () => ({ ok: true });
const ticket = defineTask({ name: 'hook.ticket', queue: QUEUE, input, handler, webhook: { secret: SECRET, tenant: 'acme' } });
const untenanted = defineTask({ name: 'hook.plain', queue: QUEUE, input, handler, webhook: { secret: SECRET, tolerance: 60 } });
const rotating = defineTask({ name: 'hook.rotating', queue: QUEUE, input, handler, webhook: { secret: [OLD_SECRET, SECRET] } });
const perTenant = defineTask({ name: 'hook.tenants', queue: QUEUE, input, handler, webhook: { secret: async (tenant) => TENANT_SECRETS[tenant] } });
const internal = defineTask({ name: 'hook.internal', queue: QUEUE, input, handler });
const flow = defineWorkflow({ name: 'hook.flow', input, build: (i) => step(internal, i) });

async function setup(): Promise<{ app: App; api: FastifyInstance }> {
  const app = await openTestApp('sqlite', { tasks: [ticket, untenanted, rotating, perTenant, internal], workflows: [flow] });
  const api = await buildServer(app, { logger: false });
  onCleanup(() => api.close());
  await api.ready();
  return { app, api };
}

/** Every job of the test queue, whatever its state: a refusal must leave it unchanged. */
async function jobCount(app: App): Promise<number> {
  const counts = await app.broker.queue(QUEUE).getJobCounts();
  return Object.values(counts).reduce((a, b) => a + b, 0);
}

function post(api: FastifyInstance, task: string, body: string, headers: Record<string, string> = {}) {
  return api.inject({ method: 'POST', url: `/v1/hooks/${task}`, payload: body, headers: { 'content-type': 'application/json', ...headers } });
}

function signed(api: FastifyInstance, task: string, body: string, secret = SECRET, headers: Record<string, string> = {}, t = now()) {
  return post(api, task, body, { 'celerity-signature': signWebhook(secret, body, t), ...headers });
}

describe('signWebhook / verifyWebhook', () => {
  // Spacing, key order and non-ASCII as a sender might write them: re-serializing would change the bytes.
  const body = '{ "id" : "Zoë-😀",\n\t"note": "naïve café — ünïcödé"  }\r\n';

  it('signs "<t>.<raw bytes>" with HMAC-SHA256, as openssl or any HMAC library would', () => {
    const header = signWebhook(SECRET, body, 1_700_000_000);
    const hex = createHmac('sha256', SECRET)
      .update(Buffer.concat([Buffer.from('1700000000.'), Buffer.from(body, 'utf8')]))
      .digest('hex');
    expect(header).toBe(`t=1700000000,v1=${hex}`);
    expect(signWebhook(SECRET, Buffer.from(body, 'utf8'), 1_700_000_000)).toBe(header);
    expect(verifyWebhook(header, body, SECRET, { now: 1_700_000_000 })).toEqual({ timestamp: 1_700_000_000 });
    expect(verifyWebhook(header, Buffer.from(body, 'utf8'), SECRET, { now: 1_700_000_000 })).toEqual({ timestamp: 1_700_000_000 });
  });

  it('verifies the raw bytes only: the same JSON re-serialized, or re-encoded, does not match', () => {
    const header = signWebhook(SECRET, body, 1_700_000_000);
    const reserialized = JSON.stringify(JSON.parse(body));
    expect(() => verifyWebhook(header, reserialized, SECRET, { now: 1_700_000_000 })).toThrow(/no v1 signature matches/);
    expect(() => verifyWebhook(header, Buffer.from(body, 'latin1'), SECRET, { now: 1_700_000_000 })).toThrow(InvalidSignatureError);
    expect(() => verifyWebhook(header, body.trim(), SECRET, { now: 1_700_000_000 })).toThrow(InvalidSignatureError);
  });

  it('says what is wrong: missing, malformed, mismatch, expired; never the expected signature', () => {
    const t = 1_700_000_000;
    const good = signWebhook(SECRET, body, t);
    const v1 = good.split('v1=')[1]!;
    const reason = (header: string | undefined, opts: { now?: number; secrets?: string | string[] } = {}) => {
      try {
        verifyWebhook(header, body, opts.secrets ?? SECRET, { now: opts.now ?? t });
        return 'ok';
      } catch (err) {
        expect(err).toBeInstanceOf(InvalidSignatureError);
        expect((err as Error).message).not.toContain(v1);
        expect(JSON.stringify((err as InvalidSignatureError).details)).not.toContain(v1);
        return (err as InvalidSignatureError).reason;
      }
    };
    expect(reason(undefined)).toBe('missing');
    expect(reason('')).toBe('missing');
    for (const bad of ['garbage', `v1=${v1}`, `t=${t}`, `t=${t},v1=xyz`, `t=abc,v1=${v1}`, `t=${t},t=${t},v1=${v1}`, `t=-1,v1=${v1}`, `t=${t};v1=${v1}`, `t=${t},v1=${v1}00`]) {
      expect(reason(bad), bad).toBe('malformed');
    }
    expect(reason(`t=${t},v1=${'0'.repeat(64)}`)).toBe('mismatch');
    expect(reason(`t=${t + 1},v1=${v1}`)).toBe('mismatch');
    expect(reason(good, { secrets: 'another-secret-of-16+' })).toBe('mismatch');
    // Within the tolerance (300 s by default) either way, then expired.
    expect(reason(good, { now: t + 300 })).toBe('ok');
    expect(reason(good, { now: t - 300 })).toBe('ok');
    expect(reason(good, { now: t + 301 })).toBe('expired');
    expect(reason(good, { now: t - 301 })).toBe('expired');
    expect(() => verifyWebhook(good, body, SECRET, { now: t + 11, tolerance: 10 })).toThrow(/outside the tolerance/);
  });

  it('takes several v1 entries and several secrets (rotation); skips other schemes; upper-case hex is fine', () => {
    const t = 1_700_000_000;
    const old = signWebhook(OLD_SECRET, body, t).split('v1=')[1]!;
    const fresh = signWebhook(SECRET, body, t).split('v1=')[1]!;
    expect(verifyWebhook(`t=${t},v1=${old},v1=${fresh}`, body, SECRET, { now: t }).timestamp).toBe(t);
    expect(verifyWebhook(`t=${t}, v0=whatever, v1=${old}`, body, [OLD_SECRET, SECRET], { now: t }).timestamp).toBe(t);
    expect(verifyWebhook(`v1=${fresh.toUpperCase()},t=${t}`, body, SECRET, { now: t }).timestamp).toBe(t);
    expect(() => verifyWebhook(`t=${t},v1=${old}`, body, SECRET, { now: t })).toThrow(/no v1 signature matches/);
  });

  it('refuses to sign with no secret or a bad timestamp', () => {
    expect(() => signWebhook('', body)).toThrow(TypeError);
    expect(() => signWebhook(SECRET, body, 1.5)).toThrow(TypeError);
    expect(signWebhook(SECRET, body)).toMatch(/^t=\d+,v1=[0-9a-f]{64}$/);
  });
});

describe('the webhook option', () => {
  const def = (webhook: unknown) => () => defineTask({ name: 'x.hook', input, handler, webhook: webhook as never });

  it('is checked at definition time, without quoting the secret', () => {
    for (const bad of [
      { secret: 'short-secret' },
      { secret: [] },
      { secret: [SECRET, 'short'] },
      { secret: 42 },
      {},
      null,
      'a-secret-of-sixteen+',
      { secret: SECRET, tolerance: 0 },
      { secret: SECRET, tolerance: 1.5 },
      { secret: SECRET, tolerance: 86_401 },
      { secret: SECRET, tenant: '' },
      { secret: SECRET, tenant: 'a\u0000b' },
      { secret: () => SECRET, tenant: 'acme' },
      { secret: SECRET, tolerence: 60 },
    ]) {
      expect(def(bad), JSON.stringify(bad)).toThrow(TaskDefinitionError);
    }
    expect(def({ secret: 'short-secret' })).toThrow(/Task "x.hook": webhook secret must be a string of at least 16 characters/);
    try {
      def({ secret: [SECRET, 'short'] })();
    } catch (err) {
      expect((err as Error).message).not.toContain(SECRET);
    }
  });

  it('is exposed on the task, defaulted, and kept out of JSON', () => {
    expect(ticket.webhook).toMatchObject({ secret: [SECRET], tolerance: 300, tenant: 'acme' });
    expect(untenanted.webhook).toMatchObject({ tolerance: 60, tenant: undefined });
    expect(typeof perTenant.webhook?.secret).toBe('function');
    expect(internal.webhook).toBeUndefined();
    expect(JSON.stringify(ticket)).not.toContain(SECRET);
    expect(JSON.parse(JSON.stringify(ticket.webhook))).toEqual({ tolerance: 300, tenant: 'acme', per_tenant: false });
  });
});

describe('POST /v1/hooks/:task', () => {
  const body = JSON.stringify({ id: 'T-1', note: 'Zoë 😀' });

  it('enqueues a signed request (202) with the task’s tenant', async () => {
    const { app, api } = await setup();
    const res = await signed(api, 'hook.ticket', body);
    expect(res.statusCode).toBe(202);
    const id = res.json().job_id as string;
    expect(res.headers['idempotent-replayed']).toBeUndefined();
    const job = await app.getJob(id);
    expect(job).toMatchObject({ task: 'hook.ticket', tenant: 'acme', input: { id: 'T-1', note: 'Zoë 😀' } });
    const plain = await signed(api, 'hook.plain', body);
    expect(plain.statusCode).toBe(202);
    expect((await app.getJob(plain.json().job_id))?.tenant).toBeNull();
    expect(await jobCount(app)).toBe(2);
  });

  it('refuses with 401 invalid_signature, enqueuing nothing: unsigned, tampered, wrong secret, expired, malformed', async () => {
    const { app, api } = await setup();
    const t = now();
    const header = signWebhook(SECRET, body, t);
    const cases: [string, Promise<Awaited<ReturnType<typeof post>>>, string][] = [
      ['unsigned', post(api, 'hook.ticket', body), 'missing'],
      ['tampered body', post(api, 'hook.ticket', body.replace('T-1', 'T-2'), { 'celerity-signature': header }), 'mismatch'],
      ['tampered timestamp', post(api, 'hook.ticket', body, { 'celerity-signature': header.replace(`t=${t}`, `t=${t + 1}`) }), 'mismatch'],
      ['wrong secret', signed(api, 'hook.ticket', body, 'not-the-secret-0123456789'), 'mismatch'],
      ['expired (a replay past the tolerance)', signed(api, 'hook.ticket', body, SECRET, {}, t - 301), 'expired'],
      ['from the future', signed(api, 'hook.ticket', body, SECRET, {}, t + 400), 'expired'],
      ['past a task’s own tolerance', signed(api, 'hook.plain', body, SECRET, {}, t - 61), 'expired'],
      ['malformed', post(api, 'hook.ticket', body, { 'celerity-signature': 'sha256=abc' }), 'malformed'],
      ['unsigned, not JSON', post(api, 'hook.ticket', '{"id":', {}), 'missing'],
      ['unsigned, another media type', post(api, 'hook.ticket', body, { 'content-type': 'text/plain' }), 'missing'],
      ['unsigned, no body', api.inject({ method: 'POST', url: '/v1/hooks/hook.ticket' }), 'missing'],
      ['signed for no body, sent with one', post(api, 'hook.ticket', body, { 'celerity-signature': signWebhook(SECRET, '', t) }), 'mismatch'],
    ];
    for (const [name, pending, reason] of cases) {
      const res = await pending;
      expect(res.statusCode, name).toBe(401);
      expect(res.json().error, name).toMatchObject({ code: 'invalid_signature', details: { reason } });
      expect(res.json().error.message, name).not.toMatch(/[0-9a-f]{64}/);
      expect(res.headers['www-authenticate'], name).toBe('Celerity-Signature');
    }
    expect(await jobCount(app)).toBe(0);
  });

  it('checks the body once signed: bad JSON 400, another media type 415, bad input 422, prototype poisoning 400, no body 400', async () => {
    const { app, api } = await setup();
    const cases: [string, string | undefined, Record<string, string>, number, string][] = [
      ['not JSON', '{"id":', {}, 400, 'invalid_json'],
      ['empty', '', {}, 400, 'invalid_json'],
      ['another media type', body, { 'content-type': 'text/plain' }, 415, 'unsupported_media_type'],
      ['not an object', '[1,2]', {}, 400, 'invalid_request'],
      ['bad input', JSON.stringify({ id: 7 }), {}, 422, 'invalid_input'],
      ['prototype poisoning', '{"id":"x","__proto__":{"admin":true}}', {}, 400, 'invalid_json'],
    ];
    for (const [name, text, headers, status, code] of cases) {
      const res = await signed(api, 'hook.ticket', text ?? '', SECRET, headers);
      expect(res.statusCode, name).toBe(status);
      expect(res.json().error.code, name).toBe(code);
    }
    const noBody = await api.inject({ method: 'POST', url: '/v1/hooks/hook.ticket', headers: { 'celerity-signature': signWebhook(SECRET, '') } });
    expect(noBody.statusCode).toBe(400);
    expect(noBody.json().error.code).toBe('invalid_request');
    expect(await jobCount(app)).toBe(0);
  });

  it('answers a replay within the tolerance with the first job, whatever delivery id it carries; nothing new is enqueued', async () => {
    const { app, api } = await setup();
    const t = now();
    const header = signWebhook(SECRET, body, t);
    const first = await post(api, 'hook.ticket', body, { 'celerity-signature': header });
    expect(first.statusCode).toBe(202);
    const id = first.json().job_id;
    // The captured request as is, with a delivery id of the attacker's, and with one more v1 entry.
    const forged: Record<string, string>[] = [{}, { 'x-delivery-id': 'forged-1' }, { 'idempotency-key': 'forged-2' }];
    for (const extra of forged) {
      const again = await post(api, 'hook.ticket', body, { 'celerity-signature': header, ...extra });
      expect(again.statusCode).toBe(202);
      expect(again.json().job_id).toBe(id);
      expect(again.headers['idempotent-replayed']).toBe('true');
    }
    const padded = await post(api, 'hook.ticket', body, { 'celerity-signature': `${header},v1=${'0'.repeat(64)}` });
    expect(padded.json().job_id).toBe(id);
    // Signed content is one delivery per timestamp: the next second is another.
    const later = await signed(api, 'hook.ticket', body, SECRET, {}, t + 1);
    expect(later.json().job_id).not.toBe(id);
    expect(await jobCount(app)).toBe(2);
  });

  it('keeps delivery-id idempotency: a redelivery, signed anew, returns the first job', async () => {
    const { app, api } = await setup();
    const t = now();
    const header = signWebhook(SECRET, body, t - 10);
    const first = await post(api, 'hook.ticket', body, { 'celerity-signature': header, 'x-delivery-id': 'evt-1' });
    expect(first.statusCode).toBe(202);
    // Captured and replayed without its delivery id: still the first job.
    const stripped = await post(api, 'hook.ticket', body, { 'celerity-signature': header });
    expect(stripped.json().job_id).toBe(first.json().job_id);
    for (const [header, ts] of [
      ['x-delivery-id', t],
      ['x-github-delivery', t - 5],
      ['idempotency-key', t - 3],
    ] as const) {
      const redelivery = await signed(api, 'hook.ticket', body, SECRET, { [header]: 'evt-1' }, ts);
      expect(redelivery.statusCode, header).toBe(202);
      expect(redelivery.json().job_id, header).toBe(first.json().job_id);
      expect(redelivery.headers['idempotent-replayed']).toBe('true');
    }
    // The same delivery id with another body: the sender's mistake, answered as a conflict.
    const conflict = await signed(api, 'hook.ticket', JSON.stringify({ id: 'T-9' }), SECRET, { 'x-delivery-id': 'evt-1' }, t - 2);
    expect(conflict.statusCode).toBe(409);
    const other = await signed(api, 'hook.ticket', JSON.stringify({ id: 'T-2' }), SECRET, { 'x-delivery-id': 'evt-2' });
    expect(other.json().job_id).not.toBe(first.json().job_id);
    expect(await jobCount(app)).toBe(2);
  });

  it('verifies with any secret of a rotation', async () => {
    const { app, api } = await setup();
    expect((await signed(api, 'hook.rotating', JSON.stringify({ id: 'old' }), OLD_SECRET)).statusCode).toBe(202);
    expect((await signed(api, 'hook.rotating', JSON.stringify({ id: 'new' }), SECRET)).statusCode).toBe(202);
    const t = now();
    const both = `t=${t},v1=${signWebhook(OLD_SECRET, body, t).split('v1=')[1]},v1=${signWebhook(SECRET, body, t).split('v1=')[1]}`;
    expect((await post(api, 'hook.rotating', body, { 'celerity-signature': both })).statusCode).toBe(202);
    const retired = await signed(api, 'hook.rotating', body, 'retired-secret-0123456789');
    expect(retired.statusCode).toBe(401);
    expect(await jobCount(app)).toBe(3);
  });

  it('per-tenant secrets: X-Tenant-Id is required and proven by its own secret', async () => {
    const { app, api } = await setup();
    const ok = await signed(api, 'hook.tenants', body, TENANT_SECRETS.acme, { 'x-tenant-id': 'acme' });
    expect(ok.statusCode).toBe(202);
    expect((await app.getJob(ok.json().job_id))?.tenant).toBe('acme');
    const globex = await signed(api, 'hook.tenants', body, TENANT_SECRETS.globex, { 'x-tenant-id': 'globex' });
    expect(globex.statusCode).toBe(202);
    // Same body, same second, another tenant: another delivery, another job.
    expect(globex.json().job_id).not.toBe(ok.json().job_id);
    expect((await app.getJob(globex.json().job_id))?.tenant).toBe('globex');
    const before = await jobCount(app);

    // globex's signature does not make a request acme's.
    const spoofed = await signed(api, 'hook.tenants', body, TENANT_SECRETS.globex, { 'x-tenant-id': 'acme' });
    expect(spoofed.statusCode).toBe(401);
    expect(spoofed.json().error.details).toEqual({ reason: 'mismatch' });
    // An unknown tenant reads as a wrong signature.
    const unknown = await signed(api, 'hook.tenants', body, TENANT_SECRETS.acme, { 'x-tenant-id': 'initech' });
    expect(unknown.statusCode).toBe(401);
    expect(unknown.json()).toEqual(spoofed.json());
    const missing = await signed(api, 'hook.tenants', body, TENANT_SECRETS.acme);
    expect(missing.statusCode).toBe(400);
    expect(missing.json().error).toMatchObject({ code: 'invalid_request', details: { issues: [{ path: 'headers.x-tenant-id' }] } });
    expect(missing.json().error.message).toMatch(/x-tenant-id is required/);
    const badTenant = await signed(api, 'hook.tenants', body, TENANT_SECRETS.acme, { 'x-tenant-id': 'a'.repeat(201) });
    expect(badTenant.statusCode).toBe(400);
    // Unsigned is 401 before anything else.
    expect((await post(api, 'hook.tenants', body)).statusCode).toBe(401);
    // Per tenant, delivery ids of two tenants do not collide.
    const a = await signed(api, 'hook.tenants', JSON.stringify({ id: 'A' }), TENANT_SECRETS.acme, { 'x-tenant-id': 'acme', 'x-delivery-id': '1' });
    const g = await signed(api, 'hook.tenants', JSON.stringify({ id: 'G' }), TENANT_SECRETS.globex, { 'x-tenant-id': 'globex', 'x-delivery-id': '1' });
    expect(a.statusCode).toBe(202);
    expect(g.statusCode).toBe(202);
    expect(g.json().job_id).not.toBe(a.json().job_id);
    expect(await jobCount(app)).toBe(before + 2);
  });

  it('with a fixed secret, refuses an X-Tenant-Id other than the task’s own (it is not signed)', async () => {
    const { app, api } = await setup();
    const other = await signed(api, 'hook.ticket', body, SECRET, { 'x-tenant-id': 'globex' });
    expect(other.statusCode).toBe(400);
    expect(other.json().error).toMatchObject({ code: 'invalid_request', details: { issues: [{ path: 'headers.x-tenant-id' }] } });
    const none = await signed(api, 'hook.plain', body, SECRET, { 'x-tenant-id': 'acme' });
    expect(none.statusCode).toBe(400);
    expect(await jobCount(app)).toBe(0);
    const same = await signed(api, 'hook.ticket', body, SECRET, { 'x-tenant-id': 'acme' });
    expect(same.statusCode).toBe(202);
    expect(await jobCount(app)).toBe(1);
  });

  it('answers a task without `webhook`, or a workflow, exactly as a task that does not exist (404 unknown_hook)', async () => {
    const { app, api } = await setup();
    const unknown = await signed(api, 'no.such.task', body);
    expect(unknown.statusCode).toBe(404);
    expect(unknown.json().error).toEqual({ code: 'unknown_hook', message: 'No task named "no.such.task" takes webhooks here', details: { task: 'no.such.task' } });
    const shape = (res: typeof unknown, name: string) => ({ ...res.json(), error: { ...res.json().error, message: res.json().error.message.replace(name, 'NAME'), details: { task: 'NAME' } } });
    for (const name of ['hook.internal', 'hook.flow']) {
      for (const res of [await signed(api, name, body), await post(api, name, body), await post(api, name, 'not json', { 'content-type': 'text/plain' })]) {
        expect(res.statusCode, name).toBe(404);
        expect(shape(res, name), name).toEqual(shape(unknown, 'no.such.task'));
        expect(Object.keys(res.headers).sort(), name).toEqual(Object.keys(unknown.headers).sort());
      }
    }
    expect(await jobCount(app)).toBe(0);
  });

  it('is open to requests without an API key: the route says so in its config', async () => {
    const app = await openTestApp('sqlite', [ticket]);
    const server = Fastify();
    onCleanup(() => server.close());
    const configs = new Map<string, unknown>();
    server.addHook('onRoute', (route) => {
      configs.set(`${route.method} ${route.url}`, route.config);
    });
    await server.register(celerityApi, { app });
    await server.ready();
    expect(configs.get('POST /v1/hooks/:task')).toMatchObject({ celerity: { open: true } });
  });
});

describe('celerity hooks sign', () => {
  it('prints the header value of a body given inline, in a file or on stdin', () => {
    const text = '{"id": "Zoë"}\n';
    const dir = mkdtempSync(join(tmpdir(), 'celerity-sign-'));
    onCleanup(() => rmSync(dir, { recursive: true, force: true }));
    const file = join(dir, 'body.json');
    writeFileSync(file, text);
    const expected = signWebhook(SECRET, text, 1_700_000_000);
    const stdin = () => Buffer.from(text);
    expect(signCommand({ secret: SECRET, body: text, timestamp: '1700000000' }, {}, stdin)).toBe(expected);
    expect(signCommand({ secret: SECRET, bodyFile: file, timestamp: '1700000000' }, {}, stdin)).toBe(expected);
    expect(signCommand({ timestamp: '1700000000' }, { CELERITY_WEBHOOK_SECRET: SECRET }, stdin)).toBe(expected);
    expect(() => signCommand({ body: text }, {}, stdin)).toThrow(/--secret/);
    expect(() => signCommand({ secret: SECRET, body: text, bodyFile: file }, {}, stdin)).toThrow(/not both/);
    expect(() => signCommand({ secret: SECRET, body: text, timestamp: 'soon' }, {}, stdin)).toThrow(/--timestamp/);
    expect(() => signCommand({ secret: SECRET, bodyFile: join(dir, 'missing.json') }, {}, stdin)).toThrow(/cannot read/);

    // Through the built CLI (`npm run build`), as the README's curl line runs it.
    const bin = join(import.meta.dirname, '..', 'bin', 'celerity.js');
    const res = spawnSync(process.execPath, [bin, 'hooks', 'sign', '--secret', SECRET, '--body-file', file, '--timestamp', '1700000000'], { encoding: 'utf8', timeout: 20_000 });
    expect(res.stderr).toBe('');
    expect(res.status).toBe(0);
    expect(res.stdout).toBe(`${expected}\n`);
  });
});
