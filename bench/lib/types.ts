import type { Scope } from './scope.ts';

/** What a scenario is given. */
export interface ScenarioContext {
  /** `--quick`: a smaller run (CI, smoke checks). */
  quick: boolean;
  redisUrl: string;
  /**
   * `redisUrl` lists the seed nodes of a Redis Cluster (`BENCH_REDIS_CLUSTER`,
   * honoured by s5_scale): prefixes then carry a hash tag and every
   * connection is a Cluster.
   */
  redisCluster?: boolean;
  /** PostgreSQL server for the `postgres` store (each run gets its own schema). */
  databaseUrl: string;
  /** Owns everything the scenario starts; closed by the runner even on failure. */
  scope: Scope;
  /** Progress line on stderr. */
  log(message: string): void;
  /** Adds a note to the scenario's result (warnings logged during the run...). */
  note(message: string): void;
}

/** One line of the printed table. `ratio` is celerity / bullmq. */
export interface Row {
  metric: string;
  unit: string;
  celerity?: number | undefined;
  bullmq?: number | undefined;
  ratio?: number | undefined;
}

export interface ScenarioResult {
  /** The scenario's numbers as written to latest.json (field names as documented). */
  fields: Record<string, unknown>;
  /** How it was run (job counts, concurrency, durations...), also written to latest.json. */
  params: Record<string, unknown>;
  rows: Row[];
  /** Anything worth a look (non-2xx answers, failed jobs...). */
  notes?: string[];
}

export interface Scenario {
  /** The `--scenario` name, e.g. `s1_throughput`. */
  name: string;
  /** One line: what it measures. */
  title: string;
  /** Run only when named with `--scenario` (slow, or needs a tool the machine may lack); `npm run bench` alone leaves it out. */
  optIn?: boolean;
  run(ctx: ScenarioContext): Promise<ScenarioResult>;
}
