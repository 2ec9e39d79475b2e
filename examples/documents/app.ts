import { createApp, type App } from '../../src/index.ts';
import { assessmentTasks } from '../../src/workloads/assessment/pipeline.ts';
import { csvImportTask } from '../../src/workloads/csv/task.ts';
import { pdfIngestTask } from '../../src/workloads/documents/ingest-task.ts';
import { ticketEnhanceTask } from '../../src/workloads/tickets/task.ts';
import { add, fail, flaky, progress, sleepTask, spin } from '../quickstart/tasks.ts';

/**
 * The documents app, what `npm start` runs: the real workloads beside the
 * quickstart tasks.
 * - `csv.import` (queue `imports`): a CSV upload imported row by row.
 * - `pdf.ingest` (queue `documents`): a PDF upload made searchable (GET /v1/search).
 * - `assessment.validate` (a workflow on queue `assessment`): documents
 *   checked against criteria, with evidence.
 * - `ticket.enhance` (queue `tickets`): tickets arriving by webhook.
 * See "Try it" in the README for a curl line for each. Separate processes:
 *   celerity serve  --app examples/documents/app.ts
 *   celerity worker --app examples/documents/app.ts --queues imports,documents
 */
// The tasks reach the app's store lazily, once the app below exists.
const store = () => app.openStore();
const assessment = assessmentTasks({ store });

export const app: App = createApp({
  tasks: [
    add, progress, flaky, fail, spin, sleepTask,
    csvImportTask({ store }),
    pdfIngestTask({ store }),
    assessment.parse,
    assessment.evaluate,
    ticketEnhanceTask({ store }),
  ],
  workflows: [assessment.validate],
  module: import.meta.url,
});
export default app;
