import { BaseSequencer, type TestSpecification } from 'vitest/node';
import { defineConfig } from 'vitest/config';

/**
 * The files that take minutes, in the order to start them. On a fresh clone
 * (CI) Vitest has no durations cached and starts the biggest files first; the
 * benchmark's test is small but runs for three minutes, so it started last and
 * ran alone at the end (a 14-minute suite in one CI run). Longest first keeps
 * both workers busy to the end.
 */
const LONGEST_FIRST = ['test/bench.test.ts', 'test/adoption.test.ts', 'test/cli-jobs.test.ts', 'test/dashboard/operations.test.ts', 'test/dashboard/browser.test.ts'];

class LongestFirst extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const sorted = await super.sort(files);
    const rank = (f: TestSpecification) => {
      const i = LONGEST_FIRST.findIndex((name) => f.moduleId.endsWith(`/packages/celerity/${name}`));
      return i < 0 ? LONGEST_FIRST.length : i;
    };
    return sorted
      .map((f, i) => ({ f, i }))
      .sort((a, b) => rank(a.f) - rank(b.f) || a.i - b.i)
      .map(({ f }) => f);
  }
}

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
    sequence: { sequencer: LongestFirst },
  },
});
