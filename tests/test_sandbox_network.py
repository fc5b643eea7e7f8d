"""Each sandbox's network, seen from real kernels: an address of its own from `sandbox_network`,
unique among running sandboxes, that its own servers can use, and no path to another's."""

from __future__ import annotations

import ipaddress
import json
import textwrap
from collections.abc import Callable

from conftest import Kernel

OWN_ADDRESS_PROBE = textwrap.dedent(
    """
    import errno, json, socket
    address = {address!r}
    server = socket.create_server((address, 8000))
    client = socket.create_connection((address, 8000), timeout=5)
    accepted, peer = server.accept()
    client.sendall(b"to myself")
    seen = {{"peer": peer[0], "got": accepted.recv(100).decode()}}
    try:
        socket.create_connection(({other!r}, 8000), timeout=5)
        seen["other"] = "connected"
    except OSError as e:
        seen["other"] = errno.errorcode[e.errno]
    print(json.dumps(seen))
    """
)


def address_of(kernel: Kernel) -> str:
    supervisor = kernel.km.provisioner.supervisor
    assert supervisor is not None
    return str(supervisor.started["address"])


def test_each_sandbox_has_an_address_of_its_own_that_its_servers_can_use(
    start_kernel: Callable[..., Kernel],
) -> None:
    first = start_kernel(sandbox_network="10.77.0.0/29")
    second = start_kernel(sandbox_network="10.77.0.0/29")
    addresses = [address_of(first), address_of(second)]
    network = ipaddress.ip_network("10.77.0.0/29")
    assert all(ipaddress.ip_address(a) in network for a in addresses), addresses
    assert len(set(addresses)) == 2, addresses
    # The state record the host tools read says it too.
    record = json.loads((first.state_dir / "sandbox.json").read_text())
    assert record["address"] == addresses[0]

    seen = first.value(OWN_ADDRESS_PROBE.format(address=addresses[0], other=addresses[1]))
    assert seen == {"peer": addresses[0], "got": "to myself", "other": "ENETUNREACH"}


def test_an_address_is_free_again_once_its_sandbox_has_ended(
    start_kernel: Callable[..., Kernel],
) -> None:
    """A block of two usable addresses: a third sandbox fails with what to do, and gets one
    as soon as another has stopped."""
    kernels = [start_kernel(sandbox_network="10.77.1.0/30") for _ in range(2)]
    taken = [address_of(k) for k in kernels]
    assert sorted(taken) == ["10.77.1.1", "10.77.1.2"]
    try:
        start_kernel(sandbox_network="10.77.1.0/30")
    except RuntimeError as e:
        message = str(e)
    else:
        message = "started"
    assert message.startswith("Stop a kernel, or widen sandbox_network: ")
    assert "all 2 sandbox addresses of 10.77.1.0/30 are in use" in message
    kernels[0].km.shutdown_kernel(now=True)
    third = start_kernel(sandbox_network="10.77.1.0/30")
    assert address_of(third) == taken[0]
