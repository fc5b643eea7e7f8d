/**
 * The Hopx JupyterLab extension: see and control your sandboxes.
 */
import {
  ILabShell,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { INotebookTracker } from '@jupyterlab/notebook';
import { IStatusBar } from '@jupyterlab/statusbar';

import { SandboxClient } from './api';
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

export default plugin;
