/**
 * s6_events' clients: N Server-Sent Events streams on GET /v1/events, in a
 * process of their own (as browsers are), so that reading them does not
 * share an event loop with the producer. Each stream is read as EventSource
 * would, keeping only what the measure needs: for each message of a task
 * named BENCH_TASK, the time from its `at` (Redis' clock, in the stream
 * entry's id) to its arrival here (Date.now(); same machine, same clock).
 * `at` is found in the JSON without parsing it whole, so that 100,000
 * messages a second measure the feed, not this process's JSON.parse.
 *
 * IPC:
 *   -> {type: 'ready'}                                  every stream answered 200
 *   <- {type: 'wait', expected, timeoutMs}
 *   -> {type: 'done', complete, fewest, messages, lagged, latencies: {p50, p95, p99, max}, count}
 *
 * Environment: BENCH_URL, BENCH_STREAMS, BENCH_TASK.
 */
import { request } from 'node:http';
import { percentile } from '../lib/measure.ts';

const url = required('BENCH_URL');
const streams = Number(required('BENCH_STREAMS'));
const measured = `"task":"${required('BENCH_TASK')}"`;

interface Client {
  latencies: number[];
  messages: number;
  lagged: number;
}

function open(): Promise<Client> {
  return new Promise((resolve, reject) => {
    const req = request(url, { headers: { accept: 'text/event-stream' }, agent: false });
    const client: Client = { latencies: [], messages: 0, lagged: 0 };
    req.on('error', reject);
    req.on('response', (res) => {
      if (res.statusCode !== 200) {
        reject(new Error(`GET /v1/events answered ${res.statusCode}`));
        return;
      }
      res.setEncoding('utf8');
      let buffer = '';
      res.on('data', (chunk: string) => {
        const received = Date.now();
        buffer += chunk;
        let end = buffer.indexOf('\n\n');
        while (end >= 0) {
          const message = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          end = buffer.indexOf('\n\n');
          if (message.startsWith('event: lagged')) client.lagged++;
          const at = message.lastIndexOf('"at":"');
          if (at < 0) continue;
          client.messages++;
          if (!message.includes(measured)) continue;
          client.latencies.push(received - Date.parse(message.slice(at + 6, message.indexOf('"', at + 6))));
        }
      });
      res.on('error', () => {});
      resolve(client);
    });
    req.end();
  });
}

const clients: Client[] = [];
for (let i = 0; i < streams; i++) clients.push(await open());
send({ type: 'ready' });

process.on('message', (msg: { type?: string; expected?: number; timeoutMs?: number }) => {
  if (msg.type === 'wait') void wait(msg.expected ?? 0, msg.timeoutMs ?? 60_000);
});
process.on('disconnect', () => process.exit(0));

async function wait(expected: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const fewest = () => Math.min(...clients.map((c) => c.latencies.length));
  while (fewest() < expected && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  const all = clients.flatMap((c) => c.latencies).sort((a, b) => a - b);
  const pct = (p: number) => percentile(all, p);
  send({
    type: 'done',
    complete: fewest() >= expected,
    fewest: fewest(),
    count: all.length,
    messages: clients.reduce((n, c) => n + c.messages, 0),
    lagged: clients.reduce((n, c) => n + c.lagged, 0),
    latencies: { p50: pct(50), p95: pct(95), p99: pct(99), max: all[all.length - 1] ?? Number.NaN },
  });
}

function send(msg: unknown): void {
  process.send?.(msg);
}

function required(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is required`);
  return value;
}
