import { randomBytes, randomUUID } from 'node:crypto';

// Crockford base32: sortable as plain strings, no ambiguous letters.
const ALPHABET = '0123456789abcdefghjkmnpqrstvwxyz';

/**
 * A new job id: 10 characters of millisecond time then 16 of randomness
 * (a lower-case ULID). Ids sort by creation time, so the job list can page
 * with an id cursor, and they are unique across queues, so a status read
 * needs no queue name. No colon: BullMQ reserves it in ids.
 */
export function newJobId(now: number = Date.now()): string {
  let time = '';
  let t = now;
  for (let i = 0; i < 10; i++) {
    time = ALPHABET[t % 32]! + time;
    t = Math.floor(t / 32);
  }
  const bytes = randomChunk();
  let rand = '';
  // 10 bytes = 80 bits = 16 base32 characters.
  let acc = 0;
  let bits = 0;
  for (const b of bytes) {
    acc = (acc << 8) | b;
    bits += 8;
    while (bits >= 5) {
      bits -= 5;
      rand += ALPHABET[(acc >> bits) & 31]!;
    }
    acc &= (1 << bits) - 1;
  }
  return time + rand;
}

// One call into the CSPRNG per 409 ids instead of one per id: it showed in
// the enqueue profile.
const POOL_SIZE = 4096;
let pool = Buffer.alloc(0);
let offset = POOL_SIZE;

function randomChunk(): Buffer {
  if (offset + 10 > pool.length) {
    pool = randomBytes(POOL_SIZE);
    offset = 0;
  }
  const chunk = pool.subarray(offset, offset + 10);
  offset += 10;
  return chunk;
}

const TRACE_ID = /^[A-Za-z0-9_.:-]{1,128}$/;

/**
 * The trace id of a request: the caller's `X-Request-Id` when it is a sane
 * token (it ends up in logs and job envelopes), else a fresh random one.
 */
export function traceIdOf(header: string | string[] | undefined): string {
  return typeof header === 'string' && TRACE_ID.test(header) ? header : randomUUID().replaceAll('-', '');
}
