"""What one sandbox's outbound connections came to, as its owner keeps it from the supervisor's
`connection` events: totals since the sandbox started, and the most recent records."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Any, Final

RECENT: Final = 100


class NetworkActivity:
    """Fed by the thread that reads the supervisor's events, read by the server's."""

    def __init__(self, recent: int = RECENT) -> None:
        self._lock = threading.Lock()
        self._recent: deque[dict[str, Any]] = deque(maxlen=recent)
        self._totals = {"allowed": 0, "denied": 0, "bytes_sent": 0, "bytes_received": 0}
        self._subscribers: list[Callable[[dict[str, Any]], None]] = []

    def subscribe(self, callback: Callable[[dict[str, Any]], None]) -> None:
        """`callback` is given each record added from now on, on the thread that adds it."""
        self._subscribers.append(callback)

    def add(self, record: object) -> None:
        if not isinstance(record, dict):
            return
        with self._lock:
            self._recent.append(record)
            self._totals["allowed" if record.get("allowed") else "denied"] += 1
            for field in ("bytes_sent", "bytes_received"):
                value = record.get(field)
                if isinstance(value, int) and value > 0:
                    self._totals[field] += value
        for callback in self._subscribers:
            callback(record)

    def totals(self) -> dict[str, int]:
        with self._lock:
            return dict(self._totals)

    def recent(self) -> list[dict[str, Any]]:
        """The latest records, the most recently started first (a record comes when its
        connection ends, so they arrive in another order)."""
        with self._lock:
            records = list(self._recent)
        return sorted(records, key=_started, reverse=True)


def _started(record: dict[str, Any]) -> float:
    started = record.get("started")
    return float(started) if isinstance(started, int | float) else 0.0
