"""The way secrets enter a sandbox, on its own: the launcher really reads the pipe and execs the
command with the values in its environment and the pipe closed; secrets a kernel cannot carry
are refused before anything starts, with no value in the message."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from runtime.kernel_secrets import SecretsError, check, launcher_argv, parse_line, secrets_pipe

IPYKERNEL = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
ODD_VALUE = "s3cr3t.*+?^$[](){}|\\ ünïcødé ✓\nsecond line = with equals"


def test_the_launcher_gives_the_values_to_the_command_it_execs() -> None:
    values = {"OPENAI_API_KEY": ODD_VALUE, "BIG": "x" * 60_000}
    fd = secrets_pipe(values)
    shows = (
        "import json, os, sys; fds = os.listdir('/proc/self/fd');"
        "print(json.dumps([os.environ['OPENAI_API_KEY'], len(os.environ['BIG']), sys.argv[1:],"
        f" {str(fd)!r} in fds]))"
    )
    try:
        done = subprocess.run(
            launcher_argv([sys.executable, "-c", shows, "kept", "args"], fd),
            pass_fds=[fd],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
    finally:
        os.close(fd)
    assert done.stdout.strip() == (
        '["s3cr3t.*+?^$[](){}|\\\\ \\u00fcn\\u00efc\\u00f8d\\u00e9 \\u2713\\nsecond line = with '
        'equals", 60000, ["kept", "args"], false]'
    )


@pytest.mark.parametrize(
    ("argv", "secrets", "says"),
    [
        (["/usr/bin/node", "kernel.js"], {"KEY": "hunter2-xyz"}, "Python kernels only"),
        ([sys.executable, "-u"], {"KEY": "hunter2-xyz"}, "must run a module"),
        (IPYKERNEL, {f"K{n}": "v" for n in range(65)}, "at most 64 secrets"),
        (IPYKERNEL, {"KEY": "x" * (65 << 10)}, "value is at most 64 KiB"),
        (IPYKERNEL, {f"K{n}": "x" * (60 << 10) for n in range(10)}, "total at most 512 KiB"),
        (IPYKERNEL, {"KEY": "hunter2\0xyz"}, "holds a NUL byte"),
        (IPYKERNEL, {"A=B": "hunter2-xyz"}, "its name is empty or has an '='"),
    ],
)
def test_secrets_a_kernel_cannot_carry_are_refused(
    argv: list[str], secrets: dict[str, str], says: str
) -> None:
    with pytest.raises(SecretsError, match=says) as refused:
        check(argv, secrets)
    assert "hunter2" not in str(refused.value)
    check(["/usr/bin/node"], {})  # no secrets: any kernel


@pytest.mark.parametrize("line", [b"not json\n", b"[1, 2]\n", b'{"KEY": 3}\n'])
def test_a_bad_secrets_line_is_refused(line: bytes) -> None:
    with pytest.raises(SecretsError):
        parse_line(line)
    assert parse_line(b"") == {}
