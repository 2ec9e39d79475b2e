import { createApp } from 'celerity';
import { add, fail, flaky, progress, sleepTask, spin } from './tasks.ts';

/**
 * The quickstart app. Run it with `npm start` (API + worker in one process),
 * or as separate processes:
 *   celerity serve  --app examples/quickstart/app.ts
 *   celerity worker --app examples/quickstart/app.ts
 */
export const app = createApp({ tasks: [add, progress, flaky, fail, spin, sleepTask], module: import.meta.url });
export default app;
