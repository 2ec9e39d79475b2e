/**
 * Why a write of the recorder failed, which decides what the recorder does:
 * - `unavailable`: the store cannot take any write now (connection refused
 *   or reset, timeouts, disk full, locks, a missing table or privilege).
 *   The batch is retried whole, as it is, until the store is back; splitting
 *   it would only multiply the failures, and no row is to blame.
 * - `refused`: the store refuses the data (PostgreSQL classes 22 data
 *   exception, 23 integrity, 54 program limit; SQLite TOOBIG, CONSTRAINT,
 *   MISMATCH, RANGE; a batch too large to serialize). Some row is to blame:
 *   the batch is split until the rows that fail are alone.
 * - `unknown`: anything else. Retried whole a few times first (it may pass),
 *   then split like a refused one.
 */
export type WriteFailure = 'unavailable' | 'refused' | 'unknown';

const UNAVAILABLE_NODE_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'ETIMEDOUT',
  'EPIPE',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENETDOWN',
  'EADDRNOTAVAIL',
  'ENOSPC',
]);

// SQLSTATE classes: 08 connection, 25 transaction state, 28 authorization,
// 3D catalog, 40 rollback (serialization, deadlock), 42 syntax or access
// (a missing table or column: the schema, not the data), 53 resources (disk,
// memory, connections), 55 object state (lock not available), 57 operator
// intervention (shutdown, statement timeout), 58 system (I/O), XX internal.
const UNAVAILABLE_PG_CLASSES = new Set(['08', '25', '28', '3D', '40', '42', '53', '55', '57', '58', 'XX']);
const REFUSED_PG_CLASSES = new Set(['22', '23', '54']);

const REFUSED_SQLITE = /^SQLITE_(TOOBIG|CONSTRAINT|MISMATCH|RANGE)/;

// pg and pg-pool report a lost or slow connection in plain Errors without a code.
const UNAVAILABLE_MESSAGE = /connection|connect ECONN|timeout|timed out|terminated|socket|pool (is )?(ended|closed)/i;

export function classifyWriteError(err: unknown): WriteFailure {
  const e = err as { code?: unknown; name?: unknown; message?: unknown; cause?: unknown };
  const code = typeof e?.code === 'string' ? e.code : '';
  if (UNAVAILABLE_NODE_CODES.has(code)) return 'unavailable';
  if (/^[0-9A-Z]{5}$/.test(code)) {
    const cls = code.slice(0, 2);
    if (REFUSED_PG_CLASSES.has(cls)) return 'refused';
    if (UNAVAILABLE_PG_CLASSES.has(cls)) return 'unavailable';
    return 'unknown';
  }
  if (code.startsWith('SQLITE_')) return REFUSED_SQLITE.test(code) ? 'refused' : 'unavailable';
  // JSON.stringify of a batch larger than a string can be ("Invalid string length").
  if (err instanceof RangeError) return 'refused';
  if (typeof e?.message === 'string' && UNAVAILABLE_MESSAGE.test(e.message)) return 'unavailable';
  if (e?.cause) return classifyWriteError(e.cause);
  return 'unknown';
}
