import type { Broker } from '../broker/broker.ts';
import { viaBroker } from '../broker/connection.ts';
import { baseJobOptions, type Enqueued } from '../client/enqueue.ts';
import { InvalidOptionsError, UnknownTaskError } from '../errors.ts';
import { newJobId } from '../ids.ts';
import { IDENTIFIER_RULE, isIdentifierText, MAX_NAME_LENGTH } from '../limits.ts';
import type { Task } from '../task.ts';
import { compileWorkflow } from './compile.ts';
import type { WorkflowNode } from './workflow.ts';

export interface WorkflowOptions {
  tenant?: string;
  /** Public id of the API key submitting the workflow; every step records it as its `key_id`. */
  keyId?: string;
  /** Correlation id carried by every step into the workers' logs. */
  traceId?: string;
}

export interface SubmitWorkflow {
  node: WorkflowNode;
  /** The root's task name: a defined workflow's name, else `workflow.<kind>`. */
  name?: string;
  /** Queue of the root job. Default: the queue of the last step's task. */
  queue?: string;
  /** A defined workflow's (validated) input, kept as the root's input. */
  input?: unknown;
}

/**
 * Submits a workflow as one BullMQ flow. FlowProducer adds every job of the
 * tree in one MULTI, so either the whole workflow is queued or none of it;
 * every step's static input was validated before. Returns the root job,
 * whose status is the workflow's and whose result is the last step's.
 */
export async function submitWorkflow(broker: Broker, tasks: ReadonlyMap<string, Task>, wf: SubmitWorkflow, options: WorkflowOptions = {}): Promise<Enqueued> {
  if (options.tenant !== undefined && (typeof options.tenant !== 'string' || options.tenant.length < 1 || options.tenant.length > 200)) {
    throw new InvalidOptionsError([{ path: 'options.tenant', message: 'must be 1-200 characters' }]);
  }
  if (options.keyId !== undefined && (typeof options.keyId !== 'string' || !isIdentifierText(options.keyId) || options.keyId.length < 1 || options.keyId.length > MAX_NAME_LENGTH)) {
    throw new InvalidOptionsError([{ path: 'options.keyId', message: `must be 1-${MAX_NAME_LENGTH} characters; ${IDENTIFIER_RULE}` }]);
  }
  const rootId = newJobId();
  const name = wf.name ?? `workflow.${wf.node.kind === 'step' ? 'chain' : wf.node.kind}`;
  const { flow } = compileWorkflow(wf.node, {
    rootId,
    rootName: name,
    rootQueue: wf.queue,
    rootInput: wf.input ?? null,
    tenant: options.tenant,
    keyId: options.keyId,
    traceId: options.traceId,
    resolve: (task) => {
      const found = typeof task === 'string' ? tasks.get(task) : task;
      if (!found) throw new UnknownTaskError(task as string, [...tasks.keys()]);
      return found;
    },
    jobOptions: (task) => baseJobOptions(broker, task),
  });
  await viaBroker(broker.redis, () => broker.flows.add(flow));
  return { id: rootId, task: name, queue: flow.queueName, created: true };
}
