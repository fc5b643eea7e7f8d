"""Secrets into the kernel's environment, and nowhere else on the way.

The owner sends the values on the supervisor's stdin, on the line after the spec, so they are in
no spec, state record or command line. The supervisor writes them into a pipe and hands its read
end to the sandbox; the kernel's command is run by a few lines of Python (`LAUNCHER`, the same
interpreter as the kernel's) that read the pipe to its end, close it, put the values in their
own environment and exec the kernel in place. The values are then in the kernel's environment
only: not in bubblewrap's environment or arguments (both readable on the host), and in no file,
inside the sandbox or out.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Mapping, Sequence
from typing import Final

# Bounds on what one start may carry.
MAX_SECRETS: Final = 64
MAX_TOTAL_BYTES: Final = 1 << 20
# execve takes no environment string over 128 KiB (MAX_ARG_STRLEN): one value stays well below.
MAX_VALUE_BYTES: Final = 64 * 1024
# The secrets line: the values JSON-escaped, at most six bytes for each of theirs.
MAX_LINE_BYTES: Final = 6 * MAX_TOTAL_BYTES + 4096

# Reads NAME\0VALUE\0... from the fd in argv[1], then execs argv[3:] (argv[2] is "--").
LAUNCHER: Final = (
    "import os,sys\n"
    "fd=int(sys.argv[1]);data=bytearray()\n"
    "while chunk:=os.read(fd,65536):data+=chunk\n"
    "os.close(fd);items=bytes(data).split(b'\\0')\n"
    "for name,value in zip(items[0:-1:2],items[1::2]):os.environb[name]=value\n"
    "os.execvp(sys.argv[3],sys.argv[3:])\n"
)


class SecretsError(ValueError):
    """Secrets this start cannot carry; the message names no value."""


def parse_line(line: bytes) -> dict[str, str]:
    """The secrets line the owner sent after the spec: a JSON object of names to values."""
    try:
        secrets = json.loads(line or b"{}")
    except ValueError:
        msg = "the secrets line is not JSON"
        raise SecretsError(msg) from None
    if not isinstance(secrets, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in secrets.items()
    ):
        msg = "the secrets line must map names to text"
        raise SecretsError(msg)
    return secrets


def encode_line(secrets: Mapping[str, str]) -> bytes:
    return json.dumps(dict(secrets)).encode() + b"\n"


def check(kernel_argv: Sequence[str], secrets: Mapping[str, str]) -> None:
    """Refuse, before anything starts, secrets this kernel cannot be given."""
    if not secrets:
        return
    launcher_argv(kernel_argv, 0)
    if len(secrets) > MAX_SECRETS:
        msg = f"at most {MAX_SECRETS} secrets per kernel"
        raise SecretsError(msg)
    if any(len(value.encode()) > MAX_VALUE_BYTES for value in secrets.values()):
        msg = f"a secret's value is at most {MAX_VALUE_BYTES >> 10} KiB"
        raise SecretsError(msg)
    if sum(len(f"{k}{v}".encode()) + 2 for k, v in secrets.items()) > MAX_TOTAL_BYTES:
        msg = f"a kernel's secrets total at most {MAX_TOTAL_BYTES >> 20} MiB"
        raise SecretsError(msg)
    if any("\0" in name or "=" in name or not name or "\0" in v for name, v in secrets.items()):
        msg = "a secret's name or value holds a NUL byte, or its name is empty or has an '='"
        raise SecretsError(msg)


def launcher_argv(kernel_argv: Sequence[str], fd: int) -> tuple[str, ...]:
    """`kernel_argv`, started through LAUNCHER by the kernel's own interpreter."""
    python = kernel_argv[0]
    if not os.path.basename(python).startswith("python"):
        msg = (
            f"secrets are given to Python kernels only, and this kernel's command starts with "
            f"{python!r}; remove the kernelspec's secrets or run a Python kernel"
        )
        raise SecretsError(msg)
    return (python, "-I", "-c", LAUNCHER, str(fd), "--", *kernel_argv)


def secrets_pipe(secrets: Mapping[str, str]) -> int:
    """A pipe's read end holding `secrets` (checked) and then its end: the write end is closed."""
    data = b"".join(f"{name}\0{value}\0".encode() for name, value in secrets.items())
    read_end, write_end = os.pipe()
    try:
        if len(data) > 65536:
            fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, len(data))
        written = 0
        while written < len(data):
            written += os.write(write_end, data[written:])
    except OSError:
        os.close(read_end)
        raise
    finally:
        os.close(write_end)
    return read_end
