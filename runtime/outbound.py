"""How one outbound connection of a sandbox is judged: which name it is for, whether the policy
allows it, and which addresses the host side may connect to. Pure: the host-side resolver is
passed in.

The name comes from the sandbox's DNS (the connection went to a stand-in address the stub
handed out for it) or, for a connection to an address the sandbox chose itself, from the TLS
server name or HTTP Host it sends first. Either way the host side resolves the name itself and
connects only there: a sandbox that sends an allowed server name to an address of its own
choosing reaches that name's real servers, not its address. A connection whose first bytes
name another host than the one it looked up is refused (domain fronting).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from runtime.destination_name import Named
from runtime.dns_stub import NameMap
from runtime.network_policy import Decision, Destination, IPAddress, NetworkPolicy

# The host side's resolution of a name: its addresses, in the order to try them. Raises
# LookupError when the name does not resolve.
Resolver = Callable[[str], Sequence[IPAddress]]


@dataclass(frozen=True)
class Verdict:
    decision: Decision
    # The name the connection is for, if it has one.
    name: str | None
    # Where the host side may connect, in order; empty when the connection is refused.
    connect_to: tuple[IPAddress, ...] = ()


@dataclass(frozen=True)
class OutboundJudge:
    """One sandbox's judge: its policy, its names, and the host's resolver."""

    policy: NetworkPolicy
    names: NameMap
    resolve: Resolver

    def judge(self, original: IPAddress, port: int, first: Named | None) -> Verdict:
        """The verdict on a connection the sandbox made to `original`:`port`. `first` is what
        its first bytes name, or None when the caller decides before they come (a stand-in
        address names the destination already; a server that speaks first gets none): call
        again when they come, and cut the connection if the verdict then is a refusal."""
        looked_up = self.names.name_for(original)
        if looked_up is None and self.names.holds(original):
            why = f"{original} stands in for no name now; the sandbox must look the name up again"
            return Verdict(Decision(False, "stale stand-in", why), None)
        sent = first.name if first is not None else None
        if looked_up is not None and sent is not None and sent != looked_up:
            assert first is not None
            why = (
                f"looked up {looked_up}, then named {sent} in its {first.protocol.upper()} request"
            )
            return Verdict(Decision(False, "name mismatch", why), looked_up)
        name = looked_up or sent
        if name is None:
            decision = self.policy.decide(Destination(None, original, port))
            return Verdict(decision, None, (original,) if decision.allowed else ())
        return self._judge_name(name, port)

    def _judge_name(self, name: str, port: int) -> Verdict:
        try:
            addresses = tuple(self.resolve(name))
        except LookupError as e:
            return Verdict(Decision(False, "no address", f"{name} does not resolve ({e})"), name)
        if not addresses:
            return Verdict(Decision(False, "no address", f"{name} has no address"), name)
        decisions = [(a, self.policy.decide(Destination(name, a, port))) for a in addresses]
        allowed = [(address, decision) for address, decision in decisions if decision.allowed]
        if not allowed:
            return Verdict(decisions[0][1], name)
        return Verdict(allowed[0][1], name, tuple(address for address, _ in allowed))
