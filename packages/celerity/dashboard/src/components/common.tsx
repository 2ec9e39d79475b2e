import type { ComponentChildren } from 'preact';
import { json } from '../format.ts';

export function StatusBadge({ status }: { status: string }) {
  return <span class={`badge badge-${status}`}>{status}</span>;
}

/** An error of the API, said in words: the API's messages name the field or the rule at fault. */
export function ErrorNote({ error }: { error: unknown }) {
  if (!error) return null;
  const text = error instanceof Error ? error.message : String(error);
  return (
    <p class="error" role="alert">
      {text}
    </p>
  );
}

export function Json({ value, label }: { value: unknown; label: string }) {
  return (
    <pre class="json" data-label={label}>
      {json(value)}
    </pre>
  );
}

export function Section({ title, children, id }: { title: string; children: ComponentChildren; id?: string }) {
  return (
    <section class="card" aria-labelledby={id}>
      <h2 id={id}>{title}</h2>
      {children}
    </section>
  );
}

/** A progress snapshot: the bar (percent) and its other counters. */
export function ProgressView({ progress }: { progress: Record<string, unknown> | null | undefined }) {
  if (!progress || typeof progress !== 'object') return <p class="muted">No progress reported.</p>;
  const percent = typeof progress.percent === 'number' ? Math.max(0, Math.min(100, progress.percent)) : null;
  const counters = Object.entries(progress).filter(([k]) => k !== 'percent');
  return (
    <div class="progress">
      {percent !== null && (
        <div class="progress-row">
          <progress id="job-progress" max={100} value={percent} aria-label="Progress" />
          <output for="job-progress" data-testid="progress-percent">
            {Math.round(percent)}%
          </output>
        </div>
      )}
      {counters.length > 0 && (
        <dl class="counters">
          {counters.map(([k, v]) => (
            <div key={k}>
              <dt>{k}</dt>
              <dd>{typeof v === 'object' ? json(v) : String(v)}</dd>
            </div>
          ))}
        </dl>
      )}
    </div>
  );
}
