"""Sizes, durations and core counts as people write them, and the errors they get otherwise."""

from __future__ import annotations

import pytest

from runtime import own_size
from runtime.units import (
    LimitError,
    format_duration,
    format_size,
    parse_cpus,
    parse_duration,
    parse_size,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("512M", 512 * 1024**2),
        ("2G", 2 * 1024**3),
        ("2g", 2 * 1024**3),
        ("1.5G", int(1.5 * 1024**3)),
        ("64KiB", 64 * 1024),
        ("100", 100),
        (4096, 4096),
        (0, 0),
        (" 1 T ", 1024**4),
    ],
)
def test_sizes(text: object, expected: int) -> None:
    assert parse_size("memory_limit", text) == expected


@pytest.mark.parametrize("bad", ["2 gigs", "G", "-1G", -5, "1.2.3M", True, None, [], "1P"])
def test_bad_sizes_name_the_field_and_an_example(bad: object) -> None:
    with pytest.raises(LimitError, match=r"memory_limit .*e\.g\. '2G'"):
        parse_size("memory_limit", bad)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("90s", 90), ("15m", 900), ("1h", 3600), ("1.5d", 129600), ("30", 30), (2.5, 2.5), (0, 0)],
)
def test_durations(text: object, expected: float) -> None:
    assert parse_duration("max_lifetime", text) == expected


@pytest.mark.parametrize("bad", ["forever", "1 week", "-1h", -3, "h", False])
def test_bad_durations_name_the_field_and_an_example(bad: object) -> None:
    with pytest.raises(LimitError, match=r"max_lifetime .*e\.g\. '90s'"):
        parse_duration("max_lifetime", bad)


def test_cpus() -> None:
    assert parse_cpus("cpu_limit", "0.5") == 0.5
    assert parse_cpus("cpu_limit", 2) == 2.0
    for bad in ("lots", -1, float("nan"), True):
        with pytest.raises(LimitError, match="cpu_limit"):
            parse_cpus("cpu_limit", bad)


@pytest.mark.parametrize(
    ("n", "text"), [(2 * 1024**3, "2G"), (512 * 1024**2, "512M"), (1536, "1536"), (0, "0")]
)
def test_format_size(n: int, text: str) -> None:
    assert format_size(n) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (4, "4s"), (90, "1m30s"), (3600, "1h"), (86400, "24h"), (3661.4, "1h1m1s")],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_cpu_lists_parse_and_format_as_the_kernel_writes_them() -> None:
    assert own_size.parse_cpu_list("0-3,6,8-9\n") == [0, 1, 2, 3, 6, 8, 9]
    assert own_size.format_cpu_list([0, 1, 2, 3, 6, 8, 9]) == "0-3,6,8-9"
    assert own_size.format_cpu_list([5]) == "5"


def test_online_cpus_follow_the_cpu_limit() -> None:
    assert own_size.online_cpus(0.5, "0-7\n") == "0\n"
    assert own_size.online_cpus(2.5, "0,2,4-7\n") == "0,2,4\n"
    # No limit, a limit of every CPU, or no host figure: the host's stands.
    assert own_size.online_cpus(0, "0-7\n") is None
    assert own_size.online_cpus(8, "0-7\n") is None
    assert own_size.online_cpus(1, "") is None


def test_cgroup_directories_are_seen_where_containers_see_them() -> None:
    v2 = {"memory": ("/cg/hopx-1", 2), "cpu": ("/cg/hopx-1", 2), "pids": ("/cg/hopx-1", 2)}
    assert own_size.cgroup_binds(v2) == [("/cg/hopx-1", "/sys/fs/cgroup")]
    hybrid = {
        "memory": ("/cg/memory/hopx-1", 1),
        "cpu": ("/cg/cpu,cpuacct/hopx-1", 1),
        "cpuacct": ("/cg/cpu,cpuacct/hopx-1", 1),
        "pids": ("/cg/unified/hopx-1", 2),
    }
    assert own_size.cgroup_binds(hybrid) == [
        ("/cg/cpu,cpuacct/hopx-1", "/sys/fs/cgroup/cpu"),
        ("/cg/cpu,cpuacct/hopx-1", "/sys/fs/cgroup/cpuacct"),
        ("/cg/memory/hopx-1", "/sys/fs/cgroup/memory"),
        ("/cg/unified/hopx-1", "/sys/fs/cgroup/unified"),
    ]
    assert own_size.cgroup_binds({}) == []
