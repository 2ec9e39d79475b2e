import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { App } from '../app.ts';
import { appMetrics, type Metrics } from '../ops/metrics.ts';
import { notReadyMessage, probeDependencies, probeRedis } from '../ops/readiness.ts';
import type { Worker } from './worker.ts';

export interface HealthServerOptions {
  app: App;
  port: number;
  /** Interface to listen on; default all (probes come from the kubelet, scrapes from Prometheus). */
  host?: string;
  /** The worker whose readiness `/readyz` reports; may be attached later with {@link HealthServer.attach}. */
  worker?: Worker;
  /**
   * What the process is: a worker (the default: ready while Redis answers
   * and the worker fetches jobs) or a `celerity recorder` (ready while Redis
   * and the job store both answer: it needs both to write the history).
   */
  role?: 'worker' | 'recorder';
}

/**
 * A worker's or a recorder's probe and scrape port, on plain `node:http`
 * (neither has an API server to hang them on):
 * - `/healthz`: 200 while the process runs (liveness);
 * - `/readyz`: 503 naming the cause while Redis does not answer or the
 *   worker is not fetching jobs (not started yet, reconnecting, closing);
 *   for a recorder, while Redis or the job store does not answer; else 200;
 * - `/metrics`: the app's Prometheus metrics (a recorder's: its lag and
 *   what it could not write).
 */
export class HealthServer {
  private readonly server: Server;
  private readonly app: App;
  private readonly metrics: Metrics;
  private worker: Worker | undefined;
  private untrack: (() => void) | undefined;
  private readonly role: 'worker' | 'recorder';

  constructor(opts: Omit<HealthServerOptions, 'port' | 'host'>) {
    this.app = opts.app;
    this.role = opts.role ?? 'worker';
    this.metrics = appMetrics(opts.app);
    if (opts.worker) this.attach(opts.worker);
    this.server = createServer((req, res) => {
      this.handle(req, res).catch((err: unknown) => {
        this.app.logger.error({ err, url: req.url }, 'health server request failed');
        if (!res.headersSent) send(res, 500, { error: { code: 'internal_error', message: 'Internal server error', details: null } });
        else res.destroy();
      });
    });
    // Probes open a connection per request; none should hold a shutdown up.
    this.server.keepAliveTimeout = 1_000;
  }

  /** Reports `worker`'s readiness and counts its active jobs. */
  attach(worker: Worker): void {
    this.untrack?.();
    this.worker = worker;
    this.untrack = this.metrics.trackWorker(worker);
  }

  /** Listens; rejects with the listen error (`EADDRINUSE`...) as Node gives it. */
  listen(port: number, host?: string): Promise<void> {
    return new Promise((resolve, reject) => {
      const onError = (err: Error) => reject(err);
      this.server.once('error', onError);
      this.server.listen(port, host, () => {
        this.server.off('error', onError);
        resolve();
      });
    });
  }

  /** The port listened on (useful with port 0). */
  get port(): number {
    return (this.server.address() as AddressInfo).port;
  }

  async close(): Promise<void> {
    this.untrack?.();
    if (!this.server.listening) return;
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeAllConnections();
    await closed;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      return send(res, 405, { error: { code: 'method_not_allowed', message: `${req.method} is not allowed here`, details: null } });
    }
    switch (path) {
      case '/healthz':
        return send(res, 200, { status: 'ok' });
      case '/readyz':
        return this.readiness(res);
      case '/metrics': {
        const text = await this.metrics.render();
        res.writeHead(200, { 'content-type': this.metrics.contentType, 'content-length': Buffer.byteLength(text) });
        res.end(req.method === 'HEAD' ? undefined : text);
        return;
      }
      default:
        return send(res, 404, { error: { code: 'not_found', message: `No route ${req.method} ${path}`, details: null } });
    }
  }

  private async readiness(res: ServerResponse): Promise<void> {
    if (this.role === 'recorder') return this.recorderReadiness(res);
    const redis = await probeRedis(this.app);
    const fetching = this.worker?.isFetching() ?? false;
    if (redis === 'up' && fetching) return send(res, 200, { status: 'ready', redis, fetching });
    // Redis first: a lost connection also stops the fetching, and is the cause to fix.
    const message = redis === 'down' ? 'redis is down' : this.worker ? 'the worker is not fetching jobs' : 'the worker has not started';
    send(res, 503, { error: { code: 'not_ready', message, details: { redis, fetching } } });
  }

  private async recorderReadiness(res: ServerResponse): Promise<void> {
    const { redis, store, down } = await probeDependencies(this.app);
    if (down.length === 0) return send(res, 200, { status: 'ready', redis, store });
    send(res, 503, { error: { code: 'not_ready', message: notReadyMessage(down), details: { redis, store } } });
  }
}

/** Creates a {@link HealthServer} and listens on `opts.port`. */
export async function startHealthServer(opts: HealthServerOptions): Promise<HealthServer> {
  const server = new HealthServer(opts);
  await server.listen(opts.port, opts.host);
  return server;
}

function send(res: ServerResponse, status: number, payload: unknown): void {
  const text = JSON.stringify(payload);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' });
  res.end(text);
}
