import { describe, expect, it } from 'vitest';
import { ChurnMap, ChurnSet } from '../src/churn-map.ts';

describe('ChurnMap', () => {
  it('behaves as a Map of string keys', () => {
    const map = new ChurnMap<number>();
    expect(map.size).toBe(0);
    expect(map.set('a', 1)).toBe(map);
    map.set('b', 2).set('a', 3);
    expect(map.size).toBe(2);
    expect(map.get('a')).toBe(3);
    expect(map.get('zz')).toBeUndefined();
    expect(map.has('b')).toBe(true);
    expect(map.delete('b')).toBe(true);
    expect(map.delete('b')).toBe(false);
    expect(map.has('b')).toBe(false);
    expect(map.size).toBe(1);
    map.clear();
    expect(map.size).toBe(0);
    expect(map.get('a')).toBeUndefined();
  });

  it('takes keys an object would inherit or treat specially as plain keys', () => {
    const map = new ChurnMap<string>();
    for (const key of ['__proto__', 'constructor', 'toString', 'hasOwnProperty']) {
      expect(map.has(key)).toBe(false);
      map.set(key, key.toUpperCase());
    }
    expect(map.size).toBe(4);
    expect(map.get('__proto__')).toBe('__PROTO__');
    expect(Object.getPrototypeOf(map)).toBe(ChurnMap.prototype);
    expect(map.delete('constructor')).toBe(true);
    expect([...map.keys()]).toEqual(['__proto__', 'toString', 'hasOwnProperty']);
  });

  it('iterates in insertion order and survives deletions while iterating', () => {
    const map = new ChurnMap<number>();
    for (const [i, id] of ['j1', 'j2', 'j3', 'j4'].entries()) map.set(id, i);
    const seen: string[] = [];
    for (const [id] of map) {
      seen.push(id);
      map.delete(id === 'j1' ? 'j3' : id);
    }
    // j3 was deleted before its turn, as a Map's iterator would skip it.
    expect(seen).toEqual(['j1', 'j2', 'j4']);
    expect([...map.entries()]).toEqual([['j1', 0]]);
    expect([...map.values()]).toEqual([0]);
    const each: [string, number][] = [];
    map.forEach((value, key) => each.push([key, value]));
    expect(each).toEqual([['j1', 0]]);
  });
});

describe('ChurnSet', () => {
  it('behaves as a Set of objects compared by identity', async () => {
    const set = new ChurnSet<Promise<number>>();
    const a = Promise.resolve(1);
    const b = Promise.resolve(2);
    const c = Promise.resolve(3);
    set.add(a).add(b).add(a).add(c);
    expect(set.size).toBe(3);
    expect(set.has(b)).toBe(true);
    expect(set.delete(a)).toBe(true);
    expect(set.delete(a)).toBe(false);
    expect(set.has(a)).toBe(false);
    expect(new Set(set)).toEqual(new Set([b, c]));
    expect(await Promise.all(set)).toEqual(expect.arrayContaining([2, 3]));
    set.clear();
    expect(set.size).toBe(0);
    expect([...set.values()]).toEqual([]);
  });
  it('keeps finding its members after deletes move others, in two sets at once, and after clear', () => {
    const one = new ChurnSet<{ n: number }>();
    const two = new ChurnSet<{ n: number }>();
    const members = Array.from({ length: 10_000 }, (_, n) => ({ n }));
    for (const m of members) one.add(m);
    for (const m of members.slice(0, 100)) two.add(m);
    // Deleting from the front moves the last member into each freed slot.
    for (const m of members.slice(0, 5_000)) expect(one.delete(m)).toBe(true);
    expect(one.size).toBe(5_000);
    for (const m of members) expect(one.has(m)).toBe(m.n >= 5_000);
    // The other set's slots are its own.
    for (const m of members) expect(two.has(m)).toBe(m.n < 100);
    expect(two.delete(members[0]!)).toBe(true);
    expect(two.has(members[1]!)).toBe(true);
    expect(new Set(one)).toEqual(new Set(members.slice(5_000)));
    one.clear();
    expect(one.has(members[9_999]!)).toBe(false);
    expect(one.delete(members[9_999]!)).toBe(false);
    one.add(members[9_999]!).add(members[9_999]!);
    expect(one.size).toBe(1);
    expect(one.has(members[9_999]!)).toBe(true);
  });

  it('takes members that cannot carry its slot (frozen), found by a scan', () => {
    const set = new ChurnSet<object>();
    const frozen = Object.freeze({ f: 1 });
    const plain = { p: 1 };
    set.add(frozen).add(plain).add(frozen);
    expect(set.size).toBe(2);
    expect(set.has(frozen)).toBe(true);
    expect(set.delete(plain)).toBe(true);
    expect(set.has(frozen)).toBe(true);
    expect(set.delete(frozen)).toBe(true);
    expect(set.has(frozen)).toBe(false);
    expect(set.size).toBe(0);
  });
});
