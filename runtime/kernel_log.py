"""What a kernel writes to its stdout and stderr, on its way to the owner's log.

The kernel is hostile, and the log is read by people and by tools: it must not be able to fill
the owner's disk or journal, write lines that look like the server's own, or drive the terminal
of whoever reads it (escape sequences can retitle a window, set the clipboard through OSC 52,
or clear the screen). So each line is marked as this sandbox's, its control characters are
shown as escapes, over-long lines are cut, and the rate is capped with a token bucket; what is
dropped is counted and said once when output is written again, or at the end. The values of the
kernel's secrets are masked, as in its messages (runtime.kernel_launcher).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from runtime.kernel_launcher import Masker

# A kernel's output may reach the log at this rate on average ...
RATE_BYTES_PER_SECOND = 64 * 1024
# ... and in bursts of this much (a traceback, a start-up banner, bubblewrap's last words).
BURST_BYTES = 1024 * 1024
# Lines longer than this are cut: a log line should fit a screen or two.
MAX_LINE_BYTES = 4096


def _escape_table() -> dict[int, str]:
    """C0 controls but tab, DEL and the C1 controls (ESC [ and its 8-bit form, CSI, start
    terminal sequences) as \\xNN; characters that reorder or break lines when displayed
    (bidirectional overrides and isolates, marks, line and paragraph separators) as \\uNNNN."""
    table = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0)) if c != 0x09}
    invisible = (*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x2028, 0x2029, 0x200E, 0x200F)
    table.update({c: f"\\u{c:04x}" for c in invisible})
    return table


_ESCAPES = _escape_table()


def neutralise(text: str) -> str:
    """`text` with every character a terminal or a log viewer would act on shown as an escape."""
    return text.translate(_ESCAPES)


class KernelLog:
    """Turns the bytes a kernel writes into marked, neutralised, rate-capped log lines.

    `write` receives whole lines (str, newline included); `clock` is a monotonic clock in
    seconds. Not thread-safe: one reader feeds it."""

    def __init__(
        self,
        name: str,
        write: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
        *,
        rate: float = RATE_BYTES_PER_SECOND,
        burst: float = BURST_BYTES,
        max_line: int = MAX_LINE_BYTES,
        masker: Masker | None = None,
    ) -> None:
        self._prefix = f"[hopx-kernel {name}] "
        self._write = write
        self._clock = clock
        self._rate = rate
        self._burst = burst
        self._max_line = max_line
        self._masker = masker
        self._tokens = burst
        self._last = clock()
        self._pending = bytearray()
        self._cutting = False  # skipping the rest of an over-long line, until its newline
        self.dropped_bytes = 0
        self.dropped_lines = 0

    def feed(self, chunk: bytes) -> None:
        """Take what the kernel wrote next, in whatever pieces it arrives."""
        data = bytes(self._pending) + chunk
        self._pending.clear()
        start = 0
        while (end := data.find(b"\n", start)) >= 0:
            if self._refill() < len(self._prefix) + end - start + 1:
                # A flood: count the rest of its whole lines without looking at them.
                last = data.rfind(b"\n") + 1
                lines = data.count(b"\n", start, last)
                self.dropped_lines += lines
                self.dropped_bytes += last - start - lines
                self._cutting, start = False, last
                break
            line, start = data[start:end], end + 1
            if self._cutting:
                self._cutting = False  # the rest of a line already written cut
            else:
                self._line(line)
        rest = data[start:]
        if len(rest) <= self._max_line:
            self._pending += rest
        elif not self._cutting:
            self._line(rest[: self._max_line], cut=True)
            self._cutting = True

    def close(self) -> None:
        """The kernel's output ended: write its unfinished last line and any drop not yet said."""
        if self._pending:
            self._line(bytes(self._pending))
            self._pending.clear()
        if self.dropped_bytes:
            self._note_dropped()

    def _line(self, raw: bytes, *, cut: bool = False) -> None:
        text = raw.decode("utf-8", errors="backslashreplace")
        if self._masker:
            text = self._masker.text(text)
            if cut:  # what the cut left of a secret
                text = text[: len(text) - self._masker.unfinished_end(text)]
        self._emit(neutralise(text) + (" [line cut]" if cut else ""), size=len(raw))

    def _refill(self) -> float:
        """The bytes that may be written now."""
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now
        return self._tokens

    def _emit(self, text: str, size: int | None = None) -> None:
        self._refill()
        line = f"{self._prefix}{text}\n"
        cost = len(line)
        if self._tokens < cost:
            self.dropped_bytes += size if size is not None else len(text)
            self.dropped_lines += 1
            return
        if self.dropped_bytes:
            self._note_dropped()
        self._tokens -= cost
        self._write(line)

    def _note_dropped(self) -> None:
        self._write(
            f"{self._prefix}[dropped {self.dropped_lines} lines, {self.dropped_bytes} bytes of "
            f"output: more than {self._rate / 1024:.0f} KiB/s]\n"
        )
        self.dropped_bytes = self.dropped_lines = 0
