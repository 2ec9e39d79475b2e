/**
 * A request to stop one running job (its cancellation, or the end of a
 * shutdown's grace), from the worker to the attempt.
 *
 * Not an AbortController: Node builds an EventTarget for each one, and two
 * per job (the worker's and the handler's `ctx.signal`), with a listener
 * added and removed, cost a no-op job's worker several percent of its CPU
 * (`createAbortSignal` alone 2.3%; docs/benchmarks.md, run 8). The attempt
 * makes the `ctx.signal` its handler sees only when the handler reads it.
 */
export class StopRequest {
  private why: Error | undefined;
  private listener: ((reason: Error) => void) | undefined;

  /** Why the job was asked to stop; undefined while it was not. */
  get reason(): Error | undefined {
    return this.why;
  }

  /** The first request wins; later ones are ignored, as `AbortController.abort`'s are. */
  request(reason: Error): void {
    if (this.why) return;
    this.why = reason;
    const listener = this.listener;
    this.listener = undefined;
    listener?.(reason);
  }

  /** Runs `fn` once: now if a stop was already requested, else when one is. One listener at a time. */
  onRequest(fn: (reason: Error) => void): void {
    if (this.why) fn(this.why);
    else this.listener = fn;
  }

  /** Forgets the listener (the attempt is over). */
  clear(): void {
    this.listener = undefined;
  }
}
