/**
 * Live job events from `GET /v1/events` (Server-Sent Events, docs/events.md),
 * read with EventSource: same-origin, so the session cookie authenticates it,
 * and on a dropped connection the browser reconnects by itself with
 * `Last-Event-ID`, so that nothing sent meanwhile is lost.
 */
import { urlOf, type Query } from './http.ts';

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
  /**
   * Read again what the page shows: called when the stream opens with no
   * position to resume from (what changed before it opened is not in it),
   * and on `lagged`, which says some events will not come.
   */
  resync: () => void;
  /** Told whether the stream is open, for the page to say. */
  onMode?: (mode: 'events' | 'reconnecting') => void;
}

/** Every `event:` name of a job message; `lagged` is handled apart. */
const JOB_EVENTS = ['queued', 'started', 'retrying', 'completed', 'failed', 'cancelled', 'progress'] as const;

/**
 * Before opening a new stream when the server refused one (EventSource gives
 * up on any answer but a 200 stream), doubled at each refusal in a row: a
 * filter the route rejects (400) is not asked again every few seconds forever.
 */
const REOPEN_MS = 3_000;
const MAX_REOPEN_MS = 60_000;

/** Starts listening; the function returned stops. */
export function live(opts: LiveOptions): () => void {
  let source: EventSource | null = null;
  let lastId = '';
  let timer: ReturnType<typeof setTimeout> | undefined;
  let stopped = false;
  let refusals = 0;

  const open = (): void => {
    // A new EventSource does not carry the old one's Last-Event-ID: the query does.
    const es = new EventSource(urlOf('/v1/events', 'api', { ...opts.filter, last_event_id: lastId || undefined }));
    source = es;
    es.onopen = () => {
      refusals = 0;
      opts.onMode?.('events');
      if (lastId === '') opts.resync();
    };
    for (const name of JOB_EVENTS) {
      es.addEventListener(name, (e) => {
        const message = e as MessageEvent<string>;
        if (message.lastEventId) lastId = message.lastEventId;
        let data: Omit<LiveEvent, 'event'>;
        try {
          data = JSON.parse(message.data) as Omit<LiveEvent, 'event'>;
        } catch {
          return;
        }
        opts.onEvent({ ...data, event: name });
      });
    }
    es.addEventListener('lagged', (e) => {
      const message = e as MessageEvent<string>;
      if (message.lastEventId) lastId = message.lastEventId;
      opts.resync();
    });
    es.onerror = () => {
      if (stopped) return;
      opts.onMode?.('reconnecting');
      // CONNECTING: the browser reconnects by itself. CLOSED: it gave up (an error answer, e.g. 503 while Redis is away).
      if (es.readyState === EventSource.CLOSED) {
        es.close();
        timer = setTimeout(open, Math.min(MAX_REOPEN_MS, REOPEN_MS * 2 ** refusals++));
      }
    };
  };

  open();
  return () => {
    stopped = true;
    source?.close();
    if (timer) clearTimeout(timer);
  };
}
