"""The connection log: one JSON line for every connection a sandbox tried, allowed or denied.

Every supervisor of a server (or of a papermill run) appends to the same file, so each record
goes in one `write` under a lock shared through a lock file beside it, and the file is rotated
by size there too (`connections.jsonl` → `.1` → `.2` ...): a supervisor that rotated and one
that appends next never lose or tear a line. The log is the admin's, not the sandbox's: it is
created 0600 and is never followed through a symbolic link.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Final, Literal

Protocol = Literal["dns", "tls", "http", "tcp"]

DEFAULT_MAX_BYTES: Final = 64 * 1024 * 1024
DEFAULT_BACKUPS: Final = 5
# Any text a sandbox chose (a name it asked for, a reason quoting it) is cut to this length.
MAX_FIELD_CHARS: Final = 512


@dataclass(frozen=True)
class ConnectionRecord:
    """One attempt, as the log and the API show it."""

    started: float  # seconds since the epoch
    kernel_id: str
    sandbox_address: str
    protocol: Protocol
    destination_name: str | None  # as the sandbox asked for it (DNS, SNI, Host)
    destination_address: str | None  # where the host side connected, or would have
    port: int | None
    allowed: bool
    rule: str  # the rule that decided, as the admin wrote it, or why none did
    reason: str
    bytes_sent: int = 0  # from the sandbox to the destination
    bytes_received: int = 0
    duration: float = 0.0  # seconds the connection lasted
    kernelspec: str = ""
    notebook: str = ""
    user: str = ""  # the server's user, or the JupyterHub user it serves

    def to_json(self) -> str:
        fields = asdict(self)
        fields["time"] = (
            datetime.fromtimestamp(self.started, timezone.utc)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z")
        )
        del fields["started"]
        fields["decision"] = "allowed" if self.allowed else "denied"
        del fields["allowed"]
        fields["duration"] = round(self.duration, 3)
        for name, value in fields.items():
            if isinstance(value, str) and len(value) > MAX_FIELD_CHARS:
                fields[name] = value[:MAX_FIELD_CHARS] + "…"
        order = ["time", "decision", "kernel_id", "protocol", "destination_name"]
        ordered = {name: fields.pop(name) for name in order} | fields
        return json.dumps(ordered, ensure_ascii=True, separators=(",", ":"))


class ConnectionLog:
    """Appends records to `path`, rotating it past `max_bytes` and keeping `backups` old files
    (0 keeps none: the log starts again)."""

    def __init__(
        self, path: str, max_bytes: int = DEFAULT_MAX_BYTES, backups: int = DEFAULT_BACKUPS
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups

    def write(self, record: ConnectionRecord) -> None:
        line = (record.to_json() + "\n").encode()
        with self._locked():
            size = self._size()
            if size and size + len(line) > self.max_bytes:
                self._rotate()
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
            fd = os.open(self.path, flags, 0o600)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)

    def _size(self) -> int:
        try:
            return os.lstat(self.path).st_size
        except FileNotFoundError:
            return 0

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        directory = os.path.dirname(self.path) or "."
        os.makedirs(directory, mode=0o700, exist_ok=True)
        fd = os.open(
            self.path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600
        )
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _rotate(self) -> None:
        if self.backups == 0:
            os.unlink(self.path)
            return
        for index in range(self.backups - 1, 0, -1):
            with contextlib.suppress(FileNotFoundError):
                os.replace(f"{self.path}.{index}", f"{self.path}.{index + 1}")
        os.replace(self.path, f"{self.path}.1")
