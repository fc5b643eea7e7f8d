/**
 * The status bar item for the current notebook's kernel, when it is a Hopx kernel: a lock,
 * memory used / limit, CPU use and the time to the next cull.
 */
import { INotebookTracker } from '@jupyterlab/notebook';
import { Widget } from '@lumino/widgets';

import { sandboxIcon } from './icons';
import { cullCountdown, formatBytes, secondsUntil } from './format';
import { ISandboxView, SandboxModel } from './model';

export class SandboxStatus extends Widget {
  constructor(
    private readonly _model: SandboxModel,
    private readonly _notebooks: INotebookTracker
  ) {
    super();
    this.addClass('hopx-SandboxStatus');
    this.node.title = 'This kernel runs in a Hopx sandbox';
    sandboxIcon.element({ container: this._icon, tag: 'span', stylesheet: 'statusBar' });
    this.node.append(this._icon, this._text);
    _model.changed.connect(this.update, this);
    _notebooks.currentChanged.connect(this._watchKernel, this);
    this._watchKernel();
    // The countdown moves between refreshes too.
    this._ticker = window.setInterval(() => this.update(), 1000);
  }

  /** The sandbox of the current notebook's kernel, if it is a Hopx kernel. */
  get sandbox(): ISandboxView | undefined {
    const session = this._notebooks.currentWidget?.sessionContext.session;
    return this._model.find(session?.kernel?.id);
  }

  /** Whether the item is shown at all (only for Hopx kernels). */
  get isActive(): boolean {
    return this.sandbox !== undefined;
  }

  dispose(): void {
    window.clearInterval(this._ticker);
    super.dispose();
  }

  protected onUpdateRequest(): void {
    const sandbox = this.sandbox;
    if (!sandbox) {
      this._text.textContent = '';
      return;
    }
    const parts: string[] = [];
    const { memory_bytes } = sandbox.usage;
    const limit = sandbox.limits.memory;
    const used = memory_bytes === null ? '?' : formatBytes(memory_bytes);
    parts.push(limit ? `${used} / ${formatBytes(limit)}` : used);
    if (sandbox.cpu_cores !== null) {
      parts.push(`CPU ${Math.round(sandbox.cpu_cores * 100)}%`);
    }
    if (sandbox.next_cull) {
      const seconds = secondsUntil(sandbox.next_cull.at, Date.now());
      parts.push(cullCountdown(sandbox.next_cull.reason, seconds));
    }
    this._text.textContent = parts.join(' · ');
  }

  private _watchKernel(): void {
    const context = this._notebooks.currentWidget?.sessionContext;
    if (context && !this._watched.has(context)) {
      this._watched.add(context);
      context.kernelChanged.connect(() => void this._model.refresh());
    }
    this.update();
  }

  private _icon = document.createElement('span');
  private _text = document.createElement('span');
  private _ticker: number;
  private _watched = new WeakSet<object>();
}
