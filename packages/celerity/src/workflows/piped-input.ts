import type { Job } from 'bullmq';
import { NonRetryableError } from '../errors.ts';
import type { FlowWiring } from './compile.ts';

/** A workflow job found a child's result missing (a child removed by hand, for instance). */
export class MissingStepResultError extends NonRetryableError {
  override readonly code = 'missing_step_result';
}

/**
 * The input of a workflow job that follows other steps: their results, read
 * from the job's processed-children hash (which BullMQ fills atomically as
 * each child completes, and keeps even after the child itself is removed).
 */
export async function pipedInput(job: Job, flow: FlowWiring, staticInput: unknown): Promise<unknown> {
  const values = await job.getChildrenValues();
  // Keys are `<prefix>:<queue>:<id>`; ids never contain a colon.
  const byId = new Map<string, unknown>();
  for (const [key, value] of Object.entries(values)) byId.set(key.slice(key.lastIndexOf(':') + 1), value);
  let piped: unknown;
  if (flow.from === 'gather') {
    piped = (flow.order ?? []).map((id) => {
      if (!byId.has(id)) throw new MissingStepResultError(`The result of step ${id} is missing`);
      return byId.get(id) ?? null;
    });
  } else {
    if (byId.size !== 1) throw new MissingStepResultError(`Expected the result of one previous step, found ${byId.size}`);
    piped = [...byId.values()][0] ?? null;
  }
  if (flow.as) return { ...((staticInput as object | null) ?? {}), [flow.as]: piped };
  return piped;
}
