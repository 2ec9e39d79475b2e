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
});
