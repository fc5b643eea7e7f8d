"""A host uid of its own for every sandbox a root supervisor starts, from a configured range.

Two sandboxes are then different users on the host: were a namespace escaped, one could still
not signal, trace or open what belongs to another, nor to a host daemon running as `nobody`.

A uid is claimed (runtime.claims) by holding an exclusive lock on `<claims dir>/<uid>` for the
sandbox's whole life.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

from runtime.claims import Claim, sweep, try_claim
from runtime.units import LimitError

CLAIMS_DIR = "/run/hopx-kernel/uids"
# 65536 uids in the block systemd leaves unused (between its container ranges and the "foreign"
# range): no account, DynamicUser service or container user namespace is expected there.
DEFAULT_RANGE = "1879048192-1879113727"
# 65535 and 4294967295 mean "no uid" to several system calls; 0 is root.
_FORBIDDEN = {0, 65535, 2**32 - 1}


@dataclass(frozen=True)
class UidRange:
    first: int
    last: int

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.first, self.last + 1))

    def __len__(self) -> int:
        return self.last - self.first + 1

    def __contains__(self, uid: object) -> bool:
        return isinstance(uid, int) and self.first <= uid <= self.last

    def __str__(self) -> str:
        return f"{self.first}-{self.last}"


def parse_uid_range(field: str, value: object) -> UidRange:
    """'FIRST-LAST' (inclusive) of host uids; never root, never a "no uid" value."""
    example = f"use a range such as '{DEFAULT_RANGE}'"
    text = str(value).strip()
    first_text, dash, last_text = text.partition("-")
    if not (dash and first_text.strip().isdigit() and last_text.strip().isdigit()):
        msg = f"{field}: {value!r} is not a uid range; {example}"
        raise LimitError(msg)
    first, last = int(first_text), int(last_text)
    if first > last:
        msg = f"{field}: {text!r} ends before it starts; {example}"
        raise LimitError(msg)
    if first < 1 or last >= 2**32 - 1:
        msg = f"{field}: {text!r} must lie within 1-4294967294 (never root); {example}"
        raise LimitError(msg)
    forbidden = sorted(uid for uid in _FORBIDDEN if first <= uid <= last)
    if forbidden:
        msg = f"{field}: {text!r} contains {forbidden[0]}, which is not a usable uid; {example}"
        raise LimitError(msg)
    return UidRange(first, last)


def accounts_in_range(
    uids: UidRange, files: tuple[str, ...] = ("/etc/passwd", "/etc/group")
) -> list[str]:
    """Accounts and groups of the host whose id lies in `uids` ("alice (1000)"), which a sandbox
    would impersonate on the host."""
    found = []
    for path in files:
        with contextlib.suppress(OSError), open(path) as f:
            for line in f:
                fields = line.split(":")
                if len(fields) > 2 and fields[2].isdigit() and int(fields[2]) in uids:
                    found.append(f"{fields[0]} ({fields[2]}, {path})")
    return found


class UidsExhausted(RuntimeError):
    pass


def claim_uid(uids: UidRange, claims_dir: str = CLAIMS_DIR) -> Claim:
    """Lock the first uid of `uids` that no other sandbox holds and no host process runs as;
    the claim's `number` is the uid."""
    os.makedirs(claims_dir, mode=0o700, exist_ok=True)
    in_use = _uids_of_processes()
    for uid in uids:
        if uid in in_use:
            continue
        claim = try_claim(claims_dir, uid)
        if claim is not None:
            return claim
    msg = f"all {len(uids)} sandbox uids of {uids} are in use"
    raise UidsExhausted(msg)


def _uids_of_processes() -> set[int]:
    """Every real, effective, saved and filesystem uid of the host's live processes: a uid
    still used by a leftover process of an ended sandbox is not handed out again. Zombies do
    not count: they can no longer act, and their reaping is up to init, which may be slow."""
    uids: set[int] = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError), open(f"/proc/{entry}/status") as f:
            for line in f:
                if line.startswith("State:") and line.split()[1] in ("Z", "X"):
                    break
                if line.startswith("Uid:"):
                    uids.update(int(u) for u in line.split()[1:])
                    break
    return uids


def sweep_claims(claims_dir: str = CLAIMS_DIR) -> list[str]:
    """Remove the uid claim files of supervisors that died without releasing them."""
    return sweep(claims_dir)
