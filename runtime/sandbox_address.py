"""Each sandbox's own IPv4 address, from a configured block, unique among the sandboxes whose
supervisors share a claims folder (runtime.claims): the address is claimed as its offset in
the block and held for the sandbox's whole life.
"""

from __future__ import annotations

import ipaddress
import os

from runtime.claims import Claim, try_claim
from runtime.units import LimitError

ADDRESS_CLAIMS_DIR = "/run/hopx-kernel/addresses"
# Inside the shared address space of carrier-grade NAT (RFC 6598), which no real network
# routes to hosts: 65534 sandboxes.
DEFAULT_SANDBOX_NETWORK = "100.64.0.0/16"
EXAMPLE = f"use a private block such as '{DEFAULT_SANDBOX_NETWORK}' or '10.200.0.0/16'"

# Blocks a sandbox network must lie in: addresses no public host has.
_PRIVATE = tuple(
    ipaddress.IPv4Network(block)
    for block in ("100.64.0.0/10", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
)


class AddressesExhausted(RuntimeError):
    pass


def parse_sandbox_network(field: str, value: object) -> ipaddress.IPv4Network:
    """An IPv4 block of at least 4 addresses inside a private one; its first and last
    addresses are never handed out."""
    try:
        network = ipaddress.IPv4Network(str(value).strip(), strict=True)
    except ValueError:
        msg = f"{field}: {value!r} is not an IPv4 block; {EXAMPLE}"
        raise LimitError(msg) from None
    if network.prefixlen > 30:
        msg = f"{field}: {network} holds too few addresses; {EXAMPLE}"
        raise LimitError(msg)
    if not any(network.subnet_of(block) for block in _PRIVATE):
        msg = (
            f"{field}: {network} is not inside 100.64.0.0/10, 10.0.0.0/8, 172.16.0.0/12 or "
            f"192.168.0.0/16, so it could hide real hosts from every sandbox; {EXAMPLE}"
        )
        raise LimitError(msg)
    return network


def claim_address(
    network: ipaddress.IPv4Network, claims_dir: str = ADDRESS_CLAIMS_DIR
) -> tuple[Claim, ipaddress.IPv4Address]:
    """The first address of `network` no other sandbox holds, and the claim holding it."""
    os.makedirs(claims_dir, mode=0o700, exist_ok=True)
    for offset in range(1, network.num_addresses - 1):
        claim = try_claim(claims_dir, int(network.network_address) + offset)
        if claim is not None:
            return claim, network[offset]
    msg = f"all {network.num_addresses - 2} sandbox addresses of {network} are in use"
    raise AddressesExhausted(msg)
