"""The tests' "internet": servers at public-looking addresses that never leave this machine
(benchmarks/internet.py), and a test CA for their certificates."""

from __future__ import annotations

import subprocess
from pathlib import Path

from benchmarks.internet import serve_at

__all__ = ["WEB_SERVER", "fetch_code", "make_test_ca", "serve_at"]

# An HTTP server on port 80 of the address it is given: `/bytes/<n>` answers n bytes, any other
# path "hello from <Host><path>".
WEB_SERVER = """
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

class Answer(BaseHTTPRequestHandler):
    def do_GET(self):
        size = self.path.removeprefix("/bytes/")
        if size.isdigit():
            body = b"x" * int(size)
        else:
            body = f"hello from {self.headers['Host']}{self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

server = HTTPServer((sys.argv[1], 80), Answer)
print("ready", flush=True)
server.serve_forever()
"""


def fetch_code(urls: dict[str, str]) -> str:
    """Python that fetches each URL with urllib and prints, as JSON, [status, body] for each, or
    ["error", errno name] when it got no HTTP answer."""
    return f"""
import errno, json, urllib.error, urllib.request
seen = {{}}
for key, url in {urls!r}.items():
    try:
        with urllib.request.urlopen(url, timeout=20) as response:
            seen[key] = [response.status, response.read().decode()]
    except urllib.error.HTTPError as e:
        seen[key] = [e.code, e.read().decode()]
    except OSError as e:
        reason = getattr(e, "reason", e)
        seen[key] = ["error", errno.errorcode.get(getattr(reason, "errno", 0), str(reason))]
print(json.dumps(seen))
"""


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
