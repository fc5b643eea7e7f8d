"""The kernel's output on its way to the owner's log: marked, neutralised, cut and rate-capped
(pure logic, a fake clock)."""

from __future__ import annotations

from runtime.kernel_log import KernelLog, neutralise


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make(**kwargs: float) -> tuple[KernelLog, list[str], Clock]:
    lines: list[str] = []
    clock = Clock()
    return KernelLog("abcd1234-ef", lines.append, clock, **kwargs), lines, clock  # type: ignore[arg-type]


def test_every_line_is_marked_and_pieces_are_joined() -> None:
    log, lines, _ = make()
    for piece in (b"hel", b"lo\nwor", b"ld\n", b"last words"):
        log.feed(piece)
    log.close()
    assert lines == [
        "[hopx-kernel abcd1234-ef] hello\n",
        "[hopx-kernel abcd1234-ef] world\n",
        "[hopx-kernel abcd1234-ef] last words\n",
    ]


def test_escape_sequences_and_forged_lines_are_neutralised() -> None:
    """OSC 52 (clipboard), clear screen, a carriage return that would overwrite the mark, an
    8-bit CSI, bidirectional overrides: all shown as escapes, on the kernel's own line."""
    log, lines, _ = make()
    log.feed(
        b"\x1b]52;c;ZXZpbA==\x07\x1b[2J\r[I 2026-12-01 ServerApp] forged"
        b"\xc2\x9b31m\xe2\x80\xaeevil\n"
    )
    assert lines == [
        "[hopx-kernel abcd1234-ef] \\x1b]52;c;ZXZpbA==\\x07\\x1b[2J\\x0d[I 2026-12-01 ServerApp] "
        "forged\\x9b31m\\u202eevil\n"
    ]
    assert neutralise("tab\tstays") == "tab\tstays"


def test_invalid_utf8_is_shown_not_lost() -> None:
    log, lines, _ = make()
    log.feed(b"bad \xff\xfe byte\n")
    assert lines == ["[hopx-kernel abcd1234-ef] bad \\xff\\xfe byte\n"]


def test_long_lines_are_cut_once() -> None:
    log, lines, _ = make(max_line=10)
    log.feed(b"0123456789abcdef")
    log.feed(b"ghij\nnext\n")
    assert lines == [
        "[hopx-kernel abcd1234-ef] 0123456789 [line cut]\n",
        "[hopx-kernel abcd1234-ef] next\n",
    ]


def test_a_flood_is_capped_and_said_once() -> None:
    """Past the burst, lines are dropped until the bucket refills; the next line written says
    how much was dropped, once."""
    log, lines, clock = make(rate=100, burst=200)
    for i in range(50):
        log.feed(f"line {i}\n".encode())
    kept = len(lines)
    assert 3 <= kept <= 6
    clock.now += 10  # 1000 bytes of budget back
    log.feed(b"after\n")
    assert lines[kept].startswith("[hopx-kernel abcd1234-ef] [dropped ")
    assert f"dropped {50 - kept} lines" in lines[kept]
    assert lines[kept + 1] == "[hopx-kernel abcd1234-ef] after\n"
    assert len(lines) == kept + 2


def test_a_drop_at_the_end_is_said_on_close() -> None:
    log, lines, _ = make(rate=1, burst=60)
    log.feed(b"a" * 30 + b"\n" + b"b" * 30 + b"\n")
    log.close()
    assert lines[-1].startswith("[hopx-kernel abcd1234-ef] [dropped 1 lines, 30 bytes")
