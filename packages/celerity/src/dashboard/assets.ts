import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DashboardNotBuiltError } from './errors.ts';

/**
 * Where `npm run build` writes the client (scripts/build-dashboard.mjs): the
 * same path from the compiled plugin (dist/dashboard/) and from its source
 * (src/dashboard/, in the workspace's tests), both two levels under the
 * package.
 */
export const DEFAULT_ASSETS_DIR = fileURLToPath(new URL('../../dist/dashboard/assets/', import.meta.url));

/** What the build wrote: the hashed names of the one script and the one style sheet. */
export interface DashboardManifest {
  js: string;
  css: string;
}

export interface Asset {
  body: Buffer;
  type: string;
}

const TYPES: Record<string, string> = {
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
};

/**
 * The built client, read once into memory (two files of a few hundred KB):
 * only the files the manifest names are served, so no request can name a
 * path of its own.
 */
export class DashboardAssets {
  private loaded: { manifest: DashboardManifest; files: Map<string, Asset> } | undefined;

  readonly dir: string;

  constructor(dir: string = DEFAULT_ASSETS_DIR) {
    this.dir = dir;
  }

  /** Throws {@link DashboardNotBuiltError} when the build has not run; tried again on the next call. */
  manifest(): DashboardManifest {
    return this.load().manifest;
  }

  file(name: string): Asset | undefined {
    return this.load().files.get(name);
  }

  private load(): { manifest: DashboardManifest; files: Map<string, Asset> } {
    if (this.loaded) return this.loaded;
    let manifest: DashboardManifest;
    try {
      manifest = JSON.parse(readFileSync(join(this.dir, 'manifest.json'), 'utf8')) as DashboardManifest;
    } catch {
      throw new DashboardNotBuiltError(this.dir);
    }
    const files = new Map<string, Asset>();
    for (const name of [manifest.js, manifest.css]) {
      if (typeof name !== 'string' || !/^[\w.-]+$/.test(name)) throw new DashboardNotBuiltError(this.dir);
      const ext = name.slice(name.lastIndexOf('.'));
      try {
        files.set(name, { body: readFileSync(join(this.dir, name)), type: TYPES[ext] ?? 'application/octet-stream' });
      } catch {
        throw new DashboardNotBuiltError(this.dir);
      }
    }
    this.loaded = { manifest, files };
    return this.loaded;
  }
}
