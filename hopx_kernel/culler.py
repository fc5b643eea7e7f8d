"""The timeout policy applied to a Jupyter server's Hopx kernels: warn, cull, kill, extend.

One loop per server. It reads each kernel's activity as jupyter_server records it (IOPub traffic
and execution state), asks `hopx_kernel.policy` when the kernel is due, and sleeps until the
earliest warning or cull it knows of, or until a kernel's `cull_interval` has passed, whichever is
sooner, so a deadline is acted on when it falls due. The sandbox supervisor enforces the max
lifetime on its own as well; the culler gets there first with a clean shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import datetime
from typing import Any

from jupyter_core.utils import ensure_async
from traitlets import HasTraits

from hopx_kernel.events import isoformat
from hopx_kernel.policy import Cull, KernelActivity, extend, next_cull, warning_time
from hopx_kernel.provisioner import HopxProvisioner

# How long a busy kernel gets, after the running cell was told why, before its shutdown starts.
NOTICE_WAIT = 1.0
# Never sleep less than this between checks, so a kernel being culled cannot make the loop spin.
MIN_SLEEP = 0.02
# A kernel's sandbox starts a moment before the server lists the kernel: look again this often
# until it appears, for at most ANNOUNCED_FOR seconds.
ANNOUNCED_RECHECK = 0.1
ANNOUNCED_FOR = 60.0
# Connections the REST model lists per sandbox (the network endpoint lists more).
RECENT_IN_MODEL = 5


class UnknownSandbox(KeyError):
    """No Hopx kernel has this id in this server."""


class Culler:
    """Runs the timeout policy for every Hopx kernel in `kernel_manager` (the server's
    MappingKernelManager)."""

    def __init__(self, kernel_manager: Any, log: logging.Logger) -> None:
        self.kernels = kernel_manager
        self.log = log
        self._extended_until: dict[str, float] = {}
        self._warned: dict[str, Cull] = {}
        self._culls: dict[str, asyncio.Task[None]] = {}
        # Kernels whose sandbox started but which the server does not list yet -> since when.
        self._announced: dict[str, float] = {}
        self._wake = asyncio.Event()
        self._loop: asyncio.Task[None] | None = None

    # -- the loop -------------------------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop

    def wake(self) -> None:
        """Look at every kernel again now (a deadline may have moved)."""
        self._wake.set()

    def announce(self, kernel_id: str) -> None:
        """A sandbox for `kernel_id` has started: take it into account as soon as it is listed."""
        self._announced[kernel_id] = time.time()
        self.wake()

    async def _run(self) -> None:
        while True:
            try:
                delay = self.check(time.time())
            except Exception:
                self.log.exception("Hopx: the culler's check failed")
                delay = 30.0
            self._wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    def check(self, now: float) -> float:
        """Warn and cull what is due at `now`; returns how long to sleep until the next check."""
        next_checks: list[float] = []
        for kernel_id in list(self.kernels.list_kernel_ids()):
            try:
                next_checks += self._check_kernel(kernel_id, now)
            except Exception:
                self.log.exception("Hopx: the culler could not check kernel %s", kernel_id)
        self._forget_gone_kernels()
        for kernel_id, since in list(self._announced.items()):
            if kernel_id in self.kernels or now - since > ANNOUNCED_FOR:
                del self._announced[kernel_id]
            else:
                next_checks.append(now + ANNOUNCED_RECHECK)
        delay = max(MIN_SLEEP, min(next_checks, default=now + 30.0) - now)
        self.log.debug("Hopx culler: next check in %.2f s", delay)
        return delay

    def _check_kernel(self, kernel_id: str, now: float) -> list[float]:
        """Act on one kernel; returns the times at which it needs looking at again."""
        found = self._sandbox(kernel_id)
        if found is None or kernel_id in self._culls:
            return []
        _, provisioner, activity = found
        cull = next_cull(provisioner.policy, activity)
        next_checks = [now + provisioner.cull_interval]
        if cull is None:
            return next_checks
        if now >= cull.at:
            self._start_cull(kernel_id, cull.reason)
            return []
        warn_at = warning_time(provisioner.policy, cull)
        if now >= warn_at and self._warned.get(kernel_id) != cull:
            self._warned[kernel_id] = cull
            self._warn(kernel_id, provisioner, cull, now)
        elif now < warn_at:
            next_checks.append(warn_at)
        return [*next_checks, cull.at]

    def _sandbox(self, kernel_id: str) -> tuple[Any, HopxProvisioner, KernelActivity] | None:
        """A running Hopx kernel's manager, provisioner and activity; None for anything else."""
        if kernel_id not in self.kernels:
            return None
        km = self.kernels.get_kernel(kernel_id)
        provisioner = km.provisioner
        if not isinstance(provisioner, HopxProvisioner) or provisioner.first_started is None:
            return None
        if not provisioner.has_process:  # between the two halves of a restart
            return None
        last_activity = _last_activity(km)
        activity = KernelActivity(
            started=provisioner.first_started,
            last_activity=last_activity.timestamp() if last_activity else provisioner.first_started,
            busy=getattr(km, "execution_state", None) == "busy",
            extended_until=self._extended_until.get(kernel_id, 0.0),
        )
        return km, provisioner, activity

    def _forget_gone_kernels(self) -> None:
        for table in (self._extended_until, self._warned):
            for kernel_id in [k for k in table if k not in self.kernels]:
                del table[kernel_id]

    def _warn(self, kernel_id: str, provisioner: HopxProvisioner, cull: Cull, now: float) -> None:
        seconds = max(0.0, cull.at - now)
        why = "idle" if cull.reason == "idle" else "at its max lifetime"
        msg = f"Kernel {kernel_id} will be culled ({why}) in {seconds:.0f} s."
        self.log.info("Hopx: %s", msg)
        provisioner.emit_event(
            "cull_warning",
            msg,
            reason=cull.reason,
            cull_at=isoformat(cull.at),
            seconds_left=round(seconds, 3),
        )

    # -- stopping kernels -----------------------------------------------------------------------

    def _start_cull(self, kernel_id: str, reason: str) -> asyncio.Task[None]:
        task = self._culls.get(kernel_id)
        if task is None:
            task = asyncio.create_task(self._stop_kernel(kernel_id, reason))
            self._culls[kernel_id] = task
            task.add_done_callback(lambda _: self._culls.pop(kernel_id, None))
        return task

    async def _stop_kernel(self, kernel_id: str, reason: str) -> None:
        """Shut the kernel down cleanly for `reason`; a busy one is first told why."""
        km = self.kernels.get_kernel(kernel_id)
        provisioner: HopxProvisioner = km.provisioner
        provisioner.stop_reason = reason
        self.log.warning("Hopx: stopping kernel %s (%s)", kernel_id, reason)
        try:
            if getattr(km, "execution_state", None) == "busy":
                provisioner.notify_kernel(reason)
                deadline = time.monotonic() + NOTICE_WAIT
                while km.execution_state == "busy" and time.monotonic() < deadline:
                    await asyncio.sleep(0.02)
            await ensure_async(self.kernels.shutdown_kernel(kernel_id))
        except Exception:
            self.log.exception("Hopx: stopping kernel %s (%s) failed", kernel_id, reason)
        self.wake()

    async def kill(self, kernel_id: str) -> None:
        """Stop a kernel by hand (reason "manual"); returns once it is gone."""
        if self._sandbox(kernel_id) is None and kernel_id not in self._culls:
            raise UnknownSandbox(kernel_id)
        await asyncio.shield(self._start_cull(kernel_id, "manual"))

    def extend(self, kernel_id: str, seconds: float | None) -> dict[str, Any]:
        """Keep an idle kernel alive for `seconds` (default: its idle timeout), within its max
        lifetime; returns the sandbox's model with `capped` saying whether it was cut short."""
        found = self._sandbox(kernel_id)
        if found is None:
            raise UnknownSandbox(kernel_id)
        _, provisioner, activity = found
        now = time.time()
        granted = extend(
            provisioner.policy, activity, seconds or provisioner.idle_timeout or 3600.0, now
        )
        self._extended_until[kernel_id] = granted.until
        msg = f"Kernel {kernel_id} is kept alive until {isoformat(granted.until)}."
        if granted.capped:
            msg += " That is its max lifetime, which cannot be extended."
        self.log.info("Hopx: %s", msg)
        provisioner.emit_event(
            "extended",
            msg,
            cull_at=isoformat(granted.until),
            seconds_left=round(granted.until - now, 3),
            capped=granted.capped,
        )
        self.wake()
        return {**self.model(kernel_id), "capped": granted.capped}

    # -- what the REST API shows ----------------------------------------------------------------

    def network(self, kernel_id: str) -> dict[str, Any]:
        """A sandbox's outbound policy, totals and recent connections."""
        found = self._sandbox(kernel_id)
        if found is None:
            raise UnknownSandbox(kernel_id)
        _, provisioner, _ = found
        supervisor = provisioner.supervisor
        activity = supervisor.network if supervisor else None
        return {
            "kernel_id": kernel_id,
            "address": supervisor.started.get("address") if supervisor else None,
            # Names only: never a value.
            "secrets": list(getattr(provisioner, "secret_names", [])),
            "policy": {"allow": provisioner.network_allow, "deny": provisioner.network_deny},
            "totals": activity.totals() if activity else None,
            "recent": activity.recent() if activity else [],
        }

    @staticmethod
    def _network_summary(provisioner: Any, supervisor: Any) -> dict[str, Any] | None:
        """Totals and the latest few connections, where the policy allows any."""
        if not provisioner.network_allow or supervisor is None:
            return None
        return {
            "totals": supervisor.network.totals(),
            "recent": supervisor.network.recent()[:RECENT_IN_MODEL],
        }

    @staticmethod
    def _network_usage(supervisor: Any) -> dict[str, int | None]:
        totals = supervisor.network.totals() if supervisor else None
        return {
            "network_bytes_sent": totals["bytes_sent"] if totals else None,
            "network_bytes_received": totals["bytes_received"] if totals else None,
        }

    def models(self) -> list[dict[str, Any]]:
        found = []
        for kernel_id in list(self.kernels.list_kernel_ids()):
            with contextlib.suppress(UnknownSandbox):
                found.append(self.model(kernel_id))
        return found

    def model(self, kernel_id: str) -> dict[str, Any]:
        found = self._sandbox(kernel_id)
        if found is None:
            raise UnknownSandbox(kernel_id)
        km, provisioner, activity = found
        now = time.time()
        policy = provisioner.policy
        cull = next_cull(policy, activity)
        supervisor = provisioner.supervisor
        return {
            "kernel_id": kernel_id,
            "kernel_name": km.kernel_name,
            "sandbox_id": supervisor.spec.sandbox_id if supervisor else None,
            # The sandbox's own IPv4 address, from sandbox_network.
            "address": supervisor.started.get("address") if supervisor else None,
            # Names only: never a value.
            "secrets": list(getattr(provisioner, "secret_names", [])),
            "state": getattr(km, "execution_state", None),
            "started": isoformat(activity.started),
            "last_activity": isoformat(activity.last_activity),
            "idle_since": None if activity.busy else isoformat(activity.last_activity),
            "limits": {
                "memory": provisioner.memory_limit,
                "cpus": provisioner.cpu_limit,
                "pids": provisioner.pids_limit,
                "disk": provisioner.disk_limit,
                "files": provisioner.files_limit,
            },
            "usage": {**provisioner.usage(), **self._network_usage(supervisor)},
            "policy": {
                "idle_timeout": policy.idle_timeout,
                "max_lifetime": policy.max_lifetime,
                "cull_busy": policy.cull_busy,
                "warn_before": policy.warn_before,
                "cull_interval": provisioner.cull_interval,
            },
            "extended_until": (
                isoformat(activity.extended_until) if activity.extended_until else None
            ),
            "next_cull": None
            if cull is None
            else {
                "at": isoformat(cull.at),
                "reason": cull.reason,
                "in_seconds": round(max(0.0, cull.at - now), 3),
            },
            "stopping": kernel_id in self._culls,
            "network": self._network_summary(provisioner, supervisor),
            # What the notebook's servers listen on, for /hopx/proxy/<kernel_id>/<port>/.
            "ports": provisioner.listening_ports(),
        }


def _last_activity(km: Any) -> datetime | None:
    """When the server last saw the kernel active; None until the server has first set it, at
    the end of a start (reading the unset trait raises TraitError, not AttributeError)."""
    if isinstance(km, HasTraits) and not km.trait_has_value("last_activity"):
        return None
    return getattr(km, "last_activity", None)
