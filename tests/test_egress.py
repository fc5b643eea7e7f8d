"""A sandbox's egress (runtime.egress) end to end, in real namespaces: as root, and as uid 65534
in a user namespace of its own.

A namespace owner forks the egress process (which stays in the host's network namespace), sets
up the sandbox's namespace (its address, the local default route, the nftables table), makes the
transparent listener and the DNS socket there and hands them to the egress process. A client in
a nested user namespace, as bubblewrap makes for the kernel, with a resolv.conf naming its own
address, then uses the network as a notebook would: glibc lookups, urllib over HTTP and HTTPS
(a test CA), plain sockets.

No packet leaves the machine: the host side resolves the test's names to public-looking
addresses, and its connector (the one fake, at the edge) turns each of those into a server this
test runs on loopback. Everything between the client's `connect()` and that connector is real.
"""

from __future__ import annotations

import json
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from internet_harness import make_test_ca

PROJECT = Path(__file__).resolve().parent.parent
OWN = "100.64.0.5"
HTTP_ADDRESS, TLS_ADDRESS, ECHO_ADDRESS = "151.101.0.10", "151.101.0.11", "151.101.0.223"

OWNER = """
import asyncio, ipaddress, json, os, signal, socket, subprocess, sys
sys.path.insert(0, {project!r})
from runtime import libc, netns_setup
from runtime.connection_log import ConnectionLog
from runtime.dns_stub import NameMap
from runtime.egress import Egress, EgressLimits, SandboxIdentity, open_to
from runtime.network_policy import NetworkPolicy, parse_rules
from runtime.outbound import OutboundJudge

config = json.loads(sys.argv[1])
own = ipaddress.IPv4Address(config["own"])
IP_TRANSPARENT, PORT = 19, 15002
owner_end, egress_end = socket.socketpair()

egress = os.fork()
if egress == 0:
    # The host's network namespace, for good: it never enters the sandbox's.
    owner_end.close()
    _, fds, _, _ = socket.recv_fds(egress_end, 16, 2)
    listener, dns = (socket.socket(fileno=fd) for fd in fds)

    def resolve(name):
        try:
            return [ipaddress.ip_address(a) for a in config["names"][name]]
        except KeyError:
            raise LookupError("no such name") from None

    async def connect(address, port):
        local = config["servers"].get(f"{{address}}:{{port}}")
        if local is None:
            raise ConnectionRefusedError(111, "Connection refused")
        return await open_to(ipaddress.ip_address("127.0.0.1"), local)

    policy = NetworkPolicy(
        allow=parse_rules("network_allow", config["allow"]),
        deny=parse_rules("network_deny", config["deny"]),
    )
    judge = OutboundJudge(policy, NameMap(), resolve)
    limits = EgressLimits(**config["limits"])
    log = ConnectionLog(config["log"])
    server = Egress(judge, SandboxIdentity("kernel-1", str(own)), log.write, limits, connect)
    asyncio.run(server.serve(listener, dns))
    os._exit(0)

egress_end.close()
libc.enter_private_network(unprivileged=os.geteuid() != 0)
netns_setup.give_address(own)
netns_setup.intercept(own, PORT)
listener = socket.socket()
listener.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
listener.bind(("127.0.0.1", PORT))
listener.listen(128)
dns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
dns.bind(("0.0.0.0", 53))
socket.send_fds(owner_end, [b"sockets"], [listener.fileno(), dns.fileno()])
listener.close()
dns.close()

# The kernel's side: a user and mount namespace of its own inside, its resolv.conf naming the
# sandbox's own address.
read, write = os.pipe()
client = os.fork()
if client == 0:
    os.close(read)
    libc.unshare(libc.CLONE_NEWUSER | libc.CLONE_NEWNS)
    libc.mount(None, "/", None, libc.MS_REC | libc.MS_PRIVATE)
    libc.mount(config["resolv"], "/etc/resolv.conf", None, libc.MS_BIND)
    libc.mount("/dev/null", "/etc/hosts", None, libc.MS_BIND)
    run = subprocess.run([sys.executable, "-c", config["client"]], capture_output=True, text=True)
    os.write(write, json.dumps({{"out": run.stdout, "err": run.stderr}}).encode())
    os._exit(0)
os.close(write)
chunks = []
while chunk := os.read(read, 65536):
    chunks.append(chunk)
os.waitpid(client, 0)
os.kill(egress, signal.SIGTERM)
os.waitpid(egress, 0)
print(b"".join(chunks).decode())
"""

CLIENT = """
import errno, json, socket, ssl, time, urllib.error, urllib.request
result = {}

def attempt(key, action):
    try:
        result[key] = action()
    except urllib.error.HTTPError as e:
        result[key] = ["HTTPError", e.code, e.read().decode()]
    except OSError as e:
        reason = getattr(e, "reason", e)
        code = getattr(reason, "errno", None)
        result[key] = ["OSError", errno.errorcode.get(code, str(code)), str(reason)]

def get(url, context=None):
    with urllib.request.urlopen(url, timeout=20, context=context) as response:
        return [response.status, response.read().decode()]

tls = ssl.create_default_context(cafile=%(ca)r)
attempt("lookup", lambda: sorted({a[4][0] for a in socket.getaddrinfo("pypi.example.test", 80)}))
attempt("http", lambda: get("http://pypi.example.test/simple/"))
attempt("https", lambda: get("https://tls.files.example.test/data.csv", tls))
attempt("denied_lookup", lambda: socket.getaddrinfo("evil.example.org", 80))
attempt("deny_wins", lambda: socket.getaddrinfo("blocked.files.example.test", 443))

def echo():
    with socket.create_connection((%(echo)r, 8080), timeout=20) as s:
        s.sendall(b"ping")
        return s.recv(100).decode()
attempt("address_rule", echo)

def bulk():
    # 24 MiB each way at once through the echo server: every byte arrives, in order.
    import hashlib, os, threading
    data = os.urandom(24 << 20)
    with socket.create_connection((%(echo)r, 8080), timeout=20) as s:
        sender = threading.Thread(target=lambda: (s.sendall(data), s.shutdown(socket.SHUT_WR)))
        sender.start()
        got = hashlib.sha256()
        n = 0
        while chunk := s.recv(1 << 20):
            got.update(chunk)
            n += len(chunk)
        sender.join()
    return [n, got.hexdigest() == hashlib.sha256(data).hexdigest()]
attempt("bulk", bulk)

def upstream_reset():
    # The server resets its connection: the sandbox's end is reset too, not left open.
    with socket.create_connection((%(echo)r, 8080), timeout=20) as s:
        s.sendall(b"reset")
        return s.recv(100).decode() or "closed"
attempt("upstream_reset", upstream_reset)

def sni_to_my_own_address():
    # An allowed server name, sent to an address the sandbox chose: the host side connects to
    # the name's own address, where the certificate is the name's.
    with socket.create_connection(("8.8.4.4", 443), timeout=20) as raw:
        with tls.wrap_socket(raw, server_hostname="tls.files.example.test") as s:
            s.sendall(b"GET /sni HTTP/1.1\\r\\nHost: tls.files.example.test\\r\\n"
                      b"Connection: close\\r\\n\\r\\n")
            return s.recv(4096).decode().split("\\r\\n")[0]
attempt("sni_elsewhere", sni_to_my_own_address)

def silent_first(name, port, then):
    # Looked up, connected, and nothing sent for longer than the egress waits (it lets the
    # connection by on the looked-up name, as for a server that speaks first); then `then`.
    address = socket.getaddrinfo(name, port)[0][4][0]
    with socket.create_connection((address, port), timeout=20) as raw:
        time.sleep(0.6)
        return then(raw)

def late_tls(server_hostname):
    def then(raw):
        with tls.wrap_socket(raw, server_hostname=server_hostname) as s:
            s.sendall(b"GET /late HTTP/1.1\\r\\nHost: tls.files.example.test\\r\\n"
                      b"Connection: close\\r\\n\\r\\n")
            return s.recv(4096).decode().split("\\r\\n")[0]
    return then

def late_line(raw):
    raw.sendall(b"EHLO me\\r\\n")
    return raw.recv(100).decode()

attempt("late_same_name", lambda: silent_first("tls.files.example.test", 443,
                                               late_tls("tls.files.example.test")))
attempt("late_other_name", lambda: silent_first("tls.files.example.test", 443,
                                                late_tls("other.files.example.test")))
attempt("late_line", lambda: silent_first("echo.example.test", 8080, late_line))

def mismatch():
    address = socket.getaddrinfo("pypi.example.test", 80)[0][4][0]
    with socket.create_connection((address, 80), timeout=20) as s:
        s.sendall(b"GET / HTTP/1.1\\r\\nHost: elsewhere.example.org\\r\\n\\r\\n")
        return s.recv(4096).decode()
attempt("mismatch", mismatch)
attempt("unlisted_host", lambda: get("http://93.184.216.34/"))
attempt("private_by_name", lambda: get("http://lan.example.test/"))

def refused_tls():
    with socket.create_connection(("93.184.216.34", 443), timeout=20) as raw:
        tls.wrap_socket(raw, server_hostname="www.example.org")
attempt("refused_tls", refused_tls)

def slow():
    # A TLS record begun and never finished: cut once the first request's time is up.
    with socket.create_connection(("93.184.216.34", 443), timeout=20) as s:
        s.sendall(bytes([0x16, 3, 1, 0x40, 0]))
        started = time.monotonic()
        try:
            outcome = s.recv(100).decode() or "closed"
        except OSError as e:
            outcome = errno.errorcode[e.errno]
        return [outcome, time.monotonic() - started < 15]
attempt("slow", slow)

def crowd():
    # Held open without a byte, past the limit of connections at once.
    held, answers = [], []
    for _ in range(5):
        try:
            held.append(socket.create_connection((%(echo)r, 8080), timeout=20))
        except OSError as e:
            answers.append(errno.errorcode[e.errno])
    time.sleep(1.5)
    for s in held:
        try:
            s.sendall(b"x")
            answers.append(s.recv(10).decode() or "closed")
        except OSError as e:
            answers.append(errno.errorcode[e.errno])
        s.close()
    return answers
attempt("crowd", crowd)
print(json.dumps(result))
"""


class _Answer(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"{self.headers['Host']} {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _echo_server() -> socket.socket:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)

    def serve() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=_echo, args=(connection,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    return listener


def _echo(connection: socket.socket) -> None:
    with connection:
        while data := connection.recv(1 << 20):
            if data == b"reset":
                connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                return
            connection.sendall(data)


def run_owner(uid: int, folder: Path) -> dict[str, Any]:
    ca, cert, key = make_test_ca(folder, "tls.files.example.test")
    http = ThreadingHTTPServer(("127.0.0.1", 0), _Answer)
    https = ThreadingHTTPServer(("127.0.0.1", 0), _Answer)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    https.socket = context.wrap_socket(https.socket, server_side=True)
    echo = _echo_server()
    for server in (http, https):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    resolv = folder / "resolv.conf"
    resolv.write_text(f"nameserver {OWN}\noptions attempts:1 timeout:3\n")
    log = folder / "log" / "connections.jsonl"
    log.parent.mkdir()
    folder.chmod(0o755)
    for path in folder.iterdir():
        path.chmod(0o755 if path.is_dir() else 0o644)
    if uid:
        subprocess.run(["chown", "-R", f"{uid}:{uid}", str(log.parent)], check=True)
    config = {
        "own": OWN,
        "allow": [
            "pypi.example.test:80",
            "*.files.example.test:443",
            "lan.example.test",
            f"{ECHO_ADDRESS}:8080",
            "echo.example.test:8080",
        ],
        "deny": ["blocked.files.example.test"],
        "names": {
            "pypi.example.test": [HTTP_ADDRESS],
            "tls.files.example.test": [TLS_ADDRESS],
            "blocked.files.example.test": [TLS_ADDRESS],
            "lan.example.test": ["10.0.0.5"],
            "echo.example.test": [ECHO_ADDRESS],
        },
        "servers": {
            f"{HTTP_ADDRESS}:80": http.server_address[1],
            f"{TLS_ADDRESS}:443": https.server_address[1],
            f"{ECHO_ADDRESS}:8080": echo.getsockname()[1],
        },
        "limits": {"connections": 3, "first_request": 3.0},
        "log": str(log),
        "resolv": str(resolv),
        "client": CLIENT % {"ca": str(ca), "echo": ECHO_ADDRESS},
    }
    try:
        run = subprocess.run(
            [sys.executable, "-c", OWNER.format(project=str(PROJECT)), json.dumps(config)],
            capture_output=True,
            text=True,
            timeout=120,
            user=uid,
            group=uid,
            extra_groups=[],
            check=False,
        )
    finally:
        for server in (http, https):
            server.shutdown()
            server.server_close()
        echo.close()
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("{"), run.stdout + run.stderr
    client = json.loads(run.stdout)
    assert client["out"], client["err"]
    result: dict[str, Any] = json.loads(client["out"])
    result["log"] = [json.loads(line) for line in log.read_text().splitlines()]
    return result


@pytest.fixture(scope="module", params=[0, 65534], ids=["root", "unprivileged"])
def outcome(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    # Under /tmp itself: pytest's own folders are closed to other users than root.
    with tempfile.TemporaryDirectory(prefix="hopx-egress-") as folder:
        yield run_owner(request.param, Path(folder))


def test_allowed_names_work_for_every_client(outcome: dict[str, Any]) -> None:
    """glibc gets a stand-in address; urllib over HTTP and HTTPS and a plain socket reach the
    servers the host side connects to, with the names the sandbox asked for."""
    [stand_in] = outcome["lookup"]
    assert stand_in.startswith("198.18.") or stand_in.startswith("198.19."), stand_in
    assert outcome["http"] == [200, "pypi.example.test /simple/"]
    assert outcome["https"] == [200, "tls.files.example.test /data.csv"]
    assert outcome["address_rule"] == "ping"


def test_relayed_bytes_arrive_intact_and_a_reset_reaches_the_sandbox(
    outcome: dict[str, Any],
) -> None:
    assert outcome["bulk"] == [24 << 20, True]
    assert outcome["upstream_reset"][:2] == ["OSError", "ECONNRESET"]
    [bulk] = [r for r in outcome["log"] if r["bytes_sent"] == 24 << 20]
    assert bulk["bytes_received"] == 24 << 20


def test_names_the_policy_does_not_mention_do_not_resolve(outcome: dict[str, Any]) -> None:
    assert outcome["denied_lookup"][0] == "OSError"
    assert outcome["deny_wins"][0] == "OSError"


def test_a_server_name_sent_to_another_address_reaches_the_names_own_server(
    outcome: dict[str, Any],
) -> None:
    """The certificate checked (the name's own), and the log says where it went."""
    assert outcome["sni_elsewhere"] == "HTTP/1.0 200 OK"
    https = [
        r
        for r in outcome["log"]
        if r["destination_name"] == "tls.files.example.test" and r["decision"] == "allowed"
    ]
    assert len(https) == 3  # "https", "sni_elsewhere" and "late_same_name"
    assert {r["protocol"] for r in https} == {"tls"}
    assert {r["destination_address"] for r in https} == {TLS_ADDRESS}


def test_first_bytes_sent_late_must_still_name_the_looked_up_host(
    outcome: dict[str, Any],
) -> None:
    """A connection silent past the egress's wait is let by on its looked-up name; a TLS server
    name it sends later is judged then: the same name works, another is cut (and logged as
    a mismatch), and a line protocol that names nothing passes."""
    assert outcome["late_same_name"] == "HTTP/1.0 200 OK"
    assert outcome["late_other_name"][:2] == ["OSError", "ECONNRESET"]
    assert outcome["late_line"] == "EHLO me\r\n"
    [late] = [r for r in outcome["log"] if "other.files.example.test" in r["reason"]]
    assert (late["decision"], late["rule"], late["protocol"]) == ("denied", "name mismatch", "tls")
    assert late["reason"] == (
        "looked up tls.files.example.test, then named other.files.example.test in its TLS request"
    )


def test_refusals_say_why(outcome: dict[str, Any]) -> None:
    assert "403 Forbidden" in outcome["mismatch"]
    assert "looked up pypi.example.test, then named elsewhere.example.org" in outcome["mismatch"]
    assert outcome["unlisted_host"][:2] == ["HTTPError", 403]
    assert "no rule allows 93.184.216.34 port 80" in outcome["unlisted_host"][2]
    assert outcome["private_by_name"][:2] == ["HTTPError", 403]
    assert "a private address" in outcome["private_by_name"][2]
    assert outcome["refused_tls"][0] == "OSError"


def test_costs_the_sandbox_puts_on_the_host_are_bounded(outcome: dict[str, Any]) -> None:
    assert outcome["slow"] == ["ECONNRESET", True]
    # At most three at once are let through (fewer if one of the earlier attempts' is still
    # being closed); the others are cut at once.
    answers = outcome["crowd"]
    assert len(answers) == 5
    assert 1 <= answers.count("x") <= 3, answers
    assert all(answer in ("x", "closed", "ECONNRESET", "EPIPE") for answer in answers), answers


def test_every_attempt_is_logged(outcome: dict[str, Any]) -> None:
    log = outcome["log"]
    by_reason = {(r["decision"], r["rule"]) for r in log}
    assert ("allowed", "pypi.example.test:80") in by_reason
    assert ("allowed", "*.files.example.test:443") in by_reason
    assert ("denied", "name mismatch") in by_reason
    assert ("denied", "private address") in by_reason
    assert ("denied", "connection limit") in by_reason
    assert ("denied", "malformed") in by_reason
    lookups = [r for r in log if r["protocol"] == "dns"]
    assert {r["destination_name"] for r in lookups} == {
        "evil.example.org",
        "blocked.files.example.test",
    }
    assert all(r["kernel_id"] == "kernel-1" and r["sandbox_address"] == OWN for r in log)
    allowed_http = next(r for r in log if r["rule"] == "pypi.example.test:80")
    assert allowed_http["bytes_sent"] > 0
    assert allowed_http["bytes_received"] > 0
