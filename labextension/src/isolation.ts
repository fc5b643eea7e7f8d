/**
 * Output isolation: what a Hopx kernel outputs never reaches the page that holds the user's
 * Jupyter session as it came. It is rebuilt there from inert parts only (inertOutput.ts), or
 * rendered in sandboxed frames (frames.ts).
 *
 * Each notebook, console and log console gets its own rendermime registry; this module
 * replaces every factory of such a registry with one that decides, output by output, where to
 * render: outputs of a Hopx kernel are rebuilt inert or go to a frame, unless their mime type
 * is one JupyterLab renders as inert text or a `data:` image; everything else — other kernels'
 * outputs and the user's own Markdown cells — goes to the original factory, untouched.
 */
import { ISessionContext } from '@jupyterlab/apputils';
import { IRenderMimeRegistry } from '@jupyterlab/rendermime';
import { IRenderMime } from '@jupyterlab/rendermime-interfaces';
import { Kernel } from '@jupyterlab/services';
import { PanelLayout, Widget } from '@lumino/widgets';

import { FrameHost, OutputFrame } from './frames';
import { inertHeadings } from './headings';
import { InertOutput, inertContentFor } from './inertOutput';

/**
 * Mime types JupyterLab renders natively without running script or loading anything: text
 * (ANSI colours, tracebacks, links only on click) and base64 images as `data:` URLs.
 */
export const INERT_MIME_TYPES = new Set([
  'text/plain',
  'application/vnd.jupyter.stdout',
  'application/vnd.jupyter.stderr',
  'image/png',
  'image/jpeg',
  'image/gif',
  'image/bmp',
  'image/webp'
]);

/**
 * Mime types the frames render even where no page extension does, ranked ahead of the HTML that
 * usually comes beside them (a Plotly figure's HTML expects a plotly.js another output loaded).
 */
export const FRAME_MIME_TYPES = [
  'application/vnd.plotly.v1+json',
  'application/vnd.vegalite.v6+json',
  'application/vnd.vegalite.v5+json',
  'application/vnd.vegalite.v4+json',
  'application/vnd.vega.v6+json',
  'application/vnd.vega.v5+json'
];

/** Where outputs come from: asked for every renderer, since a notebook's kernel can change. */
export interface IOutputSource {
  /** Whether this source's outputs come, or came, from a Hopx kernel. */
  isHopx(): boolean;
  /** The session whose kernel messages widget frames follow. */
  readonly sessionContext: ISessionContext;
  /** The session's kernel if it is a Hopx kernel: the only one a frame may send to. */
  hopxKernel(): Kernel.IKernelConnection | null;
}

/**
 * Makes `registry` render the outputs of `source` in frames when `source` is a Hopx kernel.
 * The factories it had keep rendering everything else, at the same ranks.
 */
export function isolateRegistry(
  registry: IRenderMimeRegistry,
  source: IOutputSource,
  host: FrameHost
): void {
  const original = registry.clone();
  inertHeadings(registry, source);
  const addFactory = registry.addFactory.bind(registry);
  const wrap = (mimeType: string, rank: number) =>
    addFactory(
      {
        // Safe: an output that is not Hopx's goes to the original factory with its own rules.
        safe: true,
        mimeTypes: [mimeType],
        createRenderer: () => {
          const hopx = source.isHopx();
          if (!hopx && original.getFactory(mimeType)) {
            return original.createRenderer(mimeType); // untouched: the very renderer as before
          }
          return new ChoosingRenderer(mimeType, original, host, hopx ? source : null);
        }
      },
      rank
    );
  for (const mimeType of new Set([...registry.mimeTypes, ...FRAME_MIME_TYPES])) {
    wrap(mimeType, original.getRank(mimeType) ?? 0);
  }
  // Factories added later (the widget manager adds its own to each notebook's registry, after
  // the notebook is made) go behind the same choice.
  registry.addFactory = (factory: IRenderMime.IRendererFactory, rank?: number) => {
    original.addFactory(factory, rank);
    for (const mimeType of factory.mimeTypes) {
      wrap(mimeType, original.getRank(mimeType) ?? 0);
    }
  };
}

/** Whether a mime model is a kernel's output, rather than a cell's own Markdown. */
function isOutput(model: IRenderMime.IMimeModel): boolean {
  return 'executionCount' in model;
}

/**
 * A renderer that picks, when it renders, where an output goes, and holds what it picked: a
 * Hopx output that is inert (inertOutput.ts) into the page, any other Hopx output into a frame;
 * a Hopx notebook's own Markdown cells, text and images, and every other kernel's outputs to
 * JupyterLab's renderers. Where the original registry has no renderer for a mime type (a Plotly
 * figure without the Plotly extension) it renders what the original would have.
 */
class ChoosingRenderer extends Widget implements IRenderMime.IRenderer {
  constructor(
    private readonly _mimeType: string,
    private readonly _original: IRenderMimeRegistry,
    private readonly _host: FrameHost,
    /** Where the outputs come from, when it is a Hopx kernel. */
    private readonly _hopx: IOutputSource | null
  ) {
    super();
    this.layout = new PanelLayout();
    this.addClass('hopx-ChoosingRenderer');
  }

  async renderModel(model: IRenderMime.IMimeModel): Promise<void> {
    const hopx = this._hopx;
    const isolate = !!hopx && isOutput(model) && !INERT_MIME_TYPES.has(this._mimeType);
    this.toggleClass('hopx-mod-isolated', isolate);
    if (!hopx || !isolate) {
      // The mime type the original registry would have picked itself, with the same trust.
      const mimeType = this._original.getFactory(this._mimeType)
        ? this._mimeType
        : this._original.preferredMimeType(model.data, model.trusted ? 'any' : 'ensure');
      const renderer = mimeType ? this._originalRenderer(mimeType) : null;
      this._hold(renderer);
      await renderer?.renderModel(model);
      return;
    }
    const inert = await inertContentFor(this._mimeType, model, this._original.markdownParser);
    if (inert) {
      const output =
        this._current instanceof InertOutput ? this._current : new InertOutput(this._host);
      this._hold(output);
      output.setContent(inert);
      return;
    }
    const frame =
      this._current instanceof OutputFrame
        ? this._current
        : new OutputFrame(this._host, this._mimeType, hopx);
    this._hold(frame);
    await frame.renderModel(model);
  }

  /** The original renderer for `mimeType`: the one shown, if it is that. */
  private _originalRenderer(mimeType: string): IRenderMime.IRenderer {
    if (this._originalMime === mimeType && this._current) {
      return this._current as unknown as IRenderMime.IRenderer;
    }
    const renderer = this._original.createRenderer(mimeType);
    this._hold(renderer);
    this._originalMime = mimeType;
    return renderer;
  }

  /** Makes `widget` what this renderer shows, disposing of what it showed before. */
  private _hold(widget: Widget | null): void {
    if (widget !== this._current) {
      this._current?.dispose();
      this._current = widget;
      this._originalMime = null;
      if (widget) {
        (this.layout as PanelLayout).addWidget(widget);
      }
    }
  }

  /** What is shown: an original renderer, a frame or an inert output. */
  private _current: Widget | null = null;
  /** The mime type of the original renderer shown, if one is. */
  private _originalMime: string | null = null;
}
