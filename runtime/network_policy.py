"""Which outbound connections a sandbox may make, as pure decisions.

Nothing here resolves a name, opens a socket or reads a clock: whatever intercepts a sandbox's
connection passes in what it knows (the name the sandbox asked for, from its DNS query, TLS SNI
or HTTP Host; the address the host side resolved for that name; the port) and acts on the
answer, which names the rule that decided, for the connection log.

Rules, as an admin writes them in an allow or deny list:

- `pypi.org`: that host name, any port; `pypi.org:443`: that port only;
- `*.pythonhosted.org`: any name below that domain (not the domain itself);
- `10.1.2.0/24`, `10.1.2.3`, `10.1.2.0/24:5432`, `[fd12::/64]:5432`: addresses, with a port;
- `*` (or `*:443`): any public destination;
- `preset:pypi`, `preset:conda`: named lists for common needs.

Some addresses are never reachable, whatever the lists say: loopback, link-local (the cloud
metadata services among them), multicast and reserved blocks, the sandboxes' own range and the
host's own addresses. Other non-public addresses (the host's LAN, for a database there) open
only to an address rule that lies inside such a block: a name rule or `*` never reaches them,
so a name the sandbox can make resolve to a private address (DNS rebinding) gains nothing.
A deny rule wins over every allow rule.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

from runtime.sandbox_address import DEFAULT_SANDBOX_NETWORK
from runtime.units import LimitError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


PRESETS: dict[str, tuple[str, ...]] = {
    # pip: the index, and the host its files come from.
    "pypi": ("pypi.org:443", "files.pythonhosted.org:443"),
    # conda and mamba: Anaconda's channels and conda-forge's, which anaconda.org serves.
    "conda": ("conda.anaconda.org:443", "repo.anaconda.com:443", "*.anaconda.org:443"),
}

_NEVER: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("a loopback address", ("127.0.0.0/8", "::1/128")),
    ("an unspecified address", ("0.0.0.0/8", "::/128")),
    ("a link-local address", ("169.254.0.0/16", "fe80::/10")),
    # AWS's IPv6 metadata service sits in unique-local space, which a CIDR rule could open.
    ("a cloud metadata address", ("fd00:ec2::254/128",)),
    ("a multicast address", ("224.0.0.0/4", "ff00::/8")),
    ("a reserved address", ("240.0.0.0/4",)),
)
NEVER_REACHABLE: tuple[tuple[str, tuple[IPNetwork, ...]], ...] = tuple(
    (why, tuple(ipaddress.ip_network(block) for block in blocks)) for why, blocks in _NEVER
)

# Non-public blocks an address rule lying inside them opens: private networks, carrier-grade
# NAT, benchmarking and documentation ranges, unique-local IPv6.
PRIVATE_BLOCKS: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(block)
    for block in (
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "fc00::/7",
        "2001:db8::/32",
    )
)

# NAT64's well-known prefix: its addresses carry an IPv4 address in their low 32 bits, which
# is the one that counts (mapped and 6to4 addresses have `ipv4_mapped` and `sixtofour`).
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")

_NAME_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?")
_PORT_SUFFIX = re.compile(r"(?P<host>.*?)(?::(?P<ports>\d{1,5}(?:-\d{1,5})?))?")
_BRACKETED = re.compile(r"\[(?P<network>[^\]]+)\](?::(?P<ports>\d{1,5}(?:-\d{1,5})?))?")


@dataclass(frozen=True)
class Rule:
    """One entry of an allow or deny list; `text` is how the admin wrote it (or its preset)."""

    text: str
    # Exactly one of these says what the rule matches.
    name: str | None = None  # a host name, lower case, without a trailing dot
    domain: str | None = None  # `*.example.org` matches names ending in ".example.org"
    network: IPNetwork | None = None
    public: bool = False  # `*`
    # Inclusive port range; None for any port.
    ports: tuple[int, int] | None = None

    def port_matches(self, port: int) -> bool:
        return self.ports is None or self.ports[0] <= port <= self.ports[1]

    def name_matches(self, name: str | None) -> bool:
        if name is None:
            return False
        if self.name is not None:
            return name == self.name
        return self.domain is not None and name.endswith("." + self.domain)


@dataclass(frozen=True)
class Destination:
    """A connection the sandbox asked for."""

    # The name it asked for (DNS, SNI or Host), normalised by `normalise_name`; None when it
    # connected to an address it never looked up.
    name: str | None
    # The address the connection would go to: resolved by the host side for `name`.
    address: IPAddress
    port: int


@dataclass(frozen=True)
class Decision:
    allowed: bool
    # The rule that decided, as written, or a built-in reason's label ("never reachable",
    # "no rule") when none did.
    rule: str
    # Why, in words for the log and for the refusal the sandbox sees.
    reason: str


_DEFAULT_SANDBOX_NETWORK = ipaddress.IPv4Network(DEFAULT_SANDBOX_NETWORK)


@dataclass(frozen=True)
class NetworkPolicy:
    """A sandbox's outbound policy. The default allows nothing at all."""

    allow: tuple[Rule, ...] = ()
    deny: tuple[Rule, ...] = ()
    sandbox_network: IPNetwork = _DEFAULT_SANDBOX_NETWORK
    # The host's own addresses (every interface's), never reachable from a sandbox.
    host_addresses: frozenset[IPAddress] = frozenset()

    def decide(self, destination: Destination) -> Decision:
        """Whether `destination` may be connected to, and the rule that says so. The reason,
        which the sandbox sees, names a destination by its name when it has one, never by the
        address the host resolved it to: a notebook must not read the host's DNS through it."""
        address = effective_address(destination.address)
        # How the sandbox asked for it.
        asked = destination.name or str(destination.address)
        never = self.never_reachable(address)
        if never:
            verb = "resolves to" if destination.name else "is"
            return Decision(False, "never reachable", f"{asked} {verb} {never}")
        public = address.is_global
        for rule in self.deny:
            if _matches(rule, destination, address, public):
                return Decision(False, rule.text, f"denied by the rule {rule.text!r}")
        for rule in self.allow:
            if _matches(rule, destination, address, public):
                return Decision(True, rule.text, f"allowed by the rule {rule.text!r}")
        if not public and any(
            rule.port_matches(destination.port)
            and (rule.public or rule.name_matches(destination.name))
            for rule in self.allow
        ):
            verb = "resolves to" if destination.name else "is"
            why = (
                f"{asked} {verb} a private address: only an address rule such as "
                "'10.0.0.0/8:5432' opens private addresses"
            )
            return Decision(False, "private address", why)
        return Decision(False, "no rule", f"no rule allows {asked} port {destination.port}")

    def decide_lookup(self, name: str) -> Decision:
        """Whether the sandbox may look `name` up: only a name some allow rule names (or `*`)
        gets an answer, so the host resolves no name the policy does not mention (a lookup
        can carry data to whoever serves that name's DNS). Where the name leads is decided
        per connection, by `decide`."""
        for rule in self.deny:
            if rule.ports is None and (rule.public or rule.name_matches(name)):
                return Decision(False, rule.text, f"denied by the rule {rule.text!r}")
        for rule in self.allow:
            if rule.public or rule.name_matches(name):
                return Decision(True, rule.text, f"allowed by the rule {rule.text!r}")
        return Decision(False, "no rule", f"no rule allows the name {name}")

    def never_reachable(self, address: IPAddress) -> str:
        """Why `address` is out of every sandbox's reach, or '' if it is not."""
        address = effective_address(address)
        for why, blocks in NEVER_REACHABLE:
            if any(address in block for block in blocks):
                return why
        if address in self.sandbox_network:
            return "a sandbox's address"
        if address in self.host_addresses:
            return "an address of this host"
        return ""


def effective_address(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 address stands for where it carries one (mapped, NAT64, 6to4),
    so `::ffff:127.0.0.1` is judged as loopback; otherwise `address` itself."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if address.sixtofour is not None:
            return address.sixtofour
    return address


def _matches(rule: Rule, destination: Destination, address: IPAddress, public: bool) -> bool:
    if not rule.port_matches(destination.port):
        return False
    if rule.network is not None:
        # A rule covering public space (0.0.0.0/0, say) opens only its public part; one lying
        # inside a non-public block is the admin naming that private network explicitly.
        return address in rule.network and (public or _inside_a_private_block(rule.network))
    if not public:
        return False
    return rule.public or rule.name_matches(destination.name)


def _inside_a_private_block(network: IPNetwork) -> bool:
    return any(
        network.version == block.version and network.subnet_of(block)  # type: ignore[arg-type]
        for block in PRIVATE_BLOCKS
    )


def normalise_name(name: str) -> str:
    """A host name as rules compare it: lower case, no trailing dot, IDNA for non-ASCII. Text
    IDNA cannot encode (an empty or over-long label) stays as it is, which `is_host_name`
    refuses."""
    name = name.strip().rstrip(".").lower()
    if not name.isascii():
        with contextlib.suppress(UnicodeError):
            name = name.encode("idna").decode("ascii")
    return name


def is_host_name(name: str) -> bool:
    """Whether `name`, normalised, is a host name DNS can carry: dot-separated labels of
    letters, digits, hyphens and underscores, at most 253 characters."""
    labels = name.split(".")
    return 0 < len(name) <= 253 and all(_NAME_LABEL.fullmatch(label) for label in labels)


def parse_rules(field: str, entries: Iterable[object]) -> tuple[Rule, ...]:
    """The rules of one setting (`network_allow`, say), presets expanded; the error for a bad
    entry names the setting and gives a valid example."""
    if isinstance(entries, str):
        msg = f"{field} must be a list of rules, not one string; use e.g. ['pypi.org:443']"
        raise LimitError(msg)
    rules: list[Rule] = []
    for entry in entries:
        if not isinstance(entry, str):
            msg = f"{field} entry {entry!r} is not a string; use e.g. 'pypi.org:443'"
            raise LimitError(msg)
        text = entry.strip()
        if text.startswith("preset:"):
            preset = PRESETS.get(text.removeprefix("preset:"))
            if preset is None:
                known = ", ".join(f"'preset:{name}'" for name in PRESETS)
                msg = f"{field} entry {entry!r} is no preset; the presets are {known}"
                raise LimitError(msg)
            rules.extend(parse_rule(field, rule, source=text) for rule in preset)
        else:
            rules.append(parse_rule(field, text))
    return tuple(rules)


def parse_rule(field: str, text: str, source: str | None = None) -> Rule:
    """One rule; `source` (a preset's name) is what the log will show it as."""
    shown = f"{source} ({text})" if source else text
    if "://" in text:
        msg = f"{field} entry {text!r} is a URL; write its host and port, e.g. 'pypi.org:443'"
        raise LimitError(msg)
    bracketed = _BRACKETED.fullmatch(text)
    if bracketed:
        host, ports_text = bracketed["network"], bracketed["ports"]
    elif text.count(":") > 1:  # IPv6 without brackets: no port
        if _parse_network(text) is None:
            msg = (
                f"{field} entry {text!r} is not an address block; an IPv6 block with a port "
                "goes in brackets, e.g. '[fd12::/64]:5432'"
            )
            raise LimitError(msg)
        host, ports_text = text, None
    else:
        parts = _PORT_SUFFIX.fullmatch(text)
        assert parts is not None  # every string matches
        host, ports_text = parts["host"], parts["ports"]
    ports = _parse_ports(field, text, ports_text)
    if host == "*":
        return Rule(shown, public=True, ports=ports)
    network = _parse_network(host)
    if network is not None:
        return Rule(shown, network=network, ports=ports)
    if ":" in host and not bracketed:
        raise LimitError(_bad_port(field, text))
    if "/" in host or bracketed:
        msg = f"{field} entry {text!r} is not an address block; use e.g. '10.1.2.0/24:5432'"
        raise LimitError(msg)
    wildcard = host.startswith("*.")
    name = normalise_name(host[2:] if wildcard else host) if host else ""
    if not is_host_name(name):
        msg = (
            f"{field} entry {text!r} is not a host name, '*.domain', address block or "
            "preset; use e.g. 'pypi.org:443', '*.pythonhosted.org' or '10.1.2.0/24:5432'"
        )
        raise LimitError(msg)
    if wildcard and "." not in name:
        msg = (
            f"{field} entry {text!r} would match every name under a top-level domain; "
            "name a domain, e.g. '*.pythonhosted.org'"
        )
        raise LimitError(msg)
    if wildcard:
        return Rule(shown, domain=name, ports=ports)
    return Rule(shown, name=name, ports=ports)


def _parse_network(host: str) -> IPNetwork | None:
    try:
        return ipaddress.ip_network(host, strict=True)
    except ValueError:
        return None


def _bad_port(field: str, text: str) -> str:
    return f"{field} entry {text!r} has no valid port; use e.g. 'pypi.org:443' or 'host:8000-8100'"


def _parse_ports(field: str, text: str, ports: str | None) -> tuple[int, int] | None:
    if ports is None:
        return None
    low, _, high = ports.partition("-")
    first, last = int(low), int(high or low)
    if not 1 <= first <= last <= 65535:
        raise LimitError(_bad_port(field, text))
    return (first, last)
