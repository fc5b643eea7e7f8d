"""Attacks on the outbound network policy by real kernels: real bubblewrap sandboxes, their real
egress processes, and the connection log as an admin reads it.

Two kernels run side by side: one with a listed policy (a wildcard, a name with a port, an
address block with a port, deny rules inside them, and rules naming every address that must
stay out of reach anyway), one with `network_allow=["*"]`. Each case checks what the notebook
sees, what the log says, and that no server the attack aimed at was ever reached.

No packet leaves the machine. The kernels are started by a process in a mount namespace of its
own (KERNEL_HOST), where the host side's name resolution is the test's: /etc/hosts knows only
localhost and /etc/resolv.conf names a DNS server this test runs on a loopback address, whose
answers can change from one query to the next (DNS rebinding). Every address an attack aims at
is a server the test runs: in network namespaces of its own at public-looking, LAN and metadata
addresses (tests/internet_harness.py), on the host's own addresses, or in the other sandbox;
the IPv6 metadata address is unreachable on the host while the module runs.
"""

from __future__ import annotations

import collections
import contextlib
import ipaddress
import json
import os
import shutil
import socket
import socketserver
import struct
import subprocess
import sys
import tempfile
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from internet_harness import serve_at

from conftest import FOLDER_OWNER, TEST_SETTINGS, assert_no_leaks, wait_until
from hopx_kernel.kernelspec import kernelspec
from runtime.dns_stub import CLASS_IN, NOERROR, NXDOMAIN, TYPE_A, TYPE_AAAA, BadQuery, parse_query
from runtime.egress import host_addresses
from runtime.sandbox_network import LISTENER_PORT

NAMED = "151.101.3.10"  # where the test's names lead, on ports 80 and 8080
CIDR_HOST = "151.101.1.10"  # inside the rule 151.101.1.0/24:80; serves 80 and 8080
CIDR_DENIED = "151.101.1.66"  # inside it too, and denied
UNNAMED = "151.101.2.20"  # no rule of the listed policy names it
LAN = "10.200.0.5"
METADATA = "169.254.169.254"
METADATA6 = "fd00:ec2::254"
ALT = 8080  # the port every listener an attack aims at listens on
DNS_SERVER = "127.0.0.77"
CONNECTIONS_AT_ONCE = 64  # runtime.egress.EgressLimits.connections

# The host's own addresses, as the egress process reads them.
HOST4 = sorted(str(a) for a in host_addresses() if a.version == 4 and not a.is_loopback)
HOST6 = sorted(
    str(a) for a in host_addresses() if a.version == 6 and not (a.is_loopback or a.is_link_local)
)

LISTED_ALLOW = [
    "*.files.hopx.test",
    "api.hopx.test:8080",
    "151.101.1.0/24:80",
    # Rules naming what no rule may open: each must still be refused.
    "127.0.0.0/8",
    METADATA,
    METADATA6,
    "100.64.0.0/16",
    *(f"{a}/32" for a in HOST4),
]
LISTED_DENY = ["blocked.files.hopx.test", CIDR_DENIED]

# The answers the host side's DNS gives: each query of a name's A records gets its next answer
# set (rebinding: public, then private, in turn), with a TTL of 0.
REBINDING = [[NAMED], ["127.0.0.1"], [NAMED], [LAN], [NAMED], [METADATA]]
DNS_TABLE: dict[str, list[list[str]]] = {
    "x.files.hopx.test": [[NAMED]],
    "files.hopx.test": [[NAMED]],  # resolves on the host: a refusal is the policy's
    "blocked.files.hopx.test": [[NAMED]],
    "api.hopx.test": [[NAMED]],
    "rebind.files.hopx.test": REBINDING,
    "rebind-any.files.hopx.test": REBINDING,
    "mixed.files.hopx.test": [["127.0.0.1", NAMED]],
    "loop.files.hopx.test": [["127.0.0.1"]],
    "loop6.files.hopx.test": [["::1"]],
    "meta.files.hopx.test": [[METADATA]],
    "meta6.files.hopx.test": [[METADATA6]],
    "lan.files.hopx.test": [[LAN]],
    "self.files.hopx.test": [HOST4 + HOST6],
}

# A server in a namespace of its own: HTTP on each TCP port ("hello from <Host><path>"), and
# UDP ports that take datagrams; every connection and datagram is noted in a file.
SERVER = """
import socket, socketserver, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
address, seen, tcp, udp = sys.argv[1:]
lock = threading.Lock()

def note(what):
    with lock, open(seen, "a") as f:
        f.write(what + "\\n")

class Answer(BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"hello from {self.headers['Host']}{self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

class Server(ThreadingHTTPServer):
    request_queue_size = 256

    def server_bind(self):  # without HTTPServer's reverse lookup of the address
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def verify_request(self, request, client_address):
        note(f"tcp {self.server_address[1]}")
        return True

for port in filter(None, tcp.split(",")):
    server = Server((address, int(port)), Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()

def take(sock, port):
    while True:
        sock.recv(4096)
        note(f"udp {port}")

for port in filter(None, udp.split(",")):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((address, int(port)))
    threading.Thread(target=take, args=(sock, port), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"""

# Kernels started by a process in a mount namespace of its own, where the host side resolves
# names through the test's hosts and resolv.conf files. Commands come as JSON lines on stdin
# (start a kernel; begin running code, answering once it printed `marker` or ended; finish);
# each gets one JSON line back. When stdin ends, every kernel is shut down.
KERNEL_HOST = """
import json, os, subprocess, sys, threading, traceback
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager

kernels_dir, hosts, resolv = sys.argv[1:]
subprocess.run(["mount", "--make-rprivate", "/"], check=True)
subprocess.run(["mount", "--bind", hosts, "/etc/hosts"], check=True)
subprocess.run(["mount", "--bind", resolv, "/etc/resolv.conf"], check=True)
answers = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)  # what the kernels' processes print stays out of the answers
kernels, runs = [], {}

class Run(threading.Thread):
    def __init__(self, client, code, timeout, marker):
        super().__init__(daemon=True)
        self.client, self.code, self.timeout, self.marker = client, code, timeout, marker
        self.stdout, self.marked, self.result = "", threading.Event(), None

    def hook(self, message):
        if message["msg_type"] == "stream" and message["content"]["name"] == "stdout":
            self.stdout += message["content"]["text"]
            if self.marker and self.marker in self.stdout:
                self.marked.set()

    def run(self):
        try:
            reply = self.client.execute_interactive(
                self.code, timeout=self.timeout, output_hook=self.hook, allow_stdin=False
            )
            content = reply["content"]
            error = f"{content.get('ename')}: {content.get('evalue')}"
            self.result = {"status": content["status"], "stdout": self.stdout, "error": error}
        except Exception as e:
            self.result = {"status": "failed", "stdout": self.stdout, "error": repr(e)}
        self.marked.set()

for line in sys.stdin:
    command = json.loads(line)
    try:
        if command["do"] == "start":
            km = KernelManager(
                kernel_name=command["name"],
                kernel_spec_manager=KernelSpecManager(kernel_dirs=[kernels_dir]),
            )
            km.start_kernel(cwd=command["cwd"])
            client = km.client()
            client.start_channels()
            kernels.append((km, client))
            client.wait_for_ready(timeout=60)
            started = km.provisioner.supervisor.started
            answer = {"kernel": len(kernels) - 1, "address": started["address"],
                      "kernel_id": km.kernel_id}
        elif command["do"] == "begin":
            run = Run(kernels[command["kernel"]][1], command["code"], command["timeout"],
                      command["marker"])
            runs[command["kernel"]] = run
            run.start()
            run.marked.wait(command["timeout"])
            answer = {"stdout": run.stdout}
        else:
            run = runs.pop(command["kernel"])
            run.join()
            answer = run.result
    except Exception:
        answer = {"status": "failed", "error": traceback.format_exc()}
    answers.write(json.dumps(answer) + "\\n")
    answers.flush()
for km, client in kernels:
    client.stop_channels()
    km.shutdown_kernel(now=True)
"""

# Defined in each kernel once: `outcome(action)` runs one attempt and says what the notebook
# saw: [status, body] for an HTTP answer, ["error", errno or EAI name] for a failure.
ATTEMPTS = r"""
import errno, json, socket, ssl, struct, subprocess, threading, time
import urllib.error, urllib.request

_GAI = {socket.EAI_NONAME: "EAI_NONAME", socket.EAI_NODATA: "EAI_NODATA",
        socket.EAI_AGAIN: "EAI_AGAIN"}

def outcome(action):
    try:
        return action()
    except urllib.error.HTTPError as e:
        return [e.code, e.read().decode()]
    except OSError as e:
        reason = getattr(e, "reason", e)
        if isinstance(reason, socket.gaierror):
            return ["error", _GAI.get(reason.errno, str(reason))]
        code = getattr(reason, "errno", None)
        return ["error", errno.errorcode.get(code, str(reason))]

def get(url, host=None):
    request = urllib.request.Request(url, headers={"Host": host} if host else {})
    with urllib.request.urlopen(request, timeout=20) as response:
        return [response.status, response.read().decode()]

def silent(address, port, family=socket.AF_INET):
    # Raw TCP that sends nothing and waits to be told something.
    with socket.socket(family) as s:
        s.settimeout(20)
        s.connect((address, port))
        return s.recv(100).decode() or "closed"

def tls(address, port, name):
    context = ssl.create_default_context()
    with socket.create_connection((address, port), timeout=20) as raw:
        with context.wrap_socket(raw, server_hostname=name):
            return "handshake done"

def lookup(name, family=0):
    return sorted({a[4][0] for a in socket.getaddrinfo(name, 80, family, socket.SOCK_STREAM)})

def ask_dns(name, server=None, qtype=1):
    # One query, straight to a DNS server (the resolver resolv.conf names, by default).
    if server is None:
        server = next(line.split()[1] for line in open("/etc/resolv.conf")
                      if line.startswith("nameserver"))
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split("."))
    query = struct.pack("!6H", 0x4242, 0x0100, 1, 0, 0, 0) + labels + struct.pack("!xHH", qtype, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.sendto(query, (server, 53))
        answer, sender = s.recvfrom(4096)
    count, = struct.unpack("!H", answer[6:8])
    return {"from": sender[0], "rcode": answer[3] & 15, "answers": count}

def udp(address, port, data=b"hello"):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(data, (address, port))
        return "sent"

def run(*argv):
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    except FileNotFoundError:
        return "absent"
    return [done.returncode, done.stderr.strip()]

def netlink(kind, body, protocol=0):
    # One rtnetlink request built by hand; the error its acknowledgement carries.
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, protocol) as s:
        s.bind((0, 0))
        flags = 0x1 | 0x4 | 0x100 | 0x400  # REQUEST | ACK | REPLACE | CREATE
        s.send(struct.pack("=IHHII", 16 + len(body), kind, flags, 1, 0) + body)
        reply = s.recv(4096)
    kind, = struct.unpack_from("=H", reply, 4)
    error, = struct.unpack_from("=i", reply, 16)
    return "acknowledged" if kind == 2 and error == 0 else errno.errorcode.get(-error, str(error))

def attribute(kind, value):
    length = 4 + len(value)
    return struct.pack("=HH", length, kind) + value + bytes(-length % 4)

def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return "written"

# A listener on the sandbox's own address, for the other sandbox to aim at.
own_listener = socket.create_server((OWN, ALT))
own_accepted = []
threading.Thread(
    target=lambda: [own_accepted.append(own_listener.accept()) for _ in iter(int, 1)],
    daemon=True,
).start()
"""


class KernelHost:
    """The KERNEL_HOST process, and the kernels it started."""

    def __init__(self, folder: Path, kernels_dir: Path, runtime_dir: Path) -> None:
        self.stderr = folder / "kernel-host.err"
        with self.stderr.open("w") as stderr:
            self.process = subprocess.Popen(
                [
                    "unshare",
                    "--mount",
                    sys.executable,
                    "-c",
                    KERNEL_HOST,
                    str(kernels_dir),
                    str(folder / "hosts"),
                    str(folder / "resolv.conf"),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                env={
                    **os.environ,
                    "JUPYTER_RUNTIME_DIR": str(runtime_dir),
                    "JUPYTER_PATH": str(kernels_dir.parent),
                },
            )

    def ask(self, **command: Any) -> dict[str, Any]:
        stdin, stdout = self.process.stdin, self.process.stdout
        assert stdin is not None
        assert stdout is not None
        stdin.write(json.dumps(command) + "\n")
        stdin.flush()
        line = stdout.readline()
        assert line, self.stderr.read_text()[-3000:]
        answer: dict[str, Any] = json.loads(line)
        assert answer.get("status") != "failed", answer
        return answer

    def start(self, name: str, cwd: Path) -> Sandbox:
        started = self.ask(do="start", name=name, cwd=str(cwd))
        return Sandbox(self, started["kernel"], started["address"], started["kernel_id"])

    def close(self) -> None:
        """Shuts every kernel down (its stdin ends), then waits for the process."""
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


@dataclass
class Sandbox:
    """One kernel of the KernelHost."""

    host: KernelHost
    index: int
    address: str
    kernel_id: str

    def begin(self, code: str, timeout: float = 60, marker: str | None = None) -> str:
        """Start running `code`; returns once it printed `marker` (or ended), with its stdout
        so far."""
        answer = self.host.ask(
            do="begin", kernel=self.index, code=code, timeout=timeout, marker=marker
        )
        return str(answer["stdout"])

    def finish(self) -> str:
        """Waits for the code begun to end; everything it printed."""
        answer = self.host.ask(do="finish", kernel=self.index)
        assert answer["status"] == "ok", answer
        return str(answer["stdout"])

    def run(self, code: str, timeout: float = 60) -> str:
        self.begin(code, timeout)
        return self.finish()

    def value(self, code: str, timeout: float = 60) -> Any:
        """Run `code`, whose last line printed is one JSON document, and return it parsed."""
        return json.loads(self.run(code, timeout).strip().splitlines()[-1])

    def attempts(self, **expressions: str) -> dict[str, Any]:
        """What the notebook sees for each attempt, an expression over ATTEMPTS' helpers."""
        entries = ", ".join(f"{key!r}: outcome(lambda: {e})" for key, e in expressions.items())
        seen: dict[str, Any] = self.value(f"print(json.dumps({{{entries}}}))")
        return seen

    def accepted(self) -> int:
        """Connections its listener on its own address has taken."""
        return int(self.value("print(len(own_accepted))"))


class HostDNS:
    """The host side's DNS server: answers from DNS_TABLE, NXDOMAIN for other names; notes
    every query, and the answer each A query got."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((DNS_SERVER, 53))
        self.queries: list[tuple[str, int]] = []
        self.answered: dict[str, list[list[str]]] = collections.defaultdict(list)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                packet, client = self.sock.recvfrom(4096)
            except OSError:
                return
            with contextlib.suppress(OSError):
                self.sock.sendto(self._answer(packet), client)

    def _answer(self, packet: bytes) -> bytes:
        try:
            query = parse_query(packet)
        except (BadQuery, ValueError):
            return packet[:2] + struct.pack("!H", 0x8001) + bytes(8)  # FORMERR
        self.queries.append((query.name, query.qtype))
        sets = DNS_TABLE.get(query.name)
        addresses: list[str] = []
        if sets is not None and query.qtype == TYPE_A:
            answered = self.answered[query.name]
            addresses = sets[len(answered) % len(sets)]
            answered.append(addresses)
            addresses = [a for a in addresses if ipaddress.ip_address(a).version == 4]
        elif sets is not None and query.qtype == TYPE_AAAA:
            addresses = [a for a in sets[0] if ipaddress.ip_address(a).version == 6]
        rcode = NXDOMAIN if sets is None else NOERROR
        records = b"".join(
            struct.pack("!HHHIH", 0xC00C, query.qtype, CLASS_IN, 0, len(packed)) + packed
            for packed in (ipaddress.ip_address(a).packed for a in addresses)
        )
        header = struct.pack("!6H", query.id, 0x8180 | rcode, 1, len(addresses), 0, 0)
        return header + query.question + records

    def asked(self, name: str) -> bool:
        return any(asked == name for asked, _ in self.queries)

    def close(self) -> None:
        self.sock.close()


class Listener:
    """A listener on the host, on every address (IPv4 and IPv6) at `port`; counts what it
    accepts."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_server(
            ("::", port), family=socket.AF_INET6, dualstack_ipv6=True, backlog=64
        )
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            connection.close()


class Seen:
    """What a SERVER noted: connections and datagrams by protocol and port."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.touch()

    def count(self, what: str) -> int:
        return self.path.read_text().splitlines().count(what)


@dataclass
class ConnectionLog:
    path: Path

    def mark(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0

    def since(self, mark: int) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        with self.path.open("rb") as f:
            f.seek(mark)
            return [json.loads(line) for line in f.read().decode().splitlines()]

    def wait_for(self, mark: int, sandbox: Sandbox, count: int) -> list[dict[str, Any]]:
        """The sandbox's records since `mark`, once there are `count` (they come through its
        supervisor)."""

        def mine() -> list[dict[str, Any]]:
            return [r for r in self.since(mark) if r["kernel_id"] == sandbox.kernel_id]

        wait_until(lambda: len(mine()) >= count, 15)
        return mine()


@dataclass
class Attack:
    listed: Sandbox  # LISTED_ALLOW, LISTED_DENY
    any: Sandbox  # ["*"]
    log: ConnectionLog
    dns: HostDNS
    host_listener: Listener
    seen: dict[str, Seen] = field(default_factory=dict)

    def other(self, sandbox: Sandbox) -> Sandbox:
        return self.any if sandbox is self.listed else self.listed


@pytest.fixture(scope="module")
def attack() -> Iterator[Attack]:
    folder = Path(tempfile.mkdtemp(prefix="hx-attack-", dir="/tmp"))
    folder.chmod(0o755)
    kernels_dir, runtime_dir, notebooks = folder / "ks" / "kernels", folder / "rt", folder / "nb"
    for path in (kernels_dir, runtime_dir, notebooks):
        path.mkdir(parents=True)
    os.chown(notebooks, FOLDER_OWNER, FOLDER_OWNER)
    (folder / "hosts").write_text("127.0.0.1 localhost\n")
    (folder / "resolv.conf").write_text(f"nameserver {DNS_SERVER}\noptions timeout:2 attempts:2\n")
    log = ConnectionLog(folder / "connections.jsonl")
    policies = {
        "hopx-listed": {"network_allow": LISTED_ALLOW, "network_deny": LISTED_DENY},
        "hopx-any": {"network_allow": ["*"]},
    }
    for name, policy in policies.items():
        spec = kernelspec({**TEST_SETTINGS, **policy, "connection_log": str(log.path)})
        (kernels_dir / name).mkdir()
        (kernels_dir / name / "kernel.json").write_text(json.dumps(spec))
    servers = {
        NAMED: ("80,8080", ""),
        CIDR_HOST: ("80,8080", ""),
        CIDR_DENIED: ("80", ""),
        UNNAMED: ("80,8080,9999", "53,9999"),
        LAN: (f"{ALT}", ""),
        METADATA: (f"80,{ALT}", ""),
    }
    seen = {address: Seen(folder / f"seen-{address}") for address in servers}
    dns = HostDNS()
    host_listener = Listener(ALT)
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, folder, ignore_errors=True)
        stack.callback(dns.close)
        stack.callback(host_listener.sock.close)
        for address, (tcp, udp) in servers.items():
            stack.enter_context(
                serve_at(address, SERVER, address, str(seen[address].path), tcp, udp)
            )
        # Were a refusal missed, the IPv6 metadata address, like a sandbox's, would be
        # unreachable from the host, not somewhere beyond it.
        unreachable(stack, f"{METADATA6}/128")
        kernel_host = KernelHost(folder, kernels_dir, runtime_dir)
        try:
            listed = kernel_host.start("hopx-listed", notebooks)
            any_public = kernel_host.start("hopx-any", notebooks)
            for sandbox in (listed, any_public):
                unreachable(stack, f"{sandbox.address}/32")
                sandbox.run(f"OWN, ALT = {sandbox.address!r}, {ALT}\n{ATTEMPTS}")
            yield Attack(listed, any_public, log, dns, host_listener, seen)
        finally:
            kernel_host.close()
        assert_no_leaks(runtime_dir)


def unreachable(stack: contextlib.ExitStack, block: str) -> None:
    """A `prohibit` route on the host for `block` until `stack` closes: a connection there
    fails at once (EACCES) and no packet goes out."""
    route = ["ip", "-6" if ":" in block else "-4", "route"]
    subprocess.run([*route, "replace", "prohibit", block], check=True)
    stack.callback(subprocess.run, [*route, "del", "prohibit", block], check=False)


def refusal(seen: Any, why: str) -> bool:
    """Whether the notebook got the egress's 403 for this attempt, saying `why`."""
    return (
        isinstance(seen, list)
        and seen[0] == 403
        and seen[1].startswith("Hopx sandbox: connection refused:")
        and why in seen[1]
    )


def only(records: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    """The one record with these fields."""
    found = [r for r in records if all(r[k] == v for k, v in fields.items())]
    assert len(found) == 1, (fields, records)
    return found[0]


def test_a_wildcard_opens_the_names_below_it_not_the_domain_itself(attack: Attack) -> None:
    """`*.files.hopx.test`: a name below it works; the domain itself does not resolve in the
    sandbox (NXDOMAIN from its stub, which never asks the host: the host would resolve it)."""
    sandbox = attack.listed
    mark = attack.log.mark()
    seen = sandbox.attempts(
        below="get('http://x.files.hopx.test:8080/wild')",
        apex="lookup('files.hopx.test')",
        apex_query="ask_dns('files.hopx.test')",
        below_query="ask_dns('x.files.hopx.test')",
    )
    assert seen["below"] == [200, "hello from x.files.hopx.test:8080/wild"]
    assert seen["apex"] == ["error", "EAI_NONAME"]
    assert seen["apex_query"] == {"from": sandbox.address, "rcode": NXDOMAIN, "answers": 0}
    assert seen["below_query"] == {"from": sandbox.address, "rcode": NOERROR, "answers": 1}
    assert not attack.dns.asked("files.hopx.test")

    records = attack.log.wait_for(mark, sandbox, 2)
    allowed = only(records, decision="allowed")
    assert allowed["rule"] == "*.files.hopx.test"
    assert allowed["protocol"] == "http"
    assert allowed["destination_name"] == "x.files.hopx.test"
    assert allowed["destination_address"] == NAMED
    assert allowed["port"] == 8080
    assert allowed["sandbox_address"] == sandbox.address
    assert allowed["bytes_sent"] > 0
    assert allowed["bytes_received"] > 0
    # The refused name is logged once, however often it was asked for.
    lookup = only(records, decision="denied")
    assert lookup["protocol"] == "dns"
    assert lookup["destination_name"] == "files.hopx.test"
    assert lookup["rule"] == "no rule"
    assert lookup["destination_address"] is None


def test_a_port_rule_opens_that_port_only(attack: Attack) -> None:
    """`api.hopx.test:8080`: port 8080 of the name works; port 80 of the same name gets a 403
    saying why, and its server never sees the connection."""
    sandbox = attack.listed
    mark = attack.log.mark()
    seen = sandbox.attempts(
        rule_port="get('http://api.hopx.test:8080/port')",
        other_port="get('http://api.hopx.test/port')",
    )
    assert seen["rule_port"] == [200, "hello from api.hopx.test:8080/port"]
    assert refusal(seen["other_port"], "no rule allows api.hopx.test port 80")
    assert attack.seen[NAMED].count("tcp 80") == 0

    records = attack.log.wait_for(mark, sandbox, 2)
    allowed = only(records, decision="allowed")
    assert (allowed["rule"], allowed["port"]) == ("api.hopx.test:8080", 8080)
    denied = only(records, decision="denied")
    assert denied["rule"] == "no rule"
    assert denied["protocol"] == "http"
    assert (denied["destination_name"], denied["port"]) == ("api.hopx.test", 80)
    assert denied["destination_address"] is None  # the sandbox's stand-in is not logged


def test_an_address_block_rule_with_a_port_opens_that_port_of_its_addresses(
    attack: Attack,
) -> None:
    """`151.101.1.0/24:80`: port 80 of an address in it works; another port of the same
    address is refused, to HTTP with a 403 and to raw TCP with a reset."""
    sandbox = attack.listed
    mark = attack.log.mark()
    seen = sandbox.attempts(
        in_block=f"get('http://{CIDR_HOST}/cidr')",
        other_port=f"get('http://{CIDR_HOST}:{ALT}/cidr')",
        other_port_raw=f"silent({CIDR_HOST!r}, {ALT})",
    )
    assert seen["in_block"] == [200, f"hello from {CIDR_HOST}/cidr"]
    assert refusal(seen["other_port"], f"no rule allows {CIDR_HOST} port {ALT}")
    assert seen["other_port_raw"] == ["error", "ECONNRESET"]
    assert attack.seen[CIDR_HOST].count(f"tcp {ALT}") == 0

    records = attack.log.wait_for(mark, sandbox, 3)
    allowed = only(records, decision="allowed")
    assert allowed["rule"] == "151.101.1.0/24:80"
    assert (allowed["destination_address"], allowed["port"]) == (CIDR_HOST, 80)
    refused = [r for r in records if r["decision"] == "denied"]
    assert sorted(r["protocol"] for r in refused) == ["http", "tcp"]
    for record in refused:
        assert (record["destination_address"], record["port"]) == (CIDR_HOST, ALT)
        assert record["rule"] == "no rule"


def test_a_deny_rule_wins_over_the_allow_rule_around_it(attack: Attack) -> None:
    """A name denied below an allowed wildcard does not resolve, not even sent as the Host of a
    request to an allowed address; an address denied inside an allowed block gets a 403."""
    sandbox = attack.listed
    mark = attack.log.mark()
    seen = sandbox.attempts(
        name="lookup('blocked.files.hopx.test')",
        name_as_host=f"get('http://{CIDR_HOST}/', host='blocked.files.hopx.test')",
        address=f"get('http://{CIDR_DENIED}/')",
    )
    assert seen["name"] == ["error", "EAI_NONAME"]
    assert refusal(seen["name_as_host"], "denied by the rule 'blocked.files.hopx.test'")
    assert refusal(seen["address"], f"denied by the rule '{CIDR_DENIED}'")
    assert attack.seen[CIDR_DENIED].count("tcp 80") == 0
    assert attack.seen[NAMED].count("tcp 80") == 0

    records = attack.log.wait_for(mark, sandbox, 3)
    assert all(r["decision"] == "denied" for r in records), records
    lookup = only(records, protocol="dns")
    assert (lookup["destination_name"], lookup["rule"]) == (
        "blocked.files.hopx.test",
        "blocked.files.hopx.test",
    )
    as_host = only(records, destination_name="blocked.files.hopx.test", protocol="http")
    assert as_host["rule"] == "blocked.files.hopx.test"
    address = only(records, destination_address=CIDR_DENIED)
    assert address["rule"] == CIDR_DENIED


@pytest.mark.parametrize(
    ("policy", "name"),
    [("listed", "rebind.files.hopx.test"), ("any", "rebind-any.files.hopx.test")],
)
def test_dns_rebinding_through_the_hosts_own_dns_reaches_no_private_address(
    attack: Attack, policy: str, name: str
) -> None:
    """An allowed name whose host-side answers turn from public to private between queries (the
    host's loopback, a LAN address, the metadata service): each public answer works, each
    private one is refused, and no record says a private address was connected to. A name with
    a private and a public answer at once reaches only the public one."""
    sandbox: Sandbox = getattr(attack, policy)
    mark = attack.log.mark()
    before = {a: attack.seen[a].count(f"tcp {ALT}") for a in (LAN, METADATA)}
    fetches = {f"{n}": f"get('http://{name}:{ALT}/{n}')" for n in range(len(REBINDING))}
    seen = sandbox.attempts(**fetches, mixed=f"get('http://mixed.files.hopx.test:{ALT}/m')")

    assert attack.dns.answered[name] == REBINDING, attack.dns.answered[name]
    assert seen["0"] == [200, f"hello from {name}:{ALT}/0"]
    assert refusal(seen["1"], f"{name} resolves to a loopback address")
    assert seen["2"] == [200, f"hello from {name}:{ALT}/2"]
    assert refusal(seen["3"], f"{name} resolves to a private address")
    assert seen["4"] == [200, f"hello from {name}:{ALT}/4"]
    assert refusal(seen["5"], f"{name} resolves to a link-local address")
    # What the host's DNS answered stays the host's: no refusal quotes it.
    for key in ("1", "3", "5"):
        assert not any(a in seen[key][1] for a in ("127.0.0.1", LAN, METADATA)), seen[key]
    assert seen["mixed"] == [200, f"hello from mixed.files.hopx.test:{ALT}/m"]
    assert attack.host_listener.accepted == 0
    assert {a: attack.seen[a].count(f"tcp {ALT}") for a in (LAN, METADATA)} == before

    records = attack.log.wait_for(mark, sandbox, 7)
    assert [r["decision"] for r in records if r["destination_name"] == name] == [
        "allowed",
        "denied",
        "allowed",
        "denied",
        "allowed",
        "denied",
    ]
    assert [r["rule"] for r in records if r["decision"] == "denied"] == [
        "never reachable",
        "private address",
        "never reachable",
    ]
    for record in records:
        assert record["destination_address"] in (None, NAMED), record


ATTACKS_ON_THE_UNREACHABLE = {
    "metadata": f"get('http://{METADATA}:{ALT}/')",
    "metadata_mapped": f"get('http://[::ffff:{METADATA}]:{ALT}/')",
    "metadata_by_name": f"get('http://meta.files.hopx.test:{ALT}/')",
    "metadata6_by_name": f"get('http://meta6.files.hopx.test:{ALT}/')",
    "metadata6": f"get('http://[{METADATA6}]:{ALT}/')",
    "loopback_by_name": f"get('http://loop.files.hopx.test:{ALT}/')",
    "loopback6_by_name": f"get('http://loop6.files.hopx.test:{ALT}/')",
    "localhost_as_host": f"get('http://{UNNAMED}:{ALT}/', host='localhost:{ALT}')",
    "localhost_as_server_name": f"tls({UNNAMED!r}, {ALT}, 'localhost')",
    "egress_listener": f"get('http://127.0.0.1:{LISTENER_PORT}/')",
    "host_by_name": f"get('http://self.files.hopx.test:{ALT}/')",
    "lan": f"get('http://{LAN}:{ALT}/')",
    "lan_by_name": f"get('http://lan.files.hopx.test:{ALT}/')",
    **{f"host {a}": f"get('http://{a}:{ALT}/')" for a in HOST4},
}


@pytest.mark.parametrize("policy", ["listed", "any"])
def test_no_rule_opens_metadata_loopback_the_host_or_another_sandbox(
    attack: Attack, policy: str
) -> None:
    """The metadata service (IPv4, IPv6, IPv4-mapped, by name), the host's loopback (by name,
    as an HTTP Host or a TLS server name, the egress's own listener), the host's own addresses
    and another sandbox's are refused under the listed policy, whose rules name each of them,
    and under `*`; a LAN address is refused too, which `*` never opens. None of the listeners
    aimed at gets a connection."""
    sandbox: Sandbox = getattr(attack, policy)
    other = attack.other(sandbox)
    mark = attack.log.mark()
    before = {a: attack.seen[a].count(f"tcp {ALT}") for a in (LAN, METADATA)}
    seen = sandbox.attempts(
        **ATTACKS_ON_THE_UNREACHABLE, other_sandbox=f"get('http://{other.address}:{ALT}/')"
    )

    lan_why = f"no rule allows {LAN} port {ALT}" if policy == "listed" else "a private address"
    expected = {
        "metadata": f"{METADATA} is a link-local address",
        "metadata_mapped": f"{METADATA} is a link-local address",
        "metadata_by_name": "meta.files.hopx.test resolves to a link-local address",
        "metadata6_by_name": "meta6.files.hopx.test resolves to a cloud metadata address",
        "loopback_by_name": "loop.files.hopx.test resolves to a loopback address",
        "loopback6_by_name": "loop6.files.hopx.test resolves to a loopback address",
        "localhost_as_host": "localhost resolves to a loopback address",
        "egress_listener": "127.0.0.1 is a loopback address",
        "host_by_name": "self.files.hopx.test resolves to an address of this host",
        "lan": lan_why,
        "lan_by_name": "lan.files.hopx.test resolves to a private address",
        "other_sandbox": f"{other.address} is a sandbox's address",
        **{f"host {a}": f"{a} is an address of this host" for a in HOST4},
    }
    for key, why in expected.items():
        assert refusal(seen[key], why), (key, seen[key])
    # A refusal of a name never quotes what the host resolved it to.
    resolved = (METADATA, METADATA6, "127.0.0.1", "::1", LAN, *HOST4, *HOST6)
    for key in [k for k in expected if k.endswith("_by_name")]:
        assert not any(a in seen[key][1] for a in resolved), (key, seen[key])
    # IPv6 is off in the sandbox: a literal address fails at once.
    assert seen["metadata6"] == ["error", "EADDRNOTAVAIL"]
    assert seen["localhost_as_server_name"] == ["error", "ECONNRESET"]

    assert attack.host_listener.accepted == 0
    assert {a: attack.seen[a].count(f"tcp {ALT}") for a in (LAN, METADATA)} == before
    assert other.accepted() == 0

    # One record for each attempt that reached the egress (all but the IPv6 literal).
    records = attack.log.wait_for(mark, sandbox, len(expected) + 1)
    assert len(records) == len(expected) + 1, records
    assert [r for r in records if r["decision"] == "allowed"] == []
    private = {"lan": "no rule" if policy == "listed" else "private address"}
    private["lan_by_name"] = "private address"
    rules = [private.get(key, "never reachable") for key in [*expected, "tls"]]
    assert collections.Counter(r["rule"] for r in records) == collections.Counter(rules)
    sni = only(records, protocol="tls")
    assert (sni["destination_name"], sni["rule"]) == ("localhost", "never reachable")
    as_host = only(records, destination_name="localhost", protocol="http")
    assert as_host["destination_address"] == UNNAMED  # where the sandbox aimed


def test_raw_tcp_ipv6_udp_and_icmp_go_nowhere(attack: Attack) -> None:
    """Raw TCP to an address no rule names is reset; IPv6 fails at once, whichever address,
    and names have no IPv6 address; UDP leaves for no one (a DNS query to any address reaches
    the sandbox's stub); ICMP cannot even be sent. The server aimed at receives nothing."""
    sandbox = attack.listed
    mark = attack.log.mark()
    seen = sandbox.attempts(
        tcp=f"silent({UNNAMED!r}, 9999)",
        tcp_mapped=f"silent('::ffff:{UNNAMED}', 9999, socket.AF_INET6)",
        ipv6_public="silent('2606:4700::1111', 443, socket.AF_INET6)",
        ipv6_nat64=f"silent('64:ff9b::{UNNAMED}', 80, socket.AF_INET6)",
        ipv6_loopback="silent('::1', 80, socket.AF_INET6)",
        ipv6_lookup="lookup('x.files.hopx.test', socket.AF_INET6)",
        any_lookup="lookup('x.files.hopx.test')",
        udp=f"udp({UNNAMED!r}, 9999)",
        dns_elsewhere=f"ask_dns('elsewhere.hopx.test', server={UNNAMED!r})",
        ping_socket="socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)",
        raw_socket="socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)",
    )
    assert seen["tcp"] == ["error", "ECONNRESET"]
    assert seen["tcp_mapped"] == ["error", "ECONNRESET"]
    for key in ("ipv6_public", "ipv6_nat64", "ipv6_loopback"):
        assert seen[key] in (["error", "EADDRNOTAVAIL"], ["error", "ENETUNREACH"]), key
    assert seen["ipv6_lookup"] == ["error", "EAI_NODATA"]
    [stand_in] = seen["any_lookup"]
    assert ipaddress.ip_address(stand_in) in ipaddress.ip_network("198.18.0.0/15")
    assert seen["udp"] == ["error", "EPERM"]
    # Answered by the stub, from the address it was sent to.
    assert seen["dns_elsewhere"] == {"from": UNNAMED, "rcode": NXDOMAIN, "answers": 0}
    assert seen["ping_socket"] == ["error", "EACCES"]
    assert seen["raw_socket"] == ["error", "EPERM"]
    for what in ("tcp 9999", "udp 9999", "udp 53"):
        assert attack.seen[UNNAMED].count(what) == 0, what

    records = attack.log.wait_for(mark, sandbox, 3)
    assert len(records) == 3, records
    assert all((r["decision"], r["rule"]) == ("denied", "no rule") for r in records)
    lookup = only(records, protocol="dns")
    assert lookup["destination_name"] == "elsewhere.hopx.test"
    for record in (r for r in records if r is not lookup):
        assert (record["protocol"], record["destination_address"]) == ("tcp", UNNAMED)
        assert record["port"] == 9999


# Netlink requests built by hand: an address on lo, a default route replaced, the local
# default route deleted.
NEW_ADDRESS = (
    "netlink(20, struct.pack('=BBBBI', socket.AF_INET, 32, 0, 0, socket.if_nametoindex('lo'))"
    f" + attribute(2, socket.inet_aton({UNNAMED!r})) + attribute(1, socket.inet_aton({UNNAMED!r})))"
)
NEW_ROUTE = (
    "netlink(24, struct.pack('=BBBBBBBBI', socket.AF_INET, 0, 0, 0, 254, 3, 0, 1, 0)"
    " + attribute(4, struct.pack('=I', socket.if_nametoindex('lo'))))"
)
DELETE_ROUTE = (
    "netlink(25, struct.pack('=BBBBBBBBI', socket.AF_INET, 0, 0, 0, 255, 0, 254, 2, 0)"
    " + attribute(4, struct.pack('=I', socket.if_nametoindex('lo'))))"
)


def test_the_sandbox_cannot_change_its_network(attack: Attack) -> None:
    """Adding an address, replacing or deleting routes, deleting the nftables table (with `ip`
    and `nft`, and by netlink messages built by hand) and writing under /proc/sys/net are all
    refused; afterwards the policy holds as before."""
    sandbox = attack.listed
    seen = sandbox.attempts(
        ip_address=f"run('ip', 'address', 'add', '{UNNAMED}/32', 'dev', 'lo')",
        ip_route="run('ip', 'route', 'replace', 'default', 'dev', 'lo')",
        ip_delete_route="run('ip', 'route', 'del', 'local', 'default', 'table', 'local')",
        nft_delete="run('/usr/sbin/nft', 'delete', 'table', 'inet', 'hopx')",
        nft_flush="run('/usr/sbin/nft', 'flush', 'ruleset')",
        netlink_address=NEW_ADDRESS,
        netlink_route=NEW_ROUTE,
        netlink_delete_route=DELETE_ROUTE,
        netfilter="socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12)",
        forward="write('/proc/sys/net/ipv4/ip_forward', '1')",
        ipv6="write('/proc/sys/net/ipv6/conf/all/disable_ipv6', '0')",
        ping="write('/proc/sys/net/ipv4/ping_group_range', '0 2147483647')",
        localnet="write('/proc/sys/net/ipv4/conf/all/route_localnet', '1')",
    )
    for key in ("ip_address", "ip_route", "ip_delete_route"):
        assert seen[key] == [2, "RTNETLINK answers: Operation not permitted"], (key, seen[key])
    for key in ("nft_delete", "nft_flush"):
        # nft cannot even open its netlink socket (or is not there at all).
        assert seen[key] == "absent" or seen[key][0] != 0, (key, seen[key])
    for key in ("netlink_address", "netlink_route", "netlink_delete_route"):
        assert seen[key] == "EPERM", (key, seen[key])
    assert seen["netfilter"] == ["error", "EPROTONOSUPPORT"]
    for key in ("forward", "ipv6", "ping", "localnet"):
        assert seen[key] in (["error", "EACCES"], ["error", "EROFS"], ["error", "EPERM"]), key

    mark = attack.log.mark()
    after = sandbox.attempts(
        routes="subprocess.run(['ip', 'route', 'show', 'table', 'all'],"
        " capture_output=True, text=True).stdout",
        addresses="subprocess.run(['ip', '-4', '-o', 'address'], capture_output=True,"
        " text=True).stdout",
        denied=f"get('http://{UNNAMED}/')",
        allowed=f"get('http://{CIDR_HOST}/after')",
        udp=f"udp({UNNAMED!r}, 9999)",
        ping_socket="socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)",
    )
    assert f"local default dev lo table local scope host src {sandbox.address}" in after["routes"]
    assert UNNAMED not in after["addresses"]
    assert refusal(after["denied"], f"no rule allows {UNNAMED} port 80")
    assert after["allowed"] == [200, f"hello from {CIDR_HOST}/after"]
    assert after["udp"] == ["error", "EPERM"]
    assert after["ping_socket"] == ["error", "EACCES"]
    assert attack.seen[UNNAMED].count("tcp 80") == 0
    assert attack.seen[UNNAMED].count("udp 9999") == 0
    records = attack.log.wait_for(mark, sandbox, 2)
    assert sorted(r["decision"] for r in records) == ["allowed", "denied"]


SLOW_REQUEST = f"GET /slow HTTP/1.1\r\nHost: {CIDR_HOST}\r\nUser-Agent: one byte a second\r\n\r\n"

# Slow requests (one byte a second) and a flood of connections held open without a byte, at
# once; prints "holding" once the flood's fate is known, and the outcome when the slow ones end.
FLOOD = f"""
slow_answers = []

def slow():
    try:
        s = socket.create_connection(({CIDR_HOST!r}, 80), timeout=20)
    except OSError as e:
        slow_answers.append([errno.errorcode[e.errno], 0])
        return
    with s:
        s.setblocking(False)
        sent = 0
        for byte in {SLOW_REQUEST.encode()!r}:
            try:
                s.send(bytes([byte]))
                sent += 1
            except OSError as e:
                slow_answers.append([errno.errorcode[e.errno], sent])
                return
            time.sleep(1)
            try:
                answer = s.recv(4096)
            except BlockingIOError:
                continue
            except OSError as e:
                slow_answers.append([errno.errorcode[e.errno], sent])
                return
            slow_answers.append([answer.decode(), sent])
            return
        slow_answers.append(["sent it all", sent])

slow_threads = [threading.Thread(target=slow) for _ in range(4)]
for thread in slow_threads:
    thread.start()
time.sleep(1)
flood = []
for _ in range(200):
    try:
        flood.append(socket.create_connection(({CIDR_HOST!r}, 80), timeout=20))
    except OSError as e:  # reset before connect() could return
        flood.append(errno.errorcode[e.errno])
time.sleep(3)

def state(s):
    if isinstance(s, str):
        return s
    s.setblocking(False)
    try:
        return "closed" if s.recv(1) == b"" else "answered"
    except BlockingIOError:
        return "open"
    except OSError as e:
        return errno.errorcode[e.errno]

held = [state(s) for s in flood]
print("holding", flush=True)
for thread in slow_threads:
    thread.join()
still = [state(s) for s in flood]
for s in flood:
    if not isinstance(s, str):
        s.close()
print(json.dumps({{"held": held, "still": still, "slow": slow_answers}}))
"""


class _Answer(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"the host answers"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class _HostServer(ThreadingHTTPServer):
    daemon_threads = True

    def server_bind(self) -> None:  # without HTTPServer's reverse lookup of the address
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]


def test_a_flood_and_slow_requests_cost_nothing_to_the_host_or_the_other_sandbox(
    attack: Attack,
) -> None:
    """Four connections sending a request a byte a second, and 200 held open without a byte, to
    an allowed address: at most 64 of them are open at once (the slow ones count), the rest
    are reset at once and logged as over the limit; the slow ones are reset once their time to
    name a destination is up, before the server hears of them. Meanwhile the other sandbox
    still fetches an allowed URL and a server on the host still answers."""
    sandbox, other = attack.listed, attack.any
    mark = attack.log.mark()
    upstream_before = attack.seen[CIDR_HOST].count("tcp 80")
    host_server = _HostServer(("127.0.0.1", 0), _Answer)
    threading.Thread(target=host_server.serve_forever, daemon=True).start()
    try:
        held_then = sandbox.begin(FLOOD, timeout=90, marker="holding")
        assert "holding" in held_then, sandbox.host.ask(do="finish", kernel=sandbox.index)
        meanwhile = other.attempts(fetch=f"get('http://x.files.hopx.test:{ALT}/meanwhile')")
        url = f"http://127.0.0.1:{host_server.server_address[1]}/"
        with urllib.request.urlopen(url, timeout=20) as response:
            host_answer = response.read().decode()
        upstream_during = attack.seen[CIDR_HOST].count("tcp 80") - upstream_before
        outcome = json.loads(sandbox.finish().strip().splitlines()[-1])
    finally:
        host_server.shutdown()
        host_server.server_close()

    assert meanwhile["fetch"] == [200, f"hello from x.files.hopx.test:{ALT}/meanwhile"]
    assert host_answer == "the host answers"
    held = collections.Counter(outcome["held"])
    assert set(held) <= {"open", "ECONNRESET"}, held
    slow = outcome["slow"]
    assert len(slow) == 4
    # The slow ones held four of the 64 while the flood came.
    assert held["open"] == CONNECTIONS_AT_ONCE - 4, held
    assert upstream_during == held["open"]
    # Nothing more reached it: not the slow ones, not those reset.
    assert attack.seen[CIDR_HOST].count("tcp 80") - upstream_before == held["open"]
    assert outcome["still"].count("open") == held["open"]
    for answer, sent in slow:
        assert answer in ("ECONNRESET", "EPIPE"), answer
        assert sent < len(SLOW_REQUEST)

    reset = held["ECONNRESET"]
    records = attack.log.wait_for(mark, sandbox, 200 + 4)
    over = [r for r in records if r["rule"] == "connection limit"]
    assert len(over) == reset
    for record in over:
        assert record["decision"] == "denied"
        # Refused before anything is judged: the record has where the sandbox aimed.
        assert (record["protocol"], record["port"]) == ("tcp", 80)
        assert record["destination_address"] == CIDR_HOST
        assert record["reason"] == "the sandbox has 64 connections open, its limit"
    let_through = [r for r in records if r["decision"] == "allowed"]
    assert len(let_through) == held["open"]
    assert {r["rule"] for r in let_through} == {"151.101.1.0/24:80"}
    slow_records = [r for r in records if r["rule"] == "malformed"]
    assert len(slow_records) == 4
    for record in slow_records:
        assert record["protocol"] == "http"
        assert record["reason"] == "its first bytes are not a HTTP request: incomplete request"
    assert len(records) == 200 + 4
    other_records = [r for r in attack.log.since(mark) if r["kernel_id"] == other.kernel_id]
    assert [(r["decision"], r["destination_name"]) for r in other_records] == [
        ("allowed", "x.files.hopx.test")
    ]
