/**
 * A typed client for the Hopx server extension's REST API (`/hopx/api/`), mirroring the JSON
 * that hopx_kernel/culler.py returns, and the Hopx event schema.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

export type CullReason = 'idle' | 'max_lifetime';

export interface ILimits {
  /** Bytes; 0 means no limit. */
  memory: number;
  /** Cores; 0 means no limit. */
  cpus: number;
  pids: number;
  disk: number;
  /** Files and directories in each scratch filesystem; 0 means no cap. */
  files: number;
}

export interface IUsage {
  memory_bytes: number | null;
  pids: number | null;
  /** CPU time used by the whole sandbox so far, in seconds. */
  cpu_seconds: number | null;
  /** Bytes its outbound connections sent and received; null without a sandbox. */
  network_bytes_sent?: number | null;
  network_bytes_received?: number | null;
}

/** One outbound attempt, as the connection log records it. */
export interface IConnection {
  started: number;
  protocol: 'dns' | 'tls' | 'http' | 'tcp';
  destination_name: string | null;
  destination_address: string | null;
  port: number | null;
  allowed: boolean;
  rule: string;
  reason: string;
  bytes_sent: number;
  bytes_received: number;
}

export interface INetworkTotals {
  allowed: number;
  denied: number;
  bytes_sent: number;
  bytes_received: number;
}

/** A sandbox's outbound traffic: totals since it started and its latest attempts. */
export interface INetwork {
  totals: INetworkTotals;
  /** Newest first. */
  recent: IConnection[];
}

export interface IPolicy {
  idle_timeout: number;
  max_lifetime: number;
  cull_busy: boolean;
  warn_before: number;
  cull_interval: number;
}

export interface INextCull {
  /** ISO 8601, UTC. */
  at: string;
  reason: CullReason;
  in_seconds: number;
}

export interface ISandbox {
  kernel_id: string;
  kernel_name: string;
  sandbox_id: string | null;
  /** The sandbox's own IPv4 address. */
  address: string | null;
  state: string | null;
  started: string;
  last_activity: string;
  idle_since: string | null;
  limits: ILimits;
  usage: IUsage;
  policy: IPolicy;
  extended_until: string | null;
  next_cull: INextCull | null;
  stopping: boolean;
  /** Present when the sandbox's policy allows outbound traffic. */
  network?: INetwork | null;
  /** Ports the notebook's servers listen on, reachable through /hopx/proxy. */
  ports?: number[];
  /**
   * Names of the secrets in the kernel's environment, never their values: the environment
   * variables it was given at its last start, sorted. Absent from older servers.
   */
  secrets?: string[];
}

/** A share link to one port of a sandbox; `url` (with its token) only when just made. */
export interface IShareLink {
  id: string;
  kernel_id: string;
  port: number;
  created_by: string;
  created_at: number;
  expires_at: number;
  /** Whether the app is sent the whole path: it was told the link's path as its prefix. */
  absolute: boolean;
  url?: string;
}

export interface IExtended extends ISandbox {
  /** Whether the max lifetime cut the request short. */
  capped: boolean;
}

/** The Hopx event schema's id (hopx_kernel/event_schemas/sandbox/v1.yaml). */
export const EVENT_SCHEMA = 'https://events.hopx-kernel.org/sandbox/v1';

export type EventAction =
  | 'started'
  | 'stopped'
  | 'cull_warning'
  | 'culled'
  | 'killed'
  | 'extended';

export interface ISandboxEvent {
  schema_id: string;
  action: EventAction;
  kernel_id: string;
  msg: string;
  kernel_name?: string;
  sandbox_id?: string;
  reason?: string;
  cull_at?: string;
  seconds_left?: number;
  capped?: boolean;
}

export class HopxAPIError extends Error {}

/** Requests to `/hopx/api/sandboxes` with the server's base URL, token and XSRF cookie. */
export class SandboxClient {
  constructor(readonly settings: ServerConnection.ISettings = ServerConnection.makeSettings()) {}

  list(): Promise<ISandbox[]> {
    return this._request<ISandbox[]>('', { method: 'GET' });
  }

  get(kernelId: string): Promise<ISandbox> {
    return this._request<ISandbox>(kernelId, { method: 'GET' });
  }

  async kill(kernelId: string): Promise<void> {
    await this._request<null>(kernelId, { method: 'DELETE' });
  }

  extend(kernelId: string, seconds?: number): Promise<IExtended> {
    const body = seconds === undefined ? '' : JSON.stringify({ seconds });
    return this._request<IExtended>(`${kernelId}/extend`, { method: 'POST', body });
  }

  /**
   * A new share link to `port`; its `url` is relative to the server's origin. `absolute`: the
   * app is sent the whole path, for one started with the link's path as its prefix.
   */
  share(kernelId: string, port: number, absolute = false): Promise<IShareLink> {
    const body = JSON.stringify(absolute ? { port, absolute } : { port });
    return this._request<IShareLink>(`${kernelId}/links`, { method: 'POST', body });
  }

  private async _request<T>(path: string, init: RequestInit): Promise<T> {
    const url = URLExt.join(this.settings.baseUrl, 'hopx/api/sandboxes', path);
    let response: Response;
    try {
      response = await ServerConnection.makeRequest(url, init, this.settings);
    } catch (error) {
      throw new ServerConnection.NetworkError(error as TypeError);
    }
    if (response.status === 204) {
      return null as T;
    }
    const text = await response.text();
    const data: unknown = text ? JSON.parse(text) : null;
    if (!response.ok) {
      const message = (data as { message?: string } | null)?.message ?? response.statusText;
      throw new HopxAPIError(message);
    }
    return data as T;
  }
}
