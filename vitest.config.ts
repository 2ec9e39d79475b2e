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
  },
});
