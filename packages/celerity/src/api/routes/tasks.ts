import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import type { App } from '../../app.ts';
import type { Task } from '../../task.ts';
import { principalOf, taskAllowed } from '../../auth/principal.ts';

/** The JSON schema of a task's input, as clients should send it. */
export function inputJsonSchema(task: Pick<Task, 'inputSchema'>): unknown {
  try {
    return z.toJSONSchema(task.inputSchema, { io: 'input', unrepresentable: 'any' });
  } catch {
    return {};
  }
}

export async function taskRoutes(server: FastifyInstance, { app }: { app: App }): Promise<void> {
  // Schemas do not change while the process runs: build the answer once.
  const tasks = [...app.tasks.values()]
    .sort((a, b) => a.name.localeCompare(b.name))
    .map((t) => ({ name: t.name, kind: 'task', queue: t.queue, retries: t.retries, description: t.description ?? null, accepts: [...t.accepts], input_schema: inputJsonSchema(t) }))
    .concat(
      [...app.workflows.values()].map((w) => ({
        name: w.name,
        kind: 'workflow',
        queue: w.queue,
        retries: 0,
        description: w.description ?? null,
        accepts: [],
        input_schema: inputJsonSchema(w),
      })),
    )
    .sort((a, b) => a.name.localeCompare(b.name));

  server.get(
    '/v1/tasks',
    {
      schema: {
        summary: 'List the tasks with their input JSON schema',
        tags: ['tasks'],
        response: {
          200: {
            type: 'object',
            properties: {
              tasks: {
                type: 'array',
                items: {
                  type: 'object',
                  properties: {
                    name: { type: 'string' },
                    kind: { type: 'string', enum: ['task', 'workflow'], description: 'A workflow runs as several jobs; its job shows them as `steps`.' },
                    accepts: { type: 'array', items: { type: 'string' }, description: 'Content types the task takes as an upload (POST /v1/uploads).' },
                    queue: { type: 'string' },
                    retries: { type: 'integer' },
                    description: { type: ['string', 'null'] },
                    input_schema: { description: 'JSON Schema of the input.' },
                  },
                },
              },
            },
          },
        },
      },
    },
    // Any valid key may look; a key limited to task patterns sees only those tasks.
    async (request) => {
      const principal = principalOf(request);
      return { tasks: principal.tasks === null ? tasks : tasks.filter((t) => taskAllowed(principal, t.name)) };
    },
  );
}
