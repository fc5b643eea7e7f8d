"""The tests' "internet": servers at public-looking addresses that never leave this machine, and
a test CA for their certificates.

A server runs in a network namespace of its own, made by the test, at a public address on one
end of a veth pair; the host reaches it by one /32 route over the other end. Nothing is routed
anywhere else, and everything is removed when the test ends. Root only.
"""

from __future__ import annotations

import contextlib
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path


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


def make_test_ca(folder: Path, name: str) -> tuple[Path, Path, Path]:
    """A CA, and a certificate it signed for `name`: (CA, certificate, key), readable by all."""
    ca_key, ca, key, request, cert, extensions = (
        folder / n for n in ("ca.key", "ca.pem", "leaf.key", "leaf.csr", "leaf.pem", "leaf.ext")
    )
    extensions.write_text(f"subjectAltName=DNS:{name}\n")
    new_key = ["-newkey", "rsa:2048", "-nodes", "-keyout"]
    _openssl("req", "-x509", *new_key, ca_key, "-out", ca, "-days", "2", "-subj", "/CN=Hopx CA")
    _openssl("req", *new_key, key, "-out", request, "-subj", f"/CN={name}")
    _openssl(
        "x509", "-req", "-in", request, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
        "-out", cert, "-days", "2", "-extfile", extensions,
    )  # fmt: skip
    for path in (ca, cert, key):
        path.chmod(0o644)
    return ca, cert, key


def _openssl(*arguments: str | Path) -> None:
    subprocess.run(["openssl", *map(str, arguments)], check=True, capture_output=True)
