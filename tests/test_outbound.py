"""How a sandbox's outbound connection is judged (runtime.outbound), with a resolver of fixed
answers standing in for the host's."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import pytest

from runtime.destination_name import Named
from runtime.dns_stub import NameMap
from runtime.network_policy import IPAddress, NetworkPolicy, parse_rules
from runtime.outbound import OutboundJudge, Verdict

ip = ipaddress.ip_address
HOST_DNS: dict[str, tuple[str, ...]] = {
    "pypi.org": ("151.101.0.223", "151.101.64.223"),
    "files.pythonhosted.org": ("151.101.1.63",),
    "rebinding.example": ("10.0.0.5", "151.101.9.9"),
    "evil.example": ("203.0.114.66",),
    "lan.example": ("192.168.1.20",),
}


def resolve(name: str) -> Sequence[IPAddress]:
    try:
        return tuple(ip(address) for address in HOST_DNS[name])
    except KeyError:
        raise LookupError("NXDOMAIN") from None


@pytest.fixture
def names() -> NameMap:
    return NameMap()


def pypi_only() -> NetworkPolicy:
    return NetworkPolicy(allow=parse_rules("network_allow", ["preset:pypi", "rebinding.example"]))


def judge(
    policy: NetworkPolicy, names: NameMap, original: IPAddress, port: int, first: Named | None
) -> Verdict:
    return OutboundJudge(policy, names, resolve).judge(original, port, first)


def test_a_looked_up_name_is_judged_and_connected_where_the_host_resolves_it(
    names: NameMap,
) -> None:
    stand_in = names.address_for("pypi.org")
    verdict = judge(pypi_only(), names, stand_in, 443, None)
    assert verdict.decision.allowed
    assert verdict.name == "pypi.org"
    assert verdict.connect_to == (ip("151.101.0.223"), ip("151.101.64.223"))
    # Its TLS request naming the same host changes nothing.
    again = judge(pypi_only(), names, stand_in, 443, Named("tls", "pypi.org"))
    assert again == verdict


def test_the_first_bytes_must_name_the_host_that_was_looked_up(names: NameMap) -> None:
    stand_in = names.address_for("pypi.org")
    verdict = judge(pypi_only(), names, stand_in, 443, Named("tls", "evil.example"))
    assert not verdict.decision.allowed
    assert verdict.decision.rule == "name mismatch"
    assert (
        verdict.decision.reason == "looked up pypi.org, then named evil.example in its TLS request"
    )
    assert verdict.connect_to == ()


def test_an_allowed_server_name_sent_to_an_address_of_the_sandboxs_choosing_goes_to_the_name(
    names: NameMap,
) -> None:
    """The sandbox connects to 203.0.114.66 saying pypi.org: the host side connects to
    pypi.org's addresses, never to 203.0.114.66."""
    verdict = judge(pypi_only(), names, ip("203.0.114.66"), 443, Named("tls", "pypi.org"))
    assert verdict.decision.allowed
    assert ip("203.0.114.66") not in verdict.connect_to
    assert verdict.connect_to == (ip("151.101.0.223"), ip("151.101.64.223"))


def test_an_address_with_no_name_is_judged_by_address(names: NameMap) -> None:
    raw = ip("151.101.0.223")
    assert not judge(pypi_only(), names, raw, 22, Named("tcp", None)).decision.allowed
    by_block = NetworkPolicy(allow=parse_rules("network_allow", ["151.101.0.0/16:22"]))
    verdict = judge(by_block, names, raw, 22, Named("tcp", None))
    assert verdict.decision.allowed
    assert verdict.connect_to == (raw,)


def test_only_the_allowed_addresses_of_a_name_are_connected_to(names: NameMap) -> None:
    """A name resolving to a private and a public address (rebinding) reaches the public one."""
    stand_in = names.address_for("rebinding.example")
    verdict = judge(pypi_only(), names, stand_in, 443, None)
    assert verdict.connect_to == (ip("151.101.9.9"),)


def test_a_name_resolving_only_to_private_addresses_is_refused_saying_why(names: NameMap) -> None:
    allow = NetworkPolicy(allow=parse_rules("network_allow", ["lan.example"]))
    verdict = judge(allow, names, names.address_for("lan.example"), 443, None)
    assert not verdict.decision.allowed
    assert verdict.decision.rule == "private address"


def test_a_name_the_host_cannot_resolve_is_refused(names: NameMap) -> None:
    everything = NetworkPolicy(allow=parse_rules("network_allow", ["*"]))
    verdict = judge(everything, names, names.address_for("gone.example"), 443, None)
    assert not verdict.decision.allowed
    assert verdict.decision.reason == "gone.example does not resolve (NXDOMAIN)"


def test_a_stand_in_address_that_names_nothing_is_refused() -> None:
    names = NameMap(ipaddress.IPv4Network("198.18.0.0/24"), limit=1)
    old = names.address_for("pypi.org")
    names.address_for("files.pythonhosted.org")  # pypi.org is forgotten
    verdict = judge(pypi_only(), names, old, 443, None)
    assert not verdict.decision.allowed
    assert verdict.decision.rule == "stale stand-in"
    never_handed_out = judge(pypi_only(), names, ip("198.18.0.200"), 443, None)
    assert never_handed_out.decision.rule == "stale stand-in"


def test_the_policy_is_applied_to_the_looked_up_name(names: NameMap) -> None:
    stand_in = names.address_for("evil.example")
    verdict = judge(pypi_only(), names, stand_in, 443, None)
    assert not verdict.decision.allowed
    assert verdict.decision.rule == "no rule"
    assert verdict.name == "evil.example"
