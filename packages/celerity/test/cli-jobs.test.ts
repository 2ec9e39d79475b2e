import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, describe, it } from 'vitest';
import { relSleep, tasks } from './fixtures/reliability-app.ts';
import { cleanup, openTestApp, startRecorder, stores, waitFor } from './helpers.ts';
import { processEnv, RELIABILITY_APP, ROOT } from './process-helpers.ts';

// Once, after both stores' tests: they run concurrently, and a cleanup after the first to end
// would close the other's app.
afterAll(cleanup);

/** `celerity <args>` as a child process (the built CLI, as a user runs it). */
function cli(args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [join(ROOT, 'packages/celerity/bin/celerity.js'), ...args, '--app', RELIABILITY_APP], { cwd: ROOT, env, timeout: 30_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr });
    });
  });
}

// Concurrent: each store's test waits on one CLI process at a time, mostly loading the app (CPU);
// the two overlap on the machine's other core. Each has its own prefix and store.
describe.concurrent.each(stores)('celerity jobs and queues (%s)', (kind) => {
  it('retries, deletes and promotes by id or by filter, with a count first, and pauses, resumes and drains queues', async ({ expect }) => {
    const app = await openTestApp(kind, tasks);
    await startRecorder(app);
    const env = processEnv(app.env);
    const cancelled = await Promise.all([1, 2, 3].map((n) => app.enqueue(relSleep, { ms: n }, { delay: 3_600_000, tenant: n === 3 ? 'globex' : 'acme' })));
    for (const h of cancelled) await app.cancel(h.id);
    await waitFor(async () => {
      for (const h of cancelled) if ((await app.store.get(h.id))?.status !== 'cancelled') return false;
      return true;
    });

    const [dry, unconfirmed, searched, badInstant] = await Promise.all([
      cli(['jobs', 'retry', '--status', 'cancelled', '--task', 'rel.sleep', '--tenant', 'acme', '--dry-run'], env),
      // Not on a terminal, and without --yes: nothing is done, in one line.
      cli(['jobs', 'retry', '--status', 'cancelled', '--tenant', 'acme'], env),
      // Every filter of GET /v1/jobs, parsed as the API parses them.
      cli(['jobs', 'cancel', '--queue', 'default', '--created-after', new Date(Date.now() - 3_600_000).toISOString(), '--where', 'input.ms:2', '--where', 'input.ms:2', '--dry-run'], env),
      cli(['jobs', 'cancel', '--created-after', 'yesterday', '--dry-run'], env),
    ]);
    expect(dry, dry.stderr).toMatchObject({ code: 0, stdout: '2 jobs match\n' });
    expect(searched, searched.stderr).toMatchObject({ code: 0, stdout: '1 job match\n' });
    expect(badInstant.code).toBe(2);
    expect(badInstant.stderr).toMatch(/^celerity: --created-after: .+\n$/);
    expect(unconfirmed.code).toBe(2);
    expect(unconfirmed.stderr).toBe('celerity: 2 jobs match; add --yes to retry them\n');

    const run = await cli(['jobs', 'retry', '--status', 'cancelled', '--task', 'rel.sleep', '--tenant', 'acme', '--yes', '--json'], env);
    expect(run.code, run.stderr).toBe(0);
    const outcome = JSON.parse(run.stdout);
    expect(outcome).toMatchObject({ status: 'completed', matched: 2, done: 2, failed: 0 });
    const audit = await app.bulkOperation(outcome.operation_id);
    expect(audit).toMatchObject({ action: 'retry', status: 'completed', actor: { keyName: 'cli' }, filter: { status: 'cancelled', task: 'rel.sleep', tenant: 'acme' } });
    const retries = (await app.broker.queue('default').getJobs(['waiting'])).map((j) => (j.data as { retryOf?: string }).retryOf);
    expect(retries.sort()).toEqual([cancelled[0]!.id, cancelled[1]!.id].sort());

    // One job: retry with an edited input, then the one-line refusal of a second retry while it waits.
    // The refusals that change nothing run side by side: each command is seconds of a busy machine.
    const [badInput, missing, unknown, noFilter] = await Promise.all([
      cli(['jobs', 'retry', cancelled[2]!.id, '--input', '{"ms":"x"}'], env),
      cli(['jobs', 'delete', '01nosuchjob'], env),
      cli(['queues', 'pause', 'nope'], env),
      cli(['jobs', 'cancel'], env),
    ]);
    expect(badInput.code).toBe(1);
    expect(badInput.stderr).toMatch(/^celerity: Invalid input for task "rel\.sleep": ms: .+\n$/);
    const one = await cli(['jobs', 'retry', cancelled[2]!.id, '--input', '{"ms":7}'], env);
    expect(one.code, one.stderr).toBe(0);
    const [retryId] = one.stdout.split(' ');
    expect((await app.getJob(retryId!))?.input).toEqual({ ms: 7 });
    const twice = await cli(['jobs', 'retry', cancelled[2]!.id], env);
    expect(twice.code).toBe(1);
    expect(twice.stderr).toMatch(new RegExp(`^celerity: Job "${cancelled[2]!.id}" is already being retried by job "${retryId}" \\(queued\\); wait for it to finish\\n$`));
    expect(missing).toMatchObject({ code: 1, stderr: 'celerity: No job with id "01nosuchjob"\n' });

    const delayed = await app.enqueue(relSleep, { ms: 1 }, { delay: 3_600_000 });
    const promoted = await cli(['jobs', 'promote', delayed.id], env);
    expect(promoted).toMatchObject({ code: 0, stdout: `${delayed.id}: queued\n` });
    const notDelayed = await cli(['jobs', 'promote', delayed.id], env);
    expect(notDelayed.code).toBe(1);
    expect(notDelayed.stderr).toContain('is not delayed');

    // Queues: pause (kept in Redis), resume, drain the waiting jobs (the retries and the promoted one).
    expect(await cli(['queues', 'pause', 'default'], env)).toMatchObject({ code: 0, stdout: 'default: paused\n' });
    expect(await app.isQueuePaused('default')).toBe(true);
    expect(await cli(['queues', 'resume', 'default'], env)).toMatchObject({ code: 0, stdout: 'default: resumed\n' });
    expect(await app.isQueuePaused('default')).toBe(false);
    expect(await cli(['queues', 'drain', 'default'], env)).toMatchObject({ code: 0, stdout: 'default: 4 jobs removed\n' });
    expect((await app.getJob(delayed.id))?.status).toBe('cancelled');
    expect(unknown).toMatchObject({ code: 1, stderr: 'celerity: No queue named "nope" in this app\n' });

    // Delete by filter: every cancelled job of globex goes, from Redis and the history.
    await waitFor(async () => (await app.store.get(retryId!))?.status === 'cancelled');
    const deleted = await cli(['jobs', 'delete', '--status', 'cancelled', '--tenant', 'globex', '--yes'], env);
    expect(deleted.code, deleted.stderr).toBe(0);
    expect(deleted.stdout).toMatch(/^[0-9a-z]{26}: completed, 2 done, 0 failed of 2\n$/);
    expect(await app.getJob(cancelled[2]!.id)).toBeNull();
    expect(await app.getJob(retryId!)).toBeNull();
    expect(noFilter.code).toBe(2);
    expect(noFilter.stderr).toMatch(/^celerity: jobs cancel: give a job id or at least one filter \(--status, --task, --queue, .+, --where\)\n$/);
    // Each command is a process that loads the TypeScript app: seconds each on a busy machine.
  }, 180_000);
});
