"""Fixtures: kernelspecs with chosen settings, sandboxed kernels, and leak checks.

Every kernel here is a real ipykernel in a real bubblewrap sandbox with real cgroups. Each test
gets its own short Jupyter runtime directory (unix socket paths are limited to 107 bytes), so the
leak checks can look at exactly what the test made.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager

from hopx_kernel.kernelspec import kernelspec
from runtime.cgroups import CgroupHost
from runtime.egress import PROCESS_NAME as EGRESS_NAME
from runtime.forkserver import PROCESS_NAME as FORK_SERVER_NAME
from runtime.supervisor import PROCESS_NAME as SUPERVISOR_NAME

# Small limits keep the limit tests quick; the defaults are tested as defaults elsewhere.
TEST_SETTINGS: dict[str, Any] = {"memory_limit": "512M", "disk_limit": "64M"}


# The `server` fixture: a real jupyter_server (tests/server_harness.py); the `browser` and `lab`
# fixtures: headless Chromium and a JupyterLab server (tests/browser_harness.py).
pytest_plugins = ["server_harness", "browser_harness"]


def pytest_report_header() -> str:
    """Which cgroup version each limit is tested on here: a v1 or hybrid host does not run the
    cgroup v2 limit code, and a v2 host not the v1 code."""
    host = CgroupHost.detect()
    where = []
    for controller in ("memory", "cpu", "pids"):
        hierarchy = host.hierarchy_for(controller)
        where.append(f"{controller} on {f'v{hierarchy.version}' if hierarchy else 'nothing'}")
    versions = {h.version for c in ("memory", "cpu", "pids") if (h := host.hierarchy_for(c))}
    note = ""
    if len(versions) == 1:
        note = f"; the cgroup v{3 - versions.pop()} limit code does not run here"
    return f"cgroups: {host.mode} layout, {', '.join(where)}{note}"


@pytest.fixture
def runtime_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="hx-rt-", dir="/tmp"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(path))
    yield path
    shutil.rmtree(path, ignore_errors=True)


# Who owns the tests' notebook folders: an ordinary user, as a read-write workspace must be.
FOLDER_OWNER = 4321


@pytest.fixture
def workspace() -> Iterator[Path]:
    """A notebook folder of an ordinary user that the sandbox uid may read, as notebook
    folders usually are."""
    path = Path(tempfile.mkdtemp(prefix="hx-ws-", dir="/tmp"))
    path.chmod(0o755)
    os.chown(path, FOLDER_OWNER, FOLDER_OWNER)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def kernels_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A directory of kernelspecs, on JUPYTER_PATH for the servers and papermill runs we start."""
    path = Path(tempfile.mkdtemp(prefix="hx-ks-", dir="/tmp"))
    (path / "kernels").mkdir()
    monkeypatch.setenv("JUPYTER_PATH", str(path))
    yield path / "kernels"
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def make_kernelspec(kernels_dir: Path) -> Callable[..., str]:
    def make(name: str = "hopx-test", **settings: Any) -> str:
        spec = kernelspec({**TEST_SETTINGS, **settings}, python=sys.executable)
        (kernels_dir / name).mkdir(exist_ok=True)
        (kernels_dir / name / "kernel.json").write_text(json.dumps(spec))
        return name

    return make


def write_raw_kernelspec(kernels_dir: Path, name: str, config: dict[str, Any]) -> str:
    """A Hopx kernelspec with `config` written as is, unvalidated (for bad-input tests)."""
    spec = kernelspec({}, python=sys.executable)
    spec["metadata"]["kernel_provisioner"]["config"] = config
    (kernels_dir / name).mkdir(exist_ok=True)
    (kernels_dir / name / "kernel.json").write_text(json.dumps(spec))
    return name


@dataclass
class Kernel:
    km: KernelManager
    kc: BlockingKernelClient
    outputs: list[dict[str, Any]] = field(default_factory=list)

    def run(self, code: str, timeout: float = 60) -> tuple[dict[str, Any], str]:
        """Execute `code`; returns the execute_reply content and everything printed to stdout."""
        self.outputs = []
        reply = self.kc.execute_interactive(
            code, timeout=timeout, output_hook=self.outputs.append, allow_stdin=False
        )
        stdout = "".join(
            m["content"]["text"]
            for m in self.outputs
            if m["msg_type"] == "stream" and m["content"]["name"] == "stdout"
        )
        return reply["content"], stdout

    def value(self, code: str, timeout: float = 60) -> Any:
        """Run `code`, which must print one JSON document, and return it parsed."""
        content, stdout = self.run(code, timeout)
        assert content["status"] == "ok", content
        return json.loads(stdout)

    @property
    def supervisor_pid(self) -> int:
        supervisor = self.km.provisioner.supervisor
        assert supervisor is not None
        return int(supervisor.pid)

    @property
    def state_dir(self) -> Path:
        return Path(self.km.provisioner.state_dir)

    @property
    def cgroups(self) -> list[str]:
        supervisor = self.km.provisioner.supervisor
        assert supervisor is not None
        return list(supervisor.started["cgroups"])


@pytest.fixture
def start_kernel(
    runtime_dir: Path, workspace: Path, kernels_dir: Path, make_kernelspec: Callable[..., str]
) -> Iterator[Callable[..., Kernel]]:
    started: list[Kernel] = []

    def start(
        cwd: str | None = None,
        kernel_name: str | None = None,
        kernel_id: str | None = None,
        **settings: Any,
    ) -> Kernel:
        name = kernel_name or make_kernelspec("hopx-test", **settings)
        km = KernelManager(
            kernel_name=name,
            kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernels_dir)]),
        )
        if kernel_id:
            km.kernel_id = kernel_id
        km.start_kernel(cwd=cwd or str(workspace))
        kc = km.client()
        kc.start_channels()
        kernel = Kernel(km, kc)
        started.append(kernel)
        kc.wait_for_ready(timeout=60)
        return kernel

    yield start
    for kernel in started:
        kernel.kc.stop_channels()
        if kernel.km.has_kernel:
            kernel.km.shutdown_kernel(now=True)


@dataclass(frozen=True)
class CgroupLimits:
    """The limits written in a sandbox's cgroups, whichever cgroup version carries each."""

    memory: int
    swap_capped: bool  # swap cannot be used to dodge `memory` (or the host has no swap accounting)
    pids: int
    cpu_quota_us: int
    cpu_period_us: int


def cgroup_limits(directories: list[str]) -> CgroupLimits:
    """Read from cgroup v1 or v2 files as the host has them, so tests that check limits exercise
    the v2 code on a v2 host and the v1 code on a v1 or hybrid one."""
    found: dict[str, str] = {}
    for directory in directories:
        for name in _LIMIT_FILES:
            path = Path(directory) / name
            if name not in found and path.exists():
                found[name] = path.read_text().strip()
    if "memory.max" in found:
        memory = int(found["memory.max"])
        swap_capped = found.get("memory.swap.max", "0") == "0"
    else:
        memory = int(found["memory.limit_in_bytes"])
        swap_capped = int(found.get("memory.memsw.limit_in_bytes", memory)) == memory
    if "cpu.max" in found:
        quota, period = found["cpu.max"].split()
    else:
        quota, period = found["cpu.cfs_quota_us"], found["cpu.cfs_period_us"]
    return CgroupLimits(memory, swap_capped, int(found["pids.max"]), int(quota), int(period))


_LIMIT_FILES = {
    "memory.max",
    "memory.swap.max",
    "memory.limit_in_bytes",
    "memory.memsw.limit_in_bytes",
    "pids.max",
    "cpu.max",
    "cpu.cfs_quota_us",
    "cpu.cfs_period_us",
}


def parent_pid(pid: int) -> int:
    """The parent of `pid`; 0 if it has gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat.rsplit(")", 1)[1].split()[1])


def hopx_processes() -> list[str]:
    """Running supervisors, their egress processes and bubblewrap processes, and fork servers
    whose owner has gone."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            name = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        # A fork server outlives its owner only if it missed the owner's end: then it has been
        # handed to init.
        orphaned_fork_server = name == FORK_SERVER_NAME and parent_pid(int(pid)) == 1
        if (
            name in (SUPERVISOR_NAME, EGRESS_NAME)
            or orphaned_fork_server
            or cmdline.startswith(("bwrap ", "/usr/bin/bwrap "))
        ):
            found.append(f"{pid}: {name} {cmdline[:120]}")
    return found


def hopx_cgroups() -> list[str]:
    found = []
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        if hierarchy.is_dir():
            found += [str(p) for p in hierarchy.glob("**/hopx-*") if p.is_dir()]
    return found


def start_holder(code: str) -> tuple[subprocess.Popen[str], str]:
    """Another process (a supervisor, say) that runs `code`, which sets `held` to what it
    claimed, from the project's folder and holds it until its stdin closes; returns the
    process and `held` as it printed it."""
    script = f"{code}\nprint(held, flush=True)\nimport sys\nsys.stdin.read()\n"
    holder = subprocess.Popen(
        [sys.executable, "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parent.parent,
    )
    assert holder.stdout is not None
    return holder, holder.stdout.readline().strip()


def terminate(process: subprocess.Popen[Any], timeout: float = 30) -> None:
    """Stop a server the test started: SIGTERM, then SIGKILL after `timeout` seconds."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_until(condition: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll `condition` until it is truthy; returns its last value either way."""
    deadline = time.monotonic() + timeout
    while not (value := condition()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return value


def leftovers(runtime_dir: Path) -> list[str]:
    """Everything of any sandbox still on the host: processes, cgroups, state directories."""
    hopx_root = runtime_dir / "hopx"
    dirs = [str(p) for p in hopx_root.iterdir()] if hopx_root.exists() else []
    return hopx_processes() + hopx_cgroups() + dirs


def assert_no_leaks(runtime_dir: Path, timeout: float = 10.0) -> None:
    wait_until(lambda: not leftovers(runtime_dir), timeout)
    assert leftovers(runtime_dir) == []
