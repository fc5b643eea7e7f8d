import { strict as assert } from 'node:assert';
import { test } from 'node:test';

import {
  cspSource,
  escapeAttribute,
  framePolicy,
  innerDocument,
  libraryPreamble,
  MAX_FRAME_HEIGHT,
  outerDocument,
  parseCommSend,
  parseMouseMessage,
  parseSizeMessage,
  scriptJSON,
  themeRule
} from '../src/frameDocument';

const ASSETS = 'http://127.0.0.1:8888/user/a/lab/extensions/hopx-kernel-labextension/static/frame/';
const NONCE = 'n0nce_-';

function directives(policy: string): Map<string, string[]> {
  return new Map(
    policy.split(';').map(part => {
      const [name, ...sources] = part.trim().split(/\s+/);
      return [name, sources];
    })
  );
}

test('the frame policy loads from nothing but the output and the frame assets', () => {
  const policy = directives(framePolicy(ASSETS, NONCE));
  assert.deepEqual(policy.get('default-src'), ["'none'"]);
  for (const name of ['connect-src', 'frame-src', 'child-src', 'worker-src', 'object-src', 'form-action', 'base-uri']) {
    assert.deepEqual(policy.get(name), ["'none'"], name);
  }
  for (const name of ['img-src', 'media-src', 'font-src']) {
    assert.ok(policy.get(name)!.every(s => s === 'data:' || s === 'blob:'), name);
  }
  // No 'unsafe-inline': only the bootstrap runs inline, by its nonce, and what it evaluates.
  assert.deepEqual(policy.get('script-src'), [`'nonce-${NONCE}'`, "'unsafe-eval'", ASSETS]);
  assert.deepEqual(policy.get('style-src'), ["'unsafe-inline'", ASSETS]);
});

test('cspSource keeps scheme, host, port and path, and nothing a policy could split on', () => {
  assert.equal(cspSource('https://h:9/a/b/?q=1#f'), 'https://h:9/a/b/');
  assert.equal(cspSource('http://h/x;y,z/'), 'http://h/x%3By%2Cz/');
});

test('the policy comes before anything of the output, which cannot end it', () => {
  const html = '</head><meta http-equiv="Content-Security-Policy" content="default-src *"><p>hi</p>';
  const doc = innerDocument({ content: { kind: 'html', html }, assetsUrl: ASSETS, variables: {}, light: true, styles: '', nonce: NONCE });
  const policyAt = doc.indexOf('http-equiv="Content-Security-Policy"');
  assert.ok(policyAt > 0 && policyAt < doc.indexOf('<p>hi</p>'));
  // The output's HTML is inert until the bootstrap mounts it; only the bootstrap has the nonce.
  assert.ok(doc.includes(`<template id="hopx-content">${html}</template>`));
  assert.equal(doc.split(`nonce="${NONCE}"`).length, 2);
  assert.ok(doc.indexOf(`nonce="${NONCE}"`) < doc.indexOf('<template'));
  assert.ok(doc.includes(escapeAttribute(framePolicy(ASSETS, NONCE))));
});

test('a bundle cannot close its script element or open a comment', () => {
  const data = { 'text/plain': '</script><script>alert(1)</script><!--' };
  const doc = innerDocument({
    content: { kind: 'bundle', mimeType: 'text/plain', data, metadata: {} },
    assetsUrl: ASSETS,
    variables: {},
    light: true,
    styles: '',
    nonce: NONCE
  });
  const json = doc.slice(doc.indexOf('id="hopx-bundle">') + 17, doc.lastIndexOf('</script>'));
  assert.ok(!json.includes('<'));
  assert.deepEqual(JSON.parse(json).data, data);
  assert.equal(scriptJSON('\u2028'), '"\\u2028"');
});

test('page styles cannot end their style element', () => {
  const doc = innerDocument({
    content: { kind: 'html', html: '' },
    assetsUrl: ASSETS,
    variables: {},
    light: true,
    styles: 'p{}</style><script>alert(1)</script>',
    nonce: NONCE
  });
  assert.ok(!doc.includes('</style><script>alert(1)'));
});

test('theme variables are custom properties with values that cannot close the rule', () => {
  const rule = themeRule(
    {
      '--jp-ok': '#fff',
      '--jp-bad': 'red;}</style><script>x</script>',
      'color': 'red',
      '--jp-brace': 'a{b'
    },
    false
  );
  assert.equal(rule, ':root{--jp-ok:#fff;color-scheme:dark}');
});

test('the outer document holds the inner one in an attribute it cannot leave', () => {
  const inner = '<p title="x">"&amp;</p>';
  const outer = outerDocument(inner, ASSETS, NONCE);
  assert.ok(outer.includes(`srcdoc="${escapeAttribute(inner)}"`));
  assert.ok(!escapeAttribute(inner).includes('"'));
  assert.ok(outer.indexOf('Content-Security-Policy') < outer.indexOf('<iframe'));
  assert.ok(outer.includes('<iframe sandbox="allow-scripts" srcdoc='));
});

test('a frame may report a bounded height and nothing else', () => {
  assert.equal(parseSizeMessage({ hopx: 'size', height: 120.2 }), 121);
  assert.equal(parseSizeMessage({ hopx: 'size', height: 1e12 }), MAX_FRAME_HEIGHT);
  for (const bad of [null, 'size', { hopx: 'size' }, { hopx: 'size', height: -1 }, { hopx: 'size', height: NaN }, { hopx: 'size', height: '9' }]) {
    assert.equal(parseSizeMessage(bad), null);
  }
});

test('a widget frame may send a comm message with ids, an object and binary buffers only', () => {
  const ok = { hopx: 'comm-send', comm_id: 'abc_1-2', msg_id: 'f00', data: { method: 'update' } };
  assert.deepEqual(parseCommSend(ok), { comm_id: 'abc_1-2', msg_id: 'f00', data: { method: 'update' }, metadata: {}, buffers: [] });
  assert.equal(parseCommSend({ ...ok, buffers: [new ArrayBuffer(2), new Uint8Array(2)] })?.buffers.length, 2);
  for (const bad of [
    { ...ok, hopx: 'comm' },
    { ...ok, comm_id: '../x' },
    { ...ok, comm_id: 'x'.repeat(65) },
    { ...ok, msg_id: 3 },
    { ...ok, data: 'update' },
    { ...ok, data: [] },
    { ...ok, metadata: 'x' },
    { ...ok, buffers: ['text'] }
  ]) {
    assert.equal(parseCommSend(bad), null, JSON.stringify(bad));
  }
});

test('a frame may report a press or a right click, with finite coordinates', () => {
  assert.deepEqual(parseMouseMessage({ hopx: 'mouse', type: 'contextmenu', button: 2, x: 3, y: 4 }), {
    hopx: 'mouse',
    type: 'contextmenu',
    button: 2,
    x: 3,
    y: 4
  });
  assert.equal(parseMouseMessage({ hopx: 'mouse', type: 'click', button: 0, x: 1, y: 1 }), null);
  assert.equal(parseMouseMessage({ hopx: 'mouse', type: 'mousedown', button: 0, x: Infinity, y: 1 }), null);
});

test("Altair's CDN versions become the frame's own Vega, and other HTML gets nothing", () => {
  const altair =
    'maybeLoadScript("vega", "6").then(() => maybeLoadScript("vega-lite", "6.4.1"))' +
    '.then(() => maybeLoadScript("vega-embed", "7"))';
  const preamble = libraryPreamble(altair, ASSETS, NONCE);
  assert.ok(preamble.startsWith(`<script src="${ASSETS}vega.js"></script>`));
  assert.ok(preamble.includes('{"vega_version":"6","vegalite_version":"6.4.1","vegaembed_version":"7"}'));
  assert.equal(libraryPreamble('<b>no charts</b>', ASSETS, NONCE), '');
});
