import { isIP } from 'node:net';
import { z } from 'zod';
import { ConfigError } from './errors.ts';
import { clusterHashTag } from './broker/keys.ts';
import { MAX_TIME_LIMIT_MS } from './limits.ts';
import { parseWeights } from './fairness/weights.ts';
import { MAX_SEARCH_PATHS, parseSearchPath, SEARCH_PATH_RULE, type SearchPath } from './store/search-indexes.ts';

/**
 * Every option, with the environment variable it is read from. Flags given to
 * the CLI override the environment. The README's configuration table mirrors
 * this list (a test keeps them in step).
 */
export const OPTIONS = {
  redisUrl: { env: 'REDIS_URL', flag: '--redis-url', doc: 'Redis server Celerity uses (queues, progress, results) unless `CELERITY_BROKER_URL` says otherwise.', default: 'redis://127.0.0.1:6379' },
  brokerUrl: { env: 'CELERITY_BROKER_URL', flag: '--broker-url', doc: 'Redis server of the broker; falls back to `REDIS_URL`.', default: '(REDIS_URL)' },
  prefix: {
    env: 'CELERITY_PREFIX',
    flag: '--prefix',
    doc: "Key prefix of every Redis key. Wrap it in braces (`{celerity}`) on Redis Cluster so that a queue's keys share a hash slot.",
    default: 'celerity',
  },
  redisCluster: {
    env: 'CELERITY_REDIS_CLUSTER',
    flag: '--redis-cluster',
    doc: '`on`: Redis is a Redis Cluster, reached through the broker URL, which may list several seed nodes (`redis://10.0.0.1:6379,redis://10.0.0.2:6379`); the prefix must then carry a hash tag (`{celerity}`). See docs/deploy.md.',
    default: 'off',
  },
  databaseUrl: { env: 'DATABASE_URL', flag: '--database-url', doc: 'PostgreSQL URL of the job store. When unset, the store is SQLite at `CELERITY_SQLITE_PATH`.', default: '(unset)' },
  databaseSchema: {
    env: 'CELERITY_DB_SCHEMA',
    flag: '--db-schema',
    doc: "PostgreSQL schema of Celerity's tables (created if missing). Celerity reads and writes no table outside it; an app's table sets go in schemas of their own (`<schema>_<name>` by default).",
    default: 'celerity',
  },
  sqlitePath: { env: 'CELERITY_SQLITE_PATH', flag: '--sqlite-path', doc: 'SQLite file of the job store when `DATABASE_URL` is unset.', default: './.celerity/celerity.db' },
  resultTtl: { env: 'CELERITY_RESULT_TTL', flag: '--result-ttl', doc: 'Seconds a finished job (result or error) stays in Redis. The SQL store keeps it after that.', default: '3600' },
  port: { env: 'PORT', flag: '--port', doc: 'HTTP port of the API.', default: '8080' },
  host: { env: 'HOST', flag: '--host', doc: 'Interface the API listens on.', default: '0.0.0.0' },
  concurrency: { env: 'CELERITY_CONCURRENCY', flag: '--concurrency', doc: 'Jobs a worker runs at once, per queue.', default: '10' },
  softTimeLimit: {
    env: 'CELERITY_SOFT_TIME_LIMIT',
    flag: '--soft-time-limit',
    doc: 'Default soft time limit of an attempt, in ms: `ctx.signal` aborts with `SoftTimeLimitExceeded`. Tasks and calls may set their own.',
    default: '(none)',
  },
  hardTimeLimit: {
    env: 'CELERITY_HARD_TIME_LIMIT',
    flag: '--hard-time-limit',
    doc: "Default hard time limit of an attempt, in ms: the attempt fails with `TimeLimitExceeded` (an isolated task's thread is terminated).",
    default: '(none)',
  },
  cancelGrace: {
    env: 'CELERITY_CANCEL_GRACE',
    flag: '--cancel-grace',
    doc: 'Ms a cancelled running job has to honour `ctx.signal` before its attempt is ended (its thread terminated, if isolated).',
    default: '5000',
  },
  shutdownGrace: {
    env: 'CELERITY_SHUTDOWN_GRACE',
    flag: '--shutdown-grace',
    doc: 'Ms a stopping worker lets running jobs finish; jobs still running then go back to their queue without losing an attempt.',
    default: '30000',
  },
  lockDuration: {
    env: 'CELERITY_LOCK_DURATION',
    flag: '--lock-duration',
    doc: "Ms a worker's lock on a running job lasts (renewed at half-time). A job whose worker died runs again within about lock duration + stalled interval.",
    default: '30000',
  },
  stalledInterval: { env: 'CELERITY_STALLED_INTERVAL', flag: '--stalled-interval', doc: 'Ms between checks for jobs whose worker died (expired locks).', default: '30000' },
  heartbeatInterval: {
    env: 'CELERITY_HEARTBEAT_INTERVAL',
    flag: '--heartbeat-interval',
    doc: "Ms between a worker's heartbeats to the worker registry (`celerity inspect`, `GET /v1/workers`). A worker that stops beating (killed, frozen) disappears from it within 3 × this interval; one that stops gracefully, at once.",
    default: '5000',
  },
  maxStalled: { env: 'CELERITY_MAX_STALLED', flag: '--max-stalled', doc: 'Times a job may lose its worker (crash) and be run again before it fails.', default: '5' },
  maxTasksPerChild: { env: 'CELERITY_MAX_TASKS_PER_CHILD', flag: '--max-tasks-per-child', doc: 'An isolation thread is replaced after this many jobs.', default: '(none)' },
  maxMemoryPerChild: { env: 'CELERITY_MAX_MEMORY_PER_CHILD', flag: '--max-memory-per-child', doc: 'An isolation thread whose heap exceeds this many MB after a job is replaced.', default: '(none)' },
  idempotencyTtl: { env: 'CELERITY_IDEMPOTENCY_TTL', flag: '--idempotency-ttl', doc: 'Seconds an idempotency key keeps returning the same job.', default: '86400' },
  queues: { env: 'CELERITY_QUEUES', flag: '--queues', doc: "Comma-separated queues a worker consumes. Default: every queue of the app's tasks.", default: '(all)' },
  logLevel: { env: 'LOG_LEVEL', flag: '--log-level', doc: 'pino level: fatal, error, warn, info, debug, trace or silent.', default: 'info' },
  bodyLimit: { env: 'CELERITY_BODY_LIMIT', flag: '--body-limit', doc: 'Largest accepted request body in bytes.', default: '1048576' },
  rateLimitSubmit: {
    env: 'CELERITY_RATE_LIMIT_SUBMIT',
    flag: '--rate-limit-submit',
    doc: 'Submissions (`POST /v1/jobs` and the other submitting routes, uploads) an API key may make per window, shared by every API process through Redis; webhooks get the same budget per sender IP. Past it the API answers 429 `rate_limited` with `Retry-After`. 0 turns the limit off.',
    default: '6000',
  },
  rateLimitRead: {
    env: 'CELERITY_RATE_LIMIT_READ',
    flag: '--rate-limit-read',
    doc: 'Other authenticated requests (reads, cancels) an API key may make per window, counted apart from submissions. 0 turns the limit off.',
    default: '60000',
  },
  rateLimitWindow: {
    env: 'CELERITY_RATE_LIMIT_WINDOW',
    flag: '--rate-limit-window',
    doc: "Length in ms of the rate limits' fixed window: a key's count starts at its first request and resets when the window ends.",
    default: '60000',
  },
  authFailureLimit: {
    env: 'CELERITY_AUTH_FAILURE_LIMIT',
    flag: '--auth-failure-limit',
    doc: "Failed authentications (an API key sent and refused: malformed, unknown, revoked, a wrong secret; a request with no key does not count) one client IP may make per `CELERITY_RATE_LIMIT_WINDOW`, on the job API and the dashboard login together, counted in Redis across API processes. Past it, every request from that IP that needs a key answers 429 `rate_limited` with `Retry-After` until the window ends, a valid key's included, and no key is looked up. 0 turns the limit off.",
    default: '20',
  },
  corsOrigins: {
    env: 'CELERITY_CORS_ORIGINS',
    flag: '--cors-origins',
    doc: 'Comma-separated origins (`https://app.example.com`) whose browser pages may call the API (CORS). `*` allows any origin, without credentials. Unset: no CORS headers at all, so browsers refuse cross-origin calls.',
    default: '(none)',
  },
  trustProxy: {
    env: 'CELERITY_TRUST_PROXY',
    flag: '--trust-proxy',
    doc: "Which peers' `X-Forwarded-For`/`-Proto`/`-Host` the API believes (the client IP is what IP rate limits count): `false`, `true` (any peer: only when nothing but the proxy can reach the API), or comma-separated addresses and CIDRs of the proxies (`10.0.0.0/8`, also `loopback`, `linklocal`, `uniquelocal`).",
    default: 'false',
  },
  eventsMaxLen: {
    env: 'CELERITY_EVENTS_MAX_LEN',
    flag: '--events-max-len',
    doc: "Safety cap on each queue's event stream. The recorder trims what it has stored; this cap only bites when no recorder runs.",
    default: '1000000',
  },
  recorderClaimIdle: {
    env: 'CELERITY_RECORDER_CLAIM_IDLE',
    flag: '--recorder-claim-idle',
    doc: 'Ms after which events read but not written by a recorder (its process died) are taken over by another.',
    default: '30000',
  },
  recorder: {
    env: 'CELERITY_RECORDER',
    flag: '--recorder',
    doc: "`on`: this process (`worker`, `serve`, `dev`) runs a recorder, writing the SQL history from the event streams; recorders share the work. `off`: it does not, for API processes that should spend their CPU on requests alone, or for every process when `celerity recorder` processes write the history (docs/deploy.md). At least one process must record, or the history stops (the API's `/readyz` then answers 503, see `CELERITY_RECORDER_MAX_LAG`). `celerity recorder` records whatever this says.",
    default: 'on',
  },
  recorderBatch: { env: 'CELERITY_RECORDER_BATCH', flag: '--recorder-batch', doc: 'Most events the recorder folds into one SQL transaction.', default: '2000' },
  recorderYield: {
    env: 'CELERITY_RECORDER_YIELD',
    flag: '--recorder-yield',
    doc: "How long the recorder of a process busy with its own jobs (adding or running them, its event loop at least 70% used) leaves the event streams to the other recorders before it looks whether they keep up: if the history's lag (its oldest entry not yet acknowledged) is under half this long, it yields again; else it reads until it has caught up. The history's CPU goes where there is some to spare; with no other recorder, the history trails by up to this much more. 0: a recorder never yields. `celerity recorder` never does (it adds and runs no jobs).",
    default: '1000',
  },
  recorderMaxLag: {
    env: 'CELERITY_RECORDER_MAX_LAG',
    flag: '--recorder-max-lag',
    doc: "Ms the SQL history may trail the event streams (the age of the oldest event no recorder has written) before the API's `/readyz` answers 503. 0 turns the check off.",
    default: '60000',
  },
  uploadDir: {
    env: 'CELERITY_UPLOAD_DIR',
    flag: '--upload-dir',
    doc: 'Directory of the files received by `POST /v1/uploads`, until their job ends. The API and the workers must share it (same path on shared storage).',
    default: './.celerity/uploads',
  },
  uploadMaxBytes: { env: 'CELERITY_UPLOAD_MAX_BYTES', flag: '--upload-max-bytes', doc: 'Largest accepted upload in bytes; a bigger file is refused with 413.', default: '104857600' },
  uploadTtl: {
    env: 'CELERITY_UPLOAD_TTL',
    flag: '--upload-ttl',
    doc: "Seconds an orphan upload (its job gone without removing it) is kept before the API's janitor removes it. Must exceed the longest time a job waits and runs.",
    default: '86400',
  },
  historyRetention: {
    env: 'CELERITY_HISTORY_RETENTION',
    flag: '--history-retention',
    doc: 'Days the SQL history keeps a finished job before the `celerity.purge` maintenance task deletes it; 0 keeps it for ever.',
    default: '30',
  },
  metricsRetention: {
    env: 'CELERITY_METRICS_RETENTION',
    flag: '--metrics-retention',
    doc: 'Days the hourly job metrics (`GET /v1/stats?granularity=hour`) are kept before `celerity.purge` deletes them; 0 keeps them for ever. Per-minute metrics are kept 48 hours (or this, if shorter); the totals behind the cluster-wide Prometheus counters are never deleted.',
    default: '30',
  },
  auth: {
    env: 'CELERITY_AUTH',
    flag: '--auth',
    doc: '`keys`: every route of the job API but `/healthz`, `/readyz`, `/openapi.json` and signed webhooks needs an API key (`celerity keys create`); `celerity serve` refuses to start without one. `off`: no authentication, every caller is an admin of every tenant (a warning is logged); only behind a gateway that authenticates for you.',
    default: 'keys',
  },
  metricsTenants: {
    env: 'CELERITY_METRICS_TENANTS',
    flag: '--metrics-tenants',
    doc: 'Distinct tenants a process names in the `tenant` label of the `celerity_tenant_*` metrics; later ones are counted as `(other)`, so that the series stay bounded. 0: every tenant is `(other)`.',
    default: '100',
  },
  metricsToken: {
    env: 'CELERITY_METRICS_TOKEN',
    flag: '--metrics-token',
    doc: 'A token Prometheus may send as `Authorization: Bearer <token>` to read `/metrics`, instead of an API key with the `ops:read` scope. At least 16 characters.',
    default: '(unset)',
  },
  searchTimeout: {
    env: 'CELERITY_SEARCH_TIMEOUT',
    flag: '--search-timeout',
    doc: 'Ms a search of the job history (`GET /v1/jobs`) may take. A search that checks rows one by one (error text, JSON paths) then returns what it found with `partial: true` and a cursor to continue; one that found nothing in time answers 503 `query_timeout`. See docs/search.md.',
    // Parenthesised: applied where it is read (DEFAULT_SEARCH_TIMEOUT_MS), so that a config without it stays as it was.
    default: '(5000)',
  },
  searchPaths: {
    env: 'CELERITY_SEARCH_PATHS',
    flag: '--search-paths',
    doc: 'Comma-separated JSON paths of the input or result (`input.ticket_id,result.invoice.id`, at most 16) to keep an index on, so that `where` searches on them answer without reading the history row by row. Created when a process opens the store (concurrently on PostgreSQL); each one costs every write of a job row. See docs/search.md.',
    default: '(unset)',
  },
  healthPort: {
    env: 'CELERITY_HEALTH_PORT',
    flag: '--health-port',
    doc: 'Port on which `celerity worker` and `celerity recorder` serve `/healthz`, `/readyz` and `/metrics` (for probes and Prometheus). Unset: no such server.',
    default: '(unset)',
  },
  capRecheck: {
    env: 'CELERITY_CAP_RECHECK',
    flag: '--cap-recheck',
    doc: "Ms a job held back by its tenant's concurrency cap (`createApp({ queueLimits })`) waits before it is tried again, without spending an attempt.",
    default: '1000',
  },
  fairQueues: {
    env: 'CELERITY_FAIR_QUEUES',
    flag: '--fair-queues',
    doc: 'Comma-separated queues whose jobs start in weighted fair order between tenants (see docs/semantics.md, Fair scheduling). Other queues run first-in first-out and pay nothing.',
    default: '(none)',
  },
  fairWeights: {
    env: 'CELERITY_FAIR_WEIGHTS',
    flag: '--fair-weights',
    doc: 'Tenant weights on fair queues, `<queue>:<tenant>=<weight>,…` (default weight 1; a weight set through `PUT /v1/queues/:name/tenants/:tenant/weight` wins). Workers write them to Redis when they start.',
    default: '(none)',
  },
  fairWindow: {
    env: 'CELERITY_FAIR_WINDOW',
    flag: '--fair-window',
    doc: "Most jobs of a fair queue kept runnable in BullMQ's wait list; the rest wait in their tenants' backlogs. Keep it near twice the queue's total concurrency: lower leaves slots idle, higher makes a new tenant's job wait behind more of the others'.",
    default: '40',
  },
} as const;

export type OptionName = keyof typeof OPTIONS;

const positiveInt = z.coerce.number().int().positive();

function commaList(s: string): string[] {
  return s
    .split(',')
    .map((item) => item.trim())
    .filter(Boolean);
}

// What a browser sends as Origin: a scheme and a host, with no path. A
// configured `https://app.example.com/` would never match and fail silently.
const ORIGIN = /^(?:\*|[a-z][a-z0-9+.-]*:\/\/[^/?#\s*]+)$/i;

// proxy-addr's names for the private ranges, accepted by Fastify's trustProxy.
const PROXY_RANGES = new Set(['loopback', 'linklocal', 'uniquelocal']);

/**
 * `true`, `false`, or the proxies' addresses and CIDRs. A hop count is
 * refused rather than passed on: Fastify 5 no longer honours one (it cannot
 * tell the proxy from a client that sends the header itself) and would
 * silently trust nobody.
 */
function parseTrustProxy(value: string, ctx: z.RefinementCtx): boolean | string[] {
  const text = value.trim().toLowerCase();
  if (text === 'false') return false;
  if (text === 'true') return true;
  if (/^\d+$/.test(text)) {
    ctx.addIssue({ code: 'custom', message: "a hop count is not supported (Fastify ignores it): list the proxies' addresses or CIDRs instead" });
    return z.NEVER;
  }
  const entries = commaList(value);
  const bad = entries.find((entry) => !PROXY_RANGES.has(entry) && !isAddressOrCidr(entry));
  if (entries.length === 0 || bad !== undefined) {
    ctx.addIssue({ code: 'custom', message: `must be true, false, or comma-separated IP addresses or CIDRs${bad === undefined ? '' : ` (not one: ${JSON.stringify(bad)})`}` });
    return z.NEVER;
  }
  return entries;
}

function isAddressOrCidr(entry: string): boolean {
  const slash = entry.lastIndexOf('/');
  const address = slash === -1 ? entry : entry.slice(0, slash);
  const version = isIP(address);
  if (version === 0) return false;
  if (slash === -1) return true;
  const bits = entry.slice(slash + 1);
  return /^\d{1,3}$/.test(bits) && Number(bits) <= (version === 4 ? 32 : 128);
}

/** Whether `value` parses as a URL (a port that is not a number, say, does not). */
function parsesAsUrl(value: string): boolean {
  try {
    new URL(value);
    return true;
  } catch {
    return false;
  }
}

/** The password of every `scheme://user:password@` in `text`, masked: config errors end up in logs. */
function maskPasswords(text: string): string {
  return text.replace(/([a-z][a-z0-9+.-]*:\/\/[^\s/:@,"]*:)[^\s/@,"]*@/gi, '$1***@');
}

const schema = z.object({
  redisUrl: z.string().regex(/^rediss?:\/\//, 'must be a redis:// or rediss:// URL'),
  brokerUrl: z.string().regex(/^rediss?:\/\//, 'must be a redis:// or rediss:// URL'),
  prefix: z
    .string()
    .min(1)
    .regex(/^[^\s:]+$/, 'must be non-empty, without spaces or colons'),
  redisCluster: z.enum(['on', 'off']),
  databaseUrl: z
    .string()
    .regex(/^postgres(ql)?:\/\//, 'must be a postgres:// URL')
    .optional(),
  databaseSchema: z.string().regex(/^[a-z_][a-z0-9_]{0,40}$/, 'must be a lower-case SQL identifier of at most 41 characters'),
  sqlitePath: z.string().min(1),
  resultTtl: positiveInt,
  port: z.coerce.number().int().min(0).max(65535),
  host: z.string().min(1),
  concurrency: positiveInt.max(10_000),
  // Node's timers overflow past 2^31 - 1 ms and fire at once.
  softTimeLimit: positiveInt.max(MAX_TIME_LIMIT_MS).optional(),
  hardTimeLimit: positiveInt.max(MAX_TIME_LIMIT_MS).optional(),
  cancelGrace: z.coerce.number().int().min(0),
  shutdownGrace: z.coerce.number().int().min(0),
  lockDuration: positiveInt.min(1000),
  stalledInterval: positiveInt.min(500),
  maxStalled: z.coerce.number().int().min(0),
  heartbeatInterval: positiveInt.min(100).max(600_000),
  maxTasksPerChild: positiveInt.optional(),
  maxMemoryPerChild: positiveInt.optional(),
  idempotencyTtl: positiveInt,
  queues: z
    .string()
    .transform((s) =>
      s
        .split(',')
        .map((q) => q.trim())
        .filter(Boolean),
    )
    .optional(),
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']),
  bodyLimit: positiveInt,
  rateLimitSubmit: z.coerce.number().int().min(0),
  rateLimitRead: z.coerce.number().int().min(0),
  // A day at most: a longer window would make a 429's Retry-After useless.
  rateLimitWindow: positiveInt.min(1000).max(86_400_000),
  authFailureLimit: z.coerce.number().int().min(0),
  corsOrigins: z
    .string()
    .transform(commaList)
    .pipe(z.array(z.string().regex(ORIGIN, 'each origin must be scheme://host[:port], without a path or trailing slash, or * alone')))
    .refine((origins) => !origins.includes('*') || origins.length === 1, 'each origin must be scheme://host[:port], without a path or trailing slash, or * alone')
    .optional(),
  trustProxy: z.string().transform(parseTrustProxy),
  eventsMaxLen: positiveInt.min(1000),
  recorder: z.enum(['on', 'off']),
  recorderBatch: positiveInt.max(50_000),
  recorderClaimIdle: positiveInt.min(1000),
  recorderMaxLag: z.coerce.number().int().min(0),
  recorderYield: z.coerce.number().int().min(0).max(60_000),
  uploadDir: z.string().min(1),
  uploadMaxBytes: positiveInt,
  uploadTtl: positiveInt,
  historyRetention: z.coerce.number().int().min(0),
  metricsRetention: z.coerce.number().int().min(0),
  searchTimeout: positiveInt.max(600_000).optional(),
  searchPaths: z
    .string()
    .transform(commaList)
    .pipe(z.array(z.string().refine((text) => parseSearchPath(text) !== null, `each path ${SEARCH_PATH_RULE}`)).max(MAX_SEARCH_PATHS, `at most ${MAX_SEARCH_PATHS} paths`))
    .transform((texts) => [...new Set(texts)].map((text) => parseSearchPath(text) as SearchPath))
    .optional(),
  healthPort: z.coerce.number().int().min(1).max(65535).optional(),
  auth: z.enum(['keys', 'off']),
  metricsTenants: z.coerce.number().int().min(0).max(10_000),
  metricsToken: z.string().min(16, 'must be at least 16 characters').optional(),
  capRecheck: positiveInt.min(10).max(3_600_000),
  fairQueues: z.string().transform(commaList).optional(),
  fairWeights: z
    .string()
    .transform((text, ctx) => {
      const parsed = parseWeights(text);
      if (typeof parsed === 'string') {
        ctx.addIssue({ code: 'custom', message: parsed });
        return z.NEVER;
      }
      return parsed;
    })
    .optional(),
  fairWindow: positiveInt.max(100_000),
});

/** The rules each option's value must meet (docs/configuration.md shows them, generated by scripts/config-doc.ts). */
export { schema as configSchema };

export type CelerityConfig = z.output<typeof schema>;

/** Values as given by the environment or by flags, before validation. */
export type RawConfig = Partial<Record<OptionName, string | number | undefined>>;

/**
 * Reads and validates the configuration. Flags win over the environment, the
 * environment over defaults. A bad value throws a {@link ConfigError} naming
 * the variable and the flag.
 */
export function loadConfig(opts: { env?: NodeJS.ProcessEnv; flags?: RawConfig } = {}): CelerityConfig {
  const env = opts.env ?? process.env;
  const flags = opts.flags ?? {};
  const raw: Record<string, unknown> = {};
  for (const [name, meta] of Object.entries(OPTIONS) as [OptionName, (typeof OPTIONS)[OptionName]][]) {
    const fromFlag = flags[name];
    const fromEnv = env[meta.env];
    const value = fromFlag ?? (fromEnv === '' ? undefined : fromEnv);
    if (value !== undefined) raw[name] = String(value);
    else if (!meta.default.startsWith('(')) raw[name] = meta.default;
  }
  raw.brokerUrl ??= raw.redisUrl;
  const parsed = schema
    .refine((c) => c.softTimeLimit === undefined || c.hardTimeLimit === undefined || c.softTimeLimit < c.hardTimeLimit, {
      message: 'must be lower than CELERITY_HARD_TIME_LIMIT',
      path: ['softTimeLimit'],
    })
    .superRefine(checkCluster)
    .safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const name = String(issue.path[0]) as OptionName;
    const meta = OPTIONS[name];
    throw new ConfigError(meta ? `${meta.env} (${meta.flag})` : name, maskPasswords(`${issue.message} (got ${JSON.stringify(raw[name])})`));
  }
  return parsed.data;
}

/**
 * Cluster mode: every key of a queue must hash to one slot (BullMQ's scripts
 * touch a queue's keys together, and Celerity's own scripts touch its keys
 * and BullMQ's together), so the prefix that starts every key must carry a
 * hash tag. Outside cluster mode the broker URL is one server.
 */
function checkCluster(c: { redisCluster: 'on' | 'off'; prefix: string; brokerUrl: string; redisUrl: string }, ctx: z.RefinementCtx): void {
  const urls = c.brokerUrl.split(',').map((u) => u.trim());
  if (c.redisCluster === 'off') {
    if (urls.length > 1) ctx.addIssue({ code: 'custom', path: ['brokerUrl'], message: 'lists several servers: set CELERITY_REDIS_CLUSTER=on for a Redis Cluster, or give one URL' });
    // Named as the user set it: the broker URL falls back to REDIS_URL.
    else if (!parsesAsUrl(c.brokerUrl)) ctx.addIssue({ code: 'custom', path: [c.brokerUrl === c.redisUrl ? 'redisUrl' : 'brokerUrl'], message: 'is not a valid URL (check the host and the port)' });
    return;
  }
  if (clusterHashTag(c.prefix) === null) {
    ctx.addIssue({
      code: 'custom',
      path: ['prefix'],
      message: `must carry a hash tag on a Redis Cluster (CELERITY_REDIS_CLUSTER=on), e.g. {${c.prefix.replace(/[{}]/g, '') || 'celerity'}}, so that all of Celerity's keys share one slot`,
    });
    return;
  }
  for (const url of urls) {
    let parsed: URL | undefined;
    try {
      parsed = new URL(url);
    } catch {}
    if (!parsed || !/^rediss?:$/.test(parsed.protocol) || !parsed.hostname) {
      ctx.addIssue({ code: 'custom', path: ['brokerUrl'], message: `each seed node must be a redis:// or rediss:// URL (not one: ${JSON.stringify(url)})` });
      return;
    }
    if (parsed.pathname !== '' && parsed.pathname !== '/' && parsed.pathname !== '/0') {
      ctx.addIssue({ code: 'custom', path: ['brokerUrl'], message: `a Redis Cluster has database 0 only (${JSON.stringify(url)} names another)` });
      return;
    }
  }
}
