"""Each sandbox's network, seen from real kernels: an address of its own from `sandbox_network`,
unique among running sandboxes, that its own servers can use, and no path to another's."""

from __future__ import annotations

import getpass
import ipaddress
import json
import os
import signal
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from internet_harness import WEB_SERVER, fetch_code, serve_at
from test_cli import hopx

from conftest import EGRESS_NAME, Kernel, assert_no_leaks, hopx_processes, wait_until
from server_harness import Server

OWN_ADDRESS_PROBE = textwrap.dedent(
    """
    import errno, json, socket
    address = {address!r}
    server = socket.create_server((address, 8000))
    client = socket.create_connection((address, 8000), timeout=5)
    accepted, peer = server.accept()
    client.sendall(b"to myself")
    seen = {{"peer": peer[0], "got": accepted.recv(100).decode()}}
    try:
        socket.create_connection(({other!r}, 8000), timeout=5)
        seen["other"] = "connected"
    except OSError as e:
        seen["other"] = errno.errorcode[e.errno]
    print(json.dumps(seen))
    """
)


def address_of(kernel: Kernel) -> str:
    supervisor = kernel.km.provisioner.supervisor
    assert supervisor is not None
    return str(supervisor.started["address"])


def test_each_sandbox_has_an_address_of_its_own_that_its_servers_can_use(
    start_kernel: Callable[..., Kernel],
) -> None:
    first = start_kernel(sandbox_network="10.77.0.0/29")
    second = start_kernel(sandbox_network="10.77.0.0/29")
    addresses = [address_of(first), address_of(second)]
    network = ipaddress.ip_network("10.77.0.0/29")
    assert all(ipaddress.ip_address(a) in network for a in addresses), addresses
    assert len(set(addresses)) == 2, addresses
    # The state record the host tools read says it too.
    record = json.loads((first.state_dir / "sandbox.json").read_text())
    assert record["address"] == addresses[0]

    seen = first.value(OWN_ADDRESS_PROBE.format(address=addresses[0], other=addresses[1]))
    assert seen == {"peer": addresses[0], "got": "to myself", "other": "ENETUNREACH"}


def test_an_address_is_free_again_once_its_sandbox_has_ended(
    start_kernel: Callable[..., Kernel],
) -> None:
    """A block of two usable addresses: a third sandbox fails with what to do, and gets one
    as soon as another has stopped."""
    kernels = [start_kernel(sandbox_network="10.77.1.0/30") for _ in range(2)]
    taken = [address_of(k) for k in kernels]
    assert sorted(taken) == ["10.77.1.1", "10.77.1.2"]
    try:
        start_kernel(sandbox_network="10.77.1.0/30")
    except RuntimeError as e:
        message = str(e)
    else:
        message = "started"
    assert message.startswith("Stop a kernel, or widen sandbox_network: ")
    assert "all 2 sandbox addresses of 10.77.1.0/30 are in use" in message
    kernels[0].km.shutdown_kernel(now=True)
    third = start_kernel(sandbox_network="10.77.1.0/30")
    assert address_of(third) == taken[0]


LOCALHOST_PROBE = """
import json, socket
bound = []
for family in (socket.AF_INET, socket.AF_INET6):
    try:
        [*_, address] = socket.getaddrinfo("localhost", 0, family, socket.SOCK_STREAM)[0]
    except socket.gaierror:
        bound.append("no address")
        continue
    with socket.socket(family) as s:
        try:
            s.bind(address)
            bound.append(address[0])
        except OSError as e:
            bound.append(f"{address[0]}: {e.strerror}")
print(json.dumps(bound))
"""


def test_localhost_names_only_the_address_families_the_sandbox_has(
    start_kernel: Callable[..., Kernel],
) -> None:
    """Each address localhost names can be bound (a server asking for IPv6 localhost gets no
    address rather than one it cannot use): with outbound access the sandbox has no IPv6."""
    plain = start_kernel()
    assert plain.value(LOCALHOST_PROBE) == ["127.0.0.1", "::1"]
    outbound = start_kernel(network_allow=["151.101.0.0/16:80"], connection_log="")
    assert outbound.value(LOCALHOST_PROBE) == ["127.0.0.1", "no address"]


@dataclass(frozen=True)
class Internet:
    """A web server at a public-looking address, in a network namespace the test made and
    reached from the host by one /32 route over a veth pair: nothing leaves the machine."""

    address: str
    port: int


@pytest.fixture
def internet() -> Iterator[Internet]:
    address = "151.101.0.10"
    with serve_at(address, WEB_SERVER, address):
        yield Internet(address, 80)


def test_outbound_traffic_goes_where_the_policy_allows_and_is_logged(
    start_kernel: Callable[..., Kernel],
    internet: Internet,
    tmp_path: Path,
    runtime_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A real kernel with an address rule: its HTTP request reaches the server the rule names;
    another public address gets a 403 saying why, in the notebook; both are in the connection
    log with the kernel, its address, the rule and the JupyterHub user the server runs for;
    the host's own loopback stays out of reach whatever the rules."""
    monkeypatch.setenv("JUPYTERHUB_USER", "alice")
    log = tmp_path / "connections.jsonl"
    kernel = start_kernel(
        network_allow=[f"{internet.address}:80", "127.0.0.1"], connection_log=str(log)
    )
    address = address_of(kernel)
    seen = kernel.value(
        fetch_code(
            {
                "allowed": f"http://{internet.address}/data.csv",
                "other": "http://151.101.0.11/",
                "host_loopback": "http://127.0.0.1:9/",
            }
        )
    )
    assert seen["allowed"] == [200, f"hello from {internet.address}/data.csv"]
    assert seen["other"][0] == 403
    assert "no rule allows 151.101.0.11 port 80" in seen["other"][1]
    # 127.0.0.1 is the sandbox's own loopback, where nothing listens on port 9.
    assert seen["host_loopback"] == ["error", "ECONNREFUSED"]
    records = [json.loads(line) for line in log.read_text().splitlines()]
    allowed = [r for r in records if r["decision"] == "allowed"]
    denied = [r for r in records if r["decision"] == "denied"]
    assert [r["destination_address"] for r in allowed] == [internet.address]
    assert allowed[0]["rule"] == f"{internet.address}:80"
    assert allowed[0]["bytes_received"] > 0
    assert denied[0]["rule"] == "no rule"
    for record in records:
        assert record["kernel_id"] == kernel.km.kernel_id
        assert record["sandbox_address"] == address
        assert record["kernelspec"] == kernel.km.kernel_name
        assert record["protocol"] == "http"
        assert record["user"] == "alice"
    assert oct(log.stat().st_mode & 0o777) == "0o600"

    # `jupyter hopx list` shows the totals (from the state record, rewritten as they change).
    def listed() -> Any:
        rows = json.loads(hopx("list", "--json").stdout)
        return rows[0]["network"] if rows else None

    assert wait_until(lambda: (listed() or {}).get("denied") == 1, 10)
    totals = listed()
    assert totals["allowed"] == 1
    assert totals["bytes_received"] == allowed[0]["bytes_received"]
    assert "1 ok 1 denied" in hopx("list").stdout

    # The egress process holds none of the server's privileges, and ends with the sandbox.
    egress = [p for p in hopx_processes() if EGRESS_NAME in p]
    assert len(egress) == 1, egress
    pid = int(egress[0].split(":")[0])
    assert (
        Path(f"/proc/{pid}").stat().st_uid == kernel.km.provisioner.supervisor.started["host_uid"]
    )
    kernel.km.shutdown_kernel(now=True)
    assert_no_leaks(runtime_dir)


def test_the_server_shows_each_sandboxs_connections_and_warns_of_refusals(
    server: Server, make_kernelspec: Callable[..., str], internet: Internet
) -> None:
    """Through a Jupyter server: the REST model's usage counts the bytes, the network
    endpoint lists the policy, totals and recent connections (newest first), and the refusal is
    a warning in the server's log naming the setting to change."""
    name = make_kernelspec("hopx-net", network_allow=[f"{internet.address}:80"])
    events = server.events()
    kernel_id = server.open_notebook("notebooks/net.ipynb", name)
    ws = server.connect(kernel_id)
    urls = {"allowed": f"http://{internet.address}/a", "other": "http://151.101.0.12/b"}
    _, stdout = ws.execute(fetch_code(urls))
    seen = json.loads(stdout)
    assert seen["allowed"][0] == 200
    assert seen["other"][0] == 403

    def network() -> dict[str, Any]:
        response = server.api("GET", f"/hopx/api/sandboxes/{kernel_id}/network")
        assert response.status_code == 200
        answer: dict[str, Any] = response.json()
        return answer

    assert wait_until(lambda: network()["totals"]["denied"] == 1, 10)
    answer = network()
    assert answer["policy"] == {"allow": [f"{internet.address}:80"], "deny": []}
    assert answer["totals"]["allowed"] == 1
    assert answer["totals"]["bytes_received"] > 0
    assert [r["destination_address"] for r in answer["recent"]] == [
        "151.101.0.12",
        internet.address,
    ]
    assert answer["recent"][0]["reason"] == "no rule allows 151.101.0.12 port 80"
    # Each record names the notebook the kernel was opened for, and the server's user.
    for record in answer["recent"]:
        assert record["notebook"] == str(server.root / "notebooks" / "net.ipynb")
        assert record["kernelspec"] == name
        assert record["user"] == getpass.getuser()
    model = server.api("GET", f"/hopx/api/sandboxes/{kernel_id}").json()
    assert model["usage"]["network_bytes_received"] == answer["totals"]["bytes_received"]
    assert model["address"] == answer["address"]
    assert model["network"] == {"totals": answer["totals"], "recent": answer["recent"][:5]}
    warnings = [line for line in server.log().splitlines() if "[W hopx]" in line]
    assert len(warnings) == 1, warnings
    assert (
        f"({answer['address']}) of kernel {kernel_id}: denied http to 151.101.0.12" in (warnings[0])
    )
    assert "add a rule to network_allow" in warnings[0]
    assert server.api("GET", "/hopx/api/sandboxes/nope/network").status_code == 404

    # The `network` events: the same two attempts, then a burst of 40 refusals batched into
    # events of at most 20 listed, every attempt counted.
    def network_events() -> list[dict[str, Any]]:
        return [e for e in events.hopx(kernel_id) if e["action"] == "network"]

    def reported() -> int:
        return sum(len(e["connections"]) + e["omitted"] for e in network_events())

    events.wait_for(lambda _: reported() >= 2, 10)
    # Each record comes when its connection ends: in the order they began, by time.
    first = sorted((c for e in network_events() for c in e["connections"]), key=lambda c: c["time"])
    assert [(c["decision"], c["destination_address"]) for c in first] == [
        ("allowed", internet.address),
        ("denied", "151.101.0.12"),
    ]
    assert first[0]["rule"] == f"{internet.address}:80"
    assert first[1]["reason"] == "no rule allows 151.101.0.12 port 80"
    burst = {f"u{n}": f"http://151.101.3.{n}/" for n in range(40)}
    _, stdout = ws.execute(fetch_code(burst))
    assert all(answer[0] == 403 for answer in json.loads(stdout).values())
    events.wait_for(lambda _: reported() >= 42, 15)
    assert reported() == 42
    batched = network_events()
    assert len(batched) < 10, [len(e["connections"]) for e in batched]
    assert all(len(e["connections"]) <= 20 for e in batched)
    assert batched[-1]["totals"] == {**answer["totals"], "denied": 41}
    assert "denied: 151.101.3." in batched[-1]["msg"]
    ws.close()


def egress_pid() -> int:
    [egress] = [p for p in hopx_processes() if EGRESS_NAME in p]
    return int(egress.split(":")[0])


def test_a_supervisor_killed_takes_its_egress_process_with_it(
    start_kernel: Callable[..., Kernel], runtime_dir: Path
) -> None:
    kernel = start_kernel(network_allow=["151.101.0.0/16:80"], connection_log="")
    egress = egress_pid()
    os.kill(kernel.supervisor_pid, signal.SIGKILL)
    assert wait_until(lambda: not Path(f"/proc/{egress}").exists(), 10)
    assert wait_until(lambda: not hopx_processes(), 10)
    kernel.km.shutdown_kernel(now=True)
    assert_no_leaks(runtime_dir)


def test_an_egress_process_killed_leaves_the_sandbox_without_a_way_out(
    server: Server, make_kernelspec: Callable[..., str], internet: Internet
) -> None:
    """Fails closed: after its egress process is SIGKILLed, the kernel keeps running, its
    connections are refused at once, and the server's log says why."""
    name = make_kernelspec("hopx-net", network_allow=[f"{internet.address}:80"])
    kernel_id = server.start_kernel(name)
    ws = server.connect(kernel_id)
    urls = {"allowed": f"http://{internet.address}/a"}
    _, before = ws.execute(fetch_code(urls))
    assert json.loads(before)["allowed"][0] == 200
    os.kill(egress_pid(), signal.SIGKILL)
    assert wait_until(lambda: not [p for p in hopx_processes() if EGRESS_NAME in p], 10)
    _, after = ws.execute(fetch_code(urls))
    assert json.loads(after)["allowed"] == ["error", "ECONNREFUSED"]
    warning = f"of kernel {kernel_id}: its egress process ended; the sandbox has no outbound"
    assert wait_until(lambda: warning in server.log(), 10), server.log()[-2000:]
    ws.close()
