import { useEffect, useRef } from 'preact/hooks';
import uPlot from 'uplot';

export interface ChartSeries {
  label: string;
  values: (number | null)[];
  /** A CSS custom property of the theme (--chart-1…), so both colour schemes read well. */
  color: string;
  /** Null where nothing was measured (a percentile of a minute with no job): its points are drawn and joined across the gaps, not dropped. */
  sparse?: boolean;
}

/** A uPlot line chart over time (seconds since the epoch), sized to its container. */
export function TimeChart({ title, times, series, unit }: { title: string; times: number[]; series: ChartSeries[]; unit?: string }) {
  const box = useRef<HTMLDivElement>(null);
  useEffect(() => {
    const el = box.current;
    if (!el) return;
    const style = getComputedStyle(document.documentElement);
    const axis = style.getPropertyValue('--muted').trim() || '#666';
    const grid = style.getPropertyValue('--border').trim() || '#ddd';
    const opts: uPlot.Options = {
      title,
      width: Math.max(280, el.clientWidth),
      height: 220,
      series: [
        {},
        ...series.map((s) => ({
          label: s.label,
          stroke: style.getPropertyValue(s.color).trim() || s.color,
          width: 2,
          ...(s.sparse ? { spanGaps: true, points: { show: true, size: 5 } } : {}),
          value: (_u: uPlot, v: number | null) => (v === null ? '—' : `${v}${unit ?? ''}`),
        })),
      ],
      axes: [
        { stroke: axis, grid: { stroke: grid } },
        { stroke: axis, grid: { stroke: grid } },
      ],
    };
    const plot = new uPlot(opts, [times, ...series.map((s) => s.values)], el);
    const resize = new ResizeObserver(() => plot.setSize({ width: Math.max(280, el.clientWidth), height: 220 }));
    resize.observe(el);
    return () => {
      resize.disconnect();
      plot.destroy();
    };
  }, [title, times, series, unit]);
  return (
    <div class="chart" ref={box} role="img" aria-label={`${title}: ${series.map((s) => `${s.label} ${s.values.filter((v) => v !== null).reduce<number>((a, v) => a + (v ?? 0), 0)}`).join(', ')}`} />
  );
}
