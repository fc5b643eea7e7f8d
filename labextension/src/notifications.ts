/**
 * JupyterLab notifications for Hopx events: a warning ahead of a cull with a "Keep alive"
 * action, and a message when a kernel was culled, killed or ran out of memory, saying why.
 */
import { Notification } from '@jupyterlab/apputils';
import { Session } from '@jupyterlab/services';

import { ISandboxEvent } from './api';
import { cullCountdown, stopReasonText } from './format';
import { SandboxModel } from './model';

export class CullNotifier {
  constructor(
    private readonly _model: SandboxModel,
    private readonly _sessions: Session.IManager
  ) {
    _model.event.connect((_, event) => this._onEvent(event));
  }

  private _onEvent(event: ISandboxEvent): void {
    const name = this._describe(event);
    switch (event.action) {
      case 'cull_warning': {
        const id = Notification.warning(
          `${name}: ${cullCountdown(event.reason ?? '', event.seconds_left ?? 0)}.`,
          {
            autoClose: false,
            actions: [
              {
                label: 'Keep alive',
                caption: 'Postpone the cull (not beyond the maximum lifetime)',
                callback: () => void this._keepAlive(event.kernel_id, id)
              }
            ]
          }
        );
        this._warnings.set(event.kernel_id, id);
        break;
      }
      case 'culled':
      case 'killed':
        this._dismissWarning(event.kernel_id);
        Notification.info(`${name} ${stopReasonText(event.reason)}.`, { autoClose: false });
        break;
      case 'stopped':
        if (event.reason === 'oom') {
          Notification.error(`${name} ${stopReasonText(event.reason)}.`, { autoClose: false });
        }
        break;
      case 'extended':
        this._dismissWarning(event.kernel_id);
        break;
      default:
        break;
    }
  }

  private async _keepAlive(kernelId: string, warning: string): Promise<void> {
    // Clicking an action closes its toast: the outcome gets a notification of its own.
    Notification.dismiss(warning);
    try {
      const extended = await this._model.client.extend(kernelId);
      const until = new Date(extended.extended_until ?? Date.now()).toLocaleTimeString();
      Notification.success(
        extended.capped
          ? `Kept alive until ${until}, the end of its maximum lifetime, which cannot be extended.`
          : `Kept alive until ${until}.`,
        { autoClose: 5000 }
      );
    } catch (error) {
      Notification.error(`Could not keep the kernel alive: ${(error as Error).message}`, {
        autoClose: false
      });
    }
    await this._model.refresh();
  }

  private _dismissWarning(kernelId: string): void {
    const id = this._warnings.get(kernelId);
    if (id) {
      Notification.dismiss(id);
      this._warnings.delete(kernelId);
    }
  }

  /** "Kernel of analysis.ipynb", or the kernel id when no notebook uses it. */
  private _describe(event: ISandboxEvent): string {
    for (const session of this._sessions.running()) {
      if (session.kernel?.id === event.kernel_id) {
        return `The kernel of ${session.path}`;
      }
    }
    return `Kernel ${event.kernel_id.slice(0, 8)}`;
  }

  private _warnings = new Map<string, string>();
}
