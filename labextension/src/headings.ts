/**
 * JupyterLab finds a code cell's table-of-contents headings by parsing its HTML outputs in the
 * live page (`innerHTML` on a detached element, after sanitizing): images, video posters and
 * audio in an output load from wherever they point, even when the output itself is rendered in
 * a frame. For outputs isolated by this extension, headings come from HTML stripped of every
 * attribute but `id` and `class`, which are all a heading needs, so nothing can load.
 */
import { CodeCell } from '@jupyterlab/cells';
import { IRenderMimeRegistry } from '@jupyterlab/rendermime';
import { IRenderMime } from '@jupyterlab/rendermime-interfaces';

import { IOutputSource } from './isolation';

/** Isolated registries, and the view of each that code cells find headings with. */
const headingRegistries = new WeakMap<IRenderMimeRegistry, IRenderMimeRegistry>();

/** Code cells rendering with `registry` find their headings without loading anything. */
export function inertHeadings(registry: IRenderMimeRegistry, source: IOutputSource): void {
  const original = registry.sanitizer;
  const sanitizer: IRenderMime.ISanitizer = {
    ...original,
    sanitize: (html, options) => {
      const clean = original.sanitize(html, options);
      return source.isHopx() ? withoutLoads(clean) : clean;
    }
  };
  // The registry itself in every other respect, reads and writes alike.
  const view = new Proxy(registry, {
    get: (target, property) => (property === 'sanitizer' ? sanitizer : Reflect.get(target, property))
  });
  headingRegistries.set(registry, view);
  patchCodeCell();
}

/** HTML with the same elements and text, and no attribute that could load anything. */
export function withoutLoads(html: string): string {
  const document = new DOMParser().parseFromString(html, 'text/html'); // inert: loads nothing
  for (const element of Array.from(document.body.querySelectorAll('*'))) {
    for (const name of element.getAttributeNames()) {
      if (name !== 'id' && name !== 'class') {
        element.removeAttribute(name);
      }
    }
  }
  return document.body.innerHTML;
}

let patched = false;

/**
 * `CodeCell.getHeadings` reads the cell's registry from a private field; a cell of an isolated
 * registry gets the heading view instead (the field is used otherwise only to render outputs,
 * which the view renders exactly as the registry does).
 */
function patchCodeCell(): void {
  if (patched) {
    return;
  }
  patched = true;
  const original = CodeCell.prototype.getHeadings;
  CodeCell.prototype.getHeadings = function (this: CodeCell) {
    const cell = this as unknown as { _rendermime: IRenderMimeRegistry | null };
    const view = cell._rendermime && headingRegistries.get(cell._rendermime);
    if (view) {
      cell._rendermime = view;
    }
    return original.call(this);
  };
}
