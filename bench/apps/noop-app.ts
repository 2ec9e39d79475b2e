import { createApp } from 'celerity';
import { noop } from './tasks.ts';

/**
 * The app the benchmark's child processes run:
 *   node packages/celerity/bin/celerity.js worker --app bench/apps/noop-app.ts
 *   node packages/celerity/bin/celerity.js serve  --app bench/apps/noop-app.ts
 * Its configuration comes from the environment the benchmark gives them
 * (CELERITY_PREFIX, DATABASE_URL + CELERITY_DB_SCHEMA or CELERITY_SQLITE_PATH, ...).
 */
export const app = createApp({ tasks: [noop], module: import.meta.url });
export default app;
