/**
 * Which Plotly build an output frame loads for a figure. Frames have an opaque origin, so the
 * browser caches nothing for them: every frame fetches and compiles its Plotly again. The
 * cartesian build (1.4 MB) draws the figures people make most and compiles in a fraction of the
 * full one's time (4.9 MB), which a figure gets only when it needs a trace type outside it.
 */

/** The trace types plotly.js-cartesian-dist-min registers (its README, plotly.js 3). */
const CARTESIAN_TRACES = new Set([
  'bar',
  'box',
  'contour',
  'heatmap',
  'histogram',
  'histogram2d',
  'histogram2dcontour',
  'image',
  'pie',
  'scatter',
  'scatterternary',
  'violin'
]);

export const PLOTLY_CARTESIAN = 'plotly-cartesian.min.js';
export const PLOTLY_FULL = 'plotly.min.js';

/** The file name of the build that can draw every trace of `figure`, its animation frames too. */
export function plotlyBundleFor(figure: unknown): string {
  const traces: unknown[] = [];
  const collect = (data: unknown): void => {
    if (Array.isArray(data)) {
      traces.push(...data);
    }
  };
  const { data, frames } = (figure ?? {}) as { data?: unknown; frames?: unknown };
  collect(data);
  if (Array.isArray(frames)) {
    for (const frame of frames) {
      collect(((frame ?? {}) as { data?: unknown }).data);
    }
  }
  const cartesian = traces.every(trace => {
    // A trace without a type is a scatter trace, as Plotly draws it.
    const { type } = (trace ?? {}) as { type?: unknown };
    return type === undefined || (typeof type === 'string' && CARTESIAN_TRACES.has(type));
  });
  return cartesian ? PLOTLY_CARTESIAN : PLOTLY_FULL;
}
