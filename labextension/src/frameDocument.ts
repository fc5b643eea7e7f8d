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
  /** A fresh random value for this frame's policy: only the bootstrap carries it. */
  nonce: string;
}

/**
 * The frames' policy. Script may run (it is what makes charts interactive), but only the frame's
 * own bootstrap (by its nonce), what that bootstrap evaluates, and this extension's static
 * files; images, media and fonts only from the output's own data; no connection, frame, worker,
 * form or plugin at all.
 *
 * No 'unsafe-inline' for scripts: a frame nested in the output (`<iframe srcdoc>`) inherits this
 * policy, so no script runs there, in a realm the bootstrap has not cleaned (below). Inline
 * event handlers and `javascript:` URLs do not run either.
 *
 * Both frames carry it: an srcdoc frame inherits its parent's policy and adds its own, so the
 * outer one must admit what the inner one runs. Its `frame-src 'none'` still admits the inner
 * frame (an srcdoc document is not fetched) while refusing every navigation of it: location
 * changes, `<meta refresh>`, links and forms.
 */
export function framePolicy(assetsUrl: string, nonce: string): string {
  const assets = cspSource(assetsUrl);
  return [
    "default-src 'none'",
    `script-src 'nonce-${nonce}' 'unsafe-eval' ${assets}`,
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
export function outerDocument(inner: string, assetsUrl: string, nonce: string): string {
  return (
    '<!DOCTYPE html><html><head><meta charset="utf-8">' +
    `<meta http-equiv="Content-Security-Policy" content="${escapeAttribute(framePolicy(assetsUrl, nonce))}">` +
    '<style>html,body{margin:0;padding:0;height:100%;overflow:hidden;background:transparent}' +
    'iframe{display:block;border:0;width:100%;height:100%}</style></head><body>' +
    `<iframe sandbox="allow-scripts" srcdoc="${escapeAttribute(inner)}"></iframe>` +
    '</body></html>'
  );
}

/**
 * The inner frame's document: the policy first, then the theme and the bootstrap, then the
 * content. HTML arrives in an inert `<template>` that the bootstrap mounts and whose scripts it
 * runs, in order; a bundle arrives as JSON for the frame runtime.
 */
export function innerDocument(options: IFrameOptions): string {
  const { content, assetsUrl, variables, light, styles, nonce } = options;
  const head =
    '<!DOCTYPE html><html><head><meta charset="utf-8">' +
    `<meta http-equiv="Content-Security-Policy" content="${escapeAttribute(framePolicy(assetsUrl, nonce))}">` +
    `<style id="hopx-theme">${themeRule(variables, light)}</style>` +
    `<style>${styleText(FRAME_STYLE + styles)}</style>` +
    `<script nonce="${nonce}">(${frameBootstrap.toString()})(${themeRule.toString()});</script>`;
  if (content.kind === 'html') {
    const preamble = libraryPreamble(content.html, assetsUrl, nonce);
    return (
      `${head}${preamble}</head><body class="${BODY_CLASSES} jp-RenderedHTML">` +
      `<template id="hopx-content">${content.html}</template></body></html>`
    );
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
export function libraryPreamble(html: string, assetsUrl: string, nonce: string): string {
  const versions: Record<string, string> = {};
  for (const [, lib, version] of html.matchAll(/maybeLoadScript\("(vega|vega-lite|vega-embed)", "([\w.-]+)"\)/g)) {
    versions[`${lib.replace('-', '')}_version`] = version;
  }
  if (Object.keys(versions).length === 0) {
    return '';
  }
  return (
    `<script src="${escapeAttribute(assetsUrl)}vega.js"></script>` +
    `<script nonce="${nonce}">var VEGA_DEBUG = ${scriptJSON(versions)};</script>`
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
 * Runs first in every inner frame, before anything of the output; serialized into the frame,
 * so it uses nothing from outside itself. It
 * - removes WebRTC, the one way out a Content-Security-Policy does not govern (a peer
 *   connection sends packets to any host it is given); no other realm can bring it back,
 *   since no script runs in frames nested in this one;
 * - removes the policy's element and itself, so the output never reads the nonce;
 * - reports the content's height to the page whenever it changes (also by timer: a frame out
 *   of view gets no ResizeObserver callbacks), and applies the theme the page sends;
 * - forwards right clicks, for JupyterLab to select the cell and open its context menu;
 * - mounts the output's HTML without its frames, plugins, refreshes and connection hints (the
 *   policy refuses their requests, but the browser would still look the host up), and runs its
 *   scripts in order, as the page would have.
 */
export function frameBootstrap(themeRule: (variables: Record<string, string>, light: boolean) => string): void {
  const global = window as unknown as Record<string, unknown>;
  for (const name of ['RTCPeerConnection', 'webkitRTCPeerConnection']) {
    delete global[name];
  }
  document.querySelector('meta[http-equiv="Content-Security-Policy"]')?.remove();
  document.currentScript?.remove();

  let last = -1;
  const report = (): void => {
    const height = document.body ? Math.ceil(document.body.getBoundingClientRect().height) : -1;
    if (height >= 0 && height !== last) {
      last = height;
      window.top?.postMessage({ hopx: 'size', height }, '*');
    }
  };
  const forward = (event: MouseEvent): void => {
    const { type, button, clientX: x, clientY: y } = event;
    window.top?.postMessage({ hopx: 'mouse', type, button, x, y }, '*');
  };
  // Only the right button: JupyterLab focuses the notebook on a press, which would take the
  // keyboard from whatever the user clicked in the output (a text box, a widget).
  document.addEventListener(
    'mousedown',
    event => {
      if (event.button === 2) {
        forward(event);
      }
    },
    true
  );
  document.addEventListener('contextmenu', event => {
    event.preventDefault();
    forward(event);
  });
  window.addEventListener('message', event => {
    const data = event.data as { hopx?: string; variables?: Record<string, string>; light?: boolean };
    const style = document.getElementById('hopx-theme');
    if (event.source === window.top && data?.hopx === 'theme' && style) {
      style.textContent = themeRule(data.variables ?? {}, data.light !== false);
    }
  });
  window.addEventListener('load', report);
  for (const delay of [100, 300, 1000, 3000, 10000]) {
    setTimeout(report, delay);
  }

  const executable = /^$|^(text|application)\/(java|ecma)script$/i;
  const mount = async (template: HTMLTemplateElement): Promise<void> => {
    const content = template.content;
    template.remove();
    const dropped =
      'iframe, frame, object, embed, portal, meta, ' +
      'link[rel~="preconnect" i], link[rel~="dns-prefetch" i], link[rel~="prefetch" i], ' +
      'link[rel~="preload" i], link[rel~="modulepreload" i], link[rel~="prerender" i]';
    content.querySelectorAll(dropped).forEach(element => element.remove());
    // Scripts stay where they are, inert, and run one by one with `document.currentScript`
    // naming them (outputs find their place in the page through it).
    const scripts = Array.from(content.querySelectorAll('script')).filter(script =>
      executable.test((script.getAttribute('type') ?? '').trim())
    );
    const types = scripts.map(script => script.getAttribute('type'));
    scripts.forEach(script => script.setAttribute('type', 'text/hopx-inert'));
    document.body.appendChild(content);
    for (const [index, script] of scripts.entries()) {
      const type = types[index];
      if (type === null) {
        script.removeAttribute('type');
      } else {
        script.setAttribute('type', type);
      }
      const src = script.getAttribute('src');
      try {
        if (src) {
          await new Promise<void>(resolve => {
            const element = document.createElement('script');
            element.onload = element.onerror = () => resolve();
            element.src = src;
            script.after(element);
          });
        } else {
          Object.defineProperty(document, 'currentScript', { configurable: true, get: () => script });
          (0, eval)(script.textContent ?? '');
        }
      } catch (error) {
        console.error(error);
      } finally {
        delete (document as unknown as Record<string, unknown>).currentScript;
      }
    }
    report();
  };
  document.addEventListener('DOMContentLoaded', () => {
    new ResizeObserver(report).observe(document.body);
    const template = document.getElementById('hopx-content');
    if (template instanceof HTMLTemplateElement) {
      void mount(template);
    }
    report();
  });
}

/**
 * The `:root` rule carrying the page's theme variables into a frame; serialized into the frame
 * too, so a theme change is applied there exactly as here.
 */
export function themeRule(variables: Record<string, string>, light: boolean): string {
  let declarations = '';
  for (const [name, value] of Object.entries(variables)) {
    // Only well-formed custom properties with values that cannot close the rule.
    if (/^--[a-zA-Z0-9-]+$/.test(name) && !/[{}<>;]/.test(String(value))) {
      declarations += `${name}:${String(value)};`;
    }
  }
  return `:root{${declarations}color-scheme:${light ? 'light' : 'dark'}}`;
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
