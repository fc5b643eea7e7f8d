/**
 * Inert content: a Hopx output's HTML rebuilt, element by element, from a short list of
 * elements, attributes and CSS that can neither run script nor load anything. Most outputs
 * (pandas tables, Markdown, status snippets) are nothing else, and the page shows them as fast as
 * its own renderers would (see inertOutput.ts); an output with anything beyond the list gets
 * null here and is rendered in frames instead.
 *
 * Why a rebuild and not a sanitizer: the HTML is parsed once, in a document that has no window
 * (it runs nothing and loads nothing), and the page receives new nodes made from what that parse
 * found, never a string to parse again, so no difference between two parses can slip markup in.
 * Whatever is not understood rejects the whole output rather than being dropped from it: the
 * frame then renders the output as written, scripts and all, where they cannot reach the page.
 * This module uses only the DOM, so the tests can run it in a bare browser page.
 */

const HTML_NS = 'http://www.w3.org/1999/xhtml';

/** Attributes any listed element may carry. */
const COMMON_ATTRIBUTES = new Set([
  'class',
  'id',
  'title',
  'lang',
  'dir',
  'style',
  'align',
  'valign',
  'hidden',
  'role',
  'width',
  'height'
]);

/** Attributes understood but not carried over: what they ask for needs a frame's sandbox. */
const DROPPED_ATTRIBUTES: Record<string, Set<string>> = {
  // A link leads nowhere, as in a frame: following it would carry data out.
  a: new Set(['href', 'target', 'download', 'rel', 'referrerpolicy', 'hreflang', 'type']),
  // Only meaningful where the sheet would otherwise reach the page: a shadow root scopes it.
  style: new Set(['scoped', 'type', 'media'])
};

/** Elements that only structure and style text, with the attributes each has of its own. */
const ELEMENTS: Record<string, Set<string>> = {
  ...Object.fromEntries(
    (
      'a abbr address article aside b bdi bdo blockquote br caption center cite code dd del dfn ' +
      'div dl dt em figcaption figure footer h1 h2 h3 h4 h5 h6 header hgroup hr i ins kbd main ' +
      'mark nav p pre q rp rt ruby s samp section small span strong sub summary sup tbody tfoot ' +
      'thead tr u var wbr'
    )
      .split(' ')
      .map(name => [name, new Set<string>()])
  ),
  table: new Set(['border', 'cellpadding', 'cellspacing']),
  td: new Set(['colspan', 'rowspan', 'headers', 'scope', 'abbr', 'nowrap']),
  th: new Set(['colspan', 'rowspan', 'headers', 'scope', 'abbr', 'nowrap']),
  col: new Set(['span']),
  colgroup: new Set(['span']),
  ol: new Set(['start', 'type', 'reversed']),
  ul: new Set(['type']),
  li: new Set(['value']),
  details: new Set(['open']),
  progress: new Set(['value', 'max']),
  meter: new Set(['value', 'min', 'max', 'low', 'high', 'optimum']),
  time: new Set(['datetime']),
  img: new Set(['src', 'alt'])
};

/** The only images: what the output carries itself, in formats an `<img>` shows. */
const IMAGE_SOURCE = /^data:image\/(png|jpeg|gif|webp|bmp|svg\+xml)[;,]/i;

/**
 * CSS that fetches (every fetching value is a function call: `url()`, `image-set()`, ...),
 * reads an attribute into a value, or is written with escapes (checked after the browser's own
 * parse has already decoded those; one left means a value kept as written).
 */
const LOADING_CSS = /url\(|image\(|image-set\(|cross-fade\(|element\(|paint\(|src\(|attr\(|\\/i;

/**
 * Class names of JupyterLab and Lumino: JupyterLab's context menu and command links find their
 * targets by such names and attributes along an event's path, which goes into shadow roots.
 */
const APPLICATION_CLASS = /(^|\s)(jp|lm|p)-/;

/** Selectors reaching outside the shadow root the content lives in, or into other trees. */
const ESCAPING_SELECTOR = /:host|::slotted|::part|:has-slotted/i;

/** An output's rebuilt nodes and its own stylesheet, if it had one. */
export interface IInertContent {
  nodes: DocumentFragment;
  /** The output's `<style>` rules, checked, in `target`'s realm; null if it had none. */
  sheet: CSSStyleSheet | null;
}

/**
 * `html` rebuilt in `target` from inert elements only, or null when it holds anything else:
 * script, an event handler, a frame, a form, an image not carried as data, CSS that loads, an
 * unknown element or attribute, markup in another namespace.
 */
export function inertHTML(html: string, target: Document): IInertContent | null {
  // A document without a window: parsing it runs and loads nothing. The leading <body> keeps
  // a leading <style> in the body, in order, rather than moved to a head.
  const parsed = new DOMParser().parseFromString(`<!DOCTYPE html><body>${html}`, 'text/html');
  const styles: string[] = [];
  const nodes = target.createDocumentFragment();
  if (parsed.head.childNodes.length > 0 || !rebuildChildren(parsed.body, nodes, target, styles)) {
    return null;
  }
  if (styles.length === 0) {
    return { nodes, sheet: null };
  }
  const sheet = inertSheet(styles.join('\n'), target);
  return sheet ? { nodes, sheet } : null;
}

function rebuildChildren(from: Node, into: Node, target: Document, styles: string[]): boolean {
  for (const child of Array.from(from.childNodes)) {
    if (child.nodeType === Node.TEXT_NODE) {
      into.appendChild(target.createTextNode((child as Text).data));
    } else if (child.nodeType === Node.ELEMENT_NODE) {
      if (!rebuildElement(child as Element, into, target, styles)) {
        return false;
      }
    } else if (child.nodeType !== Node.COMMENT_NODE) {
      return false;
    }
  }
  return true;
}

function rebuildElement(element: Element, into: Node, target: Document, styles: string[]): boolean {
  const name = element.localName;
  if (element.namespaceURI !== HTML_NS) {
    return false; // SVG and MathML have their own ways to script and load
  }
  if (name === 'style') {
    if (!element.getAttributeNames().every(a => DROPPED_ATTRIBUTES.style.has(a))) {
      return false;
    }
    styles.push(element.textContent ?? '');
    return true;
  }
  const own = ELEMENTS[name];
  if (!own) {
    return false;
  }
  const copy = target.createElement(name);
  for (const attribute of element.getAttributeNames()) {
    const value = element.getAttribute(attribute) ?? '';
    if (DROPPED_ATTRIBUTES[name]?.has(attribute)) {
      continue;
    }
    if (attribute === 'style') {
      const declarations = (element as HTMLElement).style;
      if (!inertDeclarations(declarations)) {
        return false;
      }
      copyDeclarations(declarations, copy.style);
    } else if (attribute === 'src') {
      if (name !== 'img' || !IMAGE_SOURCE.test(value)) {
        return false;
      }
      copy.setAttribute('src', value);
    } else if (attribute === 'class' && APPLICATION_CLASS.test(value)) {
      return false;
    } else if (
      COMMON_ATTRIBUTES.has(attribute) ||
      own.has(attribute) ||
      /^aria-[a-z]+$/.test(attribute)
    ) {
      copy.setAttribute(attribute, value);
    } else {
      return false;
    }
  }
  if (name === 'img' && !copy.hasAttribute('src')) {
    return false;
  }
  into.appendChild(copy);
  return rebuildChildren(element, copy, target, styles);
}

/**
 * The output's own style rules as a sheet of `target`'s realm, or null unless every rule is a
 * plain style rule (possibly nested, or in `@media` or `@supports`) with inert declarations and
 * selectors that stay inside the content's shadow root. No `@import`, `@font-face` or other
 * at-rule: those load, or are not worth the doubt.
 */
export function inertSheet(css: string, target: Document): CSSStyleSheet | null {
  if (/@import/i.test(css)) {
    return null;
  }
  const view = target.defaultView as (Window & typeof globalThis) | null;
  if (!view) {
    return null;
  }
  const sheet = new view.CSSStyleSheet();
  try {
    sheet.replaceSync(css);
  } catch {
    return null;
  }
  return inertRules(sheet.cssRules, view) ? sheet : null;
}

function inertRules(rules: CSSRuleList, view: Window & typeof globalThis): boolean {
  for (const rule of Array.from(rules)) {
    if (rule instanceof view.CSSStyleRule) {
      if (ESCAPING_SELECTOR.test(rule.selectorText) || !inertDeclarations(rule.style)) {
        return false;
      }
      // Nested rules (CSS nesting) sit in the style rule's own list.
      const nested = (rule as CSSStyleRule & { cssRules?: CSSRuleList }).cssRules;
      if (nested && !inertRules(nested, view)) {
        return false;
      }
    } else if (rule instanceof view.CSSMediaRule || rule instanceof view.CSSSupportsRule) {
      if (!inertRules(rule.cssRules, view)) {
        return false;
      }
    } else {
      return false;
    }
  }
  return true;
}

/**
 * Whether declarations, as the browser parsed them, neither load nor define custom properties
 * (whose values are kept as written and could carry a `url()` into a `var()` elsewhere).
 */
export function inertDeclarations(declarations: CSSStyleDeclaration): boolean {
  for (let i = 0; i < declarations.length; i++) {
    const property = declarations[i];
    if (property.startsWith('--') || LOADING_CSS.test(declarations.getPropertyValue(property))) {
      return false;
    }
  }
  return true;
}

function copyDeclarations(from: CSSStyleDeclaration, to: CSSStyleDeclaration): void {
  for (let i = 0; i < from.length; i++) {
    const property = from[i];
    to.setProperty(property, from.getPropertyValue(property), from.getPropertyPriority(property));
  }
}

/**
 * An SVG document shown as an image (`<img>` runs no script in it and loads nothing it names),
 * or null when it is not well-formed or needs what an image would not do for it: script, event
 * handlers, embedded HTML. Those render in frames, where they work.
 */
export function inertSVG(svg: string, target: Document): HTMLImageElement | null {
  const parsed = new DOMParser().parseFromString(svg, 'image/svg+xml');
  const root = parsed.documentElement;
  if (root.localName !== 'svg' || parsed.getElementsByTagName('parsererror').length > 0) {
    return null;
  }
  for (const element of Array.from(parsed.getElementsByTagName('*'))) {
    if (
      element.localName === 'script' ||
      element.localName === 'foreignObject' ||
      element.getAttributeNames().some(a => a.toLowerCase().startsWith('on'))
    ) {
      return null;
    }
  }
  const image = target.createElement('img');
  const bytes = new TextEncoder().encode(svg);
  let binary = '';
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  image.src = `data:image/svg+xml;base64,${btoa(binary)}`;
  image.alt = 'SVG output';
  return image;
}

/** Whether Markdown holds math, which the page would typeset with a renderer of its own. */
export function hasMath(markdown: string): boolean {
  return /\$|\\\(|\\\[|\\begin\{/.test(markdown);
}
