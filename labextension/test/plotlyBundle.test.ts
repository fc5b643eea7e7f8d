import { strict as assert } from 'node:assert';
import { test } from 'node:test';

import { PLOTLY_CARTESIAN, PLOTLY_FULL, plotlyBundleFor } from '../frame/plotlyBundle';

test('figures of cartesian traces load the cartesian Plotly build', () => {
  assert.equal(plotlyBundleFor({ data: [{ type: 'scatter' }, { type: 'bar' }] }), PLOTLY_CARTESIAN);
  assert.equal(plotlyBundleFor({ data: [{ y: [1, 2] }] }), PLOTLY_CARTESIAN, 'no type is scatter');
  assert.equal(plotlyBundleFor({ data: [{ type: 'heatmap' }, { type: 'violin' }] }), PLOTLY_CARTESIAN);
  assert.equal(plotlyBundleFor({ data: [] }), PLOTLY_CARTESIAN);
  assert.equal(plotlyBundleFor({}), PLOTLY_CARTESIAN);
});

test('any trace outside the cartesian build loads the full one', () => {
  assert.equal(plotlyBundleFor({ data: [{ type: 'scatter' }, { type: 'sunburst' }] }), PLOTLY_FULL);
  assert.equal(plotlyBundleFor({ data: [{ type: 'scatter3d' }] }), PLOTLY_FULL);
  assert.equal(plotlyBundleFor({ data: [{ type: 42 }] }), PLOTLY_FULL, 'a type that is not a name');
});

test('animation frames count: a frame drawing a map needs the full build', () => {
  const figure = { data: [{ type: 'scatter' }], frames: [{ data: [{ type: 'scattergeo' }] }] };
  assert.equal(plotlyBundleFor(figure), PLOTLY_FULL);
  assert.equal(plotlyBundleFor({ data: [{}], frames: [{ data: [{ type: 'bar' }] }, null] }), PLOTLY_CARTESIAN);
});
