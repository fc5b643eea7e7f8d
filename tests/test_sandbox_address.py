"""Each sandbox's own address (runtime.sandbox_address): the block setting and the claims."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import pytest

from conftest import start_holder
from runtime.sandbox_address import (
    DEFAULT_SANDBOX_NETWORK,
    AddressesExhausted,
    claim_address,
    parse_sandbox_network,
)
from runtime.units import LimitError


@pytest.mark.parametrize("value", [DEFAULT_SANDBOX_NETWORK, "10.200.0.0/16", "192.168.77.0/30"])
def test_private_blocks_are_accepted(value: str) -> None:
    assert str(parse_sandbox_network("sandbox_network", value)) == value


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("100.64.0.0/33", "'100.64.0.0/33' is not an IPv4 block"),
        ("100.64.0.1/16", "'100.64.0.1/16' is not an IPv4 block"),
        ("fd00::/64", "'fd00::/64' is not an IPv4 block"),
        ("10.0.0.0/31", "10.0.0.0/31 holds too few addresses"),
        ("8.8.0.0/16", "8.8.0.0/16 is not inside 100.64.0.0/10, 10.0.0.0/8"),
        ("100.0.0.0/8", "100.0.0.0/8 is not inside"),
        ("127.0.0.0/16", "127.0.0.0/16 is not inside"),
    ],
)
def test_a_bad_block_names_the_setting_and_an_example(value: str, message: str) -> None:
    with pytest.raises(LimitError) as raised:
        parse_sandbox_network("sandbox_network", value)
    assert str(raised.value).startswith(f"sandbox_network: {message}")
    assert "use a private block such as '100.64.0.0/16'" in str(raised.value)


def test_addresses_are_claimed_once_and_freed_by_their_holders_end(tmp_path: Path) -> None:
    """Two addresses in a /30: another process holds the first, this one gets the second,
    a third claim fails naming the block; once the holder is killed its address comes back."""
    claims = str(tmp_path / "addresses")
    holder, held = start_holder(
        "import ipaddress\n"
        "from runtime.sandbox_address import claim_address\n"
        f"_, held = claim_address(ipaddress.IPv4Network('10.9.9.0/30'), {claims!r})"
    )
    assert held == "10.9.9.1"
    network = ipaddress.IPv4Network("10.9.9.0/30")
    second, address = claim_address(network, claims)
    assert address == ipaddress.IPv4Address("10.9.9.2")
    with pytest.raises(AddressesExhausted, match=r"all 2 sandbox addresses of 10\.9\.9\.0/30"):
        claim_address(network, claims)
    holder.kill()
    holder.communicate()
    again, address = claim_address(network, claims)
    assert address == ipaddress.IPv4Address("10.9.9.1")
    for claim in (second, again):
        claim.release()
    assert os.listdir(claims) == []
