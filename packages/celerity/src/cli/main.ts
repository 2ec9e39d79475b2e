import { readFileSync } from 'node:fs';
import { Command, Option } from 'commander';
import type { FastifyInstance } from 'fastify';
import type { App } from '../app.ts';
import { loadConfig, OPTIONS, type OptionName, type RawConfig } from '../config.ts';
import { ConfigError, StoreSetupError } from '../errors.ts';
import { createLogger } from '../logger.ts';
import type { Recorder } from '../store/recorder.ts';
import type { Worker } from '../worker/worker.ts';
import { HealthServer } from '../worker/health-server.ts';
import { appMetrics } from '../ops/metrics.ts';
import { CliError } from './cli-error.ts';
import { ensureDevRedis, type PrivateRedis } from './dev-redis.ts';
import { registerHooks } from './hooks.ts';
import { registerInspect } from './inspect.ts';
import { registerJobs } from './jobs.ts';
import { registerQueues } from './queues.ts';
import { devKey, registerKeys } from './keys.ts';
import { hasActiveKey } from '../auth/key-store.ts';

/** Where `celerity dev` keeps its admin key, for the README's curl lines. */
const DEV_KEY_FILE = '.celerity/dev-key';
import { loadApp } from './load-app.ts';
import { startSchedulesInBackground } from '../schedules/sync.ts';

type Flags = Partial<Record<OptionName, string>> & { app: string };

/** Adds the configuration flags a command accepts (each overrides its env variable). */
function withConfig(cmd: Command, names: OptionName[]): Command {
  for (const name of names) {
    const meta = OPTIONS[name];
    // Commander derives the attribute from the flag: --redis-url becomes redisUrl, as in OPTIONS.
    cmd.addOption(new Option(`${meta.flag} <value>`, `${meta.doc} [env ${meta.env}]`));
  }
  return cmd.requiredOption('--app <module>', 'module exporting the app (default export or `app`)');
}

const COMMON: OptionName[] = [
  'redisUrl',
  'brokerUrl',
  'prefix',
  'redisCluster',
  'databaseUrl',
  'databaseSchema',
  'sqlitePath',
  'resultTtl',
  'logLevel',
  'eventsMaxLen',
  'recorder',
  'recorderBatch',
  'recorderClaimIdle',
  'recorderYield',
  'uploadDir',
  'uploadTtl',
];
const WORKER: OptionName[] = [
  'queues',
  'concurrency',
  'softTimeLimit',
  'hardTimeLimit',
  'cancelGrace',
  'shutdownGrace',
  'lockDuration',
  'stalledInterval',
  'maxStalled',
  'maxTasksPerChild',
  'maxMemoryPerChild',
  'heartbeatInterval',
  'historyRetention',
  'metricsRetention',
];
const SERVER: OptionName[] = [
  'port',
  'host',
  'bodyLimit',
  'idempotencyTtl',
  'uploadMaxBytes',
  'auth',
  'metricsToken',
  'rateLimitSubmit',
  'rateLimitRead',
  'rateLimitWindow',
  'authFailureLimit',
  'corsOrigins',
  'trustProxy',
  'searchTimeout',
  'searchPaths',
];

/**
 * Loads the app module, then gives it the flags: they are layered over what
 * the app was created with and over the environment, and validated at once,
 * so that a bad value stops start-up with one line. Nothing is written into
 * `process.env`: the app reads its configuration only when it starts.
 */
async function prepare(flags: Flags, opts: { pretty?: boolean } = {}): Promise<App> {
  const given = configFlags(flags);
  // Validated before the module is imported: a bad flag is reported even when the module is broken.
  loadConfig({ flags: given });
  const app = await loadApp(flags.app);
  app.configure(given);
  if (opts.pretty) app.configure({}, { logger: createLogger(app.config.logLevel, { pretty: true }) });
  return app;
}

function configFlags(flags: Flags): RawConfig {
  const given: RawConfig = {};
  for (const name of Object.keys(OPTIONS) as OptionName[]) if (flags[name] !== undefined) given[name] = flags[name];
  return given;
}

interface Running {
  app: App;
  worker?: Worker;
  recorder?: Recorder;
  server?: FastifyInstance;
  redis?: PrivateRedis | null;
  health?: HealthServer;
}

/** How long a stopping process may take beyond its shutdown grace (closing connections, flushing the recorder). */
const SHUTDOWN_OVERRUN_MS = 5_000;

/**
 * First SIGTERM/SIGINT: stop taking jobs, let running ones finish, flush the
 * recorder, close connections, exit 0. A second signal exits at once.
 */
function onShutdown(running: Running): void {
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) {
      running.app.logger.warn({ signal }, 'second signal: exiting now');
      process.exit(1);
    }
    stopping = true;
    running.app.logger.info({ signal }, 'shutting down');
    // Redis or SQL being unreachable must not keep a stopping process alive
    // for ever (handing jobs back and flushing the recorder wait on them):
    // past the grace and a bounded flush, exit anyway. Jobs not handed back
    // keep their lock and are recovered as after a crash.
    const grace = running.worker ? running.app.config.shutdownGrace : 0;
    setTimeout(() => {
      running.app.logger.error({ signal }, 'shutdown did not finish in time (Redis or SQL unreachable, or a handler ignoring its signal?): exiting now');
      process.exit(1);
    }, grace + SHUTDOWN_OVERRUN_MS).unref();
    try {
      await running.server?.close();
      // Handlers that ignore their signal get most of the overrun to stop;
      // past it the worker leaves their jobs locked and the process exits,
      // which stops them: the stalled check then recovers the jobs.
      await running.worker?.close(running.app.config.shutdownGrace, { stopWaitMs: SHUTDOWN_OVERRUN_MS - 1_000 });
      // After the worker: liveness holds while running jobs finish.
      await running.health?.close();
      await running.recorder?.stop();
      await running.app.close();
      await running.redis?.stop();
      process.exit(0);
    } catch (err) {
      running.app.logger.error({ err }, 'shutdown failed');
      process.exit(1);
    }
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
}

/** Starts the worker and its recorder; `metrics`: this process serves `/metrics`, so the worker's jobs are counted. */
async function startWorker(app: App, metrics = false): Promise<Pick<Running, 'worker' | 'recorder'>> {
  const queues = app.config.queues ?? app.queueNames();
  const unknown = queues.filter((q) => !app.queueNames().includes(q));
  if (unknown.length > 0) {
    app.logger.warn({ queues: unknown }, 'consuming queues that no task of this app routes to');
  }
  const recorder = app.config.recorder === 'on' ? await app.startRecorder(app.queueNames()) : undefined;
  const worker = app.createWorker({ queues });
  if (metrics) appMetrics(app).trackWorker(worker);
  worker.start();
  // Every worker declares the app's schedules: BullMQ makes each tick one job however many do.
  startSchedulesInBackground(app);
  return { worker, ...(recorder ? { recorder } : {}) };
}

async function startServer(app: App): Promise<Pick<Running, 'server' | 'recorder'>> {
  // Loaded here, not at the top: the API (Fastify, its routes, the dashboard)
  // is a fifth of the CLI's start-up, which every other command (worker,
  // recorder, jobs, queues, inspect, keys) would pay for nothing.
  const { buildServer } = await import('../api/server.ts');
  const server = await buildServer(app);
  try {
    await server.listen({ port: app.config.port, host: app.config.host });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EADDRINUSE') throw new CliError(`Port ${app.config.port} is in use: set PORT or --port.`, 1);
    throw err;
  }
  return { server };
}

const { version } = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };

const program = new Command()
  .name('celerity')
  .description('Background jobs for TypeScript: workers, the job API and dev mode.')
  .version(version, '-V, --version', 'print the version of Celerity')
  .showHelpAfterError(false);

withConfig(program.command('worker').description("Run the app's tasks from their queues."), [...COMMON, ...WORKER, 'healthPort']).action(async (flags: Flags) => {
  const app = await prepare(flags);
  // Listening before the worker starts: a port in use stops start-up before any job is taken.
  const health = app.config.healthPort === undefined ? undefined : await startHealth(app, app.config.healthPort);
  const running: Running = { app, ...(await startWorker(app, health !== undefined)), ...(health ? { health } : {}) };
  if (health && running.worker) health.attach(running.worker);
  onShutdown(running);
});

async function startHealth(app: App, port: number, role: 'worker' | 'recorder' = 'worker'): Promise<HealthServer> {
  const health = new HealthServer({ app, role });
  try {
    await health.listen(port, app.config.host);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EADDRINUSE') throw new CliError(`Health port ${port} is in use: set CELERITY_HEALTH_PORT or --health-port.`, 1);
    throw err;
  }
  app.logger.info({ port }, 'health server listening (/healthz, /readyz, /metrics)');
  return health;
}

withConfig(program.command('serve').description('Serve the HTTP job API.'), [...COMMON, ...SERVER]).action(async (flags: Flags) => {
  const app = await prepare(flags);
  await app.store.check();
  await app.openStore();
  // Closed by default: an API without keys would answer every request 401,
  // or, worse, someone would turn authentication off to make it work.
  if (app.config.auth === 'keys' && !(await hasActiveKey(app.store))) {
    throw new CliError(
      'no API key exists, so the job API would refuse every request: create one with `celerity keys create --name admin --scopes admin`, or set CELERITY_AUTH=off to serve without authentication',
      1,
    );
  }
  if (app.store.dialect === 'postgres' && !(await app.store.rowSecurityEnforced())) {
    app.logger.warn("the database role bypasses row-level security (a superuser, or BYPASSRLS): tenant isolation rests on the API alone; connect with a role of Celerity's own (docs/security.md)");
  }
  // The API records too (unless told not to), so that the history follows even with no worker up.
  const recorder = app.config.recorder === 'on' ? await app.startRecorder() : undefined;
  const running: Running = { app, ...(recorder ? { recorder } : {}), ...(await startServer(app)) };
  onShutdown(running);
});

withConfig(program.command('dev').description('API and worker in one process, for development.'), [...COMMON, ...WORKER, ...SERVER]).action(async (flags: Flags) => {
  // Dev mode is for this machine: it listens on the loopback unless told otherwise.
  if (flags.host === undefined && !process.env.HOST) flags.host = '127.0.0.1';
  const config = loadConfig({ flags: configFlags(flags) });
  // A cluster is never started for you: it is named on purpose.
  const redis = config.redisCluster === 'on' ? null : await ensureDevRedis(config.brokerUrl, '.celerity/redis');
  if (redis) {
    flags.redisUrl = redis.url;
    flags.brokerUrl = redis.url;
  }
  const app = await prepare(flags, { pretty: true });
  await app.store.check();
  await app.openStore();
  const key = app.config.auth === 'keys' ? await devKey(app.store, DEV_KEY_FILE) : undefined;
  const worker = await startWorker(app, true);
  const running: Running = { app, redis, ...worker, ...(await startServer(app)) };
  onShutdown(running);
  const base = `http://${app.config.host === '0.0.0.0' || app.config.host === '127.0.0.1' ? 'localhost' : app.config.host}:${app.config.port}`;
  const first = app.tasks.has('math.add') ? '{"task":"math.add","input":{"a":2,"b":3}}' : `{"task":"${[...app.tasks.keys()][0] ?? 'my.task'}","input":{}}`;
  const auth = key ? ` -H "authorization: Bearer $(cat ${DEV_KEY_FILE})"` : '';
  console.log(`\nCelerity dev: API on ${base} (worker${running.recorder ? ', recorder' : ''}${redis ? `, private Redis ${redis.url}` : ''} in this process)`);
  if (key) console.log(`API key: ${key.token} (admin; ${key.created ? 'new, ' : ''}saved in ${DEV_KEY_FILE})`);
  else console.log('Warning: CELERITY_AUTH=off, the API takes requests without a key');
  console.log(`Tasks: ${base}/v1/tasks   OpenAPI: ${base}/openapi.json`);
  console.log(`Dashboard: ${base}/dashboard${key ? ' (log in with the API key above)' : ''}`);
  console.log(`Try:   curl -X POST ${base}/v1/jobs${auth} -H 'content-type: application/json' -d '${first}'`);
  console.log(`Then:  curl${auth} ${base}/v1/jobs/<job_id>\n`);
});

withConfig(
  program
    .command('recorder')
    .description(
      'Write the SQL history from the event streams, and nothing else: one process of its own (or a few) instead of a recorder in every worker and API process, which then run with CELERITY_RECORDER=off.',
    ),
  [...COMMON, 'healthPort'],
).action(async (flags: Flags) => {
  const app = await prepare(flags);
  await app.store.check();
  await app.openStore();
  const health = app.config.healthPort === undefined ? undefined : await startHealth(app, app.config.healthPort, 'recorder');
  // CELERITY_RECORDER is the other processes' switch: this one exists to record.
  const recorder = await app.startRecorder();
  app.logger.info({ queues: app.queueNames() }, 'recorder started');
  onShutdown({ app, recorder, ...(health ? { health } : {}) });
});

registerInspect(program);
registerKeys(program);
registerHooks(program);
registerJobs(program);
registerQueues(program);

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CliError || err instanceof ConfigError) {
    console.error(`celerity: ${err.message}`);
    process.exit(err instanceof CliError ? err.exitCode : 2);
  }
  if (err instanceof StoreSetupError) {
    console.error(`celerity: ${err.message}`);
    process.exit(1);
  }
  // Anything else is a bug or an outage: one line, the stack only when asked for.
  console.error(`celerity: ${(err as Error)?.message?.split('\n')[0] ?? String(err)}`);
  if (process.env.LOG_LEVEL === 'debug' || process.env.LOG_LEVEL === 'trace') console.error(err);
  process.exit(1);
}
