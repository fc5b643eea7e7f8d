"""The outbound policy's decisions (runtime.network_policy): pure, without a network."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any

import pytest

from runtime.network_policy import (
    Destination,
    NetworkPolicy,
    normalise_name,
    parse_rule,
    parse_rules,
)
from runtime.units import LimitError

PUBLIC = "151.101.0.223"  # a public address, never connected to: decisions only


def policy(allow: Sequence[str] = (), deny: Sequence[str] = (), **kwargs: Any) -> NetworkPolicy:
    return NetworkPolicy(
        allow=parse_rules("network_allow", allow),
        deny=parse_rules("network_deny", deny),
        **kwargs,
    )


def to(name: str | None, address: str = PUBLIC, port: int = 443) -> Destination:
    return Destination(
        None if name is None else normalise_name(name), ipaddress.ip_address(address), port
    )


def test_the_default_allows_nothing() -> None:
    decision = NetworkPolicy().decide(to("pypi.org"))
    assert not decision.allowed
    assert decision.rule == "no rule"
    assert decision.reason == "no rule allows pypi.org port 443"


@pytest.mark.parametrize(
    ("rule", "name", "port", "allowed"),
    [
        ("pypi.org", "pypi.org", 443, True),
        ("pypi.org", "PyPI.org.", 80, True),
        ("pypi.org", "evil-pypi.org", 443, False),
        ("pypi.org", "pypi.org.evil.net", 443, False),
        ("pypi.org:443", "pypi.org", 443, True),
        ("pypi.org:443", "pypi.org", 80, False),
        ("example.org:8000-8100", "example.org", 8050, True),
        ("example.org:8000-8100", "example.org", 8101, False),
        ("*.pythonhosted.org", "files.pythonhosted.org", 443, True),
        ("*.pythonhosted.org", "a.b.pythonhosted.org", 443, True),
        ("*.pythonhosted.org", "pythonhosted.org", 443, False),
        ("*.pythonhosted.org", "evilpythonhosted.org", 443, False),
        ("*", "anything.example", 22, True),
        ("*:443", "anything.example", 443, True),
        ("*:443", "anything.example", 80, False),
        ("bücher.example", "xn--bcher-kva.example", 443, True),
    ],
)
def test_name_rules(rule: str, name: str, port: int, allowed: bool) -> None:
    decision = policy([rule]).decide(to(name, port=port))
    assert decision.allowed is allowed, decision
    if allowed:
        assert decision.rule == rule
        assert decision.reason == f"allowed by the rule {rule!r}"


def test_a_name_rule_needs_the_name_an_address_alone_does_not_match_it() -> None:
    assert not policy(["pypi.org"]).decide(to(None)).allowed
    assert policy(["*"]).decide(to(None)).allowed


@pytest.mark.parametrize(
    ("rule", "address", "port", "allowed"),
    [
        ("151.101.0.0/16", PUBLIC, 443, True),
        ("151.101.0.0/16:443", PUBLIC, 80, False),
        ("151.101.0.223", PUBLIC, 443, True),
        ("151.101.0.224", PUBLIC, 443, False),
        ("10.1.2.0/24:5432", "10.1.2.9", 5432, True),
        ("10.1.2.0/24:5432", "10.1.2.9", 5433, False),
        ("10.1.2.0/24:5432", "10.1.3.9", 5432, False),
        ("192.168.0.0/16", "192.168.7.7", 80, True),
        ("[fd12::/64]:5432", "fd12::5", 5432, True),
        ("fd12::/64", "fd12::5", 80, True),
        ("2a04:4e42::/32", "2a04:4e42::223", 443, True),
        ("10.0.0.0/8", "2a04:4e42::223", 443, False),
    ],
)
def test_address_rules(rule: str, address: str, port: int, allowed: bool) -> None:
    assert policy([rule]).decide(to(None, address, port)).allowed is allowed


@pytest.mark.parametrize("rule", ["*", "*:5432", "db.internal", "0.0.0.0/0", "::/0"])
def test_private_addresses_open_only_to_an_address_rule_inside_a_private_block(
    rule: str,
) -> None:
    """A name that resolves to a LAN address (DNS rebinding), `*` or a block that covers public
    space too does not reach the LAN; `10.0.0.0/8` does."""
    lan = to("db.internal", "10.0.0.5", 5432)
    refused = policy([rule]).decide(lan)
    assert not refused.allowed
    assert policy([rule, "10.0.0.0/8"]).decide(lan).allowed
    assert not policy([rule]).decide(to("db.internal", "fd12::5", 5432)).allowed


def test_a_name_resolving_to_a_private_address_is_refused_with_the_way_to_allow_it() -> None:
    decision = policy(["pypi.org"]).decide(to("pypi.org", "192.168.1.20"))
    assert not decision.allowed
    assert decision.rule == "private address"
    assert decision.reason == (
        "pypi.org resolves to a private address: only an address rule such as "
        "'10.0.0.0/8:5432' opens private addresses"
    )
    # The sandbox sees the reason: it never learns what the host resolved a name to.
    assert "192.168" not in decision.reason


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "a loopback address"),
        ("127.5.5.5", "a loopback address"),
        ("::1", "a loopback address"),
        ("::ffff:127.0.0.1", "a loopback address"),
        ("64:ff9b::7f00:1", "a loopback address"),
        ("2002:7f00:1::", "a loopback address"),
        ("0.0.0.0", "an unspecified address"),
        ("::", "an unspecified address"),
        ("169.254.169.254", "a link-local address"),
        ("::ffff:169.254.169.254", "a link-local address"),
        ("fe80::1", "a link-local address"),
        ("fd00:ec2::254", "a cloud metadata address"),
        ("224.0.0.251", "a multicast address"),
        ("ff02::fb", "a multicast address"),
        ("255.255.255.255", "a reserved address"),
        ("100.64.0.9", "a sandbox's address"),
        ("192.0.2.10", "an address of this host"),
    ],
)
def test_some_addresses_are_never_reachable_whatever_the_rules(address: str, why: str) -> None:
    """Even a rule naming the address exactly, or a preset, or `*`, does not open it."""
    exact = str(ipaddress.ip_network(ipaddress.ip_address(address)))
    everything = policy(
        ["*", exact, "10.0.0.0/8", "preset:pypi"],
        host_addresses=frozenset({ipaddress.ip_address("192.0.2.10")}),
    )
    decision = everything.decide(to("pypi.org", address))
    assert not decision.allowed
    assert decision.rule == "never reachable"
    assert decision.reason == f"pypi.org resolves to {why}"
    as_written = ipaddress.ip_address(address)
    assert everything.decide(to(None, address)).reason == f"{as_written} is {why}"


def test_the_sandbox_network_is_a_setting() -> None:
    moved = policy(["10.0.0.0/8"], sandbox_network=ipaddress.ip_network("10.99.0.0/16"))
    assert not moved.decide(to(None, "10.99.0.7")).allowed
    assert moved.decide(to(None, "10.98.0.7")).allowed
    # The default range is then an ordinary shared-address block, opened only by a rule.
    assert not moved.decide(to(None, "100.64.0.9")).allowed


def test_deny_wins_over_allow() -> None:
    rules = policy(["*", "*.pythonhosted.org"], ["evil.pythonhosted.org", "151.101.0.0/16:22"])
    decision = rules.decide(to("evil.pythonhosted.org"))
    assert not decision.allowed
    assert decision.rule == "evil.pythonhosted.org"
    assert decision.reason == "denied by the rule 'evil.pythonhosted.org'"
    assert rules.decide(to("files.pythonhosted.org")).allowed
    assert not rules.decide(to("files.pythonhosted.org", port=22)).allowed


def test_presets_expand_to_their_rules_and_log_under_their_name() -> None:
    pypi = policy(["preset:pypi"])
    for name in ("pypi.org", "files.pythonhosted.org"):
        decision = pypi.decide(to(name))
        assert decision.allowed
        assert decision.rule.startswith("preset:pypi (")
    assert not pypi.decide(to("pypi.org", port=80)).allowed
    assert not pypi.decide(to("upload.pypi.org")).allowed
    assert policy(["preset:conda"]).decide(to("conda.anaconda.org")).allowed


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            "pypi.org:http",
            "network_allow entry 'pypi.org:http' has no valid port; use e.g. 'pypi.org:443'",
        ),
        ("pypi.org:0", "network_allow entry 'pypi.org:0' has no valid port"),
        ("pypi.org:70000", "network_allow entry 'pypi.org:70000' has no valid port"),
        ("host:9-1", "network_allow entry 'host:9-1' has no valid port"),
        ("10.1.2.3/24", "network_allow entry '10.1.2.3/24' is not an address block; use e.g."),
        ("[pypi.org]:443", "network_allow entry '[pypi.org]:443' is not an address block"),
        ("fd12::zz:5432", "an IPv6 block with a port goes in brackets, e.g. '[fd12::/64]:5432'"),
        (
            "https://pypi.org/simple",
            "network_allow entry 'https://pypi.org/simple' is a URL; write its host and port",
        ),
        ("pypi org", "is not a host name, '*.domain', address block or preset; use e.g."),
        ("", "network_allow entry '' is not a host name"),
        ("bü..example", "network_allow entry 'bü..example' is not a host name"),
        ("ü" * 70 + ".org", "is not a host name, '*.domain', address block or preset"),
        ("*.org", "would match every name under a top-level domain; name a domain, e.g."),
        ("*pypi.org", "network_allow entry '*pypi.org' is not a host name"),
        ("preset:npm", "network_allow entry 'preset:npm' is no preset; the presets are"),
        (443, "network_allow entry 443 is not a string; use e.g. 'pypi.org:443'"),
    ],
)
def test_a_bad_entry_names_the_setting_and_an_example(entry: object, message: str) -> None:
    with pytest.raises(LimitError) as raised:
        parse_rules("network_allow", [entry])
    assert message in str(raised.value)


def test_one_string_is_not_a_list_of_rules() -> None:
    with pytest.raises(LimitError, match=r"must be a list of rules, not one string"):
        parse_rules("network_allow", "pypi.org")


def test_a_rule_keeps_how_it_was_written() -> None:
    assert parse_rule("network_allow", "PyPI.org:443").text == "PyPI.org:443"
    assert parse_rule("network_allow", "PyPI.org:443").name == "pypi.org"


def test_only_names_the_policy_mentions_may_be_looked_up() -> None:
    policy = NetworkPolicy(
        allow=parse_rules("network_allow", ["pypi.org:443", "*.pythonhosted.org", "10.0.0.0/8"]),
        deny=parse_rules("network_deny", ["evil.pythonhosted.org", "*.pythonhosted.org:80"]),
    )
    assert policy.decide_lookup("pypi.org").rule == "pypi.org:443"
    assert policy.decide_lookup("files.pythonhosted.org").allowed
    # A deny rule for every port refuses the lookup; one for some ports leaves it to `decide`.
    assert policy.decide_lookup("evil.pythonhosted.org").rule == "evil.pythonhosted.org"
    assert not policy.decide_lookup("evil.pythonhosted.org").allowed
    # An address rule names no host: the host does not resolve names for it.
    refused = policy.decide_lookup("db.internal")
    assert (refused.allowed, refused.rule) == (False, "no rule")
    assert "db.internal" in refused.reason
    assert not NetworkPolicy().decide_lookup("pypi.org").allowed
    anywhere = NetworkPolicy(allow=parse_rules("network_allow", ["*:443"]))
    assert anywhere.decide_lookup("example.org").allowed
    assert (
        not NetworkPolicy(allow=anywhere.allow, deny=parse_rules("network_deny", ["*"]))
        .decide_lookup("example.org")
        .allowed
    )
