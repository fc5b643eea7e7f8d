/**
 * Hopx output frames on the page side: the widget that holds one output's frames, and the one
 * listener that sizes every frame and carries theme changes into them.
 */
import { ISessionContext } from '@jupyterlab/apputils';
import { PageConfig, URLExt } from '@jupyterlab/coreutils';
import { IRenderMime } from '@jupyterlab/rendermime-interfaces';
import { KernelMessage } from '@jupyterlab/services';
import { Widget } from '@lumino/widgets';

import {
  FrameContent,
  IFrameMouseMessage,
  IFrameThemeMessage,
  innerDocument,
  outerDocument,
  parseCommSend,
  parseMouseMessage,
  parseSizeMessage
} from './frameDocument';
import type { IOutputSource } from './isolation';

/** The widget view mime type: its frames follow and change the kernel's widget models. */
const WIDGET_VIEW = 'application/vnd.jupyter.widget-view+json';

/** Mime types whose data is HTML to parse as the frame's body. */
const HTML_LIKE: Record<string, (data: string) => string> = {
  'text/html': data => data,
  'image/svg+xml': data => data,
  // `element` is where classic notebook JavaScript outputs expect to draw.
  'application/javascript': data =>
    '<div id="output"></div><script>var element = document.getElementById("output");</script>' +
    `<script>${data.replace(/<\/(script)/gi, '<\\/$1')}</script>`
};

/** Height of a frame until its content has reported its own (px). */
const INITIAL_HEIGHT = 20;

/**
 * What every frame shares: where the frame assets are, and the page's look (theme variables and
 * the rules JupyterLab styles rendered outputs with), read from the page's own stylesheets so a
 * custom theme carries over too.
 */
export class FrameHost {
  constructor() {
    window.addEventListener('message', this._onMessage);
  }

  /** Absolute URL of the frame assets this extension ships, ending in '/'. */
  readonly assetsUrl = new URL(
    URLExt.join(PageConfig.getOption('fullLabextensionsUrl'), 'hopx-kernel-labextension/static/frame/'),
    window.location.href
  ).href;

  get variables(): Record<string, string> {
    this._variables ??= readThemeVariables();
    return this._variables;
  }

  get light(): boolean {
    return document.body.dataset.jpThemeLight !== 'false';
  }

  get styles(): string {
    this._styles ??= readOutputRules();
    return this._styles;
  }

  /** The same rules as a sheet for the shadow roots of inert outputs, kept up to date. */
  get outputSheet(): CSSStyleSheet {
    if (!this._outputSheet) {
      this._outputSheet = new CSSStyleSheet();
      this._outputSheet.replaceSync(this.styles);
    }
    return this._outputSheet;
  }

  add(frame: OutputFrame): void {
    this._frames.add(frame);
  }

  remove(frame: OutputFrame): void {
    this._frames.delete(frame);
  }

  /** Re-reads the page's look and sends it to every frame. */
  themeChanged(): void {
    this._variables = readThemeVariables();
    this._styles = null;
    this._outputSheet?.replaceSync(this.styles);
    const message: IFrameThemeMessage = {
      hopx: 'theme',
      variables: this._variables,
      light: this.light
    };
    for (const frame of this._frames) {
      frame.innerWindow?.postMessage(message, '*');
    }
  }

  dispose(): void {
    window.removeEventListener('message', this._onMessage);
  }

  private _onMessage = (event: MessageEvent): void => {
    if (event.source === null || event.source === window) {
      return;
    }
    // Only a frame this page made, identified by its window, never by what it says.
    for (const frame of this._frames) {
      if (frame.innerWindow === event.source) {
        frame.receive(event.data);
        return;
      }
    }
  };

  private _frames = new Set<OutputFrame>();
  private _variables: Record<string, string> | null = null;
  private _styles: string | null = null;
  private _outputSheet: CSSStyleSheet | null = null;
}

/** One output rendered in its frames; a JupyterLab renderer like any other. */
export class OutputFrame extends Widget implements IRenderMime.IRenderer {
  constructor(
    private readonly _host: FrameHost,
    private readonly _mimeType: string,
    private readonly _source: IOutputSource
  ) {
    super();
    this.addClass('hopx-OutputFrame');
    this.node.dataset.mimeType = _mimeType;
    if (_mimeType === WIDGET_VIEW) {
      _source.sessionContext.iopubMessage.connect(this._forwardComm, this);
    }
  }

  /** The inner frame's window: where this output's messages come from. */
  get innerWindow(): Window | null {
    const outer = this._iframe?.contentWindow;
    return outer && outer.frames.length > 0 ? outer.frames[0] : null;
  }

  async renderModel(model: IRenderMime.IMimeModel): Promise<void> {
    const nonce = newNonce();
    const inner = innerDocument({
      content: frameContent(this._mimeType, model),
      assetsUrl: this._host.assetsUrl,
      variables: this._host.variables,
      light: this._host.light,
      styles: this._host.styles,
      nonce
    });
    const iframe = document.createElement('iframe');
    iframe.className = 'hopx-OutputFrame-frame';
    // Scripts, and nothing else: an opaque origin, no forms, popups, top navigation, modals.
    iframe.setAttribute('sandbox', 'allow-scripts');
    iframe.setAttribute('title', 'Sandboxed output');
    iframe.style.height = `${this._iframe?.style.height ?? `${INITIAL_HEIGHT}px`}`;
    iframe.srcdoc = outerDocument(inner, this._host.assetsUrl, nonce);
    this._iframe?.remove();
    this._iframe = iframe;
    this.node.appendChild(iframe);
    this._host.add(this);
  }

  /** A message from this output's inner frame: a new height, or a widget's change. */
  receive(data: unknown): void {
    const height = parseSizeMessage(data);
    if (height !== null) {
      if (this._iframe) {
        this._iframe.style.height = `${height}px`;
      }
      return;
    }
    const mouse = parseMouseMessage(data);
    if (mouse) {
      this._replayMouse(mouse);
      return;
    }
    const send = this._mimeType === WIDGET_VIEW ? parseCommSend(data) : null;
    // Only to this notebook's kernel, and only while it is a Hopx kernel.
    const kernel = send && this._source.hopxKernel();
    if (send && kernel) {
      kernel.sendShellMessage(
        KernelMessage.createMessage({
          msgType: 'comm_msg',
          channel: 'shell',
          session: kernel.clientId,
          username: kernel.username,
          msgId: send.msg_id,
          content: { comm_id: send.comm_id, data: send.data as KernelMessage.ICommMsgMsg['content']['data'] },
          metadata: send.metadata as KernelMessage.ICommMsgMsg['metadata'],
          buffers: send.buffers
        }),
        false,
        true
      );
    }
  }

  dispose(): void {
    this._host.remove(this);
    this._source.sessionContext.iopubMessage.disconnect(this._forwardComm, this);
    super.dispose();
  }

  /**
   * Replays a press or right click in the frame on the frame's element, where JupyterLab
   * selects the cell or opens its context menu. Only right after a real user gesture (a frame
   * cannot fake the page's user activation), and only inside the frame's own area.
   */
  private _replayMouse(mouse: IFrameMouseMessage): void {
    const iframe = this._iframe;
    if (!iframe || !navigator.userActivation?.isActive) {
      return;
    }
    const rect = iframe.getBoundingClientRect();
    iframe.dispatchEvent(
      new MouseEvent(mouse.type, {
        bubbles: true,
        cancelable: true,
        button: mouse.button === 2 ? 2 : 0,
        clientX: rect.left + Math.min(Math.max(mouse.x, 0), rect.width),
        clientY: rect.top + Math.min(Math.max(mouse.y, 0), rect.height)
      })
    );
  }

  /** The kernel's widget traffic, for the frame's copies of its widget models. */
  private _forwardComm(_: ISessionContext, msg: KernelMessage.IMessage): void {
    const type = msg.header.msg_type;
    if (type === 'comm_open' || type === 'comm_msg' || type === 'comm_close') {
      const { header, parent_header, content, metadata, buffers } = msg;
      this.innerWindow?.postMessage(
        { hopx: 'kernel', msg: { header, parent_header, content, metadata, buffers } },
        '*'
      );
    }
  }

  private _iframe: HTMLIFrameElement | null = null;
}

/** What the frame gets for an output: HTML to parse, or the bundle for its runtime. */
export function frameContent(mimeType: string, model: IRenderMime.IMimeModel): FrameContent {
  const data = model.data[mimeType];
  const toHTML = HTML_LIKE[mimeType];
  if (toHTML && typeof data === 'string') {
    return { kind: 'html', html: toHTML(data) };
  }
  return { kind: 'bundle', mimeType, data: model.data, metadata: model.metadata };
}

/** A value no output can guess: 128 random bits, base64url. */
function newNonce(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return btoa(String.fromCharCode(...bytes)).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

/** The page's `--jp-*` theme variables with their current values. */
function readThemeVariables(): Record<string, string> {
  const names = new Set<string>();
  forEachRule(rule => {
    if (rule instanceof CSSStyleRule && /(^|,)\s*(:root|body)\b/.test(rule.selectorText)) {
      for (let i = 0; i < rule.style.length; i++) {
        const name = rule.style[i];
        if (name.startsWith('--jp-')) {
          names.add(name);
        }
      }
    }
  });
  const computed = window.getComputedStyle(document.body);
  const variables: Record<string, string> = {};
  for (const name of names) {
    variables[name] = computed.getPropertyValue(name).trim();
  }
  return variables;
}

/** The CSS rules JupyterLab gives rendered HTML, Markdown and LaTeX outputs. */
function readOutputRules(): string {
  const rules: string[] = [];
  forEachRule(rule => {
    if (rule instanceof CSSStyleRule && /jp-Rendered(HTMLCommon|HTML|Markdown)\b/.test(rule.selectorText)) {
      rules.push(rule.cssText);
    }
  });
  return rules.join('\n');
}

function forEachRule(visit: (rule: CSSRule) => void): void {
  for (const sheet of Array.from(document.styleSheets)) {
    let rules: CSSRuleList;
    try {
      rules = sheet.cssRules;
    } catch {
      continue; // another origin's stylesheet: not ours to read
    }
    for (const rule of Array.from(rules)) {
      visit(rule);
    }
  }
}
