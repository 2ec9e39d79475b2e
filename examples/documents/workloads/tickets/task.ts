import type { Kysely } from 'kysely';
import { z } from 'zod';
import { NonRetryableError, defineTask, type TableHandle } from 'celerity';
import { enhanceTicket, type Enhancement } from './enhance.ts';

export interface TicketEnhancementsTable {
  job_id: string;
  ticket_id: string;
  tenant_id: string;
  status: 'pending' | 'completed' | 'failed';
  priority: string;
  attempts: number;
  enhancement: string | null;
  error: string | null;
  created_at: number;
  updated_at: number;
}

export const ticketSchema = z.object({
  ticket_id: z.string().min(1).max(200),
  tenant_id: z.string().min(1).max(200),
  description: z.string().min(1).max(100_000),
  priority: z.enum(['low', 'medium', 'high', 'urgent']),
});

function tickets(store: TableHandle): Kysely<{ ticket_enhancements: TicketEnhancementsTable }> {
  return store.db;
}

/**
 * The secret senders sign tickets with (`Celerity-Signature`, see
 * docs/webhooks.md): `CELERITY_DEMO_WEBHOOK_SECRET`, else a demo secret that
 * is public (it is in the README), so set your own beyond a try-out.
 */
export const TICKET_WEBHOOK_SECRET = process.env.CELERITY_DEMO_WEBHOOK_SECRET || 'demo-webhook-secret-change-me';

/**
 * `ticket.enhance`: enriches a support ticket that arrived by signed webhook
 * (`POST /v1/hooks/ticket.enhance`) and keeps its enhancement history row:
 * `pending` when an attempt starts, then `completed` with the enhancement,
 * or `failed` with the error once no attempt is left. The row is keyed by
 * job, so a retried attempt updates it instead of adding another.
 */
export function ticketEnhanceTask(deps: { store: () => Promise<TableHandle> }) {
  return defineTask({
    name: 'ticket.enhance',
    queue: 'tickets',
    description: 'Enrich a support ticket (category, suggested priority, mentions, summary) and record its enhancement history.',
    input: ticketSchema,
    retries: 3,
    backoff: { base: 1_000, max: 30_000 },
    // The ticket names its tenant in its body (tenant_id); the job has none of its own.
    webhook: { secret: TICKET_WEBHOOK_SECRET },
    handler: async (ticket, ctx): Promise<Enhancement> => {
      const store = await deps.store();
      const db = tickets(store);
      const now = Date.now();
      await db
        .insertInto('ticket_enhancements')
        .values({
          job_id: ctx.jobId,
          ticket_id: ticket.ticket_id,
          tenant_id: ticket.tenant_id,
          status: 'pending',
          priority: ticket.priority,
          attempts: ctx.attempt,
          enhancement: null,
          error: null,
          created_at: now,
          updated_at: now,
        })
        .onConflict((oc) => oc.column('job_id').doUpdateSet({ status: 'pending', attempts: ctx.attempt, updated_at: now }))
        .execute();
      try {
        ctx.signal.throwIfAborted();
        const enhancement = enhanceTicket(ticket);
        await db
          .updateTable('ticket_enhancements')
          .set({ status: 'completed', enhancement: JSON.stringify(enhancement), error: null, updated_at: Date.now() })
          .where('job_id', '=', ctx.jobId)
          .execute();
        ctx.log.info({ ticket_id: ticket.ticket_id, category: enhancement.category }, 'ticket enhanced');
        return enhancement;
      } catch (err) {
        const error = err instanceof Error ? err : new Error(String(err));
        // Only the last attempt writes `failed`: an earlier one will be retried.
        if (ctx.attempt >= ctx.maxAttempts || error instanceof NonRetryableError || ctx.signal.aborted) {
          await db
            .updateTable('ticket_enhancements')
            .set({ status: 'failed', error: `${error.name}: ${error.message}`, updated_at: Date.now() })
            .where('job_id', '=', ctx.jobId)
            .execute()
            .catch((e: unknown) => ctx.log.warn({ err: e }, 'enhancement history not updated'));
        }
        throw error;
      }
    },
  });
}

/**
 * The enhancement history of a ticket, newest first. `tenantId` is the
 * `tenant_id` of the ticket as its sender wrote it in the body, not the job's
 * tenant (the webhook's `x-tenant-id`); no route serves this, so no caller
 * can ask for another tenant's tickets through the API.
 */
export async function ticketHistory(store: TableHandle, tenantId: string, ticketId: string): Promise<TicketEnhancementsTable[]> {
  return tickets(store).selectFrom('ticket_enhancements').selectAll().where('tenant_id', '=', tenantId).where('ticket_id', '=', ticketId).orderBy('job_id', 'desc').execute();
}
