/**
 * Live job events from `GET /v1/events` (Server-Sent Events), read with
 * fetch rather than EventSource: EventSource cannot tell a 404 from a
 * dropped connection. A server without the route (404 `not_found`) is polled
 * instead, slowly; TODO(events): drop the poll once every server has the route.
 */
import { headersFor, urlOf, type Query } from './http.ts';

export interface LiveEvent {
  /** The SSE `event:` name: a status, or `progress`. */
  event: string;
  job_id: string;
  task?: string;
  queue?: string;
  tenant?: string | null;
  status?: string;
  progress?: Record<string, unknown>;
  at?: string;
}

export interface LiveOptions {
  filter: Query;
  onEvent: (e: LiveEvent) => void;
  /** Called every `pollMs` instead, when the server has no events route. */
  poll: () => void;
  pollMs?: number;
  /** Told whether updates come as events or by polling, for the page to say. */
  onMode?: (mode: 'events' | 'polling' | 'reconnecting') => void;
}

const RETRY_MS = 3_000;

/** Starts listening; the function returned stops. */
export function live(opts: LiveOptions): () => void {
  const controller = new AbortController();
  let timer: ReturnType<typeof setTimeout> | undefined;
  let stopped = false;

  const connect = async (): Promise<void> => {
    let res: Response;
    try {
      res = await fetch(urlOf('/v1/events', 'api', opts.filter), {
        headers: { ...headersFor('GET', false), accept: 'text/event-stream' },
        credentials: 'same-origin',
        signal: controller.signal,
      });
    } catch {
      return retry();
    }
    if (res.status === 404 && (await isRouteMissing(res))) {
      opts.onMode?.('polling');
      const tick = () => {
        if (stopped) return;
        opts.poll();
        timer = setTimeout(tick, opts.pollMs ?? 2_000);
      };
      timer = setTimeout(tick, opts.pollMs ?? 2_000);
      return;
    }
    if (!res.ok || !res.body) return retry();
    opts.onMode?.('events');
    // Events missed while connecting: one poll catches up.
    opts.poll();
    try {
      await readEvents(res.body, opts.onEvent);
    } catch {
      // Dropped: reconnect below.
    }
    return retry();
  };

  const retry = (): void => {
    if (stopped) return;
    opts.onMode?.('reconnecting');
    timer = setTimeout(() => void connect(), RETRY_MS);
  };

  void connect();
  return () => {
    stopped = true;
    controller.abort();
    if (timer) clearTimeout(timer);
  };
}

async function isRouteMissing(res: Response): Promise<boolean> {
  try {
    const body = (await res.json()) as { error?: { code?: string } };
    return body.error?.code === 'not_found';
  } catch {
    return false;
  }
}

/** Parses an SSE stream (https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation). */
async function readEvents(body: ReadableStream<Uint8Array>, onEvent: (e: LiveEvent) => void): Promise<void> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  let name = 'message';
  let data: string[] = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let nl = buffer.search(/\r\n|\r|\n/);
    while (nl !== -1) {
      const line = buffer.slice(0, nl);
      buffer = buffer.slice(nl + (buffer.startsWith('\r\n', nl) ? 2 : 1));
      if (line === '') {
        if (data.length > 0) {
          try {
            onEvent({ ...(JSON.parse(data.join('\n')) as Omit<LiveEvent, 'event'>), event: name });
          } catch {
            // Not an event of the documented shape (a comment, a keep-alive): ignored.
          }
        }
        name = 'message';
        data = [];
      } else if (!line.startsWith(':')) {
        const colon = line.indexOf(':');
        const field = colon === -1 ? line : line.slice(0, colon);
        const val = colon === -1 ? '' : line.slice(colon + 1).replace(/^ /, '');
        if (field === 'event') name = val;
        else if (field === 'data') data.push(val);
      }
      nl = buffer.search(/\r\n|\r|\n/);
    }
  }
}
