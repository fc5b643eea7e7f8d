"""Secrets into the kernel's environment, and nowhere else on the way.

The owner sends the values on the supervisor's stdin, on the line after the spec, so they are in
no spec, state record or command line. The supervisor writes them into a pipe, after the source
of `runtime.kernel_launcher`, and hands its read end to the sandbox. The kernel's interpreter is
started with `BOOT`, a few lines that read the pipe to its end, close it and run the launcher:
it puts the values in the environment, masks them in every message the kernel will send, and
runs the kernel's command in the same process. The values are then in the kernel's environment
only: not in bubblewrap's environment or arguments (both readable on the host), and in no file,
inside the sandbox or out.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

# Bounds on what one start may carry.
MAX_SECRETS: Final = 64
# Half of the largest pipe an unprivileged process may ask for (/proc/sys/fs/pipe-max-size).
MAX_TOTAL_BYTES: Final = 512 << 10
# execve takes no environment string over 128 KiB (MAX_ARG_STRLEN): one value stays well below.
MAX_VALUE_BYTES: Final = 64 * 1024
# The secrets line: the values JSON-escaped, at most six bytes for each of theirs.
MAX_LINE_BYTES: Final = 6 * MAX_TOTAL_BYTES + 4096

# Run by the kernel's interpreter: reads the launcher's source and the secrets, NUL between them,
# from the fd in argv[1], and has the launcher run the command after argv[2] ("--").
BOOT: Final = (
    "import os,sys\n"
    "def _read(fd):\n"
    " data=bytearray()\n"
    " while chunk:=os.read(fd,65536):data+=chunk\n"
    " os.close(fd);return bytes(data)\n"
    "_source,_,_secrets=_read(int(sys.argv[1])).partition(b'\\0')\n"
    "_launcher={'__name__':'hopx_kernel_launcher'}\n"
    "exec(compile(_source,'hopx-kernel-launcher','exec'),_launcher)\n"
    "_launcher['main'](_secrets,sys.argv[3:])\n"
)
LAUNCHER_SOURCE: Final = Path(__file__).with_name("kernel_launcher.py").read_bytes()
# Interpreter options that take the next argument as their value.
_OPTIONS_WITH_VALUE: Final = frozenset({"-W", "-X", "--check-hash-based-pycs"})


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
        msg = f"a kernel's secrets total at most {MAX_TOTAL_BYTES >> 10} KiB"
        raise SecretsError(msg)
    if any("\0" in name or "=" in name or not name or "\0" in v for name, v in secrets.items()):
        msg = "a secret's name or value holds a NUL byte, or its name is empty or has an '='"
        raise SecretsError(msg)


def launcher_argv(kernel_argv: Sequence[str], fd: int) -> tuple[str, ...]:
    """`kernel_argv`, run by the launcher in the kernel's own interpreter, with its options."""
    python = kernel_argv[0]
    if not os.path.basename(python).startswith("python"):
        msg = (
            f"secrets are given to Python kernels only, and this kernel's command starts with "
            f"{python!r}; remove the kernelspec's secrets or run a Python kernel"
        )
        raise SecretsError(msg)
    options, command = split_interpreter_options(kernel_argv[1:])
    if not command:
        msg = "a kernel with secrets must run a module (-m), a script or -c code"
        raise SecretsError(msg)
    return (python, *options, "-c", BOOT, str(fd), "--", *command)


def split_interpreter_options(args: Sequence[str]) -> tuple[list[str], list[str]]:
    """The interpreter's options in `args`, and what they run (-m MODULE, -c CODE or a script,
    with its arguments)."""
    index = 0
    while index < len(args):
        arg = args[index]
        if arg in ("-m", "-c") or arg == "-" or not arg.startswith("-"):
            break
        index += 2 if arg in _OPTIONS_WITH_VALUE else 1
    return list(args[:index]), list(args[index:])


def secrets_pipe(secrets: Mapping[str, str]) -> int:
    """A pipe's read end holding the launcher's source and `secrets` (checked), then its end:
    the write end is closed."""
    pairs = b"".join(f"{name}\0{value}\0".encode() for name, value in secrets.items())
    data = LAUNCHER_SOURCE + b"\0" + pairs
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
