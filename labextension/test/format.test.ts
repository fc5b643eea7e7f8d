import { strict as assert } from 'node:assert';
import { test } from 'node:test';

import {
  connectionText,
  cpuCores,
  cullCountdown,
  formatBytes,
  formatDuration,
  inCullWarning,
  networkSummary,
  percentOf,
  secondsUntil,
  stopReasonText
} from '../src/format';
import { ISandbox } from '../src/api';

test('formatBytes uses binary units and one decimal where needed', () => {
  assert.equal(formatBytes(0), '0 B');
  assert.equal(formatBytes(1023), '1023 B');
  assert.equal(formatBytes(1024), '1 KiB');
  assert.equal(formatBytes(39907328), '38.1 MiB');
  assert.equal(formatBytes(2 * 1024 ** 3), '2 GiB');
  assert.equal(formatBytes(1536 * 1024 ** 4), '1536 TiB');
});

test('formatDuration keeps the two largest units', () => {
  assert.equal(formatDuration(-3), '0 s');
  assert.equal(formatDuration(42), '42 s');
  assert.equal(formatDuration(59.6), '1 min');
  assert.equal(formatDuration(42 * 60), '42 min');
  assert.equal(formatDuration(3600), '1 h');
  assert.equal(formatDuration(3597), '1 h');
  assert.equal(formatDuration(2 * 3600 - 10), '2 h');
  assert.equal(formatDuration(86399), '1 d');
  assert.equal(formatDuration(3900), '1 h 5 min');
  assert.equal(formatDuration(86400), '1 d');
  assert.equal(formatDuration(2 * 86400 + 3 * 3600), '2 d 3 h');
});

test('secondsUntil counts down to an ISO time and stops at zero', () => {
  const now = Date.parse('2026-11-26T10:00:00Z');
  assert.equal(secondsUntil('2026-11-26T10:00:42Z', now), 42);
  assert.equal(secondsUntil('2026-11-26T09:59:00Z', now), 0);
});

test('cullCountdown names the reason', () => {
  assert.equal(cullCountdown('idle', 42 * 60), 'idle cull in 42 min');
  assert.equal(cullCountdown('max_lifetime', 3900), 'lifetime ends in 1 h 5 min');
  assert.equal(cullCountdown('idle', 0.4), 'culling now');
});

test('percentOf is null without a limit or a figure, and capped at 100', () => {
  assert.equal(percentOf(null, 100), null);
  assert.equal(percentOf(5, 0), null);
  assert.equal(percentOf(25, 100), 25);
  assert.equal(percentOf(250, 100), 100);
});

test('cpuCores divides CPU time by wall time between two readings', () => {
  const at = 1_000_000;
  assert.equal(cpuCores(undefined, { cpuSeconds: 3, at }), null);
  assert.equal(cpuCores({ cpuSeconds: null, at }, { cpuSeconds: 3, at: at + 1000 }), null);
  assert.equal(cpuCores({ cpuSeconds: 1, at }, { cpuSeconds: 1.5, at: at + 1000 }), 0.5);
  assert.equal(cpuCores({ cpuSeconds: 1, at }, { cpuSeconds: 1.5, at }), null);
  // A counter that went back (a new sandbox after a restart) says nothing.
  assert.equal(cpuCores({ cpuSeconds: 9, at }, { cpuSeconds: 1, at: at + 1000 }), null);
});

test('stopReasonText explains every stop reason', () => {
  assert.match(stopReasonText('idle'), /idle/);
  assert.match(stopReasonText('max_lifetime'), /maximum lifetime/);
  assert.match(stopReasonText('manual'), /killed by hand/);
  assert.match(stopReasonText('oom'), /out of memory/);
  assert.match(stopReasonText('owner_died'), /server went away/);
  assert.match(stopReasonText('protocol'), /ZeroMQ protocol/);
  assert.equal(stopReasonText('exited'), 'stopped (exited)');
});

/** A sandbox whose next cull is `inSeconds` away, with warn_before 60 s. */
function sandboxCulledIn(inSeconds: number | null, stopping = false): ISandbox {
  const next_cull =
    inSeconds === null
      ? null
      : { at: '2026-01-01T00:00:00Z', reason: 'idle', in_seconds: inSeconds };
  const policy = {
    idle_timeout: 600,
    max_lifetime: 86400,
    cull_busy: false,
    warn_before: 60,
    cull_interval: 5
  };
  return { policy, next_cull, stopping } as unknown as ISandbox;
}

test('inCullWarning is true only within warn_before of a cull that is still ahead', () => {
  assert.equal(inCullWarning(sandboxCulledIn(30)), true);
  assert.equal(inCullWarning(sandboxCulledIn(60)), true);
  assert.equal(inCullWarning(sandboxCulledIn(61)), false);
  assert.equal(inCullWarning(sandboxCulledIn(0)), false);
  assert.equal(inCullWarning(sandboxCulledIn(null)), false);
  assert.equal(inCullWarning(sandboxCulledIn(30, true)), false);
});

test('networkSummary and connectionText say where to, how much, or why not', () => {
  assert.equal(
    networkSummary({ allowed: 3, denied: 1, bytes_sent: 1229, bytes_received: 35 * 1024 }),
    '3 allowed · 1 denied · ↓35 KiB ↑1.2 KiB'
  );
  const allowed = {
    started: 0,
    protocol: 'tls' as const,
    destination_name: 'pypi.org',
    destination_address: '151.101.0.223',
    port: 443,
    allowed: true,
    rule: 'pypi.org:443',
    reason: "allowed by the rule 'pypi.org:443'",
    bytes_sent: 1024,
    bytes_received: 35 * 1024
  };
  assert.equal(connectionText(allowed), 'pypi.org:443 ↓35 KiB ↑1 KiB');
  assert.equal(
    connectionText({
      ...allowed,
      protocol: 'dns',
      destination_name: 'evil.example.org',
      destination_address: null,
      port: null,
      allowed: false,
      reason: 'no rule allows the name evil.example.org'
    }),
    'evil.example.org (dns): no rule allows the name evil.example.org'
  );
  assert.equal(
    connectionText({
      ...allowed,
      protocol: 'http',
      destination_name: null,
      destination_address: '151.101.0.11',
      port: 80,
      allowed: false,
      reason: 'no rule allows 151.101.0.11 port 80'
    }),
    '151.101.0.11:80 (http): no rule allows 151.101.0.11 port 80'
  );
});
