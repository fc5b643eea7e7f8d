"""Parsing of the human units used in limits: sizes ("512M", "2G") and durations ("90s", "1h").

Errors name the field and give a valid example, because they end up in front of whoever wrote the
kernelspec or the server config.
"""

from __future__ import annotations

import math
import re

_SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*$", re.IGNORECASE)

_DURATION_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$", re.IGNORECASE)


class LimitError(ValueError):
    """A limit or setting that cannot be used; the message names the field and an example."""


def parse_size(field: str, value: object) -> int:
    """Bytes from an int or a string such as "512M", "2G", "1.5G" or "1048576".

    Binary units (K = 1024). Zero is allowed and means "no limit" wherever the caller says so.
    """
    if isinstance(value, bool):
        msg = f"{field} {value!r} is not a size; use e.g. '2G' or '512M'"
        raise LimitError(msg)
    if isinstance(value, int):
        if value < 0:
            msg = f"{field} {value!r} is negative; use e.g. '2G' or '512M'"
            raise LimitError(msg)
        return value
    if isinstance(value, str):
        match = _SIZE_RE.match(value)
        if match:
            number, unit = match.groups()
            size = int(float(number) * _SIZE_UNITS[unit.upper()])
            if size == 0 and float(number) != 0:
                # "0.5" would otherwise round to 0 bytes, which means "no limit".
                msg = f"{field} {value!r} is less than a byte; use e.g. '2G' or '512M'"
                raise LimitError(msg)
            return size
    msg = f"{field} {value!r} is not a size; use e.g. '2G' or '512M'"
    raise LimitError(msg)


def parse_duration(field: str, value: object) -> float:
    """Seconds from a number or a string such as "90s", "15m", "1h", "1.5d". Zero means disabled."""
    if isinstance(value, bool):
        msg = f"{field} {value!r} is not a duration; use e.g. '90s', '15m' or '1h'"
        raise LimitError(msg)
    if isinstance(value, (int, float)):
        if value < 0:
            msg = f"{field} {value!r} is negative; use e.g. '90s', '15m' or '1h'"
            raise LimitError(msg)
        return float(value)
    if isinstance(value, str):
        match = _DURATION_RE.match(value)
        if match:
            number, unit = match.groups()
            return float(number) * _DURATION_UNITS[unit.lower()]
    msg = f"{field} {value!r} is not a duration; use e.g. '90s', '15m' or '1h'"
    raise LimitError(msg)


# Beyond these the kernel's cgroup files refuse the value anyway; say so in our words first.
MAX_CPUS = 4096.0
MAX_COUNT = 4_194_304  # the kernel's pid_max ceiling


def parse_cpus(field: str, value: object) -> float:
    """A number of cores such as 1, 0.5 or "2". Zero means no CPU limit."""
    if isinstance(value, bool):
        msg = f"{field} {value!r} is not a number of cores; use e.g. 1 or 0.5"
        raise LimitError(msg)
    try:
        cores = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as e:
        msg = f"{field} {value!r} is not a number of cores; use e.g. 1 or 0.5"
        raise LimitError(msg) from e
    if cores < 0 or not math.isfinite(cores) or cores > MAX_CPUS:
        msg = f"{field} {value!r} is not a number of cores; use e.g. 1 or 0.5"
        raise LimitError(msg)
    return cores


def parse_count(field: str, value: object) -> int:
    """A whole number such as 512 or "512". Zero means no limit."""
    if not isinstance(value, bool):
        try:
            count = int(str(value))
        except ValueError:
            count = -1
        if 0 <= count <= MAX_COUNT:
            return count
    msg = f"{field} {value!r} is not a whole number from 0 to {MAX_COUNT}; use e.g. 512"
    raise LimitError(msg)


def format_duration(seconds: float) -> str:
    """A duration the way settings spell it, to the second: 90 -> "1m30s", 86400 -> "24h"."""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    parts = [
        f"{hours}h" if hours else "",
        f"{minutes}m" if minutes else "",
        f"{secs}s" if secs else "",
    ]
    return "".join(parts) or "0s"


def format_size(n: int) -> str:
    """The shortest exact binary-unit spelling of a size: 2147483648 -> "2G"."""
    for unit in ("T", "G", "M", "K"):
        if n and n % _SIZE_UNITS[unit] == 0:
            return f"{n // _SIZE_UNITS[unit]}{unit}"
    return str(n)
