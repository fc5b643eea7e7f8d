"""Outbound network: what going through a sandbox's policy costs, against the same client on the
host itself, in the same run.

A server in a network namespace of its own (benchmarks/internet.py) at a public-looking address
sends whatever number of bytes a client asks for. The same client code runs in a Hopx kernel whose
`network_allow` names that address (its connections go through the namespace's interception and
the egress process) and as a plain process on the host (straight over the veth pair). Measured,
interleaved: a download of SIZE bytes (throughput), and a connection that asks for one byte
(from `connect()` to the byte: the setup a connection pays).

The client asks in a binary request (a zero byte, then the size), so the egress decides by the
address rule, as for any protocol it does not name.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

from benchmarks import measures
from benchmarks.internet import serve_at
from benchmarks.kernels import HOPX, kernelspecs
from benchmarks.stats import Metric, Samples

ADDRESS = "151.101.0.50"
PORT = 9000
HOST = "stock"  # the unsandboxed client is the "stock" column of the table

DOWNLOAD = Metric("download from a local server (through the policy) → MB/s", "MB/s", True)
SETUP = Metric("connect and get 1 byte (through the policy)", "s")
METRICS = [DOWNLOAD, SETUP]

SERVER = """
import socket, struct, sys, threading
chunk = bytes(1 << 20)

def serve(connection):
    with connection:
        request = b""
        while len(request) < 9:
            part = connection.recv(9 - len(request))
            if not part:
                return
            request += part
        left = struct.unpack("!Q", request[1:9])[0]
        while left:
            sent = connection.send(memoryview(chunk)[: min(left, len(chunk))])
            left -= sent

listener = socket.create_server((sys.argv[1], int(sys.argv[2])), backlog=64)
print("ready", flush=True)
while True:
    connection, _ = listener.accept()
    threading.Thread(target=serve, args=(connection,), daemon=True).start()
"""

# Runs in the kernel or on the host; prints one JSON document.
CLIENT = textwrap.dedent(
    """
    import json, socket, struct, time

    def fetch(size):
        started = time.perf_counter()
        with socket.create_connection(({address!r}, {port}), timeout=60) as s:
            s.sendall(b"\\0" + struct.pack("!Q", size))
            buffer, got = bytearray(1 << 20), 0
            while got < size:
                n = s.recv_into(buffer)
                if not n:
                    raise OSError("the server ended early")
                got += n
        return time.perf_counter() - started

    fetch(1)  # warm: the first lookup and connection of the process
    print(json.dumps({{
        "download_mb_s": {size} / fetch({size}) / 1e6,
        "setups": [fetch(1) for _ in range({setups})],
    }}))
    """
)


def measure(runs: int, size: int, setups: int, samples: Samples) -> dict[str, Any]:
    """`runs` rounds, each one download and `setups` one-byte connections per side."""
    code = CLIENT.format(address=ADDRESS, port=PORT, size=size, setups=setups)
    with (
        serve_at(ADDRESS, SERVER, ADDRESS, str(PORT)),
        kernelspecs({"network_allow": [f"{ADDRESS}:{PORT}"], "connection_log": ""}) as specs,
    ):
        km, kc = measures.started_kernel(specs, HOPX)
        try:
            kc.wait_for_ready(timeout=measures.TIMEOUT)
            _on_host(code)  # warm-up, both sides
            _in_kernel(kc, code)
            for _ in range(runs):
                for side, result in ((HOST, _on_host(code)), (HOPX, _in_kernel(kc, code))):
                    samples.add(DOWNLOAD, side, result["download_mb_s"])
                    for seconds in result["setups"]:
                        samples.add(SETUP, side, seconds)
        finally:
            kc.stop_channels()
            km.shutdown_kernel(now=True)
    return {"size_bytes": size, "setups_per_run": setups, "address": ADDRESS}


def _on_host(code: str) -> dict[str, Any]:
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=600
    )
    return dict(json.loads(run.stdout))


def _in_kernel(kc: Any, code: str) -> dict[str, Any]:
    output: list[str] = []

    def keep(message: dict[str, Any]) -> None:
        if message["msg_type"] == "stream":
            output.append(message["content"]["text"])

    reply = kc.execute_interactive(code, output_hook=keep, timeout=600)
    if reply["content"]["status"] != "ok":
        msg = f"the kernel's client failed: {reply['content'].get('evalue')}"
        raise RuntimeError(msg)
    return dict(json.loads("".join(output)))
