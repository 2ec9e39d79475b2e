import { createHash } from 'node:crypto';
import { errorCodes, type FastifyContextConfig, type FastifyInstance, type FastifyRequest } from 'fastify';
import type { App } from '../../app.ts';
import type { RouteAuth } from '../../auth/principal.ts';
import { keys } from '../../broker/keys.ts';
import { viaBroker } from '../../broker/connection.ts';
import type { EnqueueOptions } from '../../client/enqueue.ts';
import { InvalidHeaderError, InvalidSignatureError, UnknownHookError } from '../../errors.ts';
import { IDENTIFIER_PATTERN, IDENTIFIER_RULE, isIdentifierText, MAX_NAME_LENGTH, TASK_NAME_PATTERN } from '../../limits.ts';
import { secretsProblem, type Webhook, type WebhookSecret } from '../../webhook.ts';
import { parseSignatureHeader, verifyWebhook } from '../webhook-signature.ts';
import { sendAccepted, submittedResponseSchema } from './jobs.ts';

const identifier = { type: 'string', minLength: 1, maxLength: MAX_NAME_LENGTH, pattern: IDENTIFIER_PATTERN } as const;

interface HookHeaders {
  'celerity-signature'?: string;
  'idempotency-key'?: string;
  'x-delivery-id'?: string;
  'x-github-delivery'?: string;
  'x-tenant-id'?: string;
}

type HookRequest = FastifyRequest<{ Params: { task: string }; Headers: HookHeaders }>;

/** What the signature of a request proved. */
interface Authenticated {
  /** The tenant of the job: the one whose secret verified, or the task's fixed one. */
  tenant: string | null;
  timestamp: number;
  tolerance: number;
  /** Names what the signature covers (task, tenant, timestamp, body): one id per delivery, however many `v1` entries it carries. */
  replayId: string;
}

// Read by the API's authentication (see RouteAuth).
const OPEN: RouteAuth = { open: true };

const authenticated = new WeakMap<FastifyRequest, Authenticated>();
const NO_BODY = Buffer.alloc(0);

const description = `Takes a third party's JSON payload as the input of the task in the path, if that task takes webhooks (\`defineTask({ webhook })\`); any other name answers 404 \`unknown_hook\`, the same for a task that exists and one that does not.

The request must be signed: \`Celerity-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">\` with the task's secret (several \`v1=\` entries are allowed, e.g. during a rotation). A missing, malformed or wrong signature, or a timestamp more than the task's tolerance (default 300 s) away from now, answers 401 \`invalid_signature\` and enqueues nothing. The raw bytes are signed: send exactly the bytes you signed.

With a per-tenant secret, \`X-Tenant-Id\` names the tenant (required) and the signature proves it. With a fixed secret the job's tenant is the task's own, and an \`X-Tenant-Id\` that differs from it answers 400: the header is not signed.

A delivery id (\`Idempotency-Key\`, \`X-Delivery-Id\` or \`X-GitHub-Delivery\`) makes a redelivery return the first job (202, \`idempotent-replayed: true\`); a request replayed as is within the tolerance does the same, whatever delivery id it carries. No API key is needed: the signature is the authentication.`;

/**
 * Webhook intake: `POST /v1/hooks/:task` takes a third party's JSON payload
 * as the task's input as is (no envelope, since the sender cannot be made to
 * wrap it), for tasks that opt in with a `webhook` secret. The signature is
 * checked over the raw bytes before anything else is read of the body.
 * Senders retry deliveries, so a delivery id header makes the call
 * idempotent, and a replayed request returns the first job.
 */
export async function hookRoutes(server: FastifyInstance, { app }: { app: App }): Promise<void> {
  const webhookOf = (task: string): Webhook | undefined => app.tasks.get(task)?.webhook;

  /**
   * Verifies the signature of the request over its raw body; then refuses
   * an X-Tenant-Id the signature does not stand for. Throws before any part
   * of the body is interpreted.
   */
  async function authenticate(request: HookRequest, raw: Buffer): Promise<void> {
    const { task } = request.params;
    const webhook = webhookOf(task);
    if (!webhook) throw new UnknownHookError(task);
    const header = single(request.headers['celerity-signature']);
    // Unsigned is 401 before any other complaint, and costs no secret lookup.
    parseSignatureHeader(header);
    const tenantHeader = request.headers['x-tenant-id'];
    let secrets: WebhookSecret;
    let tenant: string | null;
    if (typeof webhook.secret === 'function') {
      tenant = tenantOf(tenantHeader);
      const found = await webhook.secret(tenant);
      // An unknown tenant looks like a wrong signature: which tenants exist is not the caller's business.
      if (found === undefined) throw new InvalidSignatureError('mismatch');
      const problem = secretsProblem(found);
      // The app's bug, not the caller's: a 500 that is logged, not a message to the sender.
      if (problem) throw new TypeError(`The webhook secret function of task "${task}" gave a bad secret: it ${problem}`);
      secrets = found;
    } else {
      secrets = webhook.secret;
      tenant = webhook.tenant ?? null;
    }
    const { timestamp } = verifyWebhook(header, raw, secrets, { tolerance: webhook.tolerance });
    if (typeof webhook.secret !== 'function' && tenantHeader !== undefined && tenantHeader !== webhook.tenant) {
      throw new InvalidHeaderError('x-tenant-id', "is not accepted: the signature does not cover it, so it cannot choose the tenant (the task's webhook sets it)");
    }
    const body = createHash('sha256').update(raw).digest('hex');
    const replayId = createHash('sha256')
      .update(JSON.stringify([task, tenant, timestamp, body]))
      .digest('base64url');
    authenticated.set(request, { tenant, timestamp, tolerance: webhook.tolerance, replayId });
  }

  // The raw bytes are what was signed: every body of this context is read as
  // a buffer and verified before it is parsed. Parsed afterwards as Fastify's
  // own JSON parser does, with the server's prototype-poisoning settings.
  const config = server.initialConfig as { onProtoPoisoning?: 'error' | 'remove' | 'ignore'; onConstructorPoisoning?: 'error' | 'remove' | 'ignore' };
  const defaultJson = server.getDefaultJsonParser(config.onProtoPoisoning ?? 'error', config.onConstructorPoisoning ?? 'error');
  const parseJson = (request: FastifyRequest, raw: Buffer) =>
    new Promise<unknown>((resolve, reject) => {
      // Typed for strings; it takes the buffer as well (secure-json-parse decodes it as UTF-8, BOM dropped).
      void defaultJson(request, raw as unknown as string, (err, body) => (err ? reject(err) : resolve(body)));
    });
  server.removeContentTypeParser('application/json');
  server.addContentTypeParser('application/json', { parseAs: 'buffer' }, async (request: FastifyRequest, raw: Buffer) => {
    await authenticate(request as HookRequest, raw);
    return parseJson(request, raw);
  });
  // Other media types are refused too, but only once signed: an unsigned request learns nothing but 401.
  server.addContentTypeParser('*', { parseAs: 'buffer' }, async (request: FastifyRequest, raw: Buffer) => {
    await authenticate(request as HookRequest, raw);
    throw new errorCodes.FST_ERR_CTP_INVALID_MEDIA_TYPE(String(request.headers['content-type'] ?? ''));
  });

  server.post<{ Params: { task: string }; Body: unknown; Headers: HookHeaders }>(
    '/v1/hooks/:task',
    {
      // The signature is the authentication: no API key is asked for.
      config: { celerity: OPEN } as FastifyContextConfig,
      schema: {
        summary: 'Receive a signed webhook: the JSON body is the input of the task named in the path',
        description,
        tags: ['hooks'],
        params: { type: 'object', properties: { task: { type: 'string', pattern: TASK_NAME_PATTERN } }, required: ['task'] },
        headers: {
          type: 'object',
          properties: {
            'celerity-signature': { type: 'string', description: '`t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">` (several `v1=` allowed).' },
            'idempotency-key': { ...identifier, description: 'Same delivery, same job (also X-Delivery-Id, X-GitHub-Delivery).' },
            'x-delivery-id': identifier,
            'x-github-delivery': identifier,
            'x-tenant-id': {
              ...identifier,
              description: "The sender's tenant, for a task with per-tenant secrets (required there); its signature proves it. Refused otherwise, unless it is the task's own tenant.",
            },
          },
          required: ['celerity-signature'],
        },
        body: { type: 'object', description: "The task's input (checked against its schema)." },
        response: {
          202: submittedResponseSchema,
          '4xx': { $ref: 'Error#' },
          503: { $ref: 'Error#' },
        },
      },
      // Before the body is read: a task that takes no webhooks is not told apart from one that does not exist.
      onRequest: async (request) => {
        if (!webhookOf(request.params.task)) throw new UnknownHookError(request.params.task);
      },
      // A request without a body never reached a parser: its signature is over no bytes.
      preValidation: async (request) => {
        if (!authenticated.has(request)) await authenticate(request, NO_BODY);
      },
      onError: async (request, _reply, error) => {
        if (error instanceof InvalidSignatureError) request.log.info({ task: request.params.task, reason: error.reason }, 'webhook refused: invalid signature');
      },
      onSend: async (_request, reply) => {
        // RFC 9110: a 401 names the scheme that would do.
        if (reply.statusCode === 401) reply.header('www-authenticate', 'Celerity-Signature');
      },
    },
    async (request, reply) => {
      const { task } = request.params;
      const auth = authenticated.get(request);
      if (!auth) throw new InvalidSignatureError('missing');
      const h = request.headers;
      const delivery = h['idempotency-key'] ?? h['x-delivery-id'] ?? h['x-github-delivery'];
      const own = delivery ? deliveryKey(task, auth.tenant, delivery) : `hook-sig:${auth.replayId}`;
      const options: EnqueueOptions = {
        idempotencyKey: await firstKey(app, auth, own),
        ...(auth.tenant !== null ? { tenant: auth.tenant } : {}),
        traceId: request.id,
      };
      return sendAccepted(request, reply, await app.enqueueByName(task, request.body, options));
    },
  );
}

/**
 * The idempotency key of a signed request: the key of the first request
 * that carried the same signed content within the tolerance, else its own.
 * A delivery id is not signed, so a captured request replayed with another
 * one (or none) would otherwise be a new delivery; this keeps it the first
 * job. The record outlives the last moment the signature is accepted.
 */
async function firstKey(app: App, auth: Authenticated, own: string): Promise<string> {
  const ttl = Math.max(1, auth.timestamp + auth.tolerance - Math.floor(Date.now() / 1000) + 1);
  const redis = app.broker.redis;
  const first = await viaBroker(redis, () => redis.eval(FIRST_KEY, 1, keys.hookDelivery(app.config.prefix, auth.replayId), own, ttl));
  return typeof first === 'string' ? first : own;
}

/** KEYS: the record of a signed content. ARGV: this request's key, TTL s. Returns the first request's key. */
const FIRST_KEY = `
local first = redis.call('GET', KEYS[1])
if first then return first end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return ARGV[1]`;

/**
 * The idempotency key of a delivery. A long task name and a long delivery id
 * together would pass the key's limit, which the sender cannot help: those
 * are hashed instead (still one key per task and delivery). Per-tenant
 * deliveries are hashed with their tenant: two tenants' senders may number
 * their deliveries alike.
 */
function deliveryKey(task: string, tenant: string | null, delivery: string): string {
  if (tenant !== null)
    return `hook:sha256:${createHash('sha256')
      .update(JSON.stringify([task, tenant, delivery]))
      .digest('base64url')}`;
  const key = `hook:${task}:${delivery}`;
  return key.length <= MAX_NAME_LENGTH ? key : `hook:sha256:${createHash('sha256').update(key).digest('base64url')}`;
}

/** The X-Tenant-Id of a request to a task with per-tenant secrets, checked before it reaches the app's secret function. */
function tenantOf(value: string | string[] | undefined): string {
  if (value === undefined || value === '') throw new InvalidHeaderError('x-tenant-id', "is required: this webhook's secret is per tenant");
  if (typeof value !== 'string' || value.length > MAX_NAME_LENGTH || !isIdentifierText(value)) {
    throw new InvalidHeaderError('x-tenant-id', `must be a tenant id (1-${MAX_NAME_LENGTH} characters): it ${IDENTIFIER_RULE}`);
  }
  return value;
}

function single(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value.join(',') : value;
}
