import { createApp, type App } from 'celerity';
import { add, fail, flaky, progress, sleepTask, spin } from 'celerity-example-quickstart/tasks';
import { assessmentTasks } from './workloads/assessment/pipeline.ts';
import { csvImportTask } from './workloads/csv/task.ts';
import { pdfIngestTask } from './workloads/documents/ingest-task.ts';
import { searchRoutes } from './workloads/search-routes.ts';
import { documentsTables } from './workloads/tables.ts';
import { ticketEnhanceTask } from './workloads/tickets/task.ts';

/**
 * The documents app, what `npm start` runs: the real workloads beside the
 * quickstart tasks.
 * - `csv.import` (queue `imports`): a CSV upload imported row by row.
 * - `pdf.ingest` (queue `documents`): a PDF upload made searchable (GET /v1/search).
 * - `assessment.validate` (a workflow on queue `assessment`): documents
 *   checked against criteria, with evidence.
 * - `ticket.enhance` (queue `tickets`): tickets arriving by webhook.
 * Its tables come through `defineTables` (workloads/tables.ts), `GET /v1/search`
 * through the app's `routes`. See "Try it" in the README for a curl line for
 * each. Separate processes:
 *   celerity serve  --app examples/documents/app.ts
 *   celerity worker --app examples/documents/app.ts --queues imports,documents
 */
// The tasks reach their tables lazily, once the app below exists and has started.
const store = () => app.tables(documentsTables);
const assessment = assessmentTasks({ store });

export const app: App = createApp({
  tasks: [add, progress, flaky, fail, spin, sleepTask, csvImportTask({ store }), pdfIngestTask({ store }), assessment.parse, assessment.evaluate, ticketEnhanceTask({ store })],
  workflows: [assessment.validate],
  tables: [documentsTables],
  routes: [searchRoutes],
  module: import.meta.url,
});
export default app;
