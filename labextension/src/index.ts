/**
 * The Hopx JupyterLab extension: see and control your sandboxes.
 */
import {
  ILabShell,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { IThemeManager } from '@jupyterlab/apputils';
import { IConsoleTracker } from '@jupyterlab/console';
import {
  INotebookTracker,
  INotebookWidgetFactory,
  NotebookPanel,
  NotebookWidgetFactory
} from '@jupyterlab/notebook';
import { IStatusBar } from '@jupyterlab/statusbar';

import { SandboxClient } from './api';
import { FrameHost } from './frames';
import { HopxKernels, NotebookSource, SessionSource } from './hopxKernels';
import { isolateRegistry } from './isolation';
import { SandboxModel } from './model';
import { CullNotifier } from './notifications';
import { SandboxPanel } from './panel';
import { SandboxStatus } from './status';

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'hopx-kernel-labextension:plugin',
  description: 'Hopx sandboxes: status bar item, sidebar panel and cull notifications',
  autoStart: true,
  requires: [INotebookTracker],
  optional: [IStatusBar, ILabShell],
  activate: (
    app: JupyterFrontEnd,
    notebooks: INotebookTracker,
    statusBar: IStatusBar | null,
    labShell: ILabShell | null
  ) => {
    const services = app.serviceManager;
    const model = new SandboxModel(new SandboxClient(services.serverSettings), services.events);
    new CullNotifier(model, services.sessions);

    if (statusBar) {
      const status = new SandboxStatus(model, notebooks);
      statusBar.registerStatusItem('hopx-kernel-labextension:status', {
        item: status,
        align: 'left',
        rank: 5,
        isActive: () => status.isActive,
        activeStateChanged: model.changed
      });
    }
    if (labShell) {
      const panel = new SandboxPanel(model, services.sessions);
      labShell.add(panel, 'left', { rank: 900 });
    }
  }
};

/**
 * Renders every output of a Hopx kernel inert in the page or in sandboxed frames: in notebooks (live, restored,
 * "Create New View for Output", and the log console, which renders a notebook's stray outputs
 * with the notebook's own registry) and in consoles.
 */
const isolation: JupyterFrontEndPlugin<void> = {
  id: 'hopx-kernel-labextension:output-isolation',
  description: 'Renders Hopx kernel outputs inert or in sandboxed frames, away from the user session',
  autoStart: true,
  requires: [INotebookWidgetFactory],
  optional: [IConsoleTracker, IThemeManager],
  activate: async (
    app: JupyterFrontEnd,
    notebookFactory: NotebookWidgetFactory.IFactory,
    consoles: IConsoleTracker | null,
    themes: IThemeManager | null
  ) => {
    const services = app.serviceManager;
    const kernels = new HopxKernels(services.kernelspecs, services.serverSettings);
    const host = new FrameHost();
    themes?.themeChanged.connect(() => host.themeChanged());

    // Before the notebook's content loads: restored outputs are isolated too.
    notebookFactory.widgetCreated.connect((_, panel: NotebookPanel) => {
      isolateRegistry(panel.content.rendermime, new NotebookSource(panel, kernels), host);
    });
    consoles?.widgetAdded.connect((_, panel) => {
      isolateRegistry(panel.console.rendermime, new SessionSource(panel.sessionContext, kernels), host);
    });
    // Known before JupyterLab opens documents (it waits for this), so each output is placed
    // right; anything rendered sooner is isolated.
    await services.kernelspecs.ready;
    await kernels.refresh();
  }
};

export default [plugin, isolation];
