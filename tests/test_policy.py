"""The timeout policy's pure decisions: which deadline comes first and why, when users are warned,
and how far a keep-alive request may reach. No clock and no kernel: times are plain numbers."""

from __future__ import annotations

import pytest

from hopx_kernel.policy import (
    POLICY_STOP_REASONS,
    Cull,
    CullPolicy,
    Extension,
    KernelActivity,
    extend,
    idle_deadline,
    lifetime_deadline,
    next_cull,
    warning_time,
)

T0 = 1_000_000.0  # when the kernel first started


def activity(
    last: float = 0.0, *, busy: bool = False, extended: float = 0.0, started: float = T0
) -> KernelActivity:
    """A kernel started at `started` whose last activity was `last` seconds after T0."""
    return KernelActivity(
        started=started, last_activity=T0 + last, busy=busy, extended_until=extended
    )


def test_defaults_are_an_hour_idle_a_day_lifetime_five_minutes_warning() -> None:
    """The documented defaults: 1h idle timeout, 24h max lifetime, busy kernels spared, 5m
    warning; only idle, max_lifetime and manual stops count as policy stops."""
    assert CullPolicy() == CullPolicy(
        idle_timeout=3600.0, max_lifetime=86400.0, cull_busy=False, warn_before=300.0
    )
    assert frozenset({"idle", "max_lifetime", "manual"}) == POLICY_STOP_REASONS


@pytest.mark.parametrize(
    ("idle_timeout", "max_lifetime", "last", "expected"),
    [
        # The idle deadline comes first.
        (60.0, 3600.0, 0.0, Cull(T0 + 60, "idle")),
        # Activity moved the idle deadline, still before the lifetime.
        (60.0, 3600.0, 1000.0, Cull(T0 + 1060, "idle")),
        # Activity pushed the idle deadline past the lifetime: the lifetime wins.
        (60.0, 3600.0, 3590.0, Cull(T0 + 3600, "max_lifetime")),
        # The lifetime is simply shorter.
        (3600.0, 60.0, 0.0, Cull(T0 + 60, "max_lifetime")),
        # A tie goes to the lifetime, which no activity could have avoided.
        (60.0, 60.0, 0.0, Cull(T0 + 60, "max_lifetime")),
        (60.0, 1060.0, 1000.0, Cull(T0 + 1060, "max_lifetime")),
    ],
)
def test_next_cull_is_the_earlier_deadline_and_a_tie_is_the_lifetime(
    idle_timeout: float, max_lifetime: float, last: float, expected: Cull
) -> None:
    """next_cull returns the earlier of the idle and lifetime deadlines with its reason; when
    they fall at the same moment the reason is max_lifetime."""
    policy = CullPolicy(idle_timeout=idle_timeout, max_lifetime=max_lifetime)
    assert next_cull(policy, activity(last)) == expected


@pytest.mark.parametrize(
    ("idle_timeout", "max_lifetime", "expected"),
    [
        (0.0, 3600.0, Cull(T0 + 3600, "max_lifetime")),
        (60.0, 0.0, Cull(T0 + 60, "idle")),
        (0.0, 0.0, None),
        # A negative timeout disables too (the settings refuse one, the policy stays safe).
        (-1.0, -1.0, None),
    ],
)
def test_zero_timeouts_disable_their_limit(
    idle_timeout: float, max_lifetime: float, expected: Cull | None
) -> None:
    """A zero idle_timeout or max_lifetime removes that deadline; with both zero a kernel is
    never culled."""
    policy = CullPolicy(idle_timeout=idle_timeout, max_lifetime=max_lifetime)
    assert next_cull(policy, activity()) == expected
    assert next_cull(policy, activity(busy=True)) == (
        expected if expected is None or expected.reason == "max_lifetime" else None
    )


def test_lifetime_deadline_counts_from_the_first_start() -> None:
    """The lifetime deadline is the first start plus max_lifetime whatever the activity; None
    without a max lifetime."""
    assert lifetime_deadline(CullPolicy(max_lifetime=90.0), T0) == T0 + 90
    assert lifetime_deadline(CullPolicy(max_lifetime=0.0), T0) is None
    late = KernelActivity(started=T0, last_activity=T0 + 10_000, busy=False)
    assert next_cull(CullPolicy(idle_timeout=0, max_lifetime=90), late) == Cull(
        T0 + 90, "max_lifetime"
    )


@pytest.mark.parametrize("cull_busy", [False, True])
def test_busy_kernel_has_no_idle_deadline_unless_cull_busy(cull_busy: bool) -> None:
    """A busy kernel (a cell running, even silently) cannot be culled for idleness unless
    cull_busy is set; its max lifetime applies either way."""
    policy = CullPolicy(idle_timeout=60.0, max_lifetime=3600.0, cull_busy=cull_busy)
    busy = activity(busy=True)
    if cull_busy:
        assert idle_deadline(policy, busy) == T0 + 60
        assert next_cull(policy, busy) == Cull(T0 + 60, "idle")
    else:
        assert idle_deadline(policy, busy) is None
        assert next_cull(policy, busy) == Cull(T0 + 3600, "max_lifetime")
    # An idle kernel has its idle deadline regardless of cull_busy.
    assert idle_deadline(policy, activity()) == T0 + 60


def test_busy_kernel_without_lifetime_is_never_culled() -> None:
    """Busy, no cull_busy and no max lifetime: there is no next cull at all."""
    policy = CullPolicy(idle_timeout=60.0, max_lifetime=0.0)
    assert next_cull(policy, activity(busy=True)) is None


@pytest.mark.parametrize(
    ("extended", "expected_idle"),
    [
        (0.0, T0 + 60),  # no extension
        (T0 + 30, T0 + 60),  # an extension that ended before the idle deadline changes nothing
        (T0 + 500, T0 + 500),  # a live extension pushes the idle deadline
    ],
)
def test_extension_pushes_the_idle_deadline(extended: float, expected_idle: float) -> None:
    """extended_until keeps an idle kernel alive until then; one already covered by the idle
    timeout changes nothing."""
    policy = CullPolicy(idle_timeout=60.0, max_lifetime=3600.0)
    seen = activity(extended=extended)
    assert idle_deadline(policy, seen) == expected_idle
    assert next_cull(policy, seen) == Cull(expected_idle, "idle")


def test_extension_does_not_outlive_the_lifetime() -> None:
    """An extension beyond the lifetime (granted before, say) does not postpone the lifetime
    cull: the next cull is still max_lifetime at the first start plus max_lifetime."""
    policy = CullPolicy(idle_timeout=60.0, max_lifetime=3600.0)
    assert next_cull(policy, activity(extended=T0 + 99_999)) == Cull(T0 + 3600, "max_lifetime")


def test_extension_does_not_make_a_busy_kernel_cullable() -> None:
    """extended_until is no idle deadline of its own: a busy kernel without cull_busy still
    has none."""
    policy = CullPolicy(idle_timeout=60.0, max_lifetime=0.0)
    assert idle_deadline(policy, activity(busy=True, extended=T0 + 500)) is None


@pytest.mark.parametrize(
    ("warn_before", "cull_at", "expected"),
    [
        (300.0, T0 + 3600, T0 + 3300),
        (0.0, T0 + 3600, T0 + 3600),  # no warning ahead: told at the cull itself
        (-5.0, T0 + 3600, T0 + 3600),  # never after the cull
        (7200.0, T0 + 3600, T0 - 3600),  # a warning longer than the wait is due at once
    ],
)
def test_warning_time_is_warn_before_ahead_of_the_cull(
    warn_before: float, cull_at: float, expected: float
) -> None:
    """Users are warned warn_before seconds ahead of a cull, whatever its reason; a zero (or
    negative) warn_before means at the cull itself, never after it."""
    policy = CullPolicy(warn_before=warn_before)
    for reason in ("idle", "max_lifetime"):
        assert warning_time(policy, Cull(cull_at, reason)) == expected


def test_extend_grants_the_time_asked_within_the_lifetime() -> None:
    """Asking for 10 minutes now gives now + 10 minutes, uncapped, when the lifetime reaches
    further."""
    policy = CullPolicy(idle_timeout=60.0, max_lifetime=3600.0)
    now = T0 + 100
    assert extend(policy, activity(100), 600.0, now) == Extension(now + 600, capped=False)


def test_extend_never_shortens_a_granted_extension() -> None:
    """Asking for less than already granted keeps the longer extension; asking for more
    lengthens it."""
    policy = CullPolicy(idle_timeout=60.0, max_lifetime=3600.0)
    now = T0 + 100
    granted = activity(100, extended=T0 + 2000)
    assert extend(policy, granted, 60.0, now) == Extension(T0 + 2000, capped=False)
    assert extend(policy, granted, 0.0, now) == Extension(T0 + 2000, capped=False)
    assert extend(policy, granted, 2500.0, now) == Extension(now + 2500, capped=False)


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (3400.0, Extension(T0 + 3500, capped=False)),
        (3500.0, Extension(T0 + 3600, capped=False)),  # exactly up to the lifetime
        (3501.0, Extension(T0 + 3600, capped=True)),
        (1e9, Extension(T0 + 3600, capped=True)),
    ],
)
def test_extend_is_capped_at_the_lifetime_deadline(seconds: float, expected: Extension) -> None:
    """No extension reaches beyond the first start plus max_lifetime; a request that would is
    cut to that moment and flagged as capped."""
    policy = CullPolicy(idle_timeout=60.0, max_lifetime=3600.0)
    assert extend(policy, activity(100), seconds, T0 + 100) == expected


def test_extend_is_capped_even_when_an_old_extension_reached_beyond_the_lifetime() -> None:
    """An earlier extension past the lifetime is not kept: the answer is the lifetime, capped."""
    policy = CullPolicy(idle_timeout=60.0, max_lifetime=3600.0)
    granted = activity(100, extended=T0 + 99_999)
    assert extend(policy, granted, 10.0, T0 + 100) == Extension(T0 + 3600, capped=True)


@pytest.mark.parametrize("seconds", [60.0, 86400.0 * 365, 1e12])
def test_without_a_lifetime_an_extension_is_never_capped(seconds: float) -> None:
    """With max_lifetime 0 any extension is granted in full."""
    policy = CullPolicy(idle_timeout=60.0, max_lifetime=0.0)
    now = T0 + 100
    assert extend(policy, activity(100), seconds, now) == Extension(now + seconds, capped=False)


def test_extend_counts_the_lifetime_from_the_first_start_not_the_activity() -> None:
    """The cap is the kernel's first start plus max_lifetime (restarts do not reset it), not
    its last activity or the request time."""
    policy = CullPolicy(idle_timeout=60.0, max_lifetime=3600.0)
    restarted_long_ago = activity(3000, started=T0 - 1000)
    assert extend(policy, restarted_long_ago, 3600.0, T0 + 3000) == Extension(
        T0 + 2600, capped=True
    )
