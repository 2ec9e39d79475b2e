import { createApp, schedule } from 'celerity';
import { OVERVIEW_SCHEDULES, overviewTasks } from './overview-tasks.ts';

/**
 * The app of the overview scenario's child processes (`celerity serve` and
 * `celerity worker --app bench/apps/overview-app.ts`), configured from the
 * environment the benchmark gives them, as noop-app.ts: the seeded history's
 * tasks and queues, and schedules with long histories of runs.
 */
export const app = createApp({
  tasks: overviewTasks,
  schedules: OVERVIEW_SCHEDULES.map((s) => schedule(s.task, { every: s.everyMs }, {}, { id: s.id })),
  module: import.meta.url,
});
export default app;
