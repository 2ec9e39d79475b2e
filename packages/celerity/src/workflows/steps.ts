import type { JobRecord, StepRecord } from '../job-record.ts';
import type { ProgressUpdate } from '../task.ts';
import type { StepInfo } from './compile.ts';

const STARTED: ReadonlySet<string> = new Set(['started', 'retrying', 'completed', 'failed', 'cancelled']);

/**
 * Completes a workflow root's record with its steps and what they imply for
 * the workflow as a whole:
 * - the root waits (BullMQ `waiting-children`) while its steps run, which
 *   alone would read `queued`: once a step has started, the workflow reads
 *   `started`;
 * - BullMQ fails the root with "child <key> failed": the error names the
 *   step instead, with that step's error, and a cancelled step makes the
 *   workflow `cancelled`;
 * - while no step reports its own progress, progress counts the completed
 *   steps of the current stage ("parsing 2/5").
 */
export function withSteps(root: JobRecord, infos: readonly StepInfo[] | undefined, records: readonly (JobRecord | null)[]): JobRecord {
  const all: StepRecord[] = records.map((r, i) => {
    const info = infos?.[i];
    return {
      id: info?.id ?? r!.id,
      task: info?.task ?? r?.task ?? 'unknown',
      stage: info?.stage ?? null,
      status: r?.status ?? 'unknown',
      progress: r?.progress ?? null,
      error: r?.error ?? null,
      startedAt: r?.startedAt ?? null,
      finishedAt: r?.finishedAt ?? null,
    };
  });
  // A group's gather is plumbing, not a step anyone wrote.
  const steps = all.filter((s) => s.task !== 'workflow.gather');
  const out: JobRecord = { ...root, steps };
  if ((out.status === 'queued' || out.status === 'retrying') && steps.some((s) => STARTED.has(s.status))) out.status = 'started';
  if (out.status === 'failed') {
    const index = rootCause(steps);
    const failed = index >= 0 ? steps[index]! : undefined;
    if (failed) {
      if (failed.status === 'cancelled') out.status = 'cancelled';
      out.error = {
        type: failed.error?.type ?? 'StepFailed',
        message: `step ${index + 1} (${failed.task}) ${failed.status === 'cancelled' ? 'was cancelled' : 'failed'}${failed.error ? `: ${failed.error.message}` : ''}`,
        stack: failed.error?.stack ?? null,
      };
    }
  }
  const units = new Map((infos ?? []).filter((i) => i.unit).map((i) => [i.id, i.unit!]));
  if (out.status === 'started' && !out.progress) out.progress = stepsProgress(steps, units);
  return out;
}

/**
 * The step that failed on its own: BullMQ fails each waiting parent in turn
 * with "child <key> failed", so the root names its direct child, not the cause.
 */
function rootCause(steps: StepRecord[]): number {
  const cascaded = (s: StepRecord) => /^child \S+ failed$/.test(s.error?.message ?? '');
  const own = steps.findIndex((s) => (s.status === 'failed' || s.status === 'cancelled') && !cascaded(s));
  return own >= 0 ? own : steps.findIndex((s) => s.status === 'failed' || s.status === 'cancelled');
}

function stepsProgress(steps: StepRecord[], infoUnit: ReadonlyMap<string, string>): ProgressUpdate {
  const running = steps.filter((s) => s.status === 'started' && s.progress);
  const current = steps.find((s) => s.status !== 'completed');
  const stage = current?.stage ?? null;
  const inStage = stage ? steps.filter((s) => s.stage === stage) : steps;
  const completed = inStage.filter((s) => s.status === 'completed').length;
  const base: ProgressUpdate = {
    stage: stage ?? `step ${current ? steps.indexOf(current) + 1 : steps.length}/${steps.length}`,
    completed,
    total: inStage.length,
    percent: Math.round((100 * steps.filter((s) => s.status === 'completed').length) / Math.max(1, steps.length)),
  };
  const unit = current ? infoUnit.get(current.id) : undefined;
  base.message = `${base.stage} ${completed}/${inStage.length}${unit ? ` ${unit}` : ''}`;
  // A single running step that reports its own stage ("validating 3/12") says more than counts.
  if (running.length === 1 && running[0]!.progress?.stage) return { ...base, ...running[0]!.progress };
  return base;
}
