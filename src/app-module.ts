import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { App } from './app.ts';

/** An app module could not be loaded or does not export an app. */
export class AppModuleError extends Error {
  readonly code = 'invalid_app_module';
  constructor(message: string) {
    super(message);
    this.name = 'AppModuleError';
  }
}

/**
 * Imports an app module (a path relative to the working directory, or a
 * file: URL) and returns its App: the default export, or an export named
 * `app`. Worker threads use it too, to find the handlers of isolated tasks.
 */
export async function importApp(modulePath: string): Promise<App> {
  const file = modulePath.startsWith('file:') ? fileURLToPath(modulePath) : resolve(process.cwd(), modulePath);
  if (!existsSync(file)) throw new AppModuleError(`no such file ${modulePath}`);
  let mod: Record<string, unknown>;
  try {
    mod = (await import(pathToFileURL(file).href)) as Record<string, unknown>;
  } catch (err) {
    throw new AppModuleError(`cannot load ${modulePath}: ${(err as Error).message.split('\n')[0]}`);
  }
  const candidate = mod.default ?? mod.app;
  if (candidate instanceof App) return candidate;
  throw new AppModuleError(`${modulePath} must export an app made with createApp() as default or as "app"`);
}
