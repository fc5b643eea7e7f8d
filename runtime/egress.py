"""A sandbox's egress: the host side of its outbound network, in a process that stays in the
host's network namespace.

It holds two sockets the namespace's owner made inside the sandbox's namespace (docs:
network-design.md): the transparent listener every outbound TCP connection of the sandbox
lands on, and the DNS stub's UDP socket. For each connection it reads what the sandbox sends
first (a TLS server name, an HTTP Host), asks the judge (runtime.outbound) whether and where it
may go, connects there from the host, relays both ways and logs one record; for each lookup it
answers a stand-in address or NXDOMAIN.

Everything here is paid for by the host, not the sandbox's cgroup, so each cost has a bound:
connections at once, bytes and seconds before a decision, seconds to connect, seconds idle.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import signal
import socket
import struct
import sys
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, replace
from typing import Final

from runtime import libc
from runtime.connection_log import ConnectionRecord, Protocol
from runtime.destination_name import (
    MAX_FIRST_BYTES,
    NEED_MORE,
    Malformed,
    Named,
    destination_name,
)
from runtime.dns_stub import (
    NOERROR,
    NXDOMAIN,
    TYPE_A,
    BadQuery,
    NameMap,
    error_response,
    parse_query,
    response,
)
from runtime.network_policy import Decision, IPAddress, NetworkPolicy, parse_rules
from runtime.outbound import OutboundJudge, Verdict
from runtime.sandbox_address import parse_sandbox_network

# Where the host side connects: an address and port, to an open stream pair. Tests replace it
# to reach their own servers; the real one is asyncio's.
Connect = Callable[[IPAddress, int], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]

# What a relay reads at once, and how much a stream buffers before it stops reading: a few of these
# per direction is what one connection can hold on the host (about 2 MiB). From a local server,
# 64 KiB chunks relayed 341 MB/s, 256 KiB 632-760 MB/s and 1 MiB 790 MB/s.
CHUNK: Final = 256 * 1024
PROCESS_NAME: Final = "hopx-egress"
# A DNS query over UDP, EDNS included, fits in this; the stub reads this many at a time.
MAX_QUERY: Final = 4096
QUERIES_AT_ONCE: Final = 64
IP_PKTINFO: Final = 8  # <linux/in.h>; Python's socket module lacks the name on some builds
# A refused lookup of the same name is logged once in this many seconds (the stub's TTL): a
# resolver retrying, or a loop asking, does not flood the log.
DENIAL_LOG_INTERVAL: Final = 30.0
DENIALS_REMEMBERED: Final = 1024


@dataclass(frozen=True)
class EgressLimits:
    """What one sandbox's egress spends at most."""

    connections: int = 64  # open at once; more are refused at once
    # Seconds to wait for the first bytes of a connection to an address the sandbox chose
    # itself, before deciding by that address alone (a server that speaks first gets none).
    first_bytes_wait: float = 1.0
    # The same for a stand-in address, whose name is known already: only a check for a
    # mismatching name is waited for.
    stand_in_wait: float = 0.25
    # Seconds a connection may take to send a whole first request once it began one.
    first_request: float = 10.0
    connect: float = 10.0
    idle: float = 600.0  # seconds without a byte either way


@dataclass(frozen=True)
class SandboxIdentity:
    """What every record of this sandbox carries."""

    kernel_id: str
    sandbox_address: str
    kernelspec: str = ""
    notebook: str = ""
    user: str = ""


Report = Callable[[ConnectionRecord], None]


async def open_to(
    address: IPAddress, port: int
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(str(address), port, limit=CHUNK)


class Egress:
    """One sandbox's egress: `serve` runs until cancelled."""

    def __init__(
        self,
        judge: OutboundJudge,
        identity: SandboxIdentity,
        report: Report,
        limits: EgressLimits = EgressLimits(),
        connect: Connect = open_to,
    ) -> None:
        self._judge = judge
        self._identity = identity
        self._report = report
        self._limits = limits
        self._connect = connect
        self._open = 0
        self._denials: OrderedDict[str, float] = OrderedDict()

    async def serve(self, listener: socket.socket, dns: socket.socket) -> None:
        listener.setblocking(False)
        dns.setblocking(False)
        # Which address each query went to, to answer from it: a resolver that asked 8.8.8.8
        # takes an answer only from 8.8.8.8.
        dns.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        loop = asyncio.get_running_loop()
        loop.add_reader(dns.fileno(), self._on_queries, dns)
        server = await asyncio.start_server(self._accepted, sock=listener, limit=CHUNK)
        try:
            await server.serve_forever()
        finally:
            loop.remove_reader(dns.fileno())
            server.close()

    # --- connections ---------------------------------------------------------------------

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        started = time.time()
        host, port = writer.get_extra_info("sockname")[:2]
        original = ipaddress.ip_address(host)
        record = ConnectionRecord(
            started=started,
            protocol="tcp",
            destination_name=None,
            destination_address=None,
            port=port,
            allowed=False,
            rule="",
            reason="",
            **asdict(self._identity),
        )
        if self._open >= self._limits.connections:
            why = f"the sandbox has {self._open} connections open, its limit"
            await self._refuse(writer, record, Decision(False, "connection limit", why), None)
            return
        self._open += 1
        try:
            await self._handle(reader, writer, original, port, record)
        finally:
            self._open -= 1
            writer.close()

    async def _handle(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        original: IPAddress,
        port: int,
        record: ConnectionRecord,
    ) -> None:
        stand_in = self._judge.names.holds(original)
        # Where the sandbox asked to go, unless that was a stand-in (then its name says it).
        record = replace(record, destination_address=None if stand_in else str(original))
        first, named = await self._first_bytes(reader, stand_in)
        if isinstance(named, Malformed):
            why = f"its first bytes are not a {named.protocol.upper()} request: {named.reason}"
            record = replace(record, protocol=named.protocol)
            await self._refuse(writer, record, Decision(False, "malformed", why), None)
            return
        loop = asyncio.get_running_loop()
        verdict: Verdict = await loop.run_in_executor(
            None, self._judge.judge, original, port, named
        )
        protocol: Protocol = named.protocol if named is not None else "tcp"
        record = replace(record, protocol=protocol, destination_name=verdict.name)
        if not verdict.decision.allowed:
            await self._refuse(writer, record, verdict.decision, protocol)
            return
        upstream = await self._open_upstream(verdict, port)
        if isinstance(upstream, Decision):
            await self._refuse(writer, record, upstream, protocol)
            return
        address, (up_reader, up_writer) = upstream
        record = replace(
            record,
            destination_address=str(address),
            allowed=True,
            rule=verdict.decision.rule,
            reason=verdict.decision.reason,
        )
        sent, received = await self._relay(reader, writer, up_reader, up_writer, first)
        self._report(
            replace(
                record,
                bytes_sent=sent,
                bytes_received=received,
                duration=time.time() - record.started,
            )
        )

    async def _first_bytes(
        self, reader: asyncio.StreamReader, stand_in: bool
    ) -> tuple[bytes, Named | Malformed | None]:
        """What the connection sends before the decision, and what it names: None when it
        sent nothing in time (decide by address, or by the stand-in's name) or ended."""
        first = b""
        wait = self._limits.stand_in_wait if stand_in else self._limits.first_bytes_wait
        deadline = time.monotonic() + self._limits.first_request
        while len(first) < MAX_FIRST_BYTES:
            timeout = wait if not first else deadline - time.monotonic()
            try:
                chunk = await asyncio.wait_for(reader.read(MAX_FIRST_BYTES - len(first)), timeout)
            except TimeoutError:
                break
            if not chunk:
                break
            first += chunk
            answer = destination_name(first)
            if answer is not NEED_MORE:
                assert isinstance(answer, Named | Malformed)
                return first, answer
        if not first:
            return first, None
        # A request begun and not finished within the bounds names nothing it may be let by on.
        return first, Malformed("http" if first[:1].isalpha() else "tls", "incomplete request")

    async def _open_upstream(
        self, verdict: Verdict, port: int
    ) -> tuple[IPAddress, tuple[asyncio.StreamReader, asyncio.StreamWriter]] | Decision:
        errors = []
        for address in verdict.connect_to:
            try:
                streams = await asyncio.wait_for(self._connect(address, port), self._limits.connect)
            except (OSError, TimeoutError) as e:
                errors.append(f"{address}: {e or 'timed out'}")
                continue
            return address, streams
        target = verdict.name or verdict.connect_to[0]
        why = f"{target} port {port} did not answer ({'; '.join(errors)})"
        return Decision(False, "unreachable", why)

    async def _relay(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
        first: bytes,
    ) -> tuple[int, int]:
        """Both ways until both ends have finished or neither has sent anything for `idle`
        seconds; the bytes each way."""
        counts = [len(first), 0]
        last = [time.monotonic()]
        up_writer.write(first)

        async def pump(
            source: asyncio.StreamReader, sink: asyncio.StreamWriter, index: int
        ) -> None:
            with contextlib.suppress(OSError):
                while chunk := await source.read(CHUNK):
                    counts[index] += len(chunk)
                    last[0] = time.monotonic()
                    sink.write(chunk)
                    await sink.drain()
                if sink.can_write_eof():
                    sink.write_eof()

        pumps = asyncio.gather(pump(reader, up_writer, 0), pump(up_reader, writer, 1))
        try:
            while not pumps.done():
                quiet = time.monotonic() - last[0]
                if quiet >= self._limits.idle:
                    pumps.cancel()
                    break
                await asyncio.wait([pumps], timeout=self._limits.idle - quiet)
        finally:
            up_writer.close()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await pumps
        return counts[0], counts[1]

    async def _refuse(
        self,
        writer: asyncio.StreamWriter,
        record: ConnectionRecord,
        decision: Decision,
        protocol: Protocol | None,
    ) -> None:
        """Tells the sandbox why, where its protocol lets it be told (plain HTTP gets a 403
        saying so), cuts the connection, and logs it."""
        if protocol == "http":
            body = f"Hopx sandbox: connection refused: {decision.reason}\n".encode()
            writer.write(
                b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain; charset=utf-8\r\n"
                + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            with contextlib.suppress(OSError):
                await writer.drain()
        else:
            # A reset, not an orderly end: the client sees a refusal, not an empty answer.
            sock = writer.get_extra_info("socket")
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.close()
        self._report(
            replace(
                record,
                allowed=False,
                rule=decision.rule,
                reason=decision.reason,
                duration=time.time() - record.started,
            )
        )

    # --- lookups -------------------------------------------------------------------------

    def _on_queries(self, dns: socket.socket) -> None:
        """Answers the queries waiting, a bounded number at a time (the loop has connections
        to serve too), each from the address it was sent to."""
        for _ in range(QUERIES_AT_ONCE):
            try:
                packet, ancillary, _flags, sender = dns.recvmsg(MAX_QUERY, socket.CMSG_SPACE(12))
            except BlockingIOError:
                return
            except OSError:
                continue
            answer = self.answer(packet)
            if answer is None:
                continue
            sent_to = next(
                (
                    data[8:12]
                    for level, kind, data in ancillary
                    if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(data) >= 12
                ),
                None,
            )
            with contextlib.suppress(OSError):
                if sent_to is None:
                    dns.sendto(answer, sender)
                else:
                    source = struct.pack("=i4s4s", 0, sent_to, bytes(4))
                    dns.sendmsg([answer], [(socket.IPPROTO_IP, IP_PKTINFO, source)], 0, sender)

    def answer(self, packet: bytes) -> bytes | None:
        """The stub's answer to one packet (None: not a query, dropped). A name the policy
        mentions gets its stand-in address; any other gets NXDOMAIN, logged."""
        try:
            query = parse_query(packet)
        except BadQuery as e:
            return error_response(e)
        except ValueError:
            return None
        decision = self._judge.policy.decide_lookup(query.name)
        if not decision.allowed:
            if self._logged_lately(query.name):
                return response(query, NXDOMAIN)
            self._report(
                ConnectionRecord(
                    started=time.time(),
                    protocol="dns",
                    destination_name=query.name,
                    destination_address=None,
                    port=None,
                    allowed=False,
                    rule=decision.rule,
                    reason=decision.reason,
                    **asdict(self._identity),
                )
            )
            return response(query, NXDOMAIN)
        if query.qtype != TYPE_A:
            return response(query, NOERROR)  # the name exists, with no record of that type
        return response(query, NOERROR, (self._judge.names.address_for(query.name),))

    def _logged_lately(self, name: str) -> bool:
        now = time.monotonic()
        last = self._denials.get(name)
        if last is not None and now - last < DENIAL_LOG_INTERVAL:
            return True
        self._denials[name] = now
        self._denials.move_to_end(name)
        while len(self._denials) > DENIALS_REMEMBERED:
            self._denials.popitem(last=False)
        return False


# --- the egress process ------------------------------------------------------------------------


def host_addresses() -> frozenset[IPAddress]:
    """Every address of this host's own interfaces (its network namespace's), which no sandbox
    may reach whatever the rules say."""
    found: set[IPAddress] = set()
    with contextlib.suppress(OSError), open("/proc/net/fib_trie") as f:
        previous = ""
        for line in f:
            # A local address is the leaf line just above its "/32 host LOCAL" line.
            if "/32 host LOCAL" in line:
                with contextlib.suppress(ValueError):
                    found.add(ipaddress.ip_address(previous.rsplit(maxsplit=1)[-1]))
            previous = line
    with contextlib.suppress(OSError), open("/proc/net/if_inet6") as f:
        for line in f:
            hexed = line.split()[0]
            with contextlib.suppress(ValueError):
                found.add(ipaddress.IPv6Address(int(hexed, 16)))
    return frozenset(found)


def resolve_on_host(name: str) -> list[IPAddress]:
    """The host's own resolution of `name`, IPv4 first."""
    try:
        infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise LookupError(str(e)) from e
    addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))
    return sorted(addresses, key=lambda a: a.version)


def main() -> int:
    """`python -m runtime.egress HANDOVER_FD`, started by a sandbox's supervisor before it
    enters the sandbox's network namespace. stdin: the configuration (one JSON line), then
    nothing; its end means the supervisor is gone, and the egress ends too. The sandbox's two
    sockets arrive on HANDOVER_FD. stdout: one JSON line for each record, for the supervisor
    to log and report."""
    libc.prctl(libc.PR_SET_PDEATHSIG, signal.SIGKILL)
    with open("/proc/self/comm", "w") as f:
        f.write(PROCESS_NAME)
    handover = socket.socket(fileno=int(sys.argv[1]))
    config = json.loads(sys.stdin.buffer.readline(1 << 20))
    policy = NetworkPolicy(
        allow=parse_rules("network_allow", config["allow"]),
        deny=parse_rules("network_deny", config["deny"]),
        sandbox_network=parse_sandbox_network("sandbox_network", config["sandbox_network"]),
        host_addresses=host_addresses(),
    )
    _, fds, _, _ = socket.recv_fds(handover, 16, 2)
    handover.close()
    if len(fds) != 2:
        return 2
    listener, dns = (socket.socket(fileno=fd) for fd in fds)

    def report(record: ConnectionRecord) -> None:
        line = json.dumps(asdict(record)) + "\n"
        with contextlib.suppress(OSError):
            sys.stdout.write(line)
            sys.stdout.flush()

    egress = Egress(
        OutboundJudge(policy, NameMap(), resolve_on_host),
        SandboxIdentity(**config["identity"]),
        report,
    )
    asyncio.run(_serve_until_stdin_ends(egress, listener, dns))
    return 0


async def _serve_until_stdin_ends(
    egress: Egress, listener: socket.socket, dns: socket.socket
) -> None:
    loop = asyncio.get_running_loop()
    ended = asyncio.Event()

    def check_stdin() -> None:
        if not os.read(0, 4096):
            loop.remove_reader(0)
            ended.set()

    os.set_blocking(0, False)
    loop.add_reader(0, check_stdin)
    serving = asyncio.ensure_future(egress.serve(listener, dns))
    await asyncio.wait(
        [serving, asyncio.ensure_future(ended.wait())], return_when="FIRST_COMPLETED"
    )
    serving.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await serving


if __name__ == "__main__":
    sys.exit(main())
