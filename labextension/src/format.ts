/**
 * Text for people: sizes, durations, countdowns to a cull. Pure functions, unit-tested.
 */
import { IConnection, INetworkTotals, ISandbox } from './api';

/** 39907328 -> "38.1 MiB"; 2147483648 -> "2 GiB". */
export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  const digits = unit === 0 || Number.isInteger(value) ? 0 : 1;
  return `${value.toFixed(digits)} ${units[unit]}`;
}

/** A duration for a label, to its largest two units: 42 s, 42 min, 1 h 5 min, 2 d 3 h. */
export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) {
    return `${s} s`;
  }
  // Round to the smaller unit first, so 59 min 57 s reads "1 h", not "0 h 60 min".
  const minutes = Math.round(s / 60);
  if (minutes < 60) {
    return `${minutes} min`;
  }
  if (minutes < 24 * 60) {
    const rest = minutes % 60;
    return rest ? `${Math.floor(minutes / 60)} h ${rest} min` : `${minutes / 60} h`;
  }
  const hours = Math.round(s / 3600);
  const rest = hours % 24;
  return rest ? `${Math.floor(hours / 24)} d ${rest} h` : `${hours / 24} d`;
}

/** Seconds from `now` (ms since the epoch) until an ISO 8601 time; never negative. */
export function secondsUntil(iso: string, now: number): number {
  return Math.max(0, (Date.parse(iso) - now) / 1000);
}

/** "idle cull in 42 min", "lifetime ends in 3 h 5 min", or "culling now". */
export function cullCountdown(reason: string, seconds: number): string {
  if (seconds < 1) {
    return 'culling now';
  }
  const what = reason === 'idle' ? 'idle cull' : 'lifetime ends';
  return `${what} in ${formatDuration(seconds)}`;
}

/** Whether a sandbox is inside the warning period before its next cull, as the server would
 * have warned about it: the cull is due within its policy's warn_before. */
export function inCullWarning(sandbox: ISandbox): boolean {
  const cull = sandbox.next_cull;
  return (
    cull !== null &&
    !sandbox.stopping &&
    cull.in_seconds > 0 &&
    cull.in_seconds <= sandbox.policy.warn_before
  );
}

/** Per cent of one limit used, for a bar: 0..100; null when there is no limit or no figure. */
export function percentOf(used: number | null, limit: number): number | null {
  if (used === null || limit <= 0) {
    return null;
  }
  return Math.min(100, Math.max(0, (100 * used) / limit));
}

/**
 * CPU use in cores between two readings of a sandbox's CPU time (seconds), taken at two
 * moments (ms since the epoch); null when it cannot be told.
 */
export function cpuCores(
  before: { cpuSeconds: number | null; at: number } | undefined,
  after: { cpuSeconds: number | null; at: number }
): number | null {
  if (!before || before.cpuSeconds === null || after.cpuSeconds === null) {
    return null;
  }
  const wall = (after.at - before.at) / 1000;
  if (wall <= 0 || after.cpuSeconds < before.cpuSeconds) {
    return null;
  }
  return (after.cpuSeconds - before.cpuSeconds) / wall;
}

/** Why a kernel was stopped, as a sentence end: "was culled: it was idle too long". */
export function stopReasonText(reason: string | undefined): string {
  switch (reason) {
    case 'idle':
      return 'was culled: it was idle for longer than its idle timeout';
    case 'max_lifetime':
      return 'was culled: it reached its maximum lifetime';
    case 'manual':
      return 'was killed by hand';
    case 'oom':
      return 'ran out of memory and was killed';
    case 'owner_died':
      return 'was stopped because its server went away';
    case 'protocol':
      return 'was stopped: it sent its client what the ZeroMQ protocol does not allow (a frame over max_frame_size, or broken framing)';
    default:
      return `stopped (${reason ?? 'unknown reason'})`;
  }
}

/** "3 allowed · 1 denied · ↓35 KiB ↑1.2 KiB": a sandbox's outbound traffic so far. */
export function networkSummary(totals: INetworkTotals): string {
  return (
    `${totals.allowed} allowed · ${totals.denied} denied · ` +
    `↓${formatBytes(totals.bytes_received)} ↑${formatBytes(totals.bytes_sent)}`
  );
}

/**
 * One attempt for a list: where to, and its bytes or why it was refused, e.g.
 * "pypi.org:443 ↓35 KiB ↑1 KiB" or "evil.example.org (dns): no rule allows the name ...".
 */
export function connectionText(connection: IConnection): string {
  const where = connection.destination_name ?? connection.destination_address ?? '?';
  const target = connection.port ? `${where}:${connection.port}` : where;
  if (!connection.allowed) {
    return `${target} (${connection.protocol}): ${connection.reason}`;
  }
  return (
    `${target} ↓${formatBytes(connection.bytes_received)} ` +
    `↑${formatBytes(connection.bytes_sent)}`
  );
}
