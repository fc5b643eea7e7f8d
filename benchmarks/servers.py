"""Servers a benchmark starts for itself on loopback ports: a free port, waiting for one to
answer, stopping one."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Callable
from typing import Any

import requests


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def answers(url: str, token: str = "", session: requests.Session | None = None) -> bool:
    """Whether `url` answers 2xx now (with the token, if any)."""
    headers = {"Authorization": f"token {token}"} if token else {}
    try:
        getter = session.get if session else requests.get
        return bool(getter(url, headers=headers, timeout=2).ok)
    except requests.RequestException:
        return False


def wait_until(condition: Callable[[], bool], timeout: float, what: str = "a server") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            msg = f"the benchmark's {what} did not come up"
            raise RuntimeError(msg)
        time.sleep(0.1)


def stop(process: subprocess.Popen[Any], timeout: float = 30) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
