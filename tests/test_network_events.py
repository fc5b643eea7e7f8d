"""The `network` event's batching (hopx_kernel.network_events), with a fake clock and scheduler:
at most one event per interval per sandbox, the first at once, a bounded list in each."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hopx_kernel.network_events import NetworkEventBatcher, event_record, summary


class Scheduled:
    """Stands for the server's loop: keeps what was scheduled, runs it when told."""

    def __init__(self) -> None:
        self.now = 100.0
        self.waiting: list[tuple[float, Callable[[], None]]] = []

    def schedule(self, delay: float, callback: Callable[[], None]) -> None:
        self.waiting.append((self.now + delay, callback))

    def advance(self, seconds: float) -> None:
        self.now += seconds
        due = [c for at, c in self.waiting if at <= self.now]
        self.waiting = [(at, c) for at, c in self.waiting if at > self.now]
        for callback in due:
            callback()


def record(n: int, allowed: bool = True) -> dict[str, Any]:
    return {"started": 1.0, "allowed": allowed, "destination_name": f"h{n}.test", "port": 443}


def batcher(loop: Scheduled, emitted: list[tuple[list[Any], int]]) -> NetworkEventBatcher:
    return NetworkEventBatcher(
        lambda records, omitted: emitted.append((records, omitted)),
        loop.schedule,
        interval=2.0,
        listed=3,
        clock=lambda: loop.now,
    )


def test_the_first_connection_after_a_quiet_spell_is_sent_at_once() -> None:
    loop, emitted = Scheduled(), []
    events = batcher(loop, emitted)
    events.add(record(1))
    loop.advance(0)
    assert emitted == [([record(1)], 0)]
    # Long after, again at once.
    loop.advance(60)
    events.add(record(2))
    loop.advance(0)
    assert emitted[-1] == ([record(2)], 0)


def test_a_burst_is_one_event_per_interval_with_a_bounded_list() -> None:
    loop, emitted = Scheduled(), []
    events = batcher(loop, emitted)
    events.add(record(0))
    loop.advance(0)
    for n in range(1, 11):
        events.add(record(n))
    # One flush is waiting, due when the interval since the first event ends.
    assert len(loop.waiting) == 1
    loop.advance(1.9)
    assert len(emitted) == 1
    loop.advance(0.1)
    assert emitted[1] == ([record(1), record(2), record(3)], 7)
    loop.advance(10)
    assert len(emitted) == 2


def test_nothing_is_sent_for_nothing() -> None:
    loop, emitted = Scheduled(), []
    batcher(loop, emitted)
    loop.advance(10)
    assert emitted == []
    assert loop.waiting == []


def test_the_event_says_what_was_denied_in_the_connection_logs_words() -> None:
    records = [record(1), record(2, allowed=False), record(3, allowed=False)]
    assert summary("k1", records, 4) == (
        "Kernel k1's outbound connections: 1 allowed, 2 denied, 4 more not listed "
        "(denied: h2.test:443, h3.test:443)."
    )
    assert event_record(record(2, allowed=False)) == {
        "time": "1970-01-01T00:00:01Z",
        "decision": "denied",
        "destination_name": "h2.test",
        "port": 443,
    }
