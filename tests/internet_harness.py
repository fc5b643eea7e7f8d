"""The tests' "internet": servers at public-looking addresses that never leave this machine
(benchmarks/internet.py), and a test CA for their certificates."""

from __future__ import annotations

import subprocess
from pathlib import Path

from benchmarks.internet import serve_at

__all__ = ["make_test_ca", "serve_at"]


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
