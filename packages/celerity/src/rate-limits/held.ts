import type { RedisClient } from '../broker/connection.ts';
import { keys } from '../broker/keys.ts';
import type { HoldReason } from './gate.ts';

/** Why a queued job waits: the limit that last held it back, and until when (epoch ms). */
export interface WaitReason {
  reason: HoldReason;
  /** The limit's label, e.g. `task:llm.call`, `task:llm.call#tenant=acme`, `queue:llm#tenant=acme`. */
  key: string;
  until: number;
}

/** A held job's reason, as the gate's script wrote it; null when the text is not one. */
export function parseWaitReason(text: string | null | undefined): WaitReason | null {
  if (!text) return null;
  try {
    const v = JSON.parse(text) as Partial<WaitReason>;
    return typeof v.reason === 'string' && typeof v.key === 'string' && typeof v.until === 'number' ? { reason: v.reason, key: v.key, until: v.until } : null;
  } catch {
    return null;
  }
}

/** One job's wait reason, read with one `GET`: the gate removes it when the job is admitted. */
export async function readWaitReason(redis: RedisClient, prefix: string, jobId: string): Promise<WaitReason | null> {
  return parseWaitReason(await redis.get(keys.heldReason(prefix, jobId)));
}

/** A job held back by a limit, for `celerity inspect held`. */
export interface HeldJob extends WaitReason {
  jobId: string;
}

/**
 * The jobs held back by a limit now or in the last minute, soonest release
 * first, at most `limit`: one range read of the index and one `MGET`.
 */
export async function listHeld(redis: RedisClient, prefix: string, limit = 100): Promise<HeldJob[]> {
  const ids = await redis.zrange(keys.held(prefix), 0, limit - 1);
  if (ids.length === 0) return [];
  const reasons = await redis.mget(...ids.map((id) => keys.heldReason(prefix, id)));
  const held: HeldJob[] = [];
  ids.forEach((jobId, i) => {
    const reason = parseWaitReason(reasons[i]);
    if (reason) held.push({ jobId, ...reason });
  });
  return held;
}
