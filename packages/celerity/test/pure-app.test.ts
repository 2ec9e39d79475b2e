import { afterEach, describe, expect, it } from 'vitest';
import { createApp, isApp } from '../src/app.ts';
import { ConfigError } from '../src/errors.ts';
import { importApp } from '../src/app-module.ts';
import { join } from 'node:path';
import { ROOT } from './process-helpers.ts';

/**
 * An app module is pure: importing it opens no connection and reads no
 * environment, so a bad variable surfaces only when the app starts, and the
 * CLI can layer its flags over the app's own values before it does.
 */
describe('a pure app module', () => {
  const saved = process.env.CELERITY_CONCURRENCY;
  afterEach(() => {
    if (saved === undefined) delete process.env.CELERITY_CONCURRENCY;
    else process.env.CELERITY_CONCURRENCY = saved;
  });

  it('reads no configuration when it is created, only when it is first used', () => {
    process.env.CELERITY_CONCURRENCY = 'many';
    const app = createApp({ tasks: [] });
    expect(() => app.config).toThrow(ConfigError);
    process.env.CELERITY_CONCURRENCY = '7';
    // Read on first use: the environment at that moment, not at import.
    expect(createApp({ tasks: [] }).config.concurrency).toBe(7);
  });

  it('takes flags over its own values and the environment with configure()', () => {
    process.env.CELERITY_CONCURRENCY = '7';
    const app = createApp({ tasks: [], config: { concurrency: 3, prefix: 'mine' } });
    expect(app.config.concurrency).toBe(3);
    app.configure({ concurrency: 12 });
    expect(app.config).toMatchObject({ concurrency: 12, prefix: 'mine' });
    expect(() => app.configure({ port: 'nope' })).toThrow(ConfigError);
  });

  it('is recognised by its brand, whatever copy of Celerity made it', async () => {
    expect(isApp(createApp({ tasks: [] }))).toBe(true);
    expect(isApp({ tasks: new Map() })).toBe(false);
    // A look-alike of another copy: only the brand counts, not the class.
    const foreign = Object.assign(Object.create(null) as object, { [Symbol.for('celerity.app')]: 1 });
    expect(isApp(foreign)).toBe(true);
    const app = await importApp(join(ROOT, 'examples/quickstart/app.ts'));
    expect([...app.tasks.keys()]).toContain('math.add');
  });
});
