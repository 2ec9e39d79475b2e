import type { z } from 'zod';
import { TaskDefinitionError } from '../errors.ts';
import type { Task } from '../task.ts';

/**
 * Workflows, like Celery's canvas: `chain`, `group` and `chord` compose steps
 * into one BullMQ flow (a tree of parent and child jobs added atomically).
 * A parent runs only when its children have completed and reads their
 * results; a child that fails fails its parent (`failParentOnFailure`), so a
 * failed step fails the whole workflow.
 */

/** One task call in a workflow. */
export interface Step {
  readonly kind: 'step';
  /** The task object, or its name (a task this app defines). */
  readonly task: Task<any, any> | string;
  /** The static input. For a step that receives a previous result, see `resultAs`. */
  readonly input: unknown;
  /**
   * Where the previous result goes when this step follows another: by
   * default it is the whole input; with `resultAs`, it is set as that field
   * of `input` (which must then be an object).
   */
  readonly resultAs: string | undefined;
  /** A label for progress views ("parsing", "validating"). */
  readonly stage: string | undefined;
  /** What the steps of a stage count, for the progress message ("parsing 2/5 documents"). */
  readonly unit: string | undefined;
}

export interface Chain {
  readonly kind: 'chain';
  /** The result of each node is the input of the next. Only the first node may be a group or a chord. */
  readonly nodes: readonly WorkflowNode[];
}

export interface Group {
  readonly kind: 'group';
  /** Run in parallel; the group's result is their results, in this order. */
  readonly steps: readonly Step[];
}

export interface Chord {
  readonly kind: 'chord';
  readonly group: Group;
  /** Runs once every member of the group has completed, with their results (in order) as input. */
  readonly callback: Step;
}

export type WorkflowNode = Step | Chain | Group | Chord;

/** A step: `step(task, input)`; a step after another gets the previous result as input (see `resultAs`). */
export function step<T extends Task<any, any>>(task: T | string, input?: unknown, opts: { resultAs?: string; stage?: string; unit?: string } = {}): Step {
  return { kind: 'step', task, input, resultAs: opts.resultAs, stage: opts.stage, unit: opts.unit };
}

/** Runs nodes one after the other, each result becoming the next node's input. */
export function chain(...nodes: WorkflowNode[]): Chain {
  if (nodes.length === 0) throw new TaskDefinitionError('A chain needs at least one step');
  // chain(a, chain(b, c)) is chain(a, b, c).
  const flat = nodes.flatMap((n) => (n.kind === 'chain' ? n.nodes : [n]));
  flat.forEach((n, i) => {
    if (i > 0 && n.kind !== 'step') {
      throw new TaskDefinitionError(`chain: node ${i + 1} is a ${n.kind}; only the first node of a chain may be a group or a chord (a flow is a tree: one job cannot feed several)`);
    }
  });
  return { kind: 'chain', nodes: flat };
}

/** Runs steps in parallel and gathers their results in order. */
export function group(...steps: Step[]): Group {
  if (steps.length === 0) throw new TaskDefinitionError('A group needs at least one step');
  return { kind: 'group', steps };
}

/** A group, then `callback` with the gathered results. */
export function chord(members: Group | Step[], callback: Step): Chord {
  const g = Array.isArray(members) ? group(...members) : members;
  return { kind: 'chord', group: g, callback };
}

/**
 * A task whose run is a workflow: enqueueing it by name (or `POST /v1/jobs`)
 * validates `input`, builds the workflow and submits it; the job the caller
 * gets is the workflow's root, named after this definition, whose result is
 * the last step's.
 */
export interface WorkflowDefinition<S extends z.ZodType = z.ZodType> {
  readonly name: string;
  readonly inputSchema: S;
  /** Queue of the root job (it only collects the last result). Default `default`. */
  readonly queue: string;
  readonly description: string | undefined;
  readonly build: (input: z.output<S>) => WorkflowNode;
}

export function defineWorkflow<S extends z.ZodType>(def: { name: string; input: S; queue?: string; description?: string; build: (input: z.output<S>) => WorkflowNode }): WorkflowDefinition<S> {
  if (!/^[A-Za-z0-9_.:-]{1,200}$/.test(def.name)) throw new TaskDefinitionError(`Invalid workflow name "${def.name}"`);
  return { name: def.name, inputSchema: def.input, queue: def.queue ?? 'default', description: def.description, build: def.build };
}
