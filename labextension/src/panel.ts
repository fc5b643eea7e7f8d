/**
 * The "Sandboxes" sidebar panel: every Hopx sandbox of this server with its notebook, address,
 * the names of its secrets, age, limits, usage bars, outbound connections, the ports its web
 * apps listen on (to open or share), idle time and next cull, and buttons to kill it or keep it
 * alive.
 */
import {
  Dialog,
  InputDialog,
  Notification,
  showDialog,
  showErrorMessage
} from '@jupyterlab/apputils';
import { Session } from '@jupyterlab/services';
import { Widget } from '@lumino/widgets';

import { sandboxIcon } from './icons';
import {
  connectionText,
  cullCountdown,
  formatBytes,
  formatDuration,
  networkSummary,
  percentOf,
  secondsUntil
} from './format';
import { ISandboxView, SandboxModel } from './model';
import { secretsLine } from './secretsLine';

export class SandboxPanel extends Widget {
  constructor(
    private readonly _model: SandboxModel,
    private readonly _sessions: Session.IManager
  ) {
    super();
    this.id = 'hopx-sandboxes';
    this.addClass('hopx-SandboxPanel');
    this.title.icon = sandboxIcon;
    this.title.caption = 'Sandboxes';
    const heading = document.createElement('h2');
    heading.textContent = 'Sandboxes';
    this.node.append(heading, this._list);
    _model.changed.connect(this.update, this);
    _sessions.runningChanged.connect(this.update, this);
  }

  protected onAfterShow(): void {
    void this._model.refresh();
  }

  protected onUpdateRequest(): void {
    const sandboxes = this._model.sandboxes;
    this._list.replaceChildren();
    if (this._model.error) {
      this._list.append(note(`Cannot reach the Hopx API: ${this._model.error}`));
    } else if (sandboxes.length === 0) {
      this._list.append(
        note(
          'No sandboxes are running. Start one by opening a notebook with the ' +
            '"Python 3 (Hopx sandbox)" kernel.'
        )
      );
    }
    const now = Date.now();
    for (const sandbox of sandboxes) {
      this._list.append(this._card(sandbox, now));
    }
  }

  private _notebookOf(kernelId: string): string {
    for (const session of this._sessions.running()) {
      if (session.kernel?.id === kernelId) {
        return session.path;
      }
    }
    return '';
  }

  private _card(sandbox: ISandboxView, now: number): HTMLElement {
    const card = element('div', 'hopx-SandboxCard');
    card.dataset.kernelId = sandbox.kernel_id;
    const notebook = this._notebookOf(sandbox.kernel_id);
    const title = element('div', 'hopx-SandboxCard-title');
    title.textContent = notebook || `kernel ${sandbox.kernel_id.slice(0, 8)}`;
    title.title = `${sandbox.kernel_name}, kernel ${sandbox.kernel_id}`;
    card.append(title);

    const age = (now - Date.parse(sandbox.started)) / 1000;
    const facts = [`${sandbox.kernel_name}`, `${sandbox.state ?? 'unknown'}`, `up ${formatDuration(age)}`];
    if (sandbox.idle_since) {
      facts.push(`idle ${formatDuration((now - Date.parse(sandbox.idle_since)) / 1000)}`);
    }
    card.append(text('div', 'hopx-SandboxCard-facts', facts.join(' · ')));
    if (sandbox.address) {
      const address = text('div', 'hopx-SandboxCard-address', `address ${sandbox.address}`);
      address.title = "The sandbox's own IPv4 address";
      card.append(address);
    }
    const secrets = secretsLine(sandbox.secrets);
    if (secrets) {
      card.append(secrets);
    }

    const { usage, limits } = sandbox;
    card.append(
      bar(
        'Memory',
        usage.memory_bytes === null ? '?' : formatBytes(usage.memory_bytes),
        limits.memory ? formatBytes(limits.memory) : 'no limit',
        percentOf(usage.memory_bytes, limits.memory)
      ),
      bar(
        'CPU',
        sandbox.cpu_cores === null ? '…' : `${sandbox.cpu_cores.toFixed(2)} cores`,
        limits.cpus ? `${limits.cpus} ${limits.cpus === 1 ? 'core' : 'cores'}` : 'no limit',
        percentOf(sandbox.cpu_cores, limits.cpus)
      ),
      bar(
        'Tasks',
        usage.pids === null ? '?' : String(usage.pids),
        limits.pids ? String(limits.pids) : 'no limit',
        percentOf(usage.pids, limits.pids)
      )
    );

    if (sandbox.network) {
      const network = element('div', 'hopx-SandboxCard-network');
      const totals = networkSummary(sandbox.network.totals);
      network.append(text('div', 'hopx-SandboxCard-networkTotals', `network: ${totals}`));
      const list = element('ul', 'hopx-SandboxCard-connections');
      for (const connection of sandbox.network.recent) {
        const item = text('li', 'hopx-SandboxCard-connection', connectionText(connection));
        item.dataset.decision = connection.allowed ? 'allowed' : 'denied';
        item.title = connection.reason;
        list.append(item);
      }
      network.append(list);
      card.append(network);
    }

    if (sandbox.ports?.length) {
      const apps = element('ul', 'hopx-SandboxCard-ports');
      for (const port of sandbox.ports) {
        const item = element('li', 'hopx-SandboxCard-port');
        item.dataset.port = String(port);
        item.append(
          text('span', 'hopx-SandboxCard-portNumber', `port ${port}`),
          button('Open', 'hopx-SandboxCard-open', () => void this._open(sandbox, port)),
          button('Copy share link', 'hopx-SandboxCard-share', () => void this._copyLink(sandbox, port))
        );
        apps.append(item);
      }
      card.append(apps);
    }

    const cull = sandbox.next_cull;
    const next = cull
      ? cullCountdown(cull.reason, secondsUntil(cull.at, now))
      : 'no cull scheduled';
    card.append(text('div', 'hopx-SandboxCard-cull', sandbox.stopping ? 'stopping…' : next));

    const actions = element('div', 'hopx-SandboxCard-actions');
    const keepAlive = button('Keep alive', 'hopx-SandboxCard-extend', () =>
      this._extend(sandbox)
    );
    const appLink = button('Link for an app…', 'hopx-SandboxCard-appLink', () =>
      this._linkForApp(sandbox)
    );
    appLink.title = 'A share link for an app told its prefix at its start (Bokeh, Panel, Dash)';
    const kill = button('Kill', 'hopx-SandboxCard-kill', () => this._kill(sandbox, notebook));
    kill.classList.add('jp-mod-warn');
    actions.append(keepAlive, appLink, kill);
    card.append(actions);
    return card;
  }

  /**
   * Opens the app in a new tab through a share link of the user's own: the app's pages run in
   * an origin of their own, where no Jupyter cookie goes, so the link's path is what lets
   * their scripts and calls through.
   */
  private async _open(sandbox: ISandboxView, port: number): Promise<void> {
    // Opened at once, while the click still allows a new tab; pointed at the link once made.
    const tab = window.open('', '_blank');
    try {
      const link = await this._model.client.share(sandbox.kernel_id, port);
      if (tab) {
        tab.opener = null;
        tab.location.href = new URL(link.url ?? '', window.location.origin).href;
      }
    } catch (error) {
      tab?.close();
      await showErrorMessage(`Could not open port ${port}`, error as Error);
    }
  }

  private async _copyLink(sandbox: ISandboxView, port: number): Promise<void> {
    try {
      const link = await this._model.client.share(sandbox.kernel_id, port);
      const url = new URL(link.url ?? '', window.location.origin).href;
      await navigator.clipboard.writeText(url);
      const expires = new Date(link.expires_at * 1000).toLocaleTimeString();
      Notification.success(`Share link to port ${port} copied; it works until ${expires}.`, {
        autoClose: 5000
      });
    } catch (error) {
      await showErrorMessage(`Could not make a share link to port ${port}`, error as Error);
    }
  }

  /**
   * A share link made before its app starts, for an app that builds its URLs from a prefix it
   * is told at its start (Bokeh, Panel, Dash): the app is sent the whole path, and the dialog
   * shows the prefix to start it with.
   */
  private async _linkForApp(sandbox: ISandboxView): Promise<void> {
    const asked = await InputDialog.getNumber({
      title: 'Share link for an app',
      label: 'The port the app will listen on:',
      value: 5006
    });
    if (!asked.button.accept || asked.value === null) {
      return;
    }
    const port = asked.value;
    let url: string;
    const body = element('div', 'hopx-AppLink');
    try {
      const link = await this._model.client.share(sandbox.kernel_id, port, true);
      url = new URL(link.url ?? '', window.location.origin).href;
      const expires = new Date(link.expires_at * 1000).toLocaleTimeString();
      body.append(
        text('p', '', 'Start the app with this prefix (e.g. bokeh serve --prefix …):'),
        text('code', 'hopx-AppLink-prefix', (link.url ?? '').replace(/\/$/, '')),
        text('p', '', 'then open it, without a login, at:'),
        text('code', 'hopx-AppLink-url', url),
        text('p', '', `Until ${expires}, anyone with the link can use the app.`)
      );
    } catch (error) {
      await showErrorMessage(`Could not make a share link to port ${port}`, error as Error);
      return;
    }
    const result = await showDialog({
      title: `Share link to port ${port}`,
      body: new Widget({ node: body }),
      buttons: [Dialog.cancelButton({ label: 'Close' }), Dialog.okButton({ label: 'Copy link' })]
    });
    if (result.button.accept) {
      await navigator.clipboard.writeText(url);
    }
  }

  private async _extend(sandbox: ISandboxView): Promise<void> {
    try {
      await this._model.client.extend(sandbox.kernel_id);
    } catch (error) {
      await showErrorMessage('Could not keep the sandbox alive', error as Error);
    }
    await this._model.refresh();
  }

  private async _kill(sandbox: ISandboxView, notebook: string): Promise<void> {
    const result = await showDialog({
      title: 'Kill this sandbox?',
      body: `The kernel of ${notebook || sandbox.kernel_id} stops now, losing its state.`,
      buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Kill' })]
    });
    if (!result.button.accept) {
      return;
    }
    try {
      await this._model.client.kill(sandbox.kernel_id);
    } catch (error) {
      await showErrorMessage('Could not kill the sandbox', error as Error);
    }
    await this._model.refresh();
  }

  private _list = element('div', 'hopx-SandboxPanel-list');
}

function element(tag: string, className: string): HTMLElement {
  const node = document.createElement(tag);
  node.className = className;
  return node;
}

function text(tag: string, className: string, content: string): HTMLElement {
  const node = element(tag, className);
  node.textContent = content;
  return node;
}

function note(content: string): HTMLElement {
  return text('p', 'hopx-SandboxPanel-empty', content);
}

function button(label: string, className: string, onClick: () => void): HTMLButtonElement {
  const node = document.createElement('button');
  node.className = `jp-Button ${className}`;
  node.textContent = label;
  node.addEventListener('click', onClick);
  return node;
}

function bar(label: string, used: string, limit: string, percent: number | null): HTMLElement {
  const row = element('div', 'hopx-Bar');
  row.dataset.resource = label.toLowerCase();
  row.append(text('span', 'hopx-Bar-label', label));
  const track = element('span', 'hopx-Bar-track');
  const fill = element('span', 'hopx-Bar-fill');
  fill.style.width = `${percent ?? 0}%`;
  if (percent !== null && percent >= 90) {
    fill.classList.add('hopx-mod-high');
  }
  track.append(fill);
  row.append(track, text('span', 'hopx-Bar-value', `${used} / ${limit}`));
  return row;
}
