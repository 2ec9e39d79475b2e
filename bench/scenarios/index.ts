/**
 * Every benchmark scenario, in the order `npm run bench` runs them. To add
 * one: write bench/scenarios/<name>.ts exporting a `Scenario` (see
 * lib/types.ts; allocate everything through `ctx.scope` so that it is
 * cleaned up), and add it to this list. One marked `optIn` runs only when
 * named with `--scenario`.
 */
import type { Scenario } from '../lib/types.ts';
import { s1Throughput } from './s1_throughput.ts';
import { s2Latency } from './s2_latency.ts';
import { s3Http } from './s3_http.ts';
import { s4Csv } from './s4_csv.ts';
import { s5Scale } from './s5_scale.ts';
import { s6Events } from './s6_events.ts';
import { s6Fairness } from './s6_fairness.ts';
import { historySearch } from './history_search.ts';
import { overview } from './overview.ts';
import { s7Peers } from './s7_peers.ts';
import { instructions } from './instructions.ts';
import { historyCost } from './history_cost.ts';
import { workerGcScenario } from './worker_gc.ts';

export const scenarios: Scenario[] = [s1Throughput, s2Latency, s3Http, s4Csv, s5Scale, s6Events, s6Fairness, historySearch, overview, s7Peers, historyCost, workerGcScenario, instructions];
