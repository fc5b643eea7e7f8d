"""Servers at public-looking addresses that never leave this machine, for the network
benchmark and the tests.

A server runs in a network namespace of its own at a public address on one end of a veth pair;
the host reaches it by one /32 route over the other end. Nothing is routed anywhere else, and
everything is removed when the block ends. Root only.
"""

from __future__ import annotations

import contextlib
import secrets
import subprocess
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def serve_at(address: str, code: str, *args: str) -> Iterator[None]:
    """Runs Python `code` (with `args`) inside a new namespace holding `address`, until the
    block ends; `code` prints "ready" once it serves."""
    suffix = secrets.token_hex(3)
    namespace, host_end, far_end = f"hopx-inet-{suffix}", f"hxh{suffix}", f"hxn{suffix}"

    def ip(*arguments: str, inside: bool = False) -> None:
        prefix = ["ip", "netns", "exec", namespace] if inside else []
        subprocess.run([*prefix, "ip", *arguments], check=True, capture_output=True)

    ip("netns", "add", namespace)
    server = None
    try:
        ip("link", "add", host_end, "type", "veth", "peer", "name", far_end)
        ip("link", "set", far_end, "netns", namespace)
        ip("link", "set", host_end, "up")
        ip("route", "add", f"{address}/32", "dev", host_end)
        ip("addr", "add", f"{address}/32", "dev", far_end, inside=True)
        ip("link", "set", far_end, "up", inside=True)
        ip("link", "set", "lo", "up", inside=True)
        ip("route", "add", "default", "dev", far_end, inside=True)
        server = subprocess.Popen(
            ["ip", "netns", "exec", namespace, sys.executable, "-c", code, *args],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert server.stdout is not None
        assert server.stdout.readline().strip() == "ready"
        yield
    finally:
        if server is not None:
            server.kill()
            server.wait()
            if server.stdout is not None:
                server.stdout.close()
        subprocess.run(["ip", "link", "del", host_end], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True, check=False)
