/**
 * JupyterLab notifications for Hopx events: a warning ahead of a cull with a "Keep alive"
 * action, and a message when a kernel was culled, killed or ran out of memory, saying why.
 *
 * A warning is also shown from the polled sandbox list when its event did not reach this page
 * (opened during the warning period, or while its event stream was reconnecting).
 */
import { Notification } from '@jupyterlab/apputils';
import { Session } from '@jupyterlab/services';

import { ISandboxEvent } from './api';
import { cullCountdown, inCullWarning, stopReasonText } from './format';
import { SandboxModel } from './model';

export class CullNotifier {
  constructor(
    private readonly _model: SandboxModel,
    private readonly _sessions: Session.IManager
  ) {
    _model.event.connect((_, event) => this._onEvent(event));
    _model.changed.connect(() => this._catchUp());
  }

  private _onEvent(event: ISandboxEvent): void {
    const name = this._describe(event.kernel_id);
    switch (event.action) {
      case 'cull_warning':
        this._warn(
          event.kernel_id,
          event.cull_at ?? '',
          event.reason ?? '',
          event.seconds_left ?? 0
        );
        break;
      case 'culled':
      case 'killed':
        this._dismissWarning(event.kernel_id);
        Notification.info(`${name} ${stopReasonText(event.reason)}.`, { autoClose: false });
        break;
      case 'stopped':
        // Stops the user did not ask for and that a restart may repeat.
        if (event.reason === 'oom' || event.reason === 'protocol') {
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

  private _catchUp(): void {
    for (const sandbox of this._model.sandboxes) {
      const cull = sandbox.next_cull;
      if (cull && inCullWarning(sandbox)) {
        this._warn(sandbox.kernel_id, cull.at, cull.reason, cull.in_seconds);
      }
    }
  }

  /** One warning per cull: the event and the polled list both report it, and a warning the
   * user dismissed or acted on does not come back for the same cull. */
  private _warn(kernelId: string, cullAt: string, reason: string, seconds: number): void {
    if (this._warnedCull.get(kernelId) === cullAt) {
      return;
    }
    this._dismissWarning(kernelId);
    this._warnedCull.set(kernelId, cullAt);
    const id = Notification.warning(
      `${this._describe(kernelId)}: ${cullCountdown(reason, seconds)}.`,
      {
        autoClose: false,
        actions: [
          {
            label: 'Keep alive',
            caption: 'Postpone the cull (not beyond the maximum lifetime)',
            callback: () => void this._keepAlive(kernelId)
          }
        ]
      }
    );
    this._warnings.set(kernelId, id);
  }

  private async _keepAlive(kernelId: string): Promise<void> {
    // Clicking an action closes its toast: the outcome gets a notification of its own.
    this._dismissWarning(kernelId);
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
  private _describe(kernelId: string): string {
    for (const session of this._sessions.running()) {
      if (session.kernel?.id === kernelId) {
        return `The kernel of ${session.path}`;
      }
    }
    return `Kernel ${kernelId.slice(0, 8)}`;
  }

  /** Open warning toasts, by kernel. */
  private _warnings = new Map<string, string>();
  /** The cull each kernel was last warned about (its time), by kernel. */
  private _warnedCull = new Map<string, string>();
}
