import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { App } from '../app.ts';
import { CliError } from './cli-error.ts';

/**
 * Imports an app module and returns its App: the default export, or an export
 * named `app`.
 */
export async function loadApp(modulePath: string): Promise<App> {
  const file = resolve(process.cwd(), modulePath);
  if (!existsSync(file)) throw new CliError(`--app: no such file ${modulePath}`);
  let mod: Record<string, unknown>;
  try {
    mod = (await import(pathToFileURL(file).href)) as Record<string, unknown>;
  } catch (err) {
    throw new CliError(`--app: cannot load ${modulePath}: ${(err as Error).message.split('\n')[0]}`);
  }
  const candidate = mod.default ?? mod.app;
  if (candidate instanceof App) return candidate;
  throw new CliError(`--app: ${modulePath} must export an app made with createApp() as default or as "app"`);
}
