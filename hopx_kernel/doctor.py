"""`jupyter hopx doctor`: can this host, as this user, run Hopx kernels? Each check says what it
found, and when something is wrong, what to do about it.

The last check starts a real sandboxed kernel and times it, so a pass means a kernel starts.
Then comes a review of the Jupyter server configuration found here, for servers that run untrusted
notebooks: lockdown, terminals, kernelspecs that start without the sandbox. Those are warnings
only: a server without lockdown is a valid choice.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import IO, TYPE_CHECKING, Any

from hopx_kernel.host import missing_bwrap_options, outdated_bwrap_message, user_namespace_problem
from runtime.cgroups import CgroupError, CgroupHost, SandboxCgroup, cgroup_cpu_seconds
from runtime.host_uids import DEFAULT_RANGE as DEFAULT_UID_RANGE
from runtime.host_uids import accounts_in_range, parse_uid_range
from runtime.sandbox_network import INTERCEPTION_FIX
from runtime.spec import Limits
from runtime.systemd_scope import scope_problem
from runtime.units import LimitError

if TYPE_CHECKING:
    from hopx_kernel.server_config import ServerConfig

# How long the test kernel may take to answer before the check fails.
TEST_KERNEL_TIMEOUT = 60.0


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    found: str
    # What to do about it, when not ok.
    fix: str = ""
    # The kernels that need it, when not every kernel does: its failure stops only those.
    needed_by: str = ""


@dataclass(frozen=True)
class Settings:
    """The provisioner settings the checks use: those that decide whether a kernel starts."""

    bwrap: str = "bwrap"
    cgroup_parent: str = ""
    systemd_scope: bool = False
    allow_unenforced_limits: bool = False
    sandbox_uid_range: str = DEFAULT_UID_RANGE


def check_bubblewrap(settings: Settings) -> Check:
    path = shutil.which(settings.bwrap)
    if path is None:
        return Check(
            "bubblewrap",
            False,
            f"{settings.bwrap} is not installed",
            "install it: `apt install bubblewrap` or `dnf install bubblewrap`",
        )
    result = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)
    found = f"{result.stdout.strip() or 'unknown version'} at {path}"
    missing = missing_bwrap_options(path)
    if missing:
        return Check("bubblewrap", False, found, outdated_bwrap_message(path, missing))
    return Check("bubblewrap", True, found)


def check_user_namespaces(settings: Settings) -> Check:
    problem = user_namespace_problem()
    if problem:
        found, _, fix = problem.partition("; ")
        return Check("user namespaces", False, found, fix)
    who = "root" if os.geteuid() == 0 else f"uid {os.geteuid()}"
    return Check("user namespaces", True, f"allowed for {who}")


def check_seccomp(settings: Settings) -> Check:
    try:
        with open("/proc/self/status") as f:
            available = any(line.startswith("Seccomp:") for line in f)
    except OSError:
        available = False
    if not available:
        return Check(
            "seccomp",
            False,
            "this Linux kernel has no seccomp",
            "use a kernel built with CONFIG_SECCOMP_FILTER (every major distribution's is)",
        )
    return Check("seccomp", True, "available")


def check_cgroups(settings: Settings) -> Check:
    """Make a cgroup with every default limit, as a sandbox would, and remove it again."""
    host = CgroupHost.detect()
    mode = _CGROUP_MODES.get(host.mode, host.mode)
    if settings.systemd_scope:
        # The limits go in a fresh scope per sandbox: the test kernel shows they can be set.
        problem = scope_problem()
        if problem:
            return Check("cgroups", False, f"{mode}; {problem}", _SCOPE_FIX)
        return Check(
            "cgroups", True, f"{mode}; systemd starts delegated scopes (limits: see test kernel)"
        )
    where = f" under {settings.cgroup_parent!r}" if settings.cgroup_parent else ""
    try:
        cgroup = SandboxCgroup.create(
            host,
            f"hopx-doctor-{os.getpid()}",
            Limits(),
            parent=settings.cgroup_parent,
            allow_unenforced=True,
        )
    except CgroupError as e:
        return Check("cgroups", False, f"{mode}; {e}", _CGROUP_FIX)
    cpu_counted = cgroup_cpu_seconds(cgroup.directories) is not None
    cgroup.remove()
    if cgroup.unenforced:
        limits = ", ".join(u.partition(":")[0] for u in cgroup.unenforced)
        why = cgroup.unenforced[0].partition(": ")[2]
        found = f"{mode}{where}; cannot enforce the {limits} limits (first: {why})"
        fix = _CGROUP_FIX
        if settings.allow_unenforced_limits:
            return Check("cgroups", True, found + " (allowed by allow_unenforced_limits)")
        return Check("cgroups", False, found, fix)
    cpu_figure = (
        "CPU use counted by the cgroup"
        if cpu_counted
        else "CPU use summed from the sandbox's processes, as no cpuacct controller counts it "
        "(delegate cpuacct too for an exact figure)"
    )
    return Check(
        "cgroups", True, f"{mode}{where}; memory, CPU and process limits enforced; {cpu_figure}"
    )


_CGROUP_MODES = {
    "v1": "cgroup v1",
    "v2": "cgroup v2",
    "hybrid": "hybrid cgroups (v1 controllers, a v2 mount beside them)",
}
_SCOPE_FIX = (
    "run the server where systemd manages this user (a login session, or `loginctl "
    "enable-linger USER`, with XDG_RUNTIME_DIR set), or set systemd_scope = False and name a "
    "delegated cgroup in cgroup_parent"
)
_CGROUP_FIX = (
    "run as root, or have the admin delegate a cgroup to this user (cgroup v2: a delegated "
    "subtree, e.g. the user's systemd slice; v1: a directory per controller chowned to the user) "
    "and set cgroup_parent to it; or set allow_unenforced_limits = True to run without limits"
)


def check_sandbox_uids(settings: Settings) -> Check:
    """Which host uid sandboxes run as; as root, that no account lies in sandbox_uid_range."""
    if os.geteuid() != 0:
        return Check("sandbox uids", True, f"sandboxes run as this user (uid {os.getuid()})")
    try:
        uids = parse_uid_range("sandbox_uid_range", settings.sandbox_uid_range)
    except LimitError as e:
        return Check("sandbox uids", False, str(e), "fix sandbox_uid_range")
    taken = accounts_in_range(uids)
    if taken:
        return Check(
            "sandbox uids",
            False,
            f"sandbox_uid_range {uids} holds host accounts: {', '.join(taken[:3])}",
            f"choose a range no account uses, e.g. '{DEFAULT_UID_RANGE}'",
        )
    return Check("sandbox uids", True, f"each sandbox has a host uid of its own from {uids}")


def check_test_kernel(settings: Settings) -> Check:
    """Start a real Hopx kernel (ipykernel in a sandbox) and wait for its first answer."""
    from jupyter_client.kernelspec import KernelSpecManager  # noqa: PLC0415 - slow imports
    from jupyter_client.manager import KernelManager  # noqa: PLC0415

    from hopx_kernel.kernelspec import kernelspec  # noqa: PLC0415 - imports the provisioner

    config = {
        "cgroup_parent": settings.cgroup_parent,
        "systemd_scope": settings.systemd_scope,
        "allow_unenforced_limits": settings.allow_unenforced_limits,
        "bwrap_path": settings.bwrap,
        "workspace": "none",
    }
    with tempfile.TemporaryDirectory(prefix="hopx-doctor-") as kernels:
        os.makedirs(os.path.join(kernels, "hopx-doctor"))
        with open(os.path.join(kernels, "hopx-doctor", "kernel.json"), "w") as f:
            json.dump(kernelspec(config, python=sys.executable), f)
        km = KernelManager(
            kernel_name="hopx-doctor", kernel_spec_manager=KernelSpecManager(kernel_dirs=[kernels])
        )
        started = time.monotonic()
        with _stderr_captured() as kernel_output:
            try:
                km.start_kernel()
                client = km.client()
                client.start_channels()
                try:
                    client.wait_for_ready(timeout=TEST_KERNEL_TIMEOUT)
                finally:
                    client.stop_channels()
            except Exception as e:
                kernel_output.seek(0)
                said = kernel_output.read()[-2000:].decode(errors="replace").strip()
                return Check(
                    "test kernel",
                    False,
                    f"a sandboxed kernel did not start: {e}" + (f"\n{said}" if said else ""),
                    "see the README's troubleshooting",
                )
            finally:
                if km.has_kernel:
                    km.shutdown_kernel(now=True)
        took = time.monotonic() - started
    return Check("test kernel", True, f"started and answered in {took:.2f} s")


def check_outbound_network(settings: Settings) -> Check:
    """Set up, in a throwaway network namespace, what a sandbox with outbound access gets (its
    nftables table and transparent listener), and see a connection land on the listener."""
    needed_by = "kernels with network_allow"
    result = subprocess.run(
        [sys.executable, "-I", "-m", "runtime.sandbox_network"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if result.returncode != 0:
        said = result.stderr.strip().splitlines()[-1:] or [f"exit status {result.returncode}"]
        found = f"a sandbox's interception cannot be set up: {said[0]}"
        fix = f"{INTERCEPTION_FIX.lower()}; kernels without network_allow do not need it"
        return Check("outbound network", False, found, fix, needed_by=needed_by)
    return Check("outbound network", True, "nftables and tproxy intercept a sandbox's connections")


@contextlib.contextmanager
def _stderr_captured() -> Iterator[IO[bytes]]:
    """Meanwhile, this process's stderr (where a kernel's own output goes) goes to a file."""
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)


CHECKS: list[Callable[[Settings], Check]] = [
    check_bubblewrap,
    check_user_namespaces,
    check_seccomp,
    check_cgroups,
    check_sandbox_uids,
    check_test_kernel,
    check_outbound_network,
]


def run_checks(settings: Settings) -> list[Check]:
    results: list[Check] = []
    for check in CHECKS:
        if check is check_test_kernel and not can_start(results):
            results.append(Check("test kernel", False, "not tried: a check above failed"))
            continue
        results.append(check(settings))
    return results


_LOCKDOWN_FIX = (
    "for untrusted notebooks, `jupyter hopx install --lockdown` (with --sys-prefix, --user or "
    "--prefix, where the server reads its config), or the lines of "
    "examples/lockdown/jupyter_server_config.py in the server's config"
)


def review_server(config: ServerConfig) -> list[Check]:
    """Findings about the server configuration; `ok` False means a warning."""
    if config.lockdown:
        lockdown = Check("lockdown", True, "on: no terminals, only Hopx kernels, no remote loads")
    else:
        lockdown = Check(
            "lockdown", False, "off: this server runs any kernel and terminal it has", _LOCKDOWN_FIX
        )
    if config.terminals_off:
        terminals = Check("terminals", True, f"off: {config.terminals_off}")
    else:
        terminals = Check(
            "terminals",
            False,
            "on: a terminal runs commands on the host, outside any sandbox",
            "lockdown turns them off; or set c.ServerApp.terminals_enabled = False",
        )
    findings = [lockdown, terminals, _review_kernelspecs(config)]
    if config.read_write:
        findings.append(_review_links(config))
    return findings


def _review_links(config: ServerConfig) -> Check:
    """Only for servers with read-write notebook folders, where a kernel can plant links."""
    names = ", ".join(config.read_write)
    if not config.follows_links:
        return Check(
            "file links", True, f"{config.contents_manager} follows none (read-write: {names})"
        )
    return Check(
        "file links",
        False,
        f"{config.contents_manager} follows symbolic links, and {names} mount their notebook "
        "folder read-write: a link a kernel makes there has the server read and write outside it",
        "leave ServerApp.contents_manager_class unset with the hopx_kernel server extension "
        "enabled, or set it to hopx_kernel.contents.HopxContentsManager",
    )


def _review_kernelspecs(config: ServerConfig) -> Check:
    hopx = ", ".join(config.hopx)
    others = ", ".join(f"{name} ({how})" for name, how in config.unsandboxed.items())
    if not config.hopx:
        found = "none starts under Hopx" + (f"; without the sandbox: {others}" if others else "")
        return Check("kernelspecs", False, found, "install one: `jupyter hopx install`")
    if not config.unsandboxed:
        return Check("kernelspecs", True, f"all start under Hopx: {hopx}")
    if config.lockdown:
        return Check(
            "kernelspecs", True, f"only Hopx ones start: {hopx}; lockdown refuses {others}"
        )
    return Check(
        "kernelspecs",
        False,
        f"start without the sandbox: {others}; under Hopx: {hopx}",
        "lockdown refuses them; or c.KernelProvisionerFactory.default_provisioner_name = "
        "'hopx-provisioner' starts every kernelspec that names no provisioner under Hopx",
    )


def can_start(results: list[Check]) -> bool:
    """Whether kernels start here: every check that every kernel needs passed."""
    return all(r.ok for r in results if not r.needed_by)


def report(results: list[Check], server: list[Check], config: str, *, as_json: bool) -> str:
    if as_json:
        return json.dumps(
            {
                "can_start": can_start(results),
                "checks": [asdict(r) for r in results],
                "server": {"config": config, "checks": [asdict(r) for r in server]},
            }
        )
    lines = []
    for result in results:
        lines.append(f"{'OK  ' if result.ok else 'FAIL'}  {result.name:<16} {result.found}")
        if result.fix:
            lines.append(f"{'':22}fix: {result.fix}")
    lines.append(f"Jupyter server configuration ({config}):")
    for finding in server:
        lines.append(f"{'OK  ' if finding.ok else 'WARN'}  {finding.name:<16} {finding.found}")
        if finding.fix:
            lines.append(f"{'':22}fix: {finding.fix}")
    verdict = (
        "Hopx kernels can start here" if can_start(results) else "Hopx kernels cannot start here"
    )
    unable = [r.needed_by for r in results if not r.ok and r.needed_by]
    if can_start(results) and unable:
        verdict += f", except {' and '.join(unable)}"
    return "\n".join([*lines, verdict + "."])


def _server_review(config_file: str | None) -> tuple[list[Check], str]:
    """The findings about the server configuration, and where it was read from."""
    from hopx_kernel import server_config  # noqa: PLC0415 - imports jupyter_server

    try:
        config = server_config.load(config_file)
    except Exception as e:
        where = config_file or "the Jupyter config path"
        problem = Check(
            "server config",
            False,
            f"cannot be read: {type(e).__name__}: {e}",
            "a server logs this and starts without that file's settings; correct the file",
        )
        return [problem], where
    dirs = ", ".join(config.config_dirs)
    if config.config_file:
        return review_server(config), f"{config.config_file}; extensions enabled in {dirs}"
    return review_server(config), f"from {dirs}"


def main(args: Any) -> int:
    settings = Settings(
        bwrap=args.bwrap,
        cgroup_parent=args.cgroup_parent,
        systemd_scope=args.systemd_scope,
        allow_unenforced_limits=args.allow_unenforced_limits,
        sandbox_uid_range=args.sandbox_uid_range,
    )
    results = run_checks(settings)
    server, config = _server_review(args.config)
    print(report(results, server, config, as_json=args.json))
    return 0 if can_start(results) else 1
