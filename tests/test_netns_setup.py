"""The sandbox's network namespace set up for outbound access (runtime.netns_setup), in real
namespaces made as the supervisor makes them: as root, and as uid 65534 in a user namespace of
its own. No packet leaves: every destination is delivered inside the namespace."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from runtime.netns_setup import interception_rules

PROJECT = Path(__file__).resolve().parent.parent

PROBE = """
import errno, ipaddress, json, os, socket, sys
sys.path.insert(0, {project!r})
from runtime import libc, netns_setup

libc.enter_private_network(unprivileged=os.geteuid() != 0)
netns_setup.give_address(ipaddress.IPv4Address("100.64.0.5"))
result = {{}}

listener = socket.socket()
listener.bind(("0.0.0.0", 8443))
listener.listen()
client = socket.create_connection(("93.184.216.34", 8443), timeout=5)
accepted, peer = listener.accept()
result["original"] = list(accepted.getsockname())
result["peer"] = peer[0]
try:
    socket.create_connection(("10.1.2.3", 9), timeout=5)
except OSError as e:
    result["nobody_listening"] = errno.errorcode[e.errno]
try:
    socket.create_connection(("2001:db8::1", 443), timeout=5)
except OSError as e:
    result["ipv6"] = errno.errorcode[e.errno]

# A process in a user namespace of its own inside, as bubblewrap makes for the kernel, cannot
# change any of it.
read, write = os.pipe()
if os.fork() == 0:
    os.close(read)
    libc.unshare(libc.CLONE_NEWUSER)
    try:
        netns_setup.give_address(ipaddress.IPv4Address("100.64.0.6"))
        answer = "changed"
    except OSError as e:
        answer = errno.errorcode[e.errno]
    os.write(write, answer.encode())
    os._exit(0)
os.close(write)
result["nested"] = os.read(read, 100).decode()
os.wait()
print(json.dumps(result))
"""


def run_as(uid: int, script: str) -> dict[str, Any]:
    """What `script` (formatted with the project's path) prints as JSON, run as `uid`."""
    run = subprocess.run(
        [sys.executable, "-c", script.format(project=str(PROJECT))],
        capture_output=True,
        text=True,
        timeout=60,
        user=uid,
        group=uid,
        extra_groups=[],
        check=False,
    )
    assert run.returncode == 0, run.stderr
    result: dict[str, Any] = json.loads(run.stdout)
    return result


@pytest.mark.parametrize("uid", [0, 65534], ids=["root", "unprivileged"])
def test_every_destination_is_delivered_inside_from_the_sandboxs_own_address(uid: int) -> None:
    result = run_as(uid, PROBE)
    # The connection to a public address reached the listener in the namespace, which sees
    # where it was going, and it came from the sandbox's own address.
    assert result["original"] == ["93.184.216.34", 8443]
    assert result["peer"] == "100.64.0.5"
    assert result["nobody_listening"] == "ECONNREFUSED"  # at once, not a timeout
    assert result["ipv6"] in ("EADDRNOTAVAIL", "ENETUNREACH")
    assert result["nested"] == "EPERM"


INTERCEPTION = """
import errno, ipaddress, json, os, socket, subprocess, sys
sys.path.insert(0, {project!r})
from runtime import libc, netns_setup

IP_TRANSPARENT = 19
own = ipaddress.IPv4Address("100.64.0.5")
libc.enter_private_network(unprivileged=os.geteuid() != 0)
netns_setup.give_address(own)
netns_setup.intercept(own, 15002)

# Made by the namespace's owner: the one transparent listener and the DNS stub's socket.
relay = socket.socket()
relay.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
relay.bind(("127.0.0.1", 15002))
relay.listen(16)
relay.settimeout(5)
stub = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
stub.bind(("0.0.0.0", 53))
# A notebook's own server, listening on every address.
own_server = socket.socket()
own_server.bind(("0.0.0.0", 8888))
own_server.listen(16)
own_server.settimeout(5)

targets = [("93.184.216.34", 443), ("10.9.9.9", 5432), ("93.184.216.34", 8888),
           ("100.64.0.5", 8888), ("127.0.0.1", 8888)]
read, write = os.pipe()
child = os.fork()
if child == 0:
    # The kernel's side: a user namespace of its own inside, as bubblewrap makes.
    os.close(read)
    libc.unshare(libc.CLONE_NEWUSER)
    seen = {{}}
    kept = []
    for host, port in targets:
        connection = socket.create_connection((host, port), timeout=5)
        connection.sendall(f"{{host}}:{{port}}".encode())
        kept.append(connection)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.settimeout(5)
    try:
        udp.sendto(b"ntp", ("8.8.8.8", 123))
        seen["udp_123"] = "sent"
    except OSError as e:
        seen["udp_123"] = errno.errorcode[e.errno]
    udp.sendto(b"query", ("1.1.1.1", 53))
    seen["dns_reply"] = udp.recvfrom(100)[0].decode()
    flush = subprocess.run(["nft", "flush", "ruleset"], capture_output=True, text=True)
    seen["nft_flush"] = flush.returncode
    try:
        netns_setup.intercept(own, 15003)
        seen["intercept"] = "loaded"
    except OSError as e:
        seen["intercept"] = str(e)
    os.write(write, json.dumps(seen).encode())
    os._exit(0)
os.close(write)
query, sender = stub.recvfrom(100)
stub.sendto(b"answer to " + query, sender)
result = {{"relay": {{}}, "own_server": []}}
for _ in range(3):
    connection, _peer = relay.accept()
    result["relay"][connection.recv(100).decode()] = list(connection.getsockname())
for _ in range(2):
    connection, _peer = own_server.accept()
    result["own_server"].append(connection.recv(100).decode())
result["child"] = json.loads(os.read(read, 65536))
os.waitpid(child, 0)
print(json.dumps(result))
"""


@pytest.mark.parametrize("uid", [0, 65534], ids=["root", "unprivileged"])
def test_every_tcp_connection_reaches_one_listener_and_only_dns_leaves_by_udp(uid: int) -> None:
    """With the table loaded, connections to any address and port reach the one transparent
    listener, which sees each original destination; the sandbox's own and loopback addresses
    stay the notebook's own servers'; UDP to port 53 anywhere reaches the stub, other UDP fails
    at once; the kernel's side cannot flush the table."""
    result = run_as(uid, INTERCEPTION)
    assert result["relay"] == {
        "93.184.216.34:443": ["93.184.216.34", 443],
        "10.9.9.9:5432": ["10.9.9.9", 5432],
        "93.184.216.34:8888": ["93.184.216.34", 8888],
    }
    assert sorted(result["own_server"]) == ["100.64.0.5:8888", "127.0.0.1:8888"]
    assert result["child"]["udp_123"] == "EPERM"
    assert result["child"]["dns_reply"] == "answer to query"
    assert result["child"]["nft_flush"] != 0
    assert result["child"]["intercept"].startswith(
        "[Errno 1] nftables could not load the sandbox's rules: "
    )


def test_the_rules_name_the_listener_and_the_sandboxs_address() -> None:
    rules = interception_rules(ipaddress.IPv4Address("100.64.0.9"), 15002)
    assert "ip daddr 100.64.0.9 accept" in rules
    assert "tproxy ip to 127.0.0.1:15002" in rules
