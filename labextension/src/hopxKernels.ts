/**
 * Which kernels are Hopx kernels, and so whose outputs are isolated: the kernelspecs that start
 * under the Hopx provisioner, as the server extension reports them (it also knows a server
 * whose default provisioner is Hopx), together with every kernelspec whose metadata names the
 * provisioner (for a server without the extension).
 */
import { ISessionContext } from '@jupyterlab/apputils';
import { URLExt } from '@jupyterlab/coreutils';
import { NotebookPanel } from '@jupyterlab/notebook';
import { Kernel, KernelSpec, ServerConnection, Session } from '@jupyterlab/services';

import { IOutputSource } from './isolation';

export const PROVISIONER_NAME = 'hopx-provisioner';

/** Notebook metadata that keeps a notebook's outputs isolated after it left a Hopx kernel. */
export const STICKY_METADATA = 'hopx';

interface IKernelspecsReply {
  hopx: string[];
  lockdown: boolean;
}

export class HopxKernels {
  constructor(
    private readonly _specs: KernelSpec.IManager,
    private readonly _settings: ServerConnection.ISettings
  ) {
    _specs.specsChanged.connect(() => void this.refresh());
  }

  /** Loads the names; the plugin waits for this before any notebook opens. */
  async refresh(): Promise<void> {
    const names = new Set<string>();
    for (const [name, spec] of Object.entries(this._specs.specs?.kernelspecs ?? {})) {
      const provisioner = (spec?.metadata?.kernel_provisioner ?? {}) as { provisioner_name?: string };
      if (provisioner.provisioner_name === PROVISIONER_NAME) {
        names.add(name);
      }
    }
    for (const name of (await this._fromServer())?.hopx ?? []) {
      names.add(name);
    }
    this._names = names;
  }

  /** Whether the names are loaded; until they are, every notebook is treated as Hopx's. */
  get known(): boolean {
    return this._names !== null;
  }

  isHopx(kernelName: string | null | undefined): boolean {
    return !!kernelName && !!this._names?.has(kernelName);
  }

  private async _fromServer(): Promise<IKernelspecsReply | null> {
    const url = URLExt.join(this._settings.baseUrl, 'hopx/api/kernelspecs');
    try {
      const response = await ServerConnection.makeRequest(url, {}, this._settings);
      return response.ok ? ((await response.json()) as IKernelspecsReply) : null;
    } catch {
      return null; // the server extension is not loaded: kernelspec metadata alone decides
    }
  }

  private _names: Set<string> | null = null;
}

/**
 * A notebook's outputs are Hopx's when its kernel is, when its saved kernelspec is (outputs
 * restored before any kernel starts), or when it once ran on a Hopx kernel: a notebook moved to
 * another kernel keeps the Hopx outputs it holds, so it stays isolated.
 */
export class NotebookSource implements IOutputSource {
  constructor(
    private readonly _panel: NotebookPanel,
    private readonly _kernels: HopxKernels
  ) {
    _panel.sessionContext.kernelChanged.connect(this._onKernelChanged, this);
  }

  get sessionContext(): ISessionContext {
    return this._panel.sessionContext;
  }

  hopxKernel(): Kernel.IKernelConnection | null {
    return hopxKernel(this._panel.sessionContext, this._kernels);
  }

  isHopx(): boolean {
    if (!this._kernels.known) {
      return true; // not known yet: isolated, rather than trusted by mistake
    }
    const model = this._panel.model;
    const sticky = model?.getMetadata(STICKY_METADATA) as { isolate_outputs?: boolean } | undefined;
    const saved = model?.getMetadata('kernelspec') as { name?: string } | undefined;
    return (
      sticky?.isolate_outputs === true ||
      this._kernels.isHopx(saved?.name) ||
      this._kernels.isHopx(this._panel.sessionContext.session?.kernel?.name)
    );
  }

  private _onKernelChanged(_: ISessionContext, change: Session.ISessionConnection.IKernelChangedArgs): void {
    if (this._kernels.isHopx(change.oldValue?.name) && !this._kernels.isHopx(change.newValue?.name)) {
      this._panel.model?.setMetadata(STICKY_METADATA, { isolate_outputs: true });
    }
  }
}

/** A console's outputs are Hopx's when its kernel is. */
export class SessionSource implements IOutputSource {
  constructor(
    readonly sessionContext: ISessionContext,
    private readonly _kernels: HopxKernels
  ) {}

  isHopx(): boolean {
    return !this._kernels.known || this.hopxKernel() !== null;
  }

  hopxKernel(): Kernel.IKernelConnection | null {
    return hopxKernel(this.sessionContext, this._kernels);
  }
}

function hopxKernel(session: ISessionContext, kernels: HopxKernels): Kernel.IKernelConnection | null {
  const kernel = session.session?.kernel ?? null;
  return kernel && kernels.isHopx(kernel.name) ? kernel : null;
}
