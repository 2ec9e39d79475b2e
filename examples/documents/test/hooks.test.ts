import { describe, expect, it } from 'vitest';
import { buildServer, signWebhook } from 'celerity';
import { TICKET_WEBHOOK_SECRET, ticketEnhanceTask, ticketHistory } from '../workloads/tickets/task.ts';
import { enhanceTicket } from '../workloads/tickets/enhance.ts';
import type { App } from 'celerity';
import { add } from 'celerity-example-quickstart/tasks';
import { openTestApp, startWorker, stores, useCleanup, waitFor } from '../../../packages/celerity/test/helpers.ts';
import { documentsTables } from '../workloads/tables.ts';

useCleanup();

/** Headers of a ticket delivery signed as the sender would, over the exact bytes sent. */
function signed(body: string, headers: Record<string, string> = {}): Record<string, string> {
  return { 'content-type': 'application/json', 'celerity-signature': signWebhook(TICKET_WEBHOOK_SECRET, body), ...headers };
}

describe.each(stores)('webhook intake and ticket.enhance (%s)', (kind) => {
  async function setup() {
    let app!: App;
    const task = ticketEnhanceTask({ store: () => app.tables(documentsTables) });
    app = await openTestApp(kind, { tasks: [task, add], tables: [documentsTables] });
    const server = await buildServer(app, { logger: false });
    return { app, server };
  }

  it('validates the payload, enqueues it, and records pending → completed', async () => {
    const { app, server } = await setup();
    const payload = JSON.stringify({
      ticket_id: 'SUP-1',
      tenant_id: 'acme',
      priority: 'low',
      description: 'Checkout is down for all users since 10:00, HTTP 503 on https://shop.acme.test/cart. Please help ASAP.',
    });
    const res = await server.inject({ method: 'POST', url: '/v1/hooks/ticket.enhance', payload, headers: signed(payload, { 'x-delivery-id': 'd-1' }) });
    expect(res.statusCode).toBe(202);
    const id = res.json().job_id as string;
    // The sender retries the delivery (signed anew): same job.
    const again = await server.inject({ method: 'POST', url: '/v1/hooks/ticket.enhance', payload, headers: signed(payload, { 'x-delivery-id': 'd-1' }) });
    expect(again.json().job_id).toBe(id);
    await startWorker(app);
    const view = await waitFor(async () => {
      const v = (await server.inject({ url: `/v1/jobs/${id}` })).json();
      return v.status === 'completed' ? v : null;
    });
    // The ticket's tenant is in its body; the job has none (a fixed secret cannot vouch for an X-Tenant-Id).
    expect(view.tenant).toBeNull();
    expect(view.result).toMatchObject({ category: 'outage', suggested_priority: 'urgent', escalate: true });
    expect(view.result.mentions.urls).toEqual(['https://shop.acme.test/cart']);
    const history = await ticketHistory(await app.tables(documentsTables), 'acme', 'SUP-1');
    expect(history).toHaveLength(1);
    expect(history[0]).toMatchObject({ job_id: id, status: 'completed', attempts: 1 });
    expect(JSON.parse(history[0]!.enhancement!)).toMatchObject({ category: 'outage' });
    await server.close();
  });

  it('answers 4xx naming the field, and enqueues nothing', async () => {
    const { app, server } = await setup();
    const payload = JSON.stringify({ ticket_id: 'SUP-2', tenant_id: 'acme', description: 'x', priority: 'whenever' });
    const unsigned = await server.inject({ method: 'POST', url: '/v1/hooks/ticket.enhance', payload, headers: { 'content-type': 'application/json' } });
    expect(unsigned.statusCode).toBe(401);
    expect(unsigned.json().error.code).toBe('invalid_signature');
    const forged = await server.inject({
      method: 'POST',
      url: '/v1/hooks/ticket.enhance',
      payload,
      headers: { 'content-type': 'application/json', 'celerity-signature': signWebhook('not-the-demo-secret-at-all', payload) },
    });
    expect(forged.statusCode).toBe(401);
    const bad = await server.inject({ method: 'POST', url: '/v1/hooks/ticket.enhance', payload, headers: signed(payload) });
    expect(bad.statusCode).toBe(422);
    expect(bad.json().error.code).toBe('invalid_input');
    expect(JSON.stringify(bad.json().error.details)).toContain('priority');
    const unknown = await server.inject({ method: 'POST', url: '/v1/hooks/nope', payload: '{}', headers: signed('{}') });
    expect(unknown.statusCode).toBe(404);
    expect(unknown.json().error.code).toBe('unknown_hook');
    // Another task of the app that takes no webhooks: the same 404.
    const internal = await server.inject({ method: 'POST', url: '/v1/hooks/math.add', payload: '{}', headers: signed('{}') });
    expect(internal.statusCode).toBe(404);
    expect(internal.json().error.code).toBe('unknown_hook');
    const notObject = await server.inject({ method: 'POST', url: '/v1/hooks/ticket.enhance', payload: '[1,2]', headers: signed('[1,2]') });
    expect(notObject.statusCode).toBe(400);
    const tenantHeader = await server.inject({ method: 'POST', url: '/v1/hooks/ticket.enhance', payload, headers: signed(payload, { 'x-tenant-id': 'acme' }) });
    expect(tenantHeader.statusCode).toBe(400);
    const counts = await app.broker.queue('tickets').getJobCounts();
    expect(Object.values(counts).reduce((a, b) => a + b, 0)).toBe(0);
    await server.close();
  });
});

describe('enhanceTicket', () => {
  it('finds category, mentions and escalation', () => {
    const e = enhanceTicket({ ticket_id: 't', tenant_id: 'a', priority: 'high', description: 'Invoice INV-2041 was charged twice to jane@acme.test. Refund please.' });
    expect(e).toMatchObject({ category: 'billing', suggested_priority: 'medium', escalate: false });
    expect(e.mentions.emails).toEqual(['jane@acme.test']);
    expect(e.mentions.error_codes).toContain('INV-2041');
    expect(e.summary).toBe('Invoice INV-2041 was charged twice to jane@acme.test.');
  });
});
