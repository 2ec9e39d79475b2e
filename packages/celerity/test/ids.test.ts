import { describe, expect, it } from 'vitest';
import { newJobId } from '../src/ids.ts';
import { isValidJobId } from '../src/limits.ts';

const CROCKFORD = /^[0-9abcdefghjkmnpqrstvwxyz]{26}$/;

describe('newJobId', () => {
  it('is 26 lower-case Crockford base32 characters and a valid job id', () => {
    for (let i = 0; i < 200; i++) {
      const id = newJobId();
      expect(id).toMatch(CROCKFORD);
      expect(isValidJobId(id)).toBe(true);
    }
  });

  it('encodes the time in the first 10 characters', () => {
    expect(newJobId(0).slice(0, 10)).toBe('0000000000');
    expect(newJobId(1).slice(0, 10)).toBe('0000000001');
    expect(newJobId(32).slice(0, 10)).toBe('0000000010');
    expect(newJobId(31).slice(0, 10)).toBe('000000000z');
    const now = Date.now();
    expect(newJobId(now).slice(0, 10)).toBe(newJobId(now).slice(0, 10));
  });

  it('sorts by creation time as a plain string', () => {
    const times = [0, 1, 31, 32, 999, 1_000, 1_700_000_000_000, 1_700_000_000_001, 1_800_000_000_000, 2 ** 45];
    const ids = times.map((t) => newJobId(t));
    const shuffled = [...ids].reverse();
    expect(shuffled.sort()).toEqual(ids);
    // Also with ids drawn in real time, across several milliseconds.
    const seq: string[] = [];
    const start = Date.now();
    while (Date.now() - start < 15) seq.push(newJobId());
    const first = seq[0]!;
    const last = seq[seq.length - 1]!;
    expect(last.slice(0, 10) > first.slice(0, 10)).toBe(true);
    for (let i = 1; i < seq.length; i++) expect(seq[i]!.slice(0, 10) >= seq[i - 1]!.slice(0, 10)).toBe(true);
  });

  it('is unique, even within one millisecond', () => {
    const ids = Array.from({ length: 20_000 }, () => newJobId(1_700_000_000_000));
    expect(new Set(ids).size).toBe(ids.length);
    // The random part uses the whole alphabet (the bit packing is not stuck on some characters).
    const randomChars = new Set(ids.flatMap((id) => [...id.slice(10)]));
    expect(randomChars.size).toBe(32);
  });
});

describe('isValidJobId', () => {
  it.each(['abc', 'order-42', 'a.b_c-D', '0x1', '1a', 'a'.repeat(128)])('accepts %s', (id) => {
    expect(isValidJobId(id)).toBe(true);
  });

  it.each(['', '42', '007', '-1', '-0', 'a:b', 'a b', 'a/b', 'é', 'a'.repeat(129)])('rejects %j', (id) => {
    expect(isValidJobId(id)).toBe(false);
  });
});
