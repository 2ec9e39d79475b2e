import type { Broker } from '../broker/broker.ts';
import { viaBroker } from '../broker/connection.ts';
import type { TenantScope } from '../auth/principal.ts';
import { BrokerUnavailableError } from '../errors.ts';
import { jobLogLines, type JobLogRow } from '../job-record.ts';
import { readKeptLogs } from '../store/job-logs.ts';
import type { JobStore } from '../store/job-store.ts';

/**
 * A job's kept log lines (src/worker/job-log.ts), oldest first: from its
 * BullMQ log in Redis while Redis holds them, else from the history
 * (`job_logs`, where the recorder copies a finished job's lines). The
 * caller checks first that the job is the reader's to see (`scope`, which
 * the history's row-level security applies again).
 */
export async function readJobLogs(broker: Broker, store: JobStore, queue: string, id: string, scope: TenantScope): Promise<JobLogRow[]> {
  try {
    const live = jobLogLines(await viaBroker(broker.redis, () => broker.jobLogs(queue, id)));
    if (live.length > 0) return live;
  } catch (err) {
    if (!(err instanceof BrokerUnavailableError)) throw err;
  }
  return (await readKeptLogs(store, id, scope)) ?? [];
}
