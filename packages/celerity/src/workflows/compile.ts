import type { FlowJob, JobsOptions } from 'bullmq';
import { InvalidInputError } from '../errors.ts';
import type { JobEnvelope } from '../job-record.ts';
import { parseInput, type Task } from '../task.ts';
import type { Step, WorkflowNode } from './workflow.ts';

/** What a workflow job needs to know to get its input from its children (kept in its envelope). */
export interface FlowWiring {
  /** `chain`: the single child's result; `gather`: every child's result, in `order`. */
  from: 'chain' | 'gather';
  /** Child job ids in the order their results are gathered. */
  order?: string[];
  /** Set the piped value as this field of the static input instead of replacing it. */
  as?: string;
  /** No handler runs: the job's result is the piped value (a group's gather, a workflow's root). */
  collect?: boolean;
}

/** One job of a workflow, in the order they can run. */
export interface StepInfo {
  id: string;
  task: string;
  queue: string;
  stage?: string;
  unit?: string;
}

/** Kept in the root job's envelope: what GET /v1/jobs/:id shows as the workflow's steps. */
export interface WorkflowInfo {
  kind: 'chain' | 'group' | 'chord' | 'workflow';
  steps: StepInfo[];
}

export interface CompileOptions {
  rootId: string;
  /** The root job's task name: a defined workflow's name, or `workflow.<kind>`. */
  rootName: string;
  /** Queue of the root job; default the queue of the job it waits on, which workers of the app consume. */
  rootQueue: string | undefined;
  /** The root's input: a defined workflow's validated input, or null. */
  rootInput: unknown;
  tenant: string | undefined;
  keyId?: string | undefined;
  traceId?: string | undefined;
  /** Resolves a step's task (object or name) to the app's definition. */
  resolve: (task: Task | string) => Task;
  /** BullMQ options of a job of `task` (attempts, backoff, retention). */
  jobOptions: (task: Pick<Task, 'retries'>) => JobsOptions;
}

/**
 * Turns a workflow into one BullMQ flow: a tree whose parents wait for their
 * children. Ids are `<root>.<n>`, numbered in the order steps can run, so a
 * workflow's steps are also found by id prefix in SQL. Every step's input
 * that does not come from a previous step is validated here, before anything
 * is written, so a bad workflow is refused whole.
 */
export function compileWorkflow(node: WorkflowNode, opts: CompileOptions): { flow: FlowJob; info: WorkflowInfo } {
  const steps: StepInfo[] = [];
  let n = 0;
  const nextId = () => `${opts.rootId}.${++n}`;
  const envelope = (input: unknown, flow?: FlowWiring): JobEnvelope => ({
    input,
    ...(opts.tenant ? { tenant: opts.tenant } : {}),
    ...(opts.keyId ? { keyId: opts.keyId } : {}),
    ...(opts.traceId ? { trace: opts.traceId } : {}),
    ...(flow ? { flow } : {}),
  });
  const childOpts = (task: Pick<Task, 'retries'>, id: string): JobsOptions => ({
    ...opts.jobOptions(task),
    jobId: id,
    // A failed step fails the job that waits on it, and so on up to the root.
    failParentOnFailure: true,
  });

  const compileStep = (s: Step, upstream: FlowJob[] | undefined, wiring: FlowWiring | undefined): FlowJob => {
    const task = opts.resolve(s.task);
    const position = `step ${steps.length + 1} (${task.name})`;
    if (!upstream) {
      try {
        parseInput(task, s.input);
      } catch (err) {
        if (err instanceof InvalidInputError) {
          throw new InvalidInputError(
            task.name,
            err.details.issues.map((i) => ({ ...i, message: `${position}: ${i.message}` })),
          );
        }
        throw err;
      }
    } else if (s.resultAs !== undefined && s.input !== undefined && (typeof s.input !== 'object' || s.input === null || Array.isArray(s.input))) {
      throw new InvalidInputError(task.name, [{ path: 'input', message: `${position}: resultAs needs an object input` }]);
    }
    const id = nextId();
    steps.push({ id, task: task.name, queue: task.queue, ...(s.stage ? { stage: s.stage } : {}), ...(s.unit ? { unit: s.unit } : {}) });
    return {
      name: task.name,
      queueName: task.queue,
      data: envelope(upstream ? (s.input ?? null) : s.input, wiring ? { ...wiring, ...(s.resultAs ? { as: s.resultAs } : {}) } : undefined),
      opts: childOpts(task, id),
      ...(upstream ? { children: upstream } : {}),
    };
  };

  const gatherOf = (members: FlowJob[]): FlowWiring => ({ from: 'gather', order: members.map((m) => m.opts!.jobId!) });

  const compile = (node: WorkflowNode, upstream: FlowJob | undefined): FlowJob => {
    switch (node.kind) {
      case 'step':
        return compileStep(node, upstream ? [upstream] : undefined, upstream ? { from: 'chain' } : undefined);
      case 'chain': {
        let acc = upstream;
        for (const child of node.nodes) acc = compile(child, acc);
        return acc!;
      }
      case 'group': {
        const members = node.steps.map((s) => compile(s, undefined));
        const id = nextId();
        const queue = members[0]!.queueName;
        steps.push({ id, task: 'workflow.gather', queue });
        return { name: 'workflow.gather', queueName: queue, data: envelope(null, { ...gatherOf(members), collect: true }), opts: childOpts({ retries: 2 }, id), children: members };
      }
      case 'chord': {
        const members = node.group.steps.map((s) => compile(s, undefined));
        return compileStep(node.callback, members, gatherOf(members));
      }
    }
  };

  const top = compile(node, undefined);
  const kind = opts.rootName.startsWith('workflow.') ? (node.kind === 'step' ? 'chain' : node.kind) : 'workflow';
  const info: WorkflowInfo = { kind, steps };
  const rootEnvelope: JobEnvelope = {
    ...envelope(opts.rootInput, { from: 'chain', collect: true }),
    workflow: info,
  };
  const flow: FlowJob = {
    name: opts.rootName,
    queueName: opts.rootQueue ?? top.queueName,
    data: rootEnvelope,
    opts: { ...opts.jobOptions({ retries: 2 }), jobId: opts.rootId },
    children: [top],
  };
  return { flow, info };
}
