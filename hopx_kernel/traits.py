"""Trait types for limits written the way people write them: "2G", "90s", "1h", "0.5"."""

from __future__ import annotations

from typing import Any, TypeVar

from traitlets import TraitError, TraitType

from runtime.host_uids import DEFAULT_RANGE as DEFAULT_UID_RANGE
from runtime.host_uids import parse_uid_range
from runtime.sandbox_address import DEFAULT_SANDBOX_NETWORK, parse_sandbox_network
from runtime.units import LimitError, parse_count, parse_cpus, parse_duration, parse_size

T = TypeVar("T")


class _ParsedTrait(TraitType[T, Any]):
    """A trait whose values go through one of runtime.units' parsers, whose errors name the
    setting and give a valid example."""

    @staticmethod
    def parse(field: str, value: object) -> T:
        raise NotImplementedError

    def validate(self, obj: Any, value: Any) -> T:
        try:
            return self.parse(self.name or "setting", value)
        except LimitError as e:
            raise TraitError(str(e)) from e


class ByteSize(_ParsedTrait[int]):
    """A size in bytes, given as an int or a string such as "512M" or "2G"; 0 means no limit."""

    parse = staticmethod(parse_size)
    default_value = 0
    info_text = "a size such as '512M' or '2G' (binary units), or a number of bytes"


class Duration(_ParsedTrait[float]):
    """A duration in seconds, given as a number or a string such as "90s", "15m" or "1h"."""

    parse = staticmethod(parse_duration)
    default_value = 0.0
    info_text = "a duration such as '90s', '15m' or '1h', or a number of seconds"


class Cpus(_ParsedTrait[float]):
    """A number of cores, given as a number or a string such as "0.5"; 0 means no limit."""

    parse = staticmethod(parse_cpus)
    default_value = 0.0
    info_text = "a number of cores such as 1 or 0.5"


class Count(_ParsedTrait[int]):
    """A whole number of things (processes), given as an int or a string; 0 means no limit."""

    parse = staticmethod(parse_count)
    default_value = 0
    info_text = "a whole number such as 512"


class UidRangeText(_ParsedTrait[str]):
    """An inclusive range of host uids, "FIRST-LAST", never including root."""

    @staticmethod
    def parse(field: str, value: object) -> str:
        return str(parse_uid_range(field, value))

    default_value = DEFAULT_UID_RANGE
    info_text = f"a uid range such as '{DEFAULT_UID_RANGE}'"


class SandboxNetwork(_ParsedTrait[str]):
    """An IPv4 block inside a private one, "100.64.0.0/16", that sandbox addresses come from."""

    @staticmethod
    def parse(field: str, value: object) -> str:
        return str(parse_sandbox_network(field, value))

    default_value = DEFAULT_SANDBOX_NETWORK
    info_text = f"an IPv4 block such as '{DEFAULT_SANDBOX_NETWORK}'"
