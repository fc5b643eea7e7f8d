/**
 * Runs inside a Hopx output's inner frame (an opaque origin under a strict policy) and renders
 * the mime bundle the page put there: Markdown, LaTeX, Plotly and Vega charts, JSON, or the
 * bundle's plain text for anything else. Heavy libraries load only for the outputs that need them,
 * from this extension's static files, the one place the frame's policy lets scripts come from.
 */
import { marked } from 'marked';

import { plotlyBundleFor } from './plotlyBundle';

interface IBundle {
  mimeType: string;
  data: Record<string, unknown>;
  metadata: Record<string, unknown>;
}

interface IFrameGlobals {
  Plotly?: {
    newPlot(root: HTMLElement, data: unknown, layout: unknown, config: unknown): Promise<unknown>;
  };
  vegaEmbed?: (root: HTMLElement, spec: unknown, options: unknown) => Promise<unknown>;
  renderMathInElement?: (root: HTMLElement, options: unknown) => void;
  hopxRenderWidget?: (root: HTMLElement, data: unknown) => Promise<void>;
}

const frame = window as unknown as IFrameGlobals;
const assets = new URL('.', (document.currentScript as HTMLScriptElement).src).href;

function load(tag: 'script' | 'link', name: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const element = document.createElement(tag);
    if (element instanceof HTMLScriptElement) {
      element.src = assets + name;
    } else {
      element.rel = 'stylesheet';
      element.href = assets + name;
    }
    element.onload = () => resolve();
    element.onerror = () => reject(new Error(`cannot load ${name}`));
    document.head.appendChild(element);
  });
}

const MATH = /(\$\$[\s\S]+?\$\$|\\\[[\s\S]+?\\\]|\\\([\s\S]+?\\\)|\$[^$\n]+?\$)/g;

async function typesetMath(root: HTMLElement): Promise<void> {
  if (!/\$|\\\(|\\\[/.test(root.textContent ?? '')) {
    return;
  }
  await Promise.all([load('script', 'katex.js'), load('link', 'katex.css')]);
  frame.renderMathInElement?.(root, {
    delimiters: [
      { left: '$$', right: '$$', display: true },
      { left: '\\[', right: '\\]', display: true },
      { left: '\\(', right: '\\)', display: false },
      { left: '$', right: '$', display: false }
    ],
    throwOnError: false
  });
}

/** Markdown whose math Markdown must not touch (underscores, asterisks, backslashes). */
function markdownToHTML(source: string): string {
  const math: string[] = [];
  const text = source.replace(MATH, found => {
    math.push(found);
    return `@@hopx-math-${math.length - 1}@@`;
  });
  const html = marked.parse(text, { async: false }) as string;
  return html.replace(/@@hopx-math-(\d+)@@/g, (_, i: string) => escapeHTML(math[Number(i)]));
}

function escapeHTML(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

async function render(bundle: IBundle, root: HTMLElement): Promise<void> {
  const value = bundle.data[bundle.mimeType];
  switch (bundle.mimeType) {
    case 'text/markdown':
      root.className = 'jp-RenderedMarkdown jp-RenderedHTMLCommon';
      root.innerHTML = markdownToHTML(String(value));
      await typesetMath(root);
      return;
    case 'text/latex':
      root.className = 'jp-RenderedLatex';
      root.textContent = String(value);
      await typesetMath(root);
      return;
    case 'application/vnd.plotly.v1+json': {
      const figure = (value ?? {}) as { data?: unknown; layout?: unknown; config?: object };
      await load('script', plotlyBundleFor(figure));
      await frame.Plotly?.newPlot(root, figure.data ?? [], figure.layout ?? {}, {
        ...figure.config,
        responsive: true
      });
      return;
    }
    case 'application/vnd.jupyter.widget-view+json':
      await Promise.all([load('script', 'widgets.js'), load('link', 'widgets.css')]);
      await frame.hopxRenderWidget?.(root, value);
      return;
    case 'application/json':
      root.className = 'hopx-json';
      root.textContent = JSON.stringify(value, null, 2);
      return;
  }
  const vega = /^application\/vnd\.(vega|vegalite)\.v\d+\+json$/.exec(bundle.mimeType);
  if (vega) {
    await load('script', 'vega.js');
    await frame.vegaEmbed?.(root, value, {
      mode: vega[1] === 'vega' ? 'vega' : 'vega-lite',
      actions: false
    });
    return;
  }
  const text = bundle.data['text/plain'];
  root.className = 'hopx-text';
  root.textContent = typeof text === 'string' ? text : `[${bundle.mimeType}: not shown here]`;
}

document.addEventListener('DOMContentLoaded', () => {
  const source = document.getElementById('hopx-bundle');
  const root = document.createElement('div');
  document.body.appendChild(root);
  let bundle: IBundle;
  try {
    bundle = JSON.parse(source?.textContent ?? '') as IBundle;
  } catch {
    root.textContent = 'Hopx: this output could not be read.';
    return;
  }
  render(bundle, root).catch((error: Error) => {
    const pre = document.createElement('pre');
    pre.className = 'hopx-error';
    pre.textContent = `Could not render ${bundle.mimeType}: ${error.message}`;
    root.appendChild(pre);
  });
});
