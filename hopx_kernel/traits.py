"""Trait types for limits written the way people write them: "2G", "90s", "1h"."""

from __future__ import annotations

from typing import Any

from traitlets import TraitError, TraitType

from runtime.units import LimitError, parse_count, parse_cpus, parse_duration, parse_size


class ByteSize(TraitType[int, int | str]):
    """A size in bytes, given as an int or a string such as "512M" or "2G"; 0 means no limit."""

    default_value = 0
    info_text = "a size such as '512M' or '2G' (binary units), or a number of bytes"

    def validate(self, obj: Any, value: Any) -> int:
        try:
            return parse_size(self.name or "size", value)
        except LimitError as e:
            raise TraitError(str(e)) from e


class Duration(TraitType[float, float | int | str]):
    """A duration in seconds, given as a number or a string such as "90s", "15m" or "1h"."""

    default_value = 0.0
    info_text = "a duration such as '90s', '15m' or '1h', or a number of seconds"

    def validate(self, obj: Any, value: Any) -> float:
        try:
            return parse_duration(self.name or "duration", value)
        except LimitError as e:
            raise TraitError(str(e)) from e


class Cpus(TraitType[float, float | int | str]):
    """A number of cores, given as a number or a string such as "0.5"; 0 means no limit."""

    default_value = 0.0
    info_text = "a number of cores such as 1 or 0.5"

    def validate(self, obj: Any, value: Any) -> float:
        try:
            return parse_cpus(self.name or "cpus", value)
        except LimitError as e:
            raise TraitError(str(e)) from e


class Count(TraitType[int, int | str]):
    """A whole number of things (processes), given as an int or a string; 0 means no limit."""

    default_value = 0
    info_text = "a whole number such as 512"

    def validate(self, obj: Any, value: Any) -> int:
        try:
            return parse_count(self.name or "count", value)
        except LimitError as e:
            raise TraitError(str(e)) from e
