"""The network side of one sandbox, for its supervisor: the address it holds for its life and,
when its policy allows any outbound traffic, the egress process that carries it
(runtime.egress) and the namespace's interception (runtime.netns_setup).

The steps follow the supervisor's start, whose order they depend on:

1. `claim_address`: any time before the namespace is set up.
2. `start_egress`: before the supervisor enters the sandbox's network namespace, since the
   egress process must stay in the host's (an unprivileged process cannot come back).
3. `configure`: inside the namespace, before bubblewrap starts the kernel: the address, and for
   outbound access the local default route, the nftables table, and the listener and DNS socket
   handed over to the egress process.
4. `close`: on every exit path.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import json
import os
import socket
import subprocess
import sys
from typing import IO, Any

from runtime import libc, netns_setup
from runtime.claims import Claim
from runtime.connection_log import ConnectionRecord
from runtime.sandbox_address import AddressesExhausted, claim_address, parse_sandbox_network
from runtime.spec import SandboxSpec
from runtime.units import LimitError

# The transparent listener's port on the namespace's loopback: below the ephemeral range, away
# from the kernel's channel ports.
LISTENER_PORT = 20199
IP_TRANSPARENT = 19  # <linux/in.h>
# The most one record line from the egress process may be; a longer one is cut and dropped.
MAX_RECORD_LINE = 16 * 1024


INTERCEPTION_FIX = (
    "Install nftables (libnftables) and make sure the kernel has nf_tables and tproxy "
    "(modules nf_tables, nft_tproxy, nf_tproxy_ipv4)"
)


class NetworkSetupError(RuntimeError):
    """The sandbox's network could not be set up; the message says what to do first."""


class SandboxNetwork:
    def __init__(self, spec: SandboxSpec) -> None:
        self.spec = spec
        self.address: ipaddress.IPv4Address | None = None
        self._claim: Claim | None = None
        self._egress: subprocess.Popen[bytes] | None = None
        self._handover: socket.socket | None = None
        self._partial = b""
        # Whether the egress process's records have ended (it exited).
        self.records_ended = False

    @property
    def outbound(self) -> bool:
        """Whether the policy allows anything at all: the default, no rule, needs no egress."""
        return bool(self.spec.network_allow)

    def claim_address(self) -> ipaddress.IPv4Address:
        spec = self.spec
        try:
            network = parse_sandbox_network("sandbox_network", spec.sandbox_network)
            self._claim, self.address = claim_address(network, spec.address_claims_dir)
        except (LimitError, AddressesExhausted) as e:
            msg = f"Stop a kernel, or widen sandbox_network: {e}."
            raise NetworkSetupError(msg) from e
        except OSError as e:
            msg = (
                f"Make {spec.address_claims_dir} writable for the server's user: the sandbox's "
                f"address could not be claimed there ({e.strerror})."
            )
            raise NetworkSetupError(msg) from e
        return self.address

    def start_egress(self, uid: int | None) -> None:
        """Start the egress process, as `uid` when given (a root supervisor's sandbox uid:
        the process that parses the sandbox's bytes holds no privilege)."""
        if not self.outbound:
            return
        assert self.address is not None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        config = {
            "allow": list(self.spec.network_allow),
            "deny": list(self.spec.network_deny),
            "sandbox_network": self.spec.sandbox_network,
            "identity": {
                "kernel_id": self.spec.kernel_id,
                "sandbox_address": str(self.address),
                "kernelspec": self.spec.kernelspec_name,
                "notebook": self.spec.notebook,
                "user": self.spec.user,
            },
        }
        drop: dict[str, Any] = {}
        if uid is not None:
            drop = {"user": uid, "group": uid, "extra_groups": []}
        try:
            self._egress = subprocess.Popen(
                [sys.executable, "-I", "-m", "runtime.egress", str(theirs.fileno())],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                pass_fds=[theirs.fileno()],
                cwd="/",
                **drop,
            )
        except OSError as e:
            ours.close()
            msg = f"Report this: the sandbox's egress process could not start ({e})."
            raise NetworkSetupError(msg) from e
        finally:
            theirs.close()
        self._handover = ours
        stdin = self._egress.stdin
        assert stdin is not None
        stdin.write(json.dumps(config).encode() + b"\n")
        stdin.flush()  # and kept open: its end tells the egress process the sandbox is gone
        assert self._egress.stdout is not None
        os.set_blocking(self._egress.stdout.fileno(), False)

    def configure(self) -> None:
        """Inside the sandbox's network namespace, before the kernel starts."""
        assert self.address is not None
        try:
            netns_setup.give_address(self.address, route_everything=self.outbound)
            if not self.outbound:
                return
            listener, dns = _intercept(self.address)
        except OSError as e:
            where = f"the sandbox's network for {self.address}"
            msg = f"{INTERCEPTION_FIX}: {where} could not be set up ({e})."
            raise NetworkSetupError(msg) from e
        assert self._handover is not None
        with listener, dns:
            socket.send_fds(self._handover, [b"sockets"], [listener.fileno(), dns.fileno()])
        self._handover.close()
        self._handover = None

    @property
    def records_pipe(self) -> IO[bytes] | None:
        """Where the egress process's records come from, to wait on."""
        return self._egress.stdout if self._egress is not None else None

    def read_records(self) -> list[ConnectionRecord]:
        """The records the egress process has written since the last call."""
        pipe = self.records_pipe
        if pipe is None:
            return []
        try:
            data = os.read(pipe.fileno(), 1 << 20)
        except BlockingIOError:
            data = None
        if data == b"" and not self.records_ended:
            # The egress process has ended (its pipe closes as it exits): reap it now, not
            # at the sandbox's end, so that it does not linger as a zombie.
            self.records_ended = True
            assert self._egress is not None
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._egress.wait(1)
        self._partial += data or b""
        *lines, self._partial = self._partial.split(b"\n")
        if len(self._partial) > MAX_RECORD_LINE:
            self._partial = b""
        records = []
        for line in lines:
            with contextlib.suppress(ValueError, TypeError):
                records.append(ConnectionRecord(**json.loads(line)))
        return records

    def close(self) -> None:
        if self._handover is not None:
            self._handover.close()
            self._handover = None
        if self._egress is not None:
            with contextlib.suppress(OSError):
                self._egress.kill()
            self._egress.wait()
            for pipe in (self._egress.stdin, self._egress.stdout):
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        pipe.close()
            self._egress = None
        if self._claim is not None:
            self._claim.release()
            self._claim = None


def _intercept(address: ipaddress.IPv4Address) -> tuple[socket.socket, socket.socket]:
    """The namespace's nftables table, and the transparent listener and DNS socket it hands
    the sandbox's traffic to."""
    netns_setup.intercept(address, LISTENER_PORT)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
    listener.bind(("127.0.0.1", LISTENER_PORT))
    listener.listen(128)
    dns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dns.bind(("0.0.0.0", 53))  # noqa: S104 - the sandbox's own namespace, every address
    return listener, dns


def check_interception() -> None:
    """What `jupyter hopx doctor` runs in a child process: in a network namespace of its own
    (for good), set up what a sandbox with outbound access gets, and see a connection to a
    public address land on the listener with that address. Raises OSError if it does not."""
    libc.enter_private_network(unprivileged=os.geteuid() != 0)
    own = ipaddress.IPv4Address("100.64.0.1")
    netns_setup.give_address(own)
    listener, dns = _intercept(own)
    destination = ("192.0.2.1", 80)  # TEST-NET-1: never routed anywhere, and here not even tried
    with listener, dns, socket.create_connection(destination, timeout=5):
        listener.settimeout(5)
        accepted, peer = listener.accept()
        with accepted:
            if accepted.getsockname() != destination or peer[0] != str(own):
                msg = f"a connection to {destination} arrived as {accepted.getsockname()}"
                raise OSError(errno.EPROTO, msg)


if __name__ == "__main__":
    try:
        check_interception()
    except OSError as e:
        print(e, file=sys.stderr)
        sys.exit(1)
