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
import fcntl
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

# Where the host side connects: an address and port, to a connected non-blocking socket. Tests
# replace it to reach their own servers.
Connect = Callable[[IPAddress, int], Awaitable[socket.socket]]

# What a relay moves at once, through a pipe of this size per direction: what one connection
# holds on the host beyond its sockets' own buffers. From a local server, spliced through 64 KiB
# pipes 1028 MB/s, 256 KiB 1437 MB/s, 1 MiB 1498 MB/s (copied through this process: 760 MB/s).
CHUNK: Final = 256 * 1024
F_SETPIPE_SZ: Final = 1031  # <linux/fcntl.h>
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


async def open_to(address: IPAddress, port: int) -> socket.socket:
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, (str(address), port))
    except BaseException:
        sock.close()
        raise
    return sock


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
        connections: set[asyncio.Task[None]] = set()
        try:
            while True:
                sock, _ = await loop.sock_accept(listener)
                sock.setblocking(False)
                task = asyncio.ensure_future(self._accepted(sock))
                connections.add(task)
                task.add_done_callback(connections.discard)
        finally:
            loop.remove_reader(dns.fileno())
            for task in connections:
                task.cancel()

    # --- connections ---------------------------------------------------------------------

    async def _accepted(self, sock: socket.socket) -> None:
        started = time.time()
        host, port = sock.getsockname()[:2]
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
        with sock:
            if self._open >= self._limits.connections:
                why = f"the sandbox has {self._open} connections open, its limit"
                if self._judge.names.holds(original):
                    record = replace(record, destination_name=self._judge.names.name_for(original))
                else:
                    record = replace(record, destination_address=str(original))
                await self._refuse(sock, record, Decision(False, "connection limit", why), None)
                return
            self._open += 1
            try:
                await self._handle(sock, original, port, record)
            finally:
                self._open -= 1

    async def _handle(
        self, sock: socket.socket, original: IPAddress, port: int, record: ConnectionRecord
    ) -> None:
        stand_in = self._judge.names.holds(original)
        # Where the sandbox asked to go, unless that was a stand-in (then its name says it).
        record = replace(record, destination_address=None if stand_in else str(original))
        wait = self._limits.stand_in_wait if stand_in else self._limits.first_bytes_wait
        first, named = await self._first_bytes(sock, wait)
        if isinstance(named, Malformed):
            why = f"its first bytes are not a {named.protocol.upper()} request: {named.reason}"
            record = replace(record, protocol=named.protocol)
            await self._refuse(sock, record, Decision(False, "malformed", why), None)
            return
        loop = asyncio.get_running_loop()
        verdict: Verdict = await loop.run_in_executor(
            None, self._judge.judge, original, port, named
        )
        protocol: Protocol = named.protocol if named is not None else "tcp"
        record = replace(record, protocol=protocol, destination_name=verdict.name)
        if not verdict.decision.allowed:
            await self._refuse(sock, record, verdict.decision, protocol)
            return
        upstream = await self._open_upstream(verdict, port)
        if isinstance(upstream, Decision):
            await self._refuse(sock, record, upstream, protocol)
            return
        address, up = upstream
        record = replace(
            record,
            destination_address=str(address),
            allowed=True,
            rule=verdict.decision.rule,
            reason=verdict.decision.reason,
        )
        # A stand-in's connection that was silent so far was let by on the name it looked up;
        # its first bytes, whenever they come, must not name another host.
        late_check = (original, port) if stand_in and not first else None
        with up:
            activity, refusal = await self._relay(sock, up, first, late_check)
        sent, received = activity.counts
        if activity.late_protocol is not None:
            record = replace(record, protocol=activity.late_protocol)
        if refusal is not None:
            decision = refusal.decision
            record = replace(
                record,
                allowed=False,
                rule=decision.rule,
                reason=decision.reason,
                protocol=refusal.protocol,
            )
        self._report(
            replace(
                record,
                bytes_sent=sent,
                bytes_received=received,
                duration=time.time() - record.started,
            )
        )

    async def _first_bytes(
        self, sock: socket.socket, wait: float | None
    ) -> tuple[bytes, Named | Malformed | None]:
        """What the connection sends first, and what it names: None when it sent nothing
        within `wait` seconds (None: however long it takes), or ended. Once it began, its whole
        first request must come within `first_request` seconds."""
        loop = asyncio.get_running_loop()
        first = b""
        deadline = None
        while len(first) < MAX_FIRST_BYTES:
            timeout = wait if deadline is None else deadline - time.monotonic()
            try:
                chunk = await asyncio.wait_for(
                    loop.sock_recv(sock, MAX_FIRST_BYTES - len(first)), timeout
                )
            except TimeoutError:
                break
            except OSError:
                chunk = b""
            if not chunk:
                break
            first += chunk
            deadline = deadline or time.monotonic() + self._limits.first_request
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
    ) -> tuple[IPAddress, socket.socket] | Decision:
        errors = []
        for address in verdict.connect_to:
            try:
                up = await asyncio.wait_for(self._connect(address, port), self._limits.connect)
            except (OSError, TimeoutError) as e:
                errors.append(f"{address}: {e or 'timed out'}")
                continue
            return address, up
        target = verdict.name or verdict.connect_to[0]
        why = f"{target} port {port} did not answer ({'; '.join(errors)})"
        return Decision(False, "unreachable", why)

    async def _relay(
        self,
        sock: socket.socket,
        up: socket.socket,
        first: bytes,
        late_check: tuple[IPAddress, int] | None,
    ) -> tuple[_Activity, _LateRefusal | None]:
        """Both ways until both ends have finished, either fails, or neither has sent anything
        for `idle` seconds: the bytes each way, and the refusal if the sandbox's first bytes,
        checked late (`late_check`: the address and port it asked for), named another host. A
        failure (a reset) resets the other end too, as an open network would show it."""
        loop = asyncio.get_running_loop()
        activity = _Activity(len(first))
        try:
            await asyncio.wait_for(loop.sock_sendall(up, first), self._limits.idle)
        except (OSError, TimeoutError):
            _reset(sock)
            return activity, None
        outward = (
            self._checked_then_spliced(sock, up, activity, late_check)
            if late_check
            else _splice_pump(sock, up, activity, 0)
        )
        pumps = [
            asyncio.ensure_future(outward),
            asyncio.ensure_future(_splice_pump(up, sock, activity, 1)),
        ]
        refusal = None
        try:
            while not all(pump.done() for pump in pumps):
                quiet = time.monotonic() - activity.last
                if quiet >= self._limits.idle:
                    break
                failed = [p.exception() for p in pumps if p.done() and p.exception() is not None]
                if failed:
                    if isinstance(failed[0], _LateRefusal):
                        refusal = failed[0]
                    _reset(sock)
                    _reset(up)
                    break
                await asyncio.wait(
                    pumps, timeout=self._limits.idle - quiet, return_when="FIRST_COMPLETED"
                )
        finally:
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
        return activity, refusal

    async def _checked_then_spliced(
        self,
        sock: socket.socket,
        up: socket.socket,
        activity: _Activity,
        asked_for: tuple[IPAddress, int],
    ) -> None:
        """The sandbox's side of a connection let by before it sent anything: its first bytes
        (whenever they come; a server-first protocol's client answers the server) are read and
        judged again, then everything else is spliced. A TLS server name or HTTP Host naming
        another host than the one looked up raises _LateRefusal, as does a malformed one."""
        loop = asyncio.get_running_loop()
        first, answer = await self._first_bytes(sock, None)
        activity.moved(0, len(first))
        if isinstance(answer, Malformed):
            why = f"its first bytes are not a {answer.protocol.upper()} request: {answer.reason}"
            raise _LateRefusal(Decision(False, "malformed", why), answer.protocol)
        if answer is not None and answer.protocol != "tcp":
            verdict = await loop.run_in_executor(None, self._judge.judge, *asked_for, answer)
            if not verdict.decision.allowed:
                raise _LateRefusal(verdict.decision, answer.protocol)
        if answer is not None:
            activity.late_protocol = answer.protocol
        await loop.sock_sendall(up, first)
        if first:
            await _splice_pump(sock, up, activity, 0)
        else:
            up.shutdown(socket.SHUT_WR)

    async def _refuse(
        self,
        sock: socket.socket,
        record: ConnectionRecord,
        decision: Decision,
        protocol: Protocol | None,
    ) -> None:
        """Tells the sandbox why, where its protocol lets it be told (plain HTTP gets a 403
        saying so), cuts the connection, and logs it."""
        if protocol == "http":
            body = f"Hopx sandbox: connection refused: {decision.reason}\n".encode()
            answer = (
                b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain; charset=utf-8\r\n"
                + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            # A few hundred bytes fit in any socket buffer; a sandbox that does not read them
            # in a second is not waited for.
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(asyncio.get_running_loop().sock_sendall(sock, answer), 1)
        else:
            # A reset, not an orderly end: the client sees a refusal, not an empty answer.
            _reset(sock)
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


class _LateRefusal(Exception):
    """A connection's first bytes, judged after it was let by, refused it."""

    def __init__(self, decision: Decision, protocol: Protocol) -> None:
        super().__init__(decision.reason)
        self.decision = decision
        self.protocol = protocol


class _Activity:
    """Bytes each way (0: from the sandbox, 1: to it), when the last one moved, and what the
    connection speaks if that was learnt late."""

    def __init__(self, already_sent: int) -> None:
        self.counts = [already_sent, 0]
        self.last = time.monotonic()
        # What a connection let by before it sent anything turned out to speak.
        self.late_protocol: Protocol | None = None

    def moved(self, direction: int, n: int) -> None:
        self.counts[direction] += n
        self.last = time.monotonic()


async def _splice_pump(
    source: socket.socket, sink: socket.socket, activity: _Activity, direction: int
) -> None:
    """Moves `source` to `sink` until `source` ends, then ends `sink`'s sending side. The bytes
    go through a pipe with splice(2) and never enter this process: on a small machine, copying
    them through it halved what a connection could carry."""
    read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    flags = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK
    try:
        with contextlib.suppress(OSError):  # a user over its pipe quota keeps the default size
            fcntl.fcntl(write_end, F_SETPIPE_SZ, CHUNK)
        held = 0  # in the pipe, not yet in `sink`
        ended = False
        while True:
            took = 0
            if not ended:
                try:
                    took = os.splice(source.fileno(), write_end, CHUNK, flags=flags)
                except BlockingIOError:  # nothing to read, or the pipe is full
                    pass
                else:
                    ended = took == 0
                    held += took
                    activity.moved(direction, took)
            if held:
                try:
                    gave = os.splice(read_end, sink.fileno(), held, flags=flags)
                except BlockingIOError:
                    await _ready(sink, writable=True)
                    continue
                held -= gave
                activity.last = time.monotonic()
            elif ended:
                sink.shutdown(socket.SHUT_WR)
                return
            elif not took:
                await _ready(source, writable=False)
    finally:
        os.close(read_end)
        os.close(write_end)


async def _ready(sock: socket.socket, writable: bool) -> None:
    loop = asyncio.get_running_loop()
    future = loop.create_future()

    def wake() -> None:
        if not future.done():
            future.set_result(None)

    fd = sock.fileno()
    if writable:
        loop.add_writer(fd, wake)
    else:
        loop.add_reader(fd, wake)
    try:
        await future
    finally:
        if writable:
            loop.remove_writer(fd)
        else:
            loop.remove_reader(fd)


def _reset(sock: socket.socket) -> None:
    """Makes the coming close a reset (RST), not an orderly end."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


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
