import { defaultRepeatStrategy } from 'bullmq';
import { InvalidInputError, TaskDefinitionError, errorMessage } from '../errors.ts';
import { parseInput, type Task, type TaskInput } from '../task.ts';

/** Every so many milliseconds, counted from when the schedule was first declared. */
export interface EverySpec {
  every: number;
}

/**
 * A cron expression: five fields (minute first) or six (second first), as
 * BullMQ's cron-parser reads them; `tz` is an IANA time zone (default UTC).
 */
export interface CronSpec {
  cron: string;
  tz?: string;
}

export type When = EverySpec | CronSpec;

/** A periodic task as declared, before the app resolves its task by name. */
export interface Schedule {
  /** Stable identity of the schedule; its BullMQ job scheduler id is `celerity:<id>`. */
  readonly id: string;
  /** The task object, or its name (resolved by `createApp`). */
  readonly task: Task | string;
  readonly when: Readonly<{ every: number } | { cron: string; tz?: string | undefined }>;
  /** Input of every run; validated against the task's schema when the app is created. */
  readonly input: unknown;
}

/** A schedule whose task the app knows: what gets upserted in Redis. */
export interface ResolvedSchedule extends Omit<Schedule, 'task'> {
  readonly task: Task;
  /** BullMQ job scheduler id: `celerity:<id>`. */
  readonly schedulerId: string;
}

/** Prefix of the BullMQ job schedulers Celerity owns; others (made with BullMQ directly) are left alone. */
export const SCHEDULER_PREFIX = 'celerity:';

/** Shortest interval accepted for `every`: below it a tick would not finish before the next one starts. */
export const MIN_EVERY_MS = 100;

const ID = /^[A-Za-z0-9_.:-]{1,200}$/;

/**
 * Declares a periodic task for `createApp({ schedules })`: every `every` ms,
 * or on a cron expression. BullMQ's job schedulers make each tick one job,
 * however many workers run. The input is checked against the task's schema
 * when the app is created, so a bad schedule stops start-up.
 *
 * @example
 * schedule(report, { cron: '0 7 * * 1-5', tz: 'Europe/Paris' }, { team: 'ops' })
 * schedule('cache.refresh', { every: 60_000 })
 */
export function schedule<T extends Task<any, any>>(task: T, when: When, input?: TaskInput<T>, opts?: { id?: string }): Schedule;
export function schedule(task: string, when: When, input?: unknown, opts?: { id?: string }): Schedule;
export function schedule(task: Task | string, when: When, input: unknown = {}, opts: { id?: string } = {}): Schedule {
  const name = typeof task === 'string' ? task : task?.name;
  if (typeof name !== 'string' || name === '') throw new TaskDefinitionError('schedule(): the first argument must be a task or a task name');
  const id = opts.id ?? name;
  if (!ID.test(id)) throw new TaskDefinitionError(`Schedule "${id}": the id must be 1-200 letters, digits, '_', '.', ':' or '-'`);
  return { id, task, when: checkWhen(id, when), input };
}

function checkWhen(id: string, when: When): Schedule['when'] {
  const w = (when ?? {}) as Partial<EverySpec & CronSpec>;
  const hasEvery = w.every !== undefined;
  const hasCron = w.cron !== undefined;
  if (hasEvery === hasCron) throw new TaskDefinitionError(`Schedule "${id}": give either { every: ms } or { cron: '...' }`);
  if (hasEvery) {
    if (!Number.isInteger(w.every) || w.every! < MIN_EVERY_MS) {
      throw new TaskDefinitionError(`Schedule "${id}": every must be an integer number of ms, at least ${MIN_EVERY_MS} (got ${JSON.stringify(w.every)})`);
    }
    return { every: w.every! };
  }
  if (typeof w.cron !== 'string' || w.cron.trim() === '') throw new TaskDefinitionError(`Schedule "${id}": cron must be a non-empty string`);
  if (w.tz !== undefined) {
    try {
      new Intl.DateTimeFormat('en', { timeZone: w.tz });
    } catch {
      throw new TaskDefinitionError(`Schedule "${id}": unknown time zone "${w.tz}"`);
    }
  }
  // BullMQ computes every tick with this very function: what it accepts here, it accepts in the worker.
  try {
    const next = defaultRepeatStrategy(Date.now(), { pattern: w.cron, ...(w.tz ? { tz: w.tz } : {}) });
    if (next === undefined) throw new Error('it never fires');
  } catch (err) {
    throw new TaskDefinitionError(`Schedule "${id}": bad cron expression "${w.cron}": ${errorMessage(err)}`);
  }
  return { cron: w.cron, ...(w.tz ? { tz: w.tz } : {}) };
}

/**
 * Resolves schedules against the app's tasks: unknown task names, duplicate
 * ids and inputs that fail the task's schema throw {@link TaskDefinitionError}.
 */
export function resolveSchedules(schedules: readonly Schedule[], tasks: ReadonlyMap<string, Task>): ResolvedSchedule[] {
  const seen = new Set<string>();
  return schedules.map((s) => {
    if (seen.has(s.id)) {
      throw new TaskDefinitionError(`Schedule "${s.id}" is declared twice: give the others their own id (schedule(task, when, input, { id }))`);
    }
    seen.add(s.id);
    const name = typeof s.task === 'string' ? s.task : s.task.name;
    const task = tasks.get(name);
    if (!task) throw new TaskDefinitionError(`Schedule "${s.id}": unknown task "${name}" (add it to createApp({ tasks }))`);
    if (typeof s.task !== 'string' && s.task !== task) {
      throw new TaskDefinitionError(`Schedule "${s.id}": the task "${name}" is not the one this app defines under that name`);
    }
    try {
      parseInput(task, s.input);
    } catch (err) {
      if (err instanceof InvalidInputError) throw new TaskDefinitionError(`Schedule "${s.id}": ${err.message}`, err.details);
      throw err;
    }
    return { id: s.id, task, when: s.when, input: s.input, schedulerId: SCHEDULER_PREFIX + s.id };
  });
}
