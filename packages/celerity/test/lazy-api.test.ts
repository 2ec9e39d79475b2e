/**
 * Importing `celerity` does not load the HTTP API (src/api/lazy.ts): a
 * worker, a recorder or a script never serves HTTP, and Fastify, its
 * plugins and the routes cost each such process start-up time and memory.
 */
import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';

/** The CommonJS modules (Fastify and its plugins are) a fresh process has loaded once `code` ran. */
function loadedAfter(code: string): string[] {
  const script = `${code}
const { createRequire } = await import('node:module');
console.log(JSON.stringify(Object.keys(createRequire(import.meta.url).cache)));`;
  const out = execFileSync(process.execPath, ['--conditions=celerity-source', '--import', 'tsx', '--input-type=module', '-e', script], { encoding: 'utf8', timeout: 60_000 });
  return JSON.parse(out.trim().split('\n').pop()!) as string[];
}

const fastifyModules = (loaded: string[]) => loaded.filter((path) => /[\\/]node_modules[\\/](fastify|@fastify[\\/][^\\/]+)[\\/]/.test(path));

describe('the HTTP API loads on first use', () => {
  it('leaves Fastify unloaded when a process imports celerity and defines its app', () => {
    const loaded = loadedAfter(`const { createApp, defineTask } = await import('celerity');
const { z } = await import('zod');
createApp({ tasks: [defineTask({ name: 'lazy.noop', input: z.object({}), handler: async () => null })] });`);
    expect(loaded.some((path) => path.includes('bullmq'))).toBe(true);
    expect(fastifyModules(loaded)).toEqual([]);
  });

  it('loads it when the process builds the server', () => {
    const loaded = loadedAfter(`const { celerityApi } = await import('celerity');
const Fastify = (await import('fastify')).default;
const server = Fastify();
server.register(celerityApi, { app: null, prefix: '/api' });
await server.ready().catch(() => {});`);
    expect(fastifyModules(loaded).some((path) => /[\\/]@fastify[\\/]ajv-compiler[\\/]/.test(path))).toBe(true);
  });
});
