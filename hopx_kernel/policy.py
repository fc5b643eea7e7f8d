"""The timeout policy as pure decisions: when is a kernel culled, why, and when are users warned.

Nothing here reads a clock or touches a kernel: the culler passes in what it observed (a
`KernelActivity`) and the time, and acts on the answer. Times are seconds since the epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

CullReason = Literal["idle", "max_lifetime"]

# Why a sandbox was stopped by the policy or by hand. A kernel stopped for one of these is not
# restarted; other ends (a crash, "oom") go to jupyter_client's usual auto-restart.
POLICY_STOP_REASONS = frozenset({"idle", "max_lifetime", "manual"})


@dataclass(frozen=True)
class CullPolicy:
    """One kernel's settings; a zero timeout disables that limit."""

    idle_timeout: float = 3600.0
    max_lifetime: float = 86400.0
    cull_busy: bool = False
    warn_before: float = 300.0


@dataclass(frozen=True)
class KernelActivity:
    """What the culler knows of one kernel at one moment."""

    # When the kernel was first started (restarts do not reset its lifetime).
    started: float
    # Last client request, output or busy->idle transition.
    last_activity: float
    busy: bool
    # A client asked to keep the kernel alive until then, even if idle.
    extended_until: float = 0.0


@dataclass(frozen=True)
class Cull:
    at: float
    reason: CullReason


def lifetime_deadline(policy: CullPolicy, started: float) -> float | None:
    """When the kernel reaches its max lifetime; None if it has none."""
    return started + policy.max_lifetime if policy.max_lifetime > 0 else None


def idle_deadline(policy: CullPolicy, activity: KernelActivity) -> float | None:
    """When the kernel becomes cullable for idleness if nothing happens; None while it cannot."""
    if policy.idle_timeout <= 0 or (activity.busy and not policy.cull_busy):
        return None
    return max(activity.last_activity + policy.idle_timeout, activity.extended_until)


def next_cull(policy: CullPolicy, activity: KernelActivity) -> Cull | None:
    """The next cull of this kernel if nothing changes, the earlier of idleness and lifetime.

    On a tie the lifetime wins: it is the reason that no activity could have avoided.
    """
    candidates: list[Cull] = []
    lifetime = lifetime_deadline(policy, activity.started)
    if lifetime is not None:
        candidates.append(Cull(lifetime, "max_lifetime"))
    idle = idle_deadline(policy, activity)
    if idle is not None:
        candidates.append(Cull(idle, "idle"))
    return min(candidates, key=lambda c: (c.at, c.reason != "max_lifetime"), default=None)


def warning_time(policy: CullPolicy, cull: Cull) -> float:
    """When users are told about `cull`."""
    return cull.at - max(policy.warn_before, 0.0)


@dataclass(frozen=True)
class Extension:
    """The outcome of a keep-alive request."""

    until: float
    # True when the request asked for more than the max lifetime allows.
    capped: bool


def extend(policy: CullPolicy, activity: KernelActivity, seconds: float, now: float) -> Extension:
    """Keep an idle kernel alive for `seconds` from now, never beyond its max lifetime.

    An extension only ever lengthens the time already granted; asking for less changes nothing.
    """
    wanted = max(now + seconds, activity.extended_until)
    lifetime = lifetime_deadline(policy, activity.started)
    if lifetime is not None and wanted > lifetime:
        return Extension(lifetime, capped=True)
    return Extension(wanted, capped=False)
