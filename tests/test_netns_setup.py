"""The sandbox's network namespace set up for outbound access (runtime.netns_setup), in real
namespaces made as the supervisor makes them: as root, and as uid 65534 in a user namespace of
its own. No packet leaves: every destination is delivered inside the namespace."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

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


@pytest.mark.parametrize("uid", [0, 65534], ids=["root", "unprivileged"])
def test_every_destination_is_delivered_inside_from_the_sandboxs_own_address(uid: int) -> None:
    run = subprocess.run(
        [sys.executable, "-c", PROBE.format(project=str(PROJECT))],
        capture_output=True,
        text=True,
        timeout=60,
        user=uid,
        group=uid,
        extra_groups=[],
        check=False,
    )
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    # The connection to a public address reached the listener in the namespace, which sees
    # where it was going, and it came from the sandbox's own address.
    assert result["original"] == ["93.184.216.34", 8443]
    assert result["peer"] == "100.64.0.5"
    assert result["nobody_listening"] == "ECONNREFUSED"  # at once, not a timeout
    assert result["ipv6"] in ("EADDRNOTAVAIL", "ENETUNREACH")
    assert result["nested"] == "EPERM"
