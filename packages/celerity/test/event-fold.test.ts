import { describe, expect, it } from 'vitest';
import { foldEvents, padStreamId, parseEntry, type StreamEvent } from '../src/store/event-fold.ts';

describe('padStreamId', () => {
  it('pads both parts to fixed widths', () => {
    expect(padStreamId('1700000000000-3')).toBe('001700000000000-0000000003');
    expect(padStreamId('0-0')).toBe('000000000000000-0000000000');
    expect(padStreamId('5')).toBe('000000000000005-0000000000');
  });

  it('makes string order equal Redis stream order', () => {
    const ordered = ['0-0', '0-1', '0-2', '0-10', '9-0', '10-0', '10-5', '99-100', '100-0', '1700000000000-0', '1700000000000-1', '1700000000001-0'];
    const padded = ordered.map(padStreamId);
    expect([...padded].reverse().sort()).toEqual(padded);
    // Unpadded, plain string order would get these wrong.
    expect(['10-0', '9-0'].sort()).toEqual(['10-0', '9-0']);
    expect(padStreamId('9-0') < padStreamId('10-0')).toBe(true);
    expect(padStreamId('1-9') < padStreamId('1-10')).toBe(true);
  });
});

describe('parseEntry', () => {
  it('turns a flat field list into an event', () => {
    expect(parseEntry('1-0', ['event', 'completed', 'jobId', 'j1', 'returnvalue', '{"x":1}', 'dangling'])).toEqual({
      id: '1-0',
      event: 'completed',
      jobId: 'j1',
      fields: { event: 'completed', jobId: 'j1', returnvalue: '{"x":1}' },
    });
    expect(parseEntry('2-0', ['event', 'drained'])).toEqual({ id: '2-0', event: 'drained', jobId: undefined, fields: { event: 'drained' } });
  });
});

let n = 0;
function ev(event: string, jobId: string | undefined, fields: Record<string, string> = {}): StreamEvent {
  n += 1;
  const id = `${1000 + n}-${n % 3}`;
  return { id, event, jobId, fields: { event, ...(jobId ? { jobId } : {}), ...fields } };
}

describe('foldEvents', () => {
  it('keeps the last status of each job and the position of its last event', () => {
    const events = [ev('added', 'a'), ev('waiting', 'a'), ev('added', 'b'), ev('active', 'a'), ev('completed', 'a', { returnvalue: '{"sum":3}' }), ev('waiting', 'b')];
    const folds = foldEvents(events);
    expect([...folds.keys()]).toEqual(['a', 'b']);
    // The add keeps the happy path (the recorder moves the row only if the producer handed it over).
    expect(folds.get('a')).toEqual({
      jobId: 'a',
      status: 'completed',
      statusNeedsAttempts: false,
      seq: padStreamId(events[4]!.id),
      returnvalue: '{"sum":3}',
      happy: true,
      activeAt: Number(events[3]!.id.split('-')[0]),
      completedAt: Number(events[4]!.id.split('-')[0]),
      fromAdd: true,
      justAdded: false,
    });
    // The add's own `waiting` is not a return from a failed attempt: queued, whatever the job's attempts are when its hash is read.
    expect(folds.get('b')).toEqual({ jobId: 'b', status: 'queued', statusNeedsAttempts: false, seq: padStreamId(events[5]!.id), happy: true, fromAdd: true, justAdded: true });
  });

  it('a job whose batch holds its add and nothing after it is just added, as its producer left it', () => {
    // BullMQ's add scripts append `added`, then `waiting` with no `prev`.
    expect(foldEvents([ev('added', 'a'), ev('waiting', 'a')]).get('a')!.justAdded).toBe(true);
    expect(foldEvents([ev('added', 'a')]).get('a')!.justAdded).toBe(true);
    // A delayed or prioritized add, a start, a progress, a retry's return: the job moved on.
    for (const next of [ev('delayed', 'b'), ev('prioritized', 'b'), ev('active', 'b'), ev('progress', 'b', { data: '{}' }), ev('waiting', 'b', { prev: 'active' }), ev('removed', 'b')]) {
      expect(foldEvents([ev('added', 'b'), ev('waiting', 'b'), next]).get('b')!.justAdded, next.event).toBe(false);
    }
    // Without its `added` event the batch does not hold the job's whole story.
    expect(foldEvents([ev('waiting', 'c')]).get('c')).toMatchObject({ fromAdd: false, justAdded: false });
    // A start and a completion after the add keep the happy path; a delayed add does not.
    expect(foldEvents([ev('added', 'd'), ev('waiting', 'd'), ev('active', 'd'), ev('completed', 'd')]).get('d')).toMatchObject({ fromAdd: true, justAdded: false, happy: true });
    expect(foldEvents([ev('added', 'e'), ev('delayed', 'e')]).get('e')).toMatchObject({ fromAdd: true, justAdded: false, happy: false });
  });

  it('a batch with only active, completed and progress events is the happy path, with their times and the last snapshot', () => {
    const events = [ev('active', 'h'), ev('progress', 'h', { data: '{"percent":50}' }), ev('progress', 'h', { data: '{"percent":90}' }), ev('completed', 'h', { returnvalue: '1' })];
    expect(foldEvents(events).get('h')).toMatchObject({
      happy: true,
      status: 'completed',
      activeAt: Number(events[0]!.id.split('-')[0]),
      completedAt: Number(events[3]!.id.split('-')[0]),
      progressData: '{"percent":90}',
      returnvalue: '1',
    });
    expect(foldEvents([ev('active', 'r'), ev('waiting', 'r')]).get('r')!.happy).toBe(false);
    expect(foldEvents([ev('active', 'f'), ev('failed', 'f')]).get('f')!.happy).toBe(false);
    expect(foldEvents([ev('active', 'x'), ev('active', 'x')]).get('x')!.happy).toBe(false);
  });

  it('a delayed job made runnable just before its start (the promote of a fair queue) stays on the happy path', () => {
    const folds = foldEvents([ev('waiting', 'p', { prev: 'delayed' }), ev('active', 'p'), ev('completed', 'p', { returnvalue: '1' })]);
    expect(folds.get('p')).toMatchObject({ happy: true, status: 'completed', statusNeedsAttempts: false });
    // Not after a start (a retry coming back from its backoff), nor from elsewhere.
    expect(foldEvents([ev('active', 'q'), ev('waiting', 'q', { prev: 'delayed' })]).get('q')!.happy).toBe(false);
    expect(foldEvents([ev('waiting', 's', { prev: 'active' }), ev('active', 's')]).get('s')!.happy).toBe(false);
  });

  it('maps each status-bearing event', () => {
    const cases: [string, string, boolean][] = [
      ['added', 'queued', false],
      ['waiting', 'queued', true],
      ['delayed', 'queued', true],
      ['prioritized', 'queued', true],
      ['active', 'started', false],
      ['completed', 'completed', false],
      ['failed', 'failed', false],
    ];
    for (const [event, status, needsAttempts] of cases) {
      const fold = foldEvents([ev(event, 'j')]).get('j');
      expect(fold, event).toMatchObject({ status, statusNeedsAttempts: needsAttempts });
    }
  });

  it('a failed attempt followed by a retry ends as queued-needing-attempts and keeps the failure reason', () => {
    const events = [ev('active', 'j'), ev('failed', 'j', { failedReason: 'boom' }), ev('delayed', 'j')];
    const fold = foldEvents(events).get('j')!;
    expect(fold.status).toBe('queued');
    expect(fold.statusNeedsAttempts).toBe(true);
    expect(fold.failedReason).toBe('boom');
    expect(fold.seq).toBe(padStreamId(events[2]!.id));
  });

  it('a progress event moves the position but not the status', () => {
    const events = [ev('active', 'j'), ev('progress', 'j', { data: '{"percent":50}' })];
    const fold = foldEvents(events).get('j')!;
    expect(fold.status).toBe('started');
    expect(fold.seq).toBe(padStreamId(events[1]!.id));
    // Progress alone: a fold with no status.
    const only = foldEvents([ev('progress', 'k')]).get('k')!;
    expect(only.status).toBeNull();
    expect(only.statusNeedsAttempts).toBe(false);
  });

  it('drops events without a job id and events that say nothing about a record', () => {
    const folds = foldEvents([ev('drained', undefined), ev('paused', undefined), ev('stalled', 'x'), ev('duplicated', 'z'), ev('retries-exhausted', 'w'), ev('completed', undefined)]);
    expect(folds.size).toBe(0);
  });

  it('a stalled job re-announced with waiting folds to queued', () => {
    const folds = foldEvents([ev('active', 's'), ev('stalled', 's'), ev('waiting', 's')]);
    expect(folds.get('s')).toMatchObject({ status: 'queued', statusNeedsAttempts: true });
  });

  it('a removed job folds to cancelled: Celerity removes jobs only to cancel them', () => {
    expect(foldEvents([ev('added', 'r'), ev('removed', 'r')]).get('r')).toMatchObject({ status: 'cancelled', statusNeedsAttempts: false });
  });

  it('returns an empty map for no events', () => {
    expect(foldEvents([]).size).toBe(0);
  });
});
