"""The TCP ports servers in a sandbox listen on, read from outside it: /proc/<pid>/net/tcp of
any process in its network namespace (its supervisor's) lists that namespace's sockets, so the
Jupyter server can show a notebook's servers without asking the sandbox anything.

Ports from the range the system hands out at random (32768 and up by default) are left out:
the kernel itself listens on some (ipykernel's IOPub pipe, its debugger), and a server meant to
be visited picks a port of its own (Dash 8050, Bokeh 5006, TensorBoard 6006, ...).
"""

from __future__ import annotations

from collections.abc import Iterable

_LISTEN = "0A"  # TCP_LISTEN, as /proc/net/tcp writes socket states
_EPHEMERAL_FROM = 32768  # Linux's default ip_local_port_range starts here


def listening_ports(pid: int, reserved: Iterable[int] = ()) -> list[int]:
    """The ports of the listening TCP sockets (IPv4 and IPv6) in `pid`'s network namespace,
    below the ephemeral range and without `reserved` ones (the kernel's channels, the egress's
    listener); [] if `pid` has gone."""
    ports: set[int] = set()
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{table}") as f:
                lines = f.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 3 and fields[3] == _LISTEN:
                port = int(fields[1].rsplit(":", 1)[1], 16)
                if port < _EPHEMERAL_FROM:
                    ports.add(port)
    return sorted(ports - set(reserved))
