"""The connection log (runtime.connection_log): its records, its rotation, and several
processes appending at once, on real files."""

from __future__ import annotations

import json
import multiprocessing
import os
import stat
from pathlib import Path

import pytest

from runtime.connection_log import MAX_FIELD_CHARS, ConnectionLog, ConnectionRecord


def record(number: int = 0, **changes: object) -> ConnectionRecord:
    fields: dict[str, object] = {
        "started": 1796655325.1234,
        "kernel_id": "4c3383af-bf10-432e-9ef0-e7c615cf32c5",
        "sandbox_address": "100.64.0.7",
        "protocol": "tls",
        "destination_name": "pypi.org",
        "destination_address": "151.101.0.223",
        "port": 443,
        "allowed": True,
        "rule": "preset:pypi (pypi.org:443)",
        "reason": "allowed by the rule 'preset:pypi (pypi.org:443)'",
        "bytes_sent": 517 + number,
        "bytes_received": 9120,
        "duration": 0.25,
        "kernelspec": "hopx-python",
        "notebook": "work/analysis.ipynb",
        "user": "alice",
    }
    return ConnectionRecord(**(fields | changes))  # type: ignore[arg-type]


def test_a_record_is_one_json_line_in_a_fixed_order() -> None:
    line = record().to_json()
    assert "\n" not in line
    assert json.loads(line) == {
        "time": "2026-12-07T14:55:25.123Z",
        "decision": "allowed",
        "kernel_id": "4c3383af-bf10-432e-9ef0-e7c615cf32c5",
        "protocol": "tls",
        "destination_name": "pypi.org",
        "sandbox_address": "100.64.0.7",
        "destination_address": "151.101.0.223",
        "port": 443,
        "rule": "preset:pypi (pypi.org:443)",
        "reason": "allowed by the rule 'preset:pypi (pypi.org:443)'",
        "bytes_sent": 517,
        "bytes_received": 9120,
        "duration": 0.25,
        "kernelspec": "hopx-python",
        "notebook": "work/analysis.ipynb",
        "user": "alice",
    }
    assert list(json.loads(line))[:5] == [
        "time",
        "decision",
        "kernel_id",
        "protocol",
        "destination_name",
    ]


def test_what_a_sandbox_chose_cannot_break_the_line_or_drive_a_terminal() -> None:
    hostile = 'evil\n{"decision":"allowed"}\x1b]52;c;Y3VybA==\x07' + "x" * 2000
    line = record(
        destination_name=hostile, allowed=False, reason=f"no rule allows {hostile}"
    ).to_json()
    assert line.isascii()
    assert "\n" not in line
    assert "\x1b" not in line
    assert "\x07" not in line
    parsed = json.loads(line)
    assert parsed["decision"] == "denied"
    assert parsed["destination_name"] == hostile[:MAX_FIELD_CHARS] + "…"
    assert len(parsed["reason"]) == MAX_FIELD_CHARS + 1


def test_the_log_is_the_admins_alone(tmp_path: Path) -> None:
    log = ConnectionLog(str(tmp_path / "log" / "connections.jsonl"))
    log.write(record())
    assert stat.S_IMODE((tmp_path / "log").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "log" / "connections.jsonl").stat().st_mode) == 0o600
    assert json.loads((tmp_path / "log" / "connections.jsonl").read_text())["port"] == 443


def test_a_link_in_place_of_the_log_is_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("untouched\n")
    (tmp_path / "connections.jsonl").symlink_to(victim)
    with pytest.raises(OSError, match="Too many levels of symbolic links"):
        ConnectionLog(str(tmp_path / "connections.jsonl")).write(record())
    assert victim.read_text() == "untouched\n"


def test_rotation_keeps_the_newest_records_in_bounded_files(tmp_path: Path) -> None:
    path = tmp_path / "connections.jsonl"
    size = len(record().to_json()) + 1
    log = ConnectionLog(str(path), max_bytes=size * 10, backups=2)
    for number in range(45):
        log.write(record(number))
    files = [path, path.with_name("connections.jsonl.1"), path.with_name("connections.jsonl.2")]
    assert not path.with_name("connections.jsonl.3").exists()
    kept = [
        json.loads(line)["bytes_sent"] - 517
        for file in reversed(files)
        for line in file.read_text().splitlines()
    ]
    assert kept == list(range(20, 45))  # the 25 newest, in order; the oldest 20 rotated away
    assert all(file.stat().st_size <= size * 10 for file in files)


def test_rotation_without_backups_starts_the_log_again(tmp_path: Path) -> None:
    path = tmp_path / "connections.jsonl"
    log = ConnectionLog(str(path), max_bytes=len(record().to_json()) * 3, backups=0)
    for number in range(7):
        log.write(record(number))
    assert [json.loads(line)["bytes_sent"] - 517 for line in path.read_text().splitlines()] == [6]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "connections.jsonl",
        "connections.jsonl.lock",
    ]


def _append_many(path: str, writer: int, count: int) -> None:
    log = ConnectionLog(path, max_bytes=4096, backups=10_000)
    for number in range(count):
        log.write(record(writer * 100_000 + number))


def test_supervisors_appending_at_once_lose_and_tear_no_line(tmp_path: Path) -> None:
    """Four processes append 300 records each while rotating a 4 KiB log: every record is
    there once, whole."""
    path = str(tmp_path / "connections.jsonl")
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_append_many, args=(path, w, 300)) for w in range(4)]
    for process in writers:
        process.start()
    for process in writers:
        process.join(60)
        assert process.exitcode == 0
    numbers = []
    for file in tmp_path.glob("connections.jsonl*"):
        if file.suffix == ".lock":
            continue
        assert file.stat().st_size <= 4096
        numbers += [json.loads(line)["bytes_sent"] - 517 for line in file.read_text().splitlines()]
    expected = [w * 100_000 + n for w in range(4) for n in range(300)]
    assert sorted(numbers) == expected
    assert len(list(tmp_path.glob("connections.jsonl.*"))) > 10  # it did rotate, many times
    assert os.path.exists(path)
