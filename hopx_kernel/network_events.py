"""The `network` event: a sandbox's outbound connections on the server's event bus, batched.

A notebook can open thousands of connections a minute; one event each would flood every
subscriber (each open JupyterLab, each admin's handler). So a sandbox's records are gathered and
sent at most once per `interval`: the first record after a quiet spell goes out at once, later
ones wait for the interval to end, and one event lists at most `listed` of them, with how many
more it left out. The connection log keeps every record.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Final

from hopx_kernel.events import isoformat

INTERVAL: Final = 2.0
LISTED: Final = 20

# Emits one event: the records gathered (oldest first) and how many more were left out.
Emit = Callable[[list[dict[str, Any]], int], None]
# Runs a callable after a delay in seconds, on the thread that may emit (the server's loop).
Schedule = Callable[[float, Callable[[], None]], None]


class NetworkEventBatcher:
    """Fed from any thread (the one reading the supervisor's events); emits through `schedule`."""

    def __init__(
        self,
        emit: Emit,
        schedule: Schedule,
        interval: float = INTERVAL,
        listed: int = LISTED,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._emit = emit
        self._schedule = schedule
        self._interval = interval
        self._listed = listed
        self._clock = clock
        self._lock = threading.Lock()
        self._pending: list[dict[str, Any]] = []
        self._omitted = 0
        self._scheduled = False
        self._last_emitted = -float("inf")

    def add(self, record: dict[str, Any]) -> None:
        with self._lock:
            if len(self._pending) < self._listed:
                self._pending.append(record)
            else:
                self._omitted += 1
            if self._scheduled:
                return
            self._scheduled = True
            delay = max(0.0, self._last_emitted + self._interval - self._clock())
        self._schedule(delay, self._flush)

    def _flush(self) -> None:
        with self._lock:
            pending, omitted = self._pending, self._omitted
            self._pending, self._omitted = [], 0
            self._scheduled = False
            self._last_emitted = self._clock()
        if pending:
            self._emit(pending, omitted)


def summary(kernel_id: str, records: list[dict[str, Any]], omitted: int) -> str:
    """The event's sentence: how many were allowed and denied, and where the denied ones went."""
    allowed = sum(1 for r in records if r.get("allowed"))
    denied = [r for r in records if not r.get("allowed")]
    counts = f"{allowed} allowed, {len(denied)} denied"
    if omitted:
        counts += f", {omitted} more not listed"
    sentence = f"Kernel {kernel_id}'s outbound connections: {counts}"
    if denied:
        destinations = dict.fromkeys(destination(r) for r in denied)
        sentence += f" (denied: {', '.join(list(destinations)[:3])})"
    return sentence + "."


def destination(record: dict[str, Any]) -> str:
    where = record.get("destination_name") or record.get("destination_address") or "?"
    port = record.get("port")
    return f"{where}:{port}" if port else str(where)


def event_record(record: dict[str, Any]) -> dict[str, Any]:
    """What the event carries of one record, in the connection log's words (`time`,
    `decision`), without the sandbox's identity (the event names the kernel already)."""
    started = record.get("started")
    fields: dict[str, Any] = {
        "time": isoformat(started) if isinstance(started, int | float) else None,
        "decision": "allowed" if record.get("allowed") else "denied",
    }
    for key in CONNECTION_FIELDS:
        fields[key] = record.get(key)
    return {key: value for key, value in fields.items() if value is not None}


CONNECTION_FIELDS: Final = (
    "protocol",
    "destination_name",
    "destination_address",
    "port",
    "rule",
    "reason",
    "bytes_sent",
    "bytes_received",
    "duration",
)
