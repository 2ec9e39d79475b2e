/**
 * The instrument of the opt-in `instructions` scenario (bench/lib/callgrind.ts):
 * a process under callgrind is zeroed and read at chosen moments, and the
 * count between them is the work done between them: twice the work, twice
 * the count. Skipped where valgrind is not installed.
 */
import { afterAll, expect, test } from 'vitest';
import { callgrindMissing, Counted } from '../../../bench/lib/callgrind.ts';
import { waitHttp } from '../../../bench/lib/http.ts';
import { freePort } from '../../../bench/lib/procs.ts';
import { Scope } from '../../../bench/lib/scope.ts';

const missing = await callgrindMissing();
const scope = new Scope();
afterAll(() => scope.close());

/** A server whose every request spins a loop of `?n=` iterations. */
const SPINNER = `
const http = require('node:http');
let sink = 0;
http.createServer((req, res) => {
  const n = Number(new URL(req.url, 'http://x').searchParams.get('n') ?? 0);
  for (let i = 0; i < n; i++) sink = (sink * 31 + i) % 1000003;
  res.end(String(sink));
}).listen(Number(process.env.PORT), process.env.HOST);
`;

test.skipIf(missing !== undefined)('a zeroed count holds the work done since, twice as much for twice the work', { timeout: 180_000 }, async () => {
  const port = await freePort();
  // HOST as a server is given it: valgrind names the pipes callgrind_control
  // finds it by after HOST, which the control must then be given too.
  const counted = new Counted(scope, 'spinner', ['-e', SPINNER], { ...process.env, PORT: String(port), HOST: '127.0.0.1' });
  const url = `http://127.0.0.1:${port}`;
  await waitHttp(`${url}/`, [counted.proc], 120_000);
  const spin = async (times: number) => {
    for (let i = 0; i < times; i++) expect((await fetch(`${url}/?n=1000000`)).ok).toBe(true);
  };
  await spin(3); // compiled by now
  await counted.zero();
  await spin(1);
  const once = await counted.read();
  await counted.zero();
  await spin(2);
  const twice = await counted.read();
  // A million turns of the loop are several million instructions.
  expect(once.main).toBeGreaterThan(3_000_000);
  expect(once.all).toBeGreaterThanOrEqual(once.main);
  expect(twice.main / once.main).toBeGreaterThan(1.8);
  expect(twice.main / once.main).toBeLessThan(2.2);
});
