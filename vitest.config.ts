import { defineConfig } from 'vitest/config';

export default defineConfig({
  resolve: {
    // In-process tests see one copy of Celerity, its source (the package's
    // `celerity-source` export, which tsc's customConditions uses too).
    // Processes the tests spawn run the built package (dist/), as a user's would.
    conditions: ['celerity-source'],
  },
  ssr: { resolve: { conditions: ['celerity-source'], externalConditions: ['celerity-source'] } },
  test: {
    include: ['packages/*/test/**/*.test.ts', 'examples/*/test/**/*.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    pool: 'forks',
    // Two files at a time. Vitest's default keeps a core free, which on a
    // 2-core machine runs the files one after another, though most of their
    // time is spent waiting on Redis, PostgreSQL and the processes they
    // spawn; each file has its own prefixes and schemas (run together: 600 s
    // instead of 741 s of the suite's wall time here).
    maxWorkers: 2,
    minWorkers: 1,
    // Test files share one module cache per worker instead of importing
    // Celerity afresh each (about a second per file on this 2-core machine).
    // Every file makes its own apps, prefixes and schemas, so none depends on
    // a fresh module state; the whole suite passes either way.
    isolate: false,
  },
});
