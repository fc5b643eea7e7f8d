/**
 * A Hopx output shown in the page itself, because it is inert (inertContent.ts): rebuilt into a
 * shadow root, so neither its ids, classes and style rules nor the page's reach across; painted
 * only within its own box, so nothing in it (a fixed-position layer, a negative margin) can lie
 * over the rest of JupyterLab. The page's rules for rendered outputs and its theme variables
 * apply inside, as they do to JupyterLab's own renderers.
 */
import { IRenderMime } from '@jupyterlab/rendermime-interfaces';
import { Widget } from '@lumino/widgets';

import type { FrameHost } from './frames';
import { hasMath, IInertContent, inertHTML, inertSVG } from './inertContent';

/**
 * Classes of the element inside the shadow root: those of the node JupyterLab renders HTML
 * outputs in, for the page's rules for them (copied into the shadow root) to apply alike.
 */
const CONTENT_CLASSES = ['jp-OutputArea-output', 'jp-RenderedHTMLCommon', 'jp-RenderedHTML'];

/**
 * What a mime type's data is as inert content, or null when it needs a frame: HTML and Markdown
 * without math rebuilt from the inert list, SVG shown as an image.
 */
export async function inertContentFor(
  mimeType: string,
  model: IRenderMime.IMimeModel,
  markdownParser: IRenderMime.IMarkdownParser | null
): Promise<IInertContent | null> {
  const data = model.data[mimeType];
  if (typeof data !== 'string') {
    return null;
  }
  if (mimeType === 'text/html') {
    return inertHTML(data, document);
  }
  if (mimeType === 'text/markdown') {
    if (!markdownParser || hasMath(data)) {
      return null;
    }
    return inertHTML(await markdownParser.render(data), document);
  }
  if (mimeType === 'image/svg+xml') {
    const image = inertSVG(data, document);
    if (!image) {
      return null;
    }
    const nodes = document.createDocumentFragment();
    nodes.appendChild(image);
    return { nodes, sheet: null };
  }
  return null;
}

/** One inert output, shown by the renderer that found it inert. */
export class InertOutput extends Widget {
  constructor(private readonly _host: FrameHost) {
    super();
    this.addClass('hopx-InertOutput');
    this._root = this.node.attachShadow({ mode: 'open' });
  }

  /** Shows `content`, in place of what was shown. */
  setContent(content: IInertContent): void {
    const sheets = [this._host.outputSheet];
    if (content.sheet) {
      sheets.push(content.sheet);
    }
    this._root.adoptedStyleSheets = sheets;
    const wrapper = document.createElement('div');
    wrapper.classList.add(...CONTENT_CLASSES);
    wrapper.appendChild(content.nodes);
    this._root.replaceChildren(wrapper);
  }

  private readonly _root: ShadowRoot;
}
