import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { isApp, type App } from './app.ts';

/** An app module could not be loaded or does not export an app. */
export class AppModuleError extends Error {
  readonly code = 'invalid_app_module';
  constructor(message: string) {
    super(message);
    this.name = 'AppModuleError';
  }
}

const TYPESCRIPT = /\.(c|m)?tsx?$/;
let tsLoader: Promise<void> | undefined;

/**
 * Lets Node import TypeScript app modules: tsx's ESM loader, registered once
 * per thread and only when an app is TypeScript, so that a JavaScript app
 * runs on plain Node.
 */
export function registerTypeScript(): Promise<void> {
  tsLoader ??= import('tsx/esm/api').then(({ register }) => {
    register();
  });
  return tsLoader;
}

/**
 * Imports an app module (a path relative to the working directory, or a
 * file: URL) and returns its App: the default export, or an export named
 * `app`. Worker threads use it too, to find the handlers of isolated tasks.
 * The app is recognised by its brand, so an app made by another copy of
 * Celerity than this one is accepted.
 */
export async function importApp(modulePath: string): Promise<App> {
  const file = modulePath.startsWith('file:') ? fileURLToPath(modulePath) : resolve(process.cwd(), modulePath);
  if (!existsSync(file)) throw new AppModuleError(`no such file ${modulePath}`);
  if (TYPESCRIPT.test(file)) await registerTypeScript();
  let mod: Record<string, unknown>;
  try {
    mod = (await import(pathToFileURL(file).href)) as Record<string, unknown>;
  } catch (err) {
    throw new AppModuleError(`cannot load ${modulePath}: ${(err as Error).message.split('\n')[0]}`);
  }
  const candidate = mod.default ?? mod.app;
  if (isApp(candidate)) return candidate;
  throw new AppModuleError(`${modulePath} must export an app made with createApp() as default or as "app"`);
}
