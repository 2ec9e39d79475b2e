/**
 * A stack of clean-up steps. Everything a scenario starts (processes,
 * connections, Redis prefixes, PostgreSQL schemas, temp dirs) registers its
 * own removal here; `close()` runs them last-registered first, each even if
 * an earlier one failed.
 */
export class Scope {
  private readonly steps: { name: string; fn: () => unknown }[] = [];
  private closed = false;
  private closing: Promise<void> | undefined;
  private readonly report: ((err: Error) => void) | undefined;

  /** `report` hears every clean-up failure of this scope and its children. */
  constructor(report?: (err: Error) => void) {
    this.report = report;
  }

  defer(name: string, fn: () => unknown): void {
    if (this.closed) throw new Error(`scope closed; cannot defer ${name}`);
    this.steps.push({ name, fn });
  }

  /** A child scope, closed with this one at the latest. */
  child(): Scope {
    const child = new Scope(this.report);
    this.defer('child scope', () => child.close());
    return child;
  }

  /**
   * Runs every step, even after a failed one; never throws (failures go to
   * `report`). Closing again returns the same promise, so a second caller
   * (the runner after a Ctrl-C) waits for the clean-up in progress.
   */
  close(): Promise<void> {
    this.closing ??= this.runSteps();
    return this.closing;
  }

  private async runSteps(): Promise<void> {
    this.closed = true;
    while (this.steps.length > 0) {
      const step = this.steps.pop()!;
      try {
        await step.fn();
      } catch (err) {
        const error = new Error(`clean-up "${step.name}" failed: ${(err as Error).message}`, { cause: err });
        if (this.report) this.report(error);
        else process.stderr.write(`bench: ${error.message}\n`);
      }
    }
  }
}

/** Runs `fn` with a fresh child scope of `parent`, closed as soon as `fn` ends. */
export async function withScope<T>(parent: Scope, fn: (scope: Scope) => Promise<T>): Promise<T> {
  const scope = parent.child();
  try {
    return await fn(scope);
  } finally {
    await scope.close();
  }
}
