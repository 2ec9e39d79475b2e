import { pathToFileURL } from 'node:url';
import { resolve } from 'node:path';
import type { App } from '../app.ts';
import { AppModuleError, importApp } from '../app-module.ts';
import { CliError } from './cli-error.ts';

/** Loads the `--app` module, turning its problems into one-line CLI errors. */
export async function loadApp(modulePath: string): Promise<App> {
  try {
    const app = await importApp(modulePath);
    // Isolated tasks run in threads that import the same module.
    app.moduleUrl ??= pathToFileURL(resolve(process.cwd(), modulePath)).href;
    return app;
  } catch (err) {
    if (err instanceof AppModuleError) throw new CliError(`--app: ${err.message}`);
    throw err;
  }
}
