/**
 * The documents a Hopx output is rendered in, as strings: pure functions, unit-tested.
 *
 * An output lives in two nested `<iframe sandbox="allow-scripts" srcdoc>` frames. Sandboxing
 * without `allow-same-origin` gives each an opaque origin: script there cannot read the page's
 * cookies, storage or DOM, and requests it makes carry no session. Each frame's
 * Content-Security-Policy forbids loads from anywhere but the output's own data and the
 * server's static files of this extension.
 *
 * Why two frames: a frame may always navigate itself (`location = ...`, `<meta refresh>`), and
 * whether that navigation is allowed is decided by the *embedding* document's `frame-src`. The
 * outer frame is that embedding document: it holds nothing but the inner frame and a policy
 * whose `frame-src` lets no navigation out, so the output cannot leak data by navigating.
 */

/** Messages an output's inner frame posts to the page (`window.top`). */
export interface IFrameSizeMessage {
  hopx: 'size';
  height: number;
}

/** A press or right click in a frame, at the frame's own coordinates. */
export interface IFrameMouseMessage {
  hopx: 'mouse';
  type: 'mousedown' | 'contextmenu';
  button: number;
  x: number;
  y: number;
}

/** Messages the page posts to an inner frame. */
export interface IFrameThemeMessage {
  hopx: 'theme';
  /** CSS custom properties (`--jp-...`) and their values. */
  variables: Record<string, string>;
  light: boolean;
}

/** The tallest a frame may ask to be (px): enough for any real output, bounded for hostile. */
export const MAX_FRAME_HEIGHT = 200_000;

/**
 * What an inner frame holds: raw HTML parsed into its body (scripts run in order, as in the
 * page), or a mime bundle the frame runtime renders.
 */
export type FrameContent =
  | { kind: 'html'; html: string }
  | { kind: 'bundle'; mimeType: string; data: unknown; metadata: unknown };

export interface IFrameOptions {
  content: FrameContent;
  /** Absolute URL of this extension's frame assets, ending in '/'. */
  assetsUrl: string;
  /** The page's theme variables, so the output looks like the page from the first paint. */
  variables: Record<string, string>;
  light: boolean;
  /** The page's own rules for rendered outputs (tables, code, headings), as CSS text. */
  styles: string;
}

/**
 * The frames' policy. Script may run (it is what makes charts interactive), but only inline or
 * from this extension's own static files; images, media and fonts only from the output's own
 * data; no connection, frame, worker, form or plugin at all.
 *
 * Both frames carry it: an srcdoc frame inherits its parent's policy and adds its own, so the
 * outer one must admit what the inner one runs. Its `frame-src 'none'` still admits the inner
 * frame (an srcdoc document is not fetched) while refusing every navigation of it: location
 * changes, `<meta refresh>`, links and forms.
 */
export function framePolicy(assetsUrl: string): string {
  const assets = cspSource(assetsUrl);
  return [
    "default-src 'none'",
    `script-src 'unsafe-inline' 'unsafe-eval' ${assets}`,
    `style-src 'unsafe-inline' ${assets}`,
    'img-src data: blob:',
    'media-src data: blob:',
    'font-src data:',
    "connect-src 'none'",
    "frame-src 'none'",
    "child-src 'none'",
    "worker-src 'none'",
    "object-src 'none'",
    "manifest-src 'none'",
    "form-action 'none'",
    "base-uri 'none'"
  ].join('; ');
}

/** The outer frame's document: the inner frame filling it, nothing else. */
export function outerDocument(inner: string, assetsUrl: string): string {
  return (
    '<!DOCTYPE html><html><head><meta charset="utf-8">' +
    `<meta http-equiv="Content-Security-Policy" content="${escapeAttribute(framePolicy(assetsUrl))}">` +
    '<style>html,body{margin:0;padding:0;height:100%;overflow:hidden;background:transparent}' +
    'iframe{display:block;border:0;width:100%;height:100%}</style></head><body>' +
    `<iframe sandbox="allow-scripts" srcdoc="${escapeAttribute(inner)}"></iframe>` +
    '</body></html>'
  );
}

/** The inner frame's document: policy first, then theme, reporter and the content. */
export function innerDocument(options: IFrameOptions): string {
  const { content, assetsUrl, variables, light, styles } = options;
  const head =
    '<!DOCTYPE html><html><head><meta charset="utf-8">' +
    `<meta http-equiv="Content-Security-Policy" content="${escapeAttribute(framePolicy(assetsUrl))}">` +
    `<style id="hopx-theme">${themeRule(variables, light)}</style>` +
    `<style>${styleText(FRAME_STYLE + styles)}</style>` +
    `<script>${REPORTER}</script>`;
  if (content.kind === 'html') {
    const preamble = libraryPreamble(content.html, assetsUrl);
    return `${head}${preamble}</head><body class="${BODY_CLASSES} jp-RenderedHTML">${content.html}</body></html>`;
  }
  const payload = scriptJSON({
    mimeType: content.mimeType,
    data: content.data,
    metadata: content.metadata
  });
  return (
    `${head}<script src="${escapeAttribute(assetsUrl)}runtime.js"></script></head>` +
    `<body class="${BODY_CLASSES}"><script type="application/json" id="hopx-bundle">${payload}</script>` +
    '</body></html>'
  );
}

/**
 * Altair's HTML output loads Vega, Vega-Lite and vega-embed from a CDN, which the frame's
 * policy refuses, unless its `VEGA_DEBUG` says the versions it asks for are loaded already.
 * They are then this extension's own copy, which the frame loads first.
 */
export function libraryPreamble(html: string, assetsUrl: string): string {
  const versions: Record<string, string> = {};
  for (const [, lib, version] of html.matchAll(/maybeLoadScript\("(vega|vega-lite|vega-embed)", "([\w.-]+)"\)/g)) {
    versions[`${lib.replace('-', '')}_version`] = version;
  }
  if (Object.keys(versions).length === 0) {
    return '';
  }
  return (
    `<script src="${escapeAttribute(assetsUrl)}vega.js"></script>` +
    `<script>var VEGA_DEBUG = ${scriptJSON(versions)};</script>`
  );
}

/** The body carries JupyterLab's classes, so the page's own output rules apply inside. */
const BODY_CLASSES = 'hopx-frame jp-OutputArea-output jp-RenderedHTMLCommon';

/**
 * The frame's own layout: the body is exactly as tall as its content (that height is what the
 * page sizes the frame to) and scrolls sideways itself, as an output does in the page.
 */
const FRAME_STYLE =
  'html{overflow:hidden;background:transparent}' +
  'body.hopx-frame{margin:0;padding:0;display:flow-root;overflow-x:auto;overflow-y:hidden;' +
  'color:var(--jp-content-font-color1);font-family:var(--jp-content-font-family);' +
  'font-size:var(--jp-content-font-size1);background:transparent}';

/**
 * Runs first in every inner frame: reports the content's height to the page whenever it
 * changes, and applies theme changes the page sends. The page trusts nothing in these
 * messages but a bounded height, and only from the frame it made.
 */
const REPORTER = `(function () {
  var last = -1;
  function report() {
    var body = document.body;
    if (!body) { return; }
    var height = Math.ceil(body.getBoundingClientRect().height);
    if (height !== last) { last = height; window.top.postMessage({ hopx: 'size', height: height }, '*'); }
  }
  var observer = new ResizeObserver(report);
  document.addEventListener('DOMContentLoaded', function () { observer.observe(document.body); report(); });
  window.addEventListener('load', report);
  // A press selects the output's cell, and a right click opens JupyterLab's own context menu
  // ("Create New View for Cell Output", ...), as they do on outputs in the page.
  function forward(event) {
    window.top.postMessage({ hopx: 'mouse', type: event.type, button: event.button, x: event.clientX, y: event.clientY }, '*');
  }
  document.addEventListener('mousedown', forward, true);
  document.addEventListener('contextmenu', function (event) { event.preventDefault(); forward(event); });
  window.addEventListener('message', function (event) {
    var data = event.data;
    if (event.source !== window.top || !data || data.hopx !== 'theme') { return; }
    var style = document.getElementById('hopx-theme');
    if (style) { style.textContent = window.hopxThemeRule(data.variables, data.light); }
  });
  window.hopxThemeRule = ${themeRuleSource()};
})();`;

/** The `:root` rule carrying the page's theme variables into a frame. */
export function themeRule(variables: Record<string, string>, light: boolean): string {
  return themeRuleImpl(variables, light);
}

function themeRuleImpl(variables: Record<string, string>, light: boolean): string {
  var declarations = '';
  for (var name in variables) {
    // Only well-formed custom properties with values that cannot close the rule.
    if (/^--[a-zA-Z0-9-]+$/.test(name) && !/[{}<>;]/.test(String(variables[name]))) {
      declarations += name + ':' + String(variables[name]) + ';';
    }
  }
  return ':root{' + declarations + 'color-scheme:' + (light ? 'light' : 'dark') + '}';
}

/** The same function as source, so the frame applies theme changes exactly as the page. */
function themeRuleSource(): string {
  return themeRuleImpl.toString();
}

/** The CSP source expression for an absolute URL (scheme, host, port and path). */
export function cspSource(url: string): string {
  const parsed = new URL(url);
  // CSP source expressions cannot carry ';', ',' or spaces; URL encoding removes them.
  return `${parsed.protocol}//${parsed.host}${parsed.pathname}`.replace(/[;,\s]/g, encodeURIComponent);
}

/** CSS text that cannot end its `<style>` element early. */
export function styleText(css: string): string {
  return css.replace(/</g, '\\3c ');
}

/** Escapes text for a double-quoted HTML attribute. */
export function escapeAttribute(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/"/g, '&quot;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/** JSON that can sit inside a `<script>` element: no `<` can close it or open a comment. */
export function scriptJSON(value: unknown): string {
  return JSON.stringify(value)
    .replace(/</g, '\\u003c')
    .replace(/\u2028/g, '\\u2028')
    .replace(/\u2029/g, '\\u2029');
}

/**
 * A widget frame's change for its kernel: a `comm_msg` on one comm. Whatever else a frame may
 * post is ignored.
 */
export interface ICommSend {
  comm_id: string;
  msg_id: string;
  data: Record<string, unknown>;
  metadata: Record<string, unknown>;
  buffers: (ArrayBuffer | ArrayBufferView)[];
}

const ID = /^[A-Za-z0-9_-]{1,64}$/;

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** The comm message a widget frame asks to send, or null if the message is anything else. */
export function parseCommSend(data: unknown): ICommSend | null {
  if (!isPlainObject(data) || data.hopx !== 'comm-send') {
    return null;
  }
  const { comm_id, msg_id, metadata, buffers } = data;
  if (typeof comm_id !== 'string' || !ID.test(comm_id)) {
    return null;
  }
  if (typeof msg_id !== 'string' || !ID.test(msg_id) || !isPlainObject(data.data)) {
    return null;
  }
  if (metadata !== undefined && !isPlainObject(metadata)) {
    return null;
  }
  const binary = buffers ?? [];
  if (
    !Array.isArray(binary) ||
    !binary.every(b => b instanceof ArrayBuffer || ArrayBuffer.isView(b))
  ) {
    return null;
  }
  return { comm_id, msg_id, data: data.data, metadata: metadata ?? {}, buffers: binary };
}

/** The press or right click a frame reports, or null for anything else. */
export function parseMouseMessage(data: unknown): IFrameMouseMessage | null {
  if (!isPlainObject(data) || data.hopx !== 'mouse') {
    return null;
  }
  const { type, button, x, y } = data;
  if (type !== 'mousedown' && type !== 'contextmenu') {
    return null;
  }
  const numbers = [button, x, y];
  if (!numbers.every(n => typeof n === 'number' && Number.isFinite(n))) {
    return null;
  }
  return { hopx: 'mouse', type, button: button as number, x: x as number, y: y as number };
}

/** The size message a frame may send, or null for anything else. */
export function parseSizeMessage(data: unknown): number | null {
  if (typeof data !== 'object' || data === null) {
    return null;
  }
  const message = data as Partial<IFrameSizeMessage>;
  if (message.hopx !== 'size' || typeof message.height !== 'number') {
    return null;
  }
  if (!Number.isFinite(message.height) || message.height < 0) {
    return null;
  }
  return Math.min(Math.ceil(message.height), MAX_FRAME_HEIGHT);
}
