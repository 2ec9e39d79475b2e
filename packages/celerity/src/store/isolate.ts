import type { JobRecord } from '../job-record.ts';
import type { RecordedState } from './job-store.ts';
import { classifyWriteError } from './write-errors.ts';

/** The part of the store that {@link writeIsolating} needs (a test double may stand in). */
export interface BatchWriter {
  write(states: RecordedState[], progressOnly?: RecordedState[]): Promise<void>;
}

/** `error.type` of a row the store refused, written in minimal form instead. */
export const UNRECORDABLE_ROW = 'UnrecordableRow';

/** What a batch cost beyond its normal write. */
export interface IsolationOutcome {
  /** The batch failed as a whole and was split. */
  isolated: boolean;
  /** Rows the store refused, written in minimal form (id, status, the store's error). */
  minimal: RecordedState[];
  /** Rows refused even in minimal form (their id or task itself cannot be stored), or progress-only rows refused. */
  dropped: RecordedState[];
}

interface Item {
  state: RecordedState;
  progressOnly: boolean;
}

interface Failure {
  item: Item;
  err: unknown;
}

/**
 * Writes a batch so that no row can hold the history up.
 *
 * The batch is written whole first (one transaction, the normal case). If the
 * store is unavailable, the error is thrown: the batch stays pending and is
 * retried whole. If the store refuses the batch (or an unknown error repeats,
 * `splitUnknown`), the batch is bisected: each half is written on its own,
 * and a half that fails is split again, until the rows that fail are alone.
 * The rest of the batch is then written, each refused row is written in a
 * minimal form that any store takes (id, task, status, times, and the
 * store's error as `UnrecordableRow`), and the caller acknowledges the
 * entries: the stream moves on.
 *
 * Defensive, because a wrong verdict loses a job's history: a row is only
 * blamed if it fails alone; if every row of a batch of several fails alone
 * with an error that is not a known data error, the fault is the store's, not
 * the rows', and the batch is thrown back whole. Rows already written by
 * halves that passed are harmless to write again (writes are idempotent).
 */
export async function writeIsolating(store: BatchWriter, states: RecordedState[], progressOnly: RecordedState[], opts: { splitUnknown: boolean }): Promise<IsolationOutcome> {
  const outcome: IsolationOutcome = { isolated: false, minimal: [], dropped: [] };
  const items: Item[] = [...states.map((state) => ({ state, progressOnly: false })), ...progressOnly.map((state) => ({ state, progressOnly: true }))];
  if (items.length === 0) return outcome;
  try {
    await writeItems(store, items);
    return outcome;
  } catch (err) {
    const kind = classifyWriteError(err);
    if (kind === 'unavailable' || (kind === 'unknown' && !opts.splitUnknown)) throw err;
  }
  outcome.isolated = true;
  const failures: Failure[] = [];
  await bisect(store, items, failures);
  const onlyUnknown = failures.every((f) => classifyWriteError(f.err) !== 'refused');
  if (items.length > 1 && failures.length === items.length && onlyUnknown) {
    throw failures[0]!.err;
  }
  for (const { item, err } of failures) {
    if (item.progressOnly) {
      // A progress snapshot is not worth a row of its own; the next status write carries progress anyway.
      outcome.dropped.push(item.state);
      continue;
    }
    const minimal = minimalState(item.state, err);
    try {
      await store.write([minimal]);
      outcome.minimal.push(item.state);
    } catch (err2) {
      const kind = classifyWriteError(err2);
      // Even id, task and status cannot be stored: nothing of this row can
      // be recorded. Anything else is the store's fault, not the row's.
      if (kind !== 'refused') throw err2;
      outcome.dropped.push(item.state);
    }
  }
  return outcome;
}

/** Splits `items`, which failed together, until the failing ones are alone (collected in `failures`). */
async function bisect(store: BatchWriter, items: Item[], failures: Failure[]): Promise<void> {
  const mid = Math.ceil(items.length / 2);
  for (const half of [items.slice(0, mid), items.slice(mid)]) {
    if (half.length === 0) continue;
    try {
      await writeItems(store, half);
    } catch (err) {
      if (classifyWriteError(err) === 'unavailable') throw err;
      if (half.length === 1) {
        // Once more alone: an unknown error may have been a passing one.
        const kind = classifyWriteError(err);
        if (kind === 'unknown') {
          try {
            await writeItems(store, half);
            continue;
          } catch (again) {
            if (classifyWriteError(again) === 'unavailable') throw again;
            failures.push({ item: half[0]!, err: again });
            continue;
          }
        }
        failures.push({ item: half[0]!, err });
      } else {
        await bisect(store, half, failures);
      }
    }
  }
}

function writeItems(store: BatchWriter, items: Item[]): Promise<void> {
  return store.write(
    items.filter((i) => !i.progressOnly).map((i) => i.state),
    items.filter((i) => i.progressOnly).map((i) => i.state),
  );
}

const MAX_REASON = 1_000;

/**
 * The row written in place of one the store refused: what is known for sure
 * (id, task, queue, tenant, key id, status, attempts, times) and why the
 * rest is missing. Only values Celerity made or validated itself, no input,
 * result or message of the job. The tenant stays so that the row stays in
 * its tenant's scope: without it, it would show among the jobs without a
 * tenant. Should the tenant be what the store refuses, the minimal row is
 * refused too, and the job dropped rather than shown to another scope.
 */
export function minimalState({ record, eventSeq }: RecordedState, err: unknown): RecordedState {
  const reason = String((err as Error)?.message ?? err).slice(0, MAX_REASON);
  const minimal: JobRecord = {
    id: record.id,
    task: record.task,
    queue: record.queue,
    tenant: record.tenant,
    keyId: record.keyId ?? null,
    status: record.status,
    attempts: record.attempts,
    maxAttempts: record.maxAttempts,
    input: null,
    result: null,
    error: { type: UNRECORDABLE_ROW, message: `the job store refused this job's row; only its id, status and times are recorded: ${reason}`, stack: null },
    progress: null,
    createdAt: record.createdAt,
    startedAt: record.startedAt,
    finishedAt: record.finishedAt,
  };
  return { record: minimal, eventSeq };
}
