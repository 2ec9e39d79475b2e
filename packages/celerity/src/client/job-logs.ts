import type { Broker } from '../broker/broker.ts';
import { viaBroker } from '../broker/connection.ts';
import { jobLogLines, type JobLogRow } from '../job-record.ts';

/**
 * A job's kept log lines (src/worker/job-log.ts), oldest first, read from its
 * BullMQ log in Redis; empty once Redis no longer holds the job.
 */
export async function readJobLogs(broker: Broker, queue: string, id: string): Promise<JobLogRow[]> {
  return jobLogLines(await viaBroker(broker.redis, () => broker.jobLogs(queue, id)));
}
