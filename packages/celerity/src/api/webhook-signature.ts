import { createHmac, timingSafeEqual } from 'node:crypto';
import { InvalidSignatureError } from '../errors.ts';
import { DEFAULT_WEBHOOK_TOLERANCE, secretList, type WebhookSecret } from '../webhook.ts';

/**
 * Webhook signatures in the style of Stripe's: the header
 * `Celerity-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>` where the HMAC
 * is over `<t>.<raw body bytes>`. The timestamp bounds replays to the
 * tolerance; several `v1=` entries let a sender sign with an old and a new
 * secret while they rotate.
 */
export const SIGNATURE_HEADER = 'Celerity-Signature';

/** What a verified signature says. */
export interface VerifiedWebhook {
  /** The signed timestamp, in unix seconds. */
  timestamp: number;
}

export interface VerifyWebhookOptions {
  /** Seconds the timestamp may be off from `now`, either way. Default 300. */
  tolerance?: number;
  /** The current time in unix seconds; default the clock. */
  now?: number;
}

// Every byte of the header is checked against a format: nothing else is
// trusted about an unauthenticated request.
const TIMESTAMP = /^\d{1,15}$/;
const HEX_SHA256 = /^[0-9a-fA-F]{64}$/;

/**
 * The value of the `Celerity-Signature` header for `body`, as a sender puts
 * it on a request. Sign the exact bytes you send: a body re-serialized on the
 * way (pretty-printed, re-encoded) no longer matches.
 *
 * @param timestamp unix seconds; default now.
 * @example
 * const body = JSON.stringify(event);
 * await fetch(url, { method: 'POST', body, headers: { 'content-type': 'application/json', 'celerity-signature': signWebhook(secret, body) } });
 */
export function signWebhook(secret: string, body: string | Uint8Array, timestamp: number = nowSeconds()): string {
  if (typeof secret !== 'string' || secret.length === 0) throw new TypeError('signWebhook: the secret must be a non-empty string');
  if (!Number.isSafeInteger(timestamp) || timestamp < 0) throw new TypeError('signWebhook: the timestamp must be an integer of unix seconds');
  return `t=${timestamp},v1=${hmac(secret, timestamp, body).toString('hex')}`;
}

/**
 * Checks a `Celerity-Signature` header against the raw body and the
 * secrets: one `v1` entry must be the HMAC of `<t>.<body>` under one of the
 * secrets (compared in constant time), and `t` within the tolerance of now.
 * Throws {@link InvalidSignatureError} saying what failed (`missing`,
 * `malformed`, `mismatch`, `expired`), never what was expected.
 */
export function verifyWebhook(header: string | undefined, body: string | Uint8Array, secrets: WebhookSecret, options: VerifyWebhookOptions = {}): VerifiedWebhook {
  const { tolerance = DEFAULT_WEBHOOK_TOLERANCE, now = nowSeconds() } = options;
  const { timestamp, signatures } = parseSignatureHeader(header);
  const expected = secretList(secrets).map((secret) => hmac(secret, timestamp, body));
  let matched = false;
  // Every pair is compared, without stopping at a match: the time taken does
  // not tell which entry or which secret matched.
  for (const given of signatures) for (const e of expected) matched = timingSafeEqual(given, e) || matched;
  if (!matched) throw new InvalidSignatureError('mismatch');
  // After the match: only a sender who could sign learns that its clock or
  // its retry was too late.
  if (Math.abs(now - timestamp) > tolerance) throw new InvalidSignatureError('expired');
  return { timestamp };
}

/**
 * The timestamp and the `v1` signatures of a header. Entries of other
 * schemes (`v0=`, a later `v2=`) are skipped, so senders can add one before
 * every receiver knows it; exactly one `t` and at least one `v1` are needed.
 */
export function parseSignatureHeader(header: string | undefined): { timestamp: number; signatures: Buffer[] } {
  if (header === undefined || header.trim() === '') throw new InvalidSignatureError('missing');
  let timestamp: number | undefined;
  const signatures: Buffer[] = [];
  for (const entry of header.split(',')) {
    const eq = entry.indexOf('=');
    if (eq === -1) throw new InvalidSignatureError('malformed');
    const key = entry.slice(0, eq).trim();
    const value = entry.slice(eq + 1).trim();
    if (key === 't') {
      if (timestamp !== undefined || !TIMESTAMP.test(value)) throw new InvalidSignatureError('malformed');
      timestamp = Number(value);
    } else if (key === 'v1') {
      if (!HEX_SHA256.test(value)) throw new InvalidSignatureError('malformed');
      signatures.push(Buffer.from(value, 'hex'));
    }
  }
  if (timestamp === undefined || signatures.length === 0) throw new InvalidSignatureError('malformed');
  return { timestamp, signatures };
}

function hmac(secret: string, timestamp: number, body: string | Uint8Array): Buffer {
  return createHmac('sha256', secret).update(`${timestamp}.`).update(body).digest();
}

function nowSeconds(): number {
  return Math.floor(Date.now() / 1000);
}
