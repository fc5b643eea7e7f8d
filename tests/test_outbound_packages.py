"""`%pip install` through an outbound policy, as a papermill run in CI does it: a package from a
PEP 503 index over HTTPS, by name, allowed by a name rule, with the connection log written
without any Jupyter server; the same server reached by requests, curl and a git clone; and the
same from an index the policy does not name, failing at once with pip saying why.

The index runs at a public-looking address in a network namespace the test makes
(tests/internet_harness.py), with a certificate from a test CA the kernel is told to trust. The
host side resolves the index's name through /etc/hosts, which papermill's own mount namespace
(made by the test) replaces: no DNS query or packet leaves the machine.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import nbformat
from internet_harness import make_test_ca, serve_at

INDEX_NAME = "pypi.hopx.test"
INDEX_ADDRESS = "151.101.0.20"
ELSEWHERE = "mirror.hopx.test"  # resolves on the host too, but no rule names it

INDEX_SERVER = """
import functools, ssl, sys
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
address, root, cert, key = sys.argv[1:]

class Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass

server = ThreadingHTTPServer((address, 443), functools.partial(Quiet, directory=root))
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
server.socket = context.wrap_socket(server.socket, server_side=True)
print("ready", flush=True)
server.serve_forever()
"""

# papermill in a mount namespace of its own, where the host side's /etc/hosts knows the index.
PAPERMILL = """
import os, subprocess, sys
subprocess.run(["mount", "--make-rprivate", "/"], check=True)
subprocess.run(["mount", "--bind", sys.argv[1], "/etc/hosts"], check=True)
sys.exit(subprocess.run([sys.executable, "-m", "papermill", *sys.argv[2:]]).returncode)
"""


def _record(path: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def build_index(root: Path) -> None:
    """A PEP 503 index of one small pure-Python wheel, hopx-hello 1.0."""
    files = {
        "hopx_hello/__init__.py": b'GREETING = "hello from the index"\n',
        "hopx_hello-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: hopx-hello\n"
        b"Version: 1.0\n",
        "hopx_hello-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: hopx-tests\n"
        b"Root-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "\n".join(_record(p, d) for p, d in files.items())
    record += "\nhopx_hello-1.0.dist-info/RECORD,,\n"
    wheel_name = "hopx_hello-1.0-py3-none-any.whl"
    (root / "files").mkdir(parents=True)
    wheel = root / "files" / wheel_name
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
        archive.writestr("hopx_hello-1.0.dist-info/RECORD", record)
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    (root / "simple" / "hopx-hello").mkdir(parents=True)
    (root / "simple" / "index.html").write_text('<a href="hopx-hello/">hopx-hello</a>\n')
    (root / "simple" / "hopx-hello" / "index.html").write_text(
        f'<a href="../../files/{wheel_name}#sha256={digest}">{wheel_name}</a>\n'
    )


def build_repository(root: Path) -> None:
    """A bare git repository, served as plain files (git's "dumb" HTTP protocol)."""
    work = root.parent / "work"
    git = ["git", "-c", "user.name=Hopx", "-c", "user.email=hopx@example.test"]
    subprocess.run(["git", "init", "-q", str(work)], check=True)
    (work / "README").write_text("cloned through the policy\n")
    subprocess.run([*git, "-C", str(work), "add", "README"], check=True)
    subprocess.run([*git, "-C", str(work), "commit", "-qm", "first"], check=True)
    bare = root / "repo.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(bare)], check=True)
    subprocess.run(["git", "-C", str(bare), "update-server-info"], check=True)


# Other clients, in the kernel: requests, curl and git, each trusting the test CA.
OTHER_CLIENTS = """
import json, os, subprocess, requests
ca, base = {ca!r}, "https://{index}"
seen = {{"requests": requests.get(f"{{base}}/simple/", verify=ca, timeout=20).status_code}}
curl = subprocess.run(["curl", "-sS", "--cacert", ca, f"{{base}}/simple/"],
                      capture_output=True, text=True)
seen["curl"] = curl.stdout or curl.stderr
clone = subprocess.run(["git", "clone", "-q", f"{{base}}/repo.git", "/tmp/repo"],
                       env={{**os.environ, "GIT_SSL_CAINFO": ca}}, capture_output=True, text=True)
seen["git"] = open("/tmp/repo/README").read() if clone.returncode == 0 else clone.stderr
print(json.dumps(seen))
"""


def pip_install(index: str, ca: Path, target: str, retries: int = 0) -> str:
    """pip tells why a connection failed when it retries it."""
    return (
        f"%pip install --index-url https://{index}/simple/ --cert {ca} --target {target} "
        f"--no-cache-dir --disable-pip-version-check --retries {retries} --timeout 10 hopx-hello"
    )


def test_pip_installs_from_an_allowed_index_and_fails_at_once_elsewhere(
    make_kernelspec: Callable[..., str], runtime_dir: Path, tmp_path: Path
) -> None:
    shared = Path(tempfile.mkdtemp(prefix="hopx-index-", dir="/tmp"))
    try:
        shared.chmod(0o755)
        ca, cert, key = make_test_ca(shared, INDEX_NAME)
        build_index(shared / "index")
        build_repository(shared / "index")
        hosts = shared / "hosts"
        hosts.write_text(f"127.0.0.1 localhost\n{INDEX_ADDRESS} {INDEX_NAME} {ELSEWHERE}\n")
        log = tmp_path / "connections.jsonl"
        make_kernelspec(
            "hopx-pip",
            network_allow=[f"{INDEX_NAME}:443"],
            connection_log=str(log),
            read_only_paths=[str(shared)],
            memory_limit="1G",
        )
        nb = nbformat.v4.new_notebook()
        nb.metadata["kernelspec"] = {
            "name": "hopx-pip",
            "display_name": "Hopx",
            "language": "python",
        }
        nb.cells = [
            nbformat.v4.new_code_cell(pip_install(INDEX_NAME, ca, "/tmp/site")),
            nbformat.v4.new_code_cell(
                "import sys\nsys.path.insert(0, '/tmp/site')\nimport hopx_hello\n"
                "print(hopx_hello.GREETING)"
            ),
            nbformat.v4.new_code_cell(pip_install(ELSEWHERE, ca, "/tmp/other", retries=1)),
            nbformat.v4.new_code_cell(OTHER_CLIENTS.format(ca=str(ca), index=INDEX_NAME)),
        ]
        nbformat.write(nb, tmp_path / "in.ipynb")
        with serve_at(
            INDEX_ADDRESS, INDEX_SERVER, INDEX_ADDRESS, str(shared / "index"), str(cert), str(key)
        ):
            notebooks = [str(tmp_path / "in.ipynb"), str(tmp_path / "out.ipynb")]
            options = ["-k", "hopx-pip", "--no-progress-bar", "--cwd", str(tmp_path)]
            run = subprocess.run(
                [
                    "unshare",
                    "--mount",
                    sys.executable,
                    "-c",
                    PAPERMILL,
                    str(hosts),
                    *notebooks,
                    *options,
                ],
                capture_output=True,
                text=True,
                timeout=300,
                env={**os.environ, "JUPYTER_RUNTIME_DIR": str(runtime_dir)},
                check=False,
            )
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        out = nbformat.read(tmp_path / "out.ipynb", as_version=4)
        texts = ["".join(o.get("text", "") for o in c.outputs) for c in out.cells]
        assert "Successfully installed hopx-hello-1.0" in texts[0], texts[0]
        assert texts[1] == "hello from the index\n"
        # Elsewhere does not resolve inside the sandbox: pip fails at once, saying so.
        assert (
            "Failed to establish a new connection: [Errno -2] Name or service not known"
            in (texts[2])
        )
        assert "Successfully installed" not in texts[2]
        others = json.loads(texts[3])
        assert others["requests"] == 200
        assert '<a href="hopx-hello/">' in others["curl"], others["curl"]
        assert others["git"] == "cloned through the policy\n"

        records = [json.loads(line) for line in log.read_text().splitlines()]
        allowed = [r for r in records if r["decision"] == "allowed"]
        assert allowed, records
        assert {r["destination_name"] for r in allowed} == {INDEX_NAME}
        assert {r["destination_address"] for r in allowed} == {INDEX_ADDRESS}
        assert {r["protocol"] for r in allowed} == {"tls"}
        assert all(r["rule"] == f"{INDEX_NAME}:443" for r in allowed)
        assert sum(r["bytes_received"] for r in allowed) > 1000
        refused = [r for r in records if r["decision"] == "denied"]
        assert {(r["protocol"], r["destination_name"]) for r in refused} == {("dns", ELSEWHERE)}
    finally:
        subprocess.run(["rm", "-rf", str(shared)], check=False)
