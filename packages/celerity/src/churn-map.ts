/**
 * Collections for entries that come and go with every job, held by
 * objects that live as long as the process (the jobs a worker runs).
 *
 * Why not a `Map` or a `Set`: V8 stores their entries in a hash table that
 * it replaces as entries are added and deleted, and the replaced table
 * keeps a pointer to its successor (for iterators still walking it) along
 * with the entries it held. Once one table of the chain is in the old
 * generation (any full collection promotes the table in use then), every
 * later table and every entry they ever held is reachable from it until
 * the next full collection: each scavenge finds the entries of the jobs
 * just finished alive and promotes them, with the whole job they reference.
 * A `celerity worker` process promoted about 850 KB a scavenge this way,
 * with pauses of 5.5 ms against 1.3-1.6 without it (docs/benchmarks.md,
 * run 32); raw BullMQ's worker does the same once a full collection has
 * run during its drain (`AsyncFifoQueue.pending`, `LockManager.trackedJobs`:
 * src/worker/bullmq-tables.ts replaces those).
 *
 * A dictionary object (`Object.create(null)`) drops its replaced tables
 * with no such link, and an array slot cleared is simply cleared.
 */

/**
 * A `Map` of string keys to values whose entries are short-lived, stored in
 * a dictionary object (see the module's note). It has the part of `Map`'s
 * interface that BullMQ's lock manager and Celerity use. Iteration follows
 * insertion order for keys that are not array indices (`"12"`, which come
 * first, in numeric order); no caller here depends on the order.
 */
export class ChurnMap<V> implements Map<string, V> {
  private table: Record<string, V> = Object.create(null) as Record<string, V>;
  private count = 0;

  get size(): number {
    return this.count;
  }

  get(key: string): V | undefined {
    return this.table[key];
  }

  has(key: string): boolean {
    return key in this.table;
  }

  set(key: string, value: V): this {
    if (!(key in this.table)) this.count++;
    this.table[key] = value;
    return this;
  }

  delete(key: string): boolean {
    if (!(key in this.table)) return false;
    delete this.table[key];
    this.count--;
    return true;
  }

  clear(): void {
    this.table = Object.create(null) as Record<string, V>;
    this.count = 0;
  }

  forEach(fn: (value: V, key: string, map: Map<string, V>) => void, thisArg?: unknown): void {
    for (const [key, value] of this.entries()) fn.call(thisArg, value, key, this);
  }

  // Generators over a snapshot of the keys: like a Map's iterators, they
  // survive deletions made while iterating, and skip a key deleted before
  // its turn.
  *keys(): MapIterator<string> {
    for (const key of Object.keys(this.table)) if (key in this.table) yield key;
  }

  *values(): MapIterator<V> {
    for (const key of Object.keys(this.table)) if (key in this.table) yield this.table[key] as V;
  }

  *entries(): MapIterator<[string, V]> {
    for (const key of Object.keys(this.table)) if (key in this.table) yield [key, this.table[key] as V];
  }

  [Symbol.iterator](): MapIterator<[string, V]> {
    return this.entries();
  }

  get [Symbol.toStringTag](): string {
    return 'ChurnMap';
  }
}

/**
 * A `Set` of objects (compared by identity) whose members are short-lived,
 * stored in an array: add appends, delete moves the last member into the
 * freed slot (so order is not kept). Each member carries its index under a
 * symbol of this set's own, so that `has`, `add` and `delete` take the
 * same time with 10,000 members (BullMQ's main loop holds one a job in
 * flight, and `CELERITY_CONCURRENCY` goes to 10,000) as with ten; an
 * array scan cost 4.3 µs a job at 10,000. A member that cannot take the
 * property (frozen, sealed) is found by a scan instead.
 */
export class ChurnSet<T extends object> implements Set<T> {
  private members: T[] = [];
  /** Where each member sits in `members`; stale on a member deleted or cleared, so always checked against it. */
  private readonly slot: symbol = Symbol('ChurnSet slot');

  get size(): number {
    return this.members.length;
  }

  /** The member's index, or -1. */
  private indexOf(value: T): number {
    const at = (value as Record<symbol, number | undefined>)[this.slot];
    if (at !== undefined && this.members[at] === value) return at;
    // Every extensible member carries its index: one without a valid one is not here.
    return Object.isExtensible(value) ? -1 : this.members.indexOf(value);
  }

  private place(value: T, at: number): void {
    this.members[at] = value;
    if (Object.isExtensible(value)) (value as Record<symbol, number>)[this.slot] = at;
  }

  has(value: T): boolean {
    return this.indexOf(value) !== -1;
  }

  add(value: T): this {
    if (this.indexOf(value) === -1) this.place(value, this.members.length);
    return this;
  }

  delete(value: T): boolean {
    const at = this.indexOf(value);
    if (at === -1) return false;
    const last = this.members.pop() as T;
    if (at < this.members.length) this.place(last, at);
    return true;
  }

  clear(): void {
    this.members = [];
  }

  forEach(fn: (value: T, same: T, set: Set<T>) => void, thisArg?: unknown): void {
    for (const member of this.members.slice()) fn.call(thisArg, member, member, this);
  }

  *values(): SetIterator<T> {
    yield* this.members.slice();
  }

  keys(): SetIterator<T> {
    return this.values();
  }

  *entries(): SetIterator<[T, T]> {
    for (const member of this.members.slice()) yield [member, member];
  }

  [Symbol.iterator](): SetIterator<T> {
    return this.values();
  }

  get [Symbol.toStringTag](): string {
    return 'ChurnSet';
  }
}
