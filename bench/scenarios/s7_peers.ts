/**
 * s7_peers: the same N no-op jobs (20,000; 2,000 with --quick) through
 * Celerity (PostgreSQL history), raw BullMQ and the peers, in one run:
 * enqueue rate, then the rate of the drain with a durable record of each
 * job, one worker process at concurrency 50.
 *
 * - raw BullMQ and Celerity: as s1_throughput (lib/drains.ts). Celerity's
 *   drain counts when the SQL history holds every job `completed`. Celerity
 *   runs twice: as deployed by default (a recorder in every process), and
 *   with one `celerity recorder` process writing the history.
 * - pg-boss 12, two ways (bench/peers/pgboss.mjs): one job per handler, and
 *   its batch mode. Its job table keeps completed jobs: that is its record.
 * - graphile-worker 0.18 (bench/peers/graphile.mjs), which deletes a job when
 *   it completes: its drain ends when the table is empty (no record is kept).
 * - Celery 5.2, prefork with 2 processes (bench/peers/celery_peer.py), when
 *   Debian's python3-celery is installed; its record is the Redis result
 *   backend.
 *
 * Each peer is set up as its own documentation advises for throughput; the
 * driver scripts cite the page. Enqueue is one call per job for every
 * system, `inFlight` calls pending at once.
 *
 * The Node peers live in bench/peers with a lockfile of their own, apart
 * from the root's: their `engines` ask for Node 22, while Celerity supports
 * Node 20. A full run installs them (`npm ci --prefix bench/peers`) when
 * they are missing; --quick uses them only if already installed, and notes
 * any peer it skips.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { celerityDrain, type DrainOptions, rawDrain, warmUp } from '../lib/drains.ts';
import { cleanEnv, dropSchema, token } from '../lib/env.ts';
import { perSecond, ratio, round } from '../lib/measure.ts';
import { Proc, ROOT } from '../lib/procs.ts';
import type { Row, Scenario, ScenarioContext } from '../lib/types.ts';

const PEERS_DIR = join(ROOT, 'bench', 'peers');
/** Debian's interpreter, where python3-celery installs (a pyenv `python3` on PATH would not see it). */
const PYTHON = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';

interface PeerRun {
  enqueue_ms: number;
  drain_ms: number;
}

interface Measured {
  enqueue_per_s: number;
  drain_per_s: number;
  record: string;
}

/** Installs the Node peers when missing (full runs only); false when they are not there. */
function nodePeers(ctx: ScenarioContext): boolean {
  if (existsSync(join(PEERS_DIR, 'node_modules', 'pg-boss')) && existsSync(join(PEERS_DIR, 'node_modules', 'graphile-worker'))) return true;
  if (ctx.quick) {
    ctx.note('pg-boss and graphile-worker skipped: not installed (a full run installs them; or npm ci --prefix bench/peers)');
    return false;
  }
  ctx.log('installing the peers: npm ci --prefix bench/peers');
  const r = spawnSync('npm', ['ci', '--prefix', PEERS_DIR, '--no-audit', '--no-fund', '--loglevel=error'], { cwd: ROOT, encoding: 'utf8', timeout: 300_000 });
  if (r.status !== 0) {
    ctx.note(`pg-boss and graphile-worker skipped: npm ci --prefix bench/peers failed: ${(r.stderr || r.stdout || String(r.error)).trim().split('\n').slice(-2).join(' ')}`);
    return false;
  }
  return true;
}

function hasCelery(): boolean {
  return spawnSync(PYTHON, ['-c', 'import celery, redis'], { encoding: 'utf8' }).status === 0;
}

/** Runs one peer's driver to the end and reads its one JSON line. */
async function peer(ctx: ScenarioContext, name: string, command: string, args: string[], env: NodeJS.ProcessEnv, jobs: number): Promise<PeerRun> {
  const proc = new Proc(ctx.scope, name, command, args, { env });
  const out = await proc.result(Math.max(120_000, jobs * 30));
  const line = out.trim().split('\n').pop() ?? '';
  return JSON.parse(line) as PeerRun;
}

export const s7Peers: Scenario = {
  name: 's7_peers',
  title: 'the same no-op jobs through Celerity, raw BullMQ, pg-boss, graphile-worker and Celery: enqueue and durable drain',
  async run(ctx) {
    const opts: DrainOptions = { jobs: ctx.quick ? 2_000 : 20_000, workers: 1, concurrency: 50, inFlight: 256 };
    const measured = new Map<string, Measured>();
    const fields: Record<string, unknown> = {};

    await warmUp(ctx);
    ctx.log(`raw BullMQ, ${opts.jobs} jobs`);
    const raw = await rawDrain(ctx, opts);
    measured.set('raw BullMQ', { enqueue_per_s: raw.enqueue_per_s, drain_per_s: raw.drain_per_s, record: 'none (removeOnComplete)' });
    ctx.log(`Celerity (postgres), ${opts.jobs} jobs`);
    const cel = await celerityDrain(ctx, 'postgres', opts);
    measured.set('Celerity', { enqueue_per_s: cel.enqueue_per_s, drain_per_s: cel.recorded_per_s, record: 'SQL history (PostgreSQL), counted when recorded' });
    ctx.log(`Celerity (postgres, one celerity recorder process), ${opts.jobs} jobs`);
    const own = await celerityDrain(ctx, 'postgres', { ...opts, recorder: 'own-process' });
    measured.set('Celerity, recorder process', {
      enqueue_per_s: own.enqueue_per_s,
      drain_per_s: own.recorded_per_s,
      record: 'the same, written by one `celerity recorder` process (workers and producer with CELERITY_RECORDER=off)',
    });

    const peerEnv = (extra: Record<string, string>) => ({
      ...cleanEnv(),
      BENCH_DATABASE_URL: ctx.databaseUrl,
      BENCH_REDIS_URL: ctx.redisUrl,
      PEER_JOBS: String(opts.jobs),
      PEER_CONCURRENCY: String(opts.concurrency),
      PEER_IN_FLIGHT: String(opts.inFlight),
      ...extra,
    });
    const attempt = async (label: string, record: string, run: () => Promise<PeerRun>) => {
      ctx.log(`${label}, ${opts.jobs} jobs`);
      try {
        const r = await run();
        measured.set(label, { enqueue_per_s: perSecond(opts.jobs, r.enqueue_ms), drain_per_s: perSecond(opts.jobs, r.drain_ms), record });
      } catch (err) {
        ctx.note(`${label} failed: ${(err as Error).message.split('\n')[0]}`);
      }
    };

    if (nodePeers(ctx)) {
      for (const mode of ['job', 'batch'] as const) {
        const schema = `bench_pgboss_${token()}`;
        ctx.scope.defer(`drop schema ${schema}`, () => dropSchema(ctx.databaseUrl, schema));
        await attempt(`pg-boss (${mode === 'job' ? 'one job per handler' : 'batch mode'})`, 'its job table (completed jobs are kept)', () =>
          peer(ctx, `pg-boss-${mode}`, process.execPath, [join(PEERS_DIR, 'pgboss.mjs')], peerEnv({ PEER_SCHEMA: schema, PEER_MODE: mode }), opts.jobs),
        );
      }
      const schema = `bench_graphile_${token()}`;
      ctx.scope.defer(`drop schema ${schema}`, () => dropSchema(ctx.databaseUrl, schema));
      await attempt('graphile-worker', 'none (a completed job is deleted)', () =>
        peer(ctx, 'graphile-worker', process.execPath, [join(PEERS_DIR, 'graphile.mjs')], peerEnv({ PEER_SCHEMA: schema }), opts.jobs),
      );
    }
    if (hasCelery()) {
      await attempt('Celery (prefork, 2 processes)', 'Redis result backend', () =>
        peer(ctx, 'celery', PYTHON, [join(PEERS_DIR, 'celery_peer.py'), 'run'], peerEnv({ PEER_QUEUE: `bench-celery-${token()}`, PEER_CONCURRENCY: '2' }), opts.jobs),
      );
    } else {
      ctx.note('Celery skipped: python3-celery is not installed (apt-get install -y python3-celery python3-redis)');
    }

    const rows: Row[] = [];
    const rawRates = measured.get('raw BullMQ')!;
    for (const [label, m] of measured) {
      fields[label] = { enqueue_per_s: round(m.enqueue_per_s), drain_per_s: round(m.drain_per_s), record: m.record };
      rows.push(
        { metric: `${label}: enqueue`, unit: 'jobs/s', celerity: m.enqueue_per_s, bullmq: rawRates.enqueue_per_s, ratio: ratio(m.enqueue_per_s, rawRates.enqueue_per_s) },
        { metric: `${label}: drain with its record`, unit: 'jobs/s', celerity: m.drain_per_s, bullmq: rawRates.drain_per_s, ratio: ratio(m.drain_per_s, rawRates.drain_per_s) },
      );
    }
    const pgBossBest = Math.max(...[...measured].filter(([label]) => label.startsWith('pg-boss')).map(([, m]) => m.drain_per_s));
    if (Number.isFinite(pgBossBest)) {
      for (const [label, field] of [
        ['Celerity', 'celerity_drain_over_pgboss_best'],
        ['Celerity, recorder process', 'celerity_recorder_process_drain_over_pgboss_best'],
      ] as const) {
        const celerity = measured.get(label)!.drain_per_s;
        fields[field] = round(celerity / pgBossBest);
        rows.push({ metric: `${label}: recorded drain / pg-boss's best mode`, unit: 'ratio', celerity: round(celerity / pgBossBest) });
      }
    }
    return { fields, rows, params: { ...opts, store: 'postgres', peers: [...measured.keys()] } };
  },
};
