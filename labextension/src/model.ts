/**
 * The sandboxes of this server as the UI shows them: fetched from the REST API every few
 * seconds while anything is watching, and at once when a Hopx event says something changed.
 */
import { Event } from '@jupyterlab/services';
import { ISignal, Signal } from '@lumino/signaling';

import { EVENT_SCHEMA, ISandbox, ISandboxEvent, SandboxClient } from './api';
import { cpuCores } from './format';

/** Polling never runs faster than this (ms). */
export const POLL_INTERVAL = 5000;

export interface ISandboxView extends ISandbox {
  /** Cores in use since the previous reading, or null. */
  cpu_cores: number | null;
}

export class SandboxModel {
  constructor(readonly client: SandboxClient, events: Event.IManager) {
    events.stream.connect(this._onEvent, this);
    this._timer = window.setInterval(() => void this.refresh(), POLL_INTERVAL);
    void this.refresh();
  }

  /** Emitted after every refresh. */
  get changed(): ISignal<this, void> {
    return this._changed;
  }

  /** Emitted for every Hopx event, after the refresh it causes. */
  get event(): ISignal<this, ISandboxEvent> {
    return this._event;
  }

  get sandboxes(): ISandboxView[] {
    return this._sandboxes;
  }

  /** Whether the last refresh failed (server gone, extension not loaded). */
  get error(): string | null {
    return this._error;
  }

  find(kernelId: string | undefined): ISandboxView | undefined {
    return this._sandboxes.find(s => s.kernel_id === kernelId);
  }

  async refresh(): Promise<void> {
    if (this._refreshing) {
      return this._refreshing;
    }
    this._refreshing = this._fetch().finally(() => {
      this._refreshing = null;
    });
    return this._refreshing;
  }

  dispose(): void {
    window.clearInterval(this._timer);
    Signal.clearData(this);
  }

  private async _fetch(): Promise<void> {
    try {
      const now = Date.now();
      const fetched = await this.client.list();
      this._sandboxes = fetched.map(sandbox => {
        const reading = { cpuSeconds: sandbox.usage.cpu_seconds, at: now };
        const cores = cpuCores(this._cpuReadings.get(sandbox.kernel_id), reading);
        this._cpuReadings.set(sandbox.kernel_id, reading);
        return { ...sandbox, cpu_cores: cores };
      });
      this._error = null;
    } catch (error) {
      this._error = (error as Error).message;
    }
    this._changed.emit();
  }

  private _onEvent(_: Event.IManager, emission: Event.Emission): void {
    if (emission.schema_id !== EVENT_SCHEMA) {
      return;
    }
    const event = emission as unknown as ISandboxEvent;
    void this.refresh().then(() => this._event.emit(event));
  }

  private _sandboxes: ISandboxView[] = [];
  private _cpuReadings = new Map<string, { cpuSeconds: number | null; at: number }>();
  private _error: string | null = null;
  private _refreshing: Promise<void> | null = null;
  private _timer: number;
  private _changed = new Signal<this, void>(this);
  private _event = new Signal<this, ISandboxEvent>(this);
}
