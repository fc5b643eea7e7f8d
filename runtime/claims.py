"""Claims on numbered things a sandbox must hold alone for its whole life (a host uid, an
address), each held as an exclusive lock on `<claims dir>/<number>`.

The kernel drops the lock when the holder ends, however it ends, so a SIGKILLed supervisor
never strands what it held; its file is reused or swept later.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from dataclasses import dataclass


@dataclass
class Claim:
    number: int
    path: str
    fd: int

    def release(self) -> None:
        """Give the number back; call only once nothing of the sandbox uses it any more."""
        if self.fd < 0:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)  # still locked: no other claimer holds this inode yet
        os.close(self.fd)
        self.fd = -1


def try_claim(claims_dir: str, number: int) -> Claim | None:
    """Lock `number` in `claims_dir`; None if another holds it."""
    path = os.path.join(claims_dir, str(number))
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # The holder unlinks its file on release: a lock on an unlinked inode claims nothing.
        if os.fstat(fd).st_ino == os.stat(path).st_ino:
            return Claim(number, path, fd)
    except (BlockingIOError, FileNotFoundError):
        pass
    os.close(fd)
    return None


def sweep(claims_dir: str) -> list[str]:
    """Remove the claim files of holders that died without releasing them."""
    removed = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(claims_dir):
            if entry.name.isdigit():
                claim = try_claim(claims_dir, int(entry.name))
                if claim is not None:
                    claim.release()
                    removed.append(entry.path)
    return removed
