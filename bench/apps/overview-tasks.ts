import { z } from 'zod';
import { defineTask } from 'celerity';
import type { SeededSchedule } from '../seed-history.ts';

/**
 * The tasks and queues of the history bench/seed-history.ts writes (but
 * Celerity's own celerity.purge), so that `GET /v1/queues` lists those
 * queues; the handlers do nothing: the overview scenario measures reads.
 */
function task(name: string, queue: string) {
  return defineTask({ name, queue, input: z.object({}).passthrough(), handler: async () => null });
}

export const overviewTasks = [
  task('ticket.enhance', 'tickets'),
  task('csv.import', 'imports'),
  task('pdf.ingest', 'documents'),
  task('mail.send', 'default'),
  task('reports.daily', 'default'),
  task('assessment.evaluate', 'assessment'),
  task('webhook.deliver', 'default'),
];

/**
 * The app's schedules, whose past runs the scenario seeds: one every minute
 * (43,200 runs in 30 days), one every 5 minutes, one hourly, one daily.
 */
export const OVERVIEW_SCHEDULES: SeededSchedule[] = [
  { id: 'webhooks-redeliver', task: 'webhook.deliver', queue: 'default', everyMs: 60_000 },
  { id: 'tickets-sweep', task: 'ticket.enhance', queue: 'tickets', everyMs: 300_000 },
  { id: 'assessment-recheck', task: 'assessment.evaluate', queue: 'assessment', everyMs: 3_600_000 },
  { id: 'reports-daily', task: 'reports.daily', queue: 'default', everyMs: 86_400_000 },
];
