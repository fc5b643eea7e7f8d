"""`jupyter hopx`: install the kernelspec, list running sandboxes, kill them, check the host,
manage the secret store."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import signal
import sys
import time
from typing import Any

from traitlets import TraitError

from hopx_kernel import kernelspec, lockdown, secrets_cli
from hopx_kernel.host import state_root
from runtime.host_uids import DEFAULT_RANGE as DEFAULT_UID_RANGE
from runtime.registry import SandboxRecord, is_supervisor, live_sandboxes
from runtime.supervisor import NOTICE_GRACE, TERMINATE_GRACE
from runtime.units import LimitError, format_size

# How long `kill` waits for a sandbox to be gone: the supervisor's whole escalation, and then some.
KILL_WAIT = NOTICE_GRACE + TERMINATE_GRACE + 10.0

# CLI flag -> provisioner setting, for `install`.
INSTALL_SETTINGS = {
    "memory": "memory_limit",
    "cpus": "cpu_limit",
    "pids": "pids_limit",
    "disk": "disk_limit",
    "files": "files_limit",
    "workspace": "workspace",
    "max_lifetime": "max_lifetime",
    "idle_timeout": "idle_timeout",
    "warn_before": "warn_before",
    "cull_busy": "cull_busy",
    "allow": "network_allow",
    "deny": "network_deny",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jupyter hopx", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    install = commands.add_parser("install", help="install the Hopx kernelspec")
    where = install.add_mutually_exclusive_group()
    where.add_argument("--user", action="store_true", help="for the current user only")
    where.add_argument("--sys-prefix", action="store_true", help="into this Python's prefix")
    where.add_argument("--prefix", help="into this prefix (e.g. a venv)")
    install.add_argument("--name", default=kernelspec.DEFAULT_NAME, help="kernelspec name")
    install.add_argument("--display-name", default=kernelspec.DEFAULT_DISPLAY_NAME)
    install.add_argument("--memory", help="memory limit, e.g. 2G")
    install.add_argument("--cpus", type=float, help="CPU limit in cores, e.g. 1 or 0.5")
    install.add_argument("--pids", type=int, help="process/thread limit, e.g. 512")
    install.add_argument("--disk", help="size of /tmp and $HOME each, e.g. 1G")
    install.add_argument("--files", type=int, help="files in /tmp and $HOME each, e.g. 100000")
    install.add_argument("--workspace", choices=["ro", "rw", "none"])
    install.add_argument("--max-lifetime", help="hard cap on a kernel's age, e.g. 8h")
    install.add_argument("--idle-timeout", help="cull after this long idle, e.g. 1h (0: never)")
    install.add_argument("--warn-before", help="warn this long before a cull, e.g. 5m")
    install.add_argument(
        "--allow",
        action="append",
        metavar="RULE",
        help="let kernels connect out there (repeat for more): a host name, '*.domain', "
        "'host:443', an address block '10.1.2.0/24:5432', '*', or 'preset:pypi'",
    )
    install.add_argument(
        "--deny",
        action="append",
        metavar="RULE",
        help="refuse this destination even where --allow allows it (repeat for more)",
    )
    install.add_argument(
        "--secret",
        action="append",
        metavar="VAR=REF",
        help="give the kernel a secret in its environment (repeat for more): "
        "'OPENAI_API_KEY=store:openai', 'DB_PASSWORD=file:/run/secrets/db', "
        "'TOKEN=env:NAME', 'TOKEN=exec:vault kv get -field=token secret/app', 'KEY=aws:prod/app'",
    )
    install.add_argument(
        "--cull-busy",
        action="store_true",
        default=None,
        help="let a busy kernel be culled for idleness",
    )
    install.add_argument(
        "--lockdown",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="for servers that run untrusted notebooks: enable lockdown (no terminals, only Hopx "
        "kernels, no remote loads in pages) for servers reading this config location; "
        "--no-lockdown removes it again. Without either, an earlier choice stays",
    )

    listing = commands.add_parser("list", help="list running sandboxes")
    listing.add_argument("--json", action="store_true", help="machine-readable output")

    kill = commands.add_parser(
        "kill",
        help="stop sandboxes by hand (reason 'manual'); they are not restarted",
        description="Stop running sandboxes, also those of papermill runs. The running cell is "
        "told why, the kernel gets SIGTERM, then SIGKILL; a Jupyter server drops the kernel.",
    )
    which = kill.add_mutually_exclusive_group(required=True)
    which.add_argument("kernel_ids", nargs="*", default=[], metavar="KERNEL_ID", help="or a prefix")
    which.add_argument("--all", action="store_true", help="every sandbox you may stop")

    doctor_parser = commands.add_parser(
        "doctor",
        help="check that this host, as this user, can run Hopx kernels",
        description="Check bubblewrap, user namespaces, seccomp and cgroups, then start a test "
        "kernel; then review the Jupyter server configuration for untrusted notebooks (lockdown, "
        "terminals, kernelspecs that start without the sandbox), as warnings. Exits 1 when a "
        "Hopx kernel cannot start here.",
    )
    doctor_parser.add_argument("--json", action="store_true", help="machine-readable output")
    doctor_parser.add_argument(
        "--cgroup-parent", default="", help="the cgroup_parent setting to check, e.g. hopx.slice"
    )
    doctor_parser.add_argument(
        "--systemd-scope",
        action="store_true",
        help="check as if systemd_scope were set (sandboxes in delegated systemd scopes)",
    )
    doctor_parser.add_argument(
        "--allow-unenforced-limits",
        action="store_true",
        help="check as if allow_unenforced_limits were set",
    )
    doctor_parser.add_argument("--bwrap", default="bwrap", help="the bubblewrap executable")
    doctor_parser.add_argument(
        "--hub-user",
        metavar="NAME",
        help="as root: check what this user's kernels get under a JupyterHub with HopxSpawner "
        "(their delegated cgroup, as them)",
    )
    doctor_parser.add_argument(
        "--sandbox-uid-range",
        default=DEFAULT_UID_RANGE,
        help="the sandbox_uid_range setting to check (root servers)",
    )
    doctor_parser.add_argument(
        "--config",
        help="the server's config file, as `jupyter server --config` takes it; by default the "
        "jupyter_server_config files in the Jupyter config path",
    )

    secrets_cli.add_parser(commands)

    args = parser.parse_args(argv)
    if args.command == "secrets":
        return secrets_cli.main(args)
    if args.command == "doctor" and args.hub_user:
        return _doctor_for_hub_user(args)
    if args.command == "doctor":
        from hopx_kernel import doctor  # noqa: PLC0415 - starts a kernel; only needed here

        return doctor.main(args)
    if args.command == "install":
        return _install(args)
    if args.command == "kill":
        return _kill(args)
    return _list(args)


def _install(args: argparse.Namespace) -> int:
    settings = {
        setting: getattr(args, flag)
        for flag, setting in INSTALL_SETTINGS.items()
        if getattr(args, flag) is not None
    }
    prefix = sys.prefix if args.sys_prefix else args.prefix
    if args.secret:
        pairs = [item.partition("=") for item in args.secret]
        if any(not sep for _, sep, _ in pairs):
            print(
                "jupyter hopx install: --secret takes VAR=REF, e.g. OPENAI_API_KEY=store:openai",
                file=sys.stderr,
            )
            return 2
        settings["secrets"] = {name: reference for name, _, reference in pairs}
    try:
        path = kernelspec.install(
            settings,
            name=args.name,
            display_name=args.display_name,
            user=args.user,
            prefix=prefix,
        )
    except (TraitError, LimitError) as e:
        print(f"jupyter hopx install: {e}", file=sys.stderr)
        return 2
    print(f"Installed kernelspec {args.name} in {path}")
    if args.lockdown:
        print(f"Lockdown on: {lockdown.enable(user=args.user, prefix=prefix)}")
    elif args.lockdown is False:
        removed = lockdown.disable(user=args.user, prefix=prefix)
        where = lockdown.config_path(user=args.user, prefix=prefix)
        print(f"Lockdown off: removed {removed}" if removed else f"Lockdown off: no {where}")
    return 0


def _doctor_for_hub_user(args: argparse.Namespace) -> int:
    from hopx_kernel.hub_doctor import HubDoctorError, run_as_hub_user  # noqa: PLC0415

    passed = ["--json"] if args.json else []
    passed += ["--allow-unenforced-limits"] if args.allow_unenforced_limits else []
    passed += ["--bwrap", args.bwrap]
    try:
        return run_as_hub_user(args.hub_user, passed)
    except HubDoctorError as e:
        print(f"jupyter hopx doctor: {e}", file=sys.stderr)
        return 2


def _list(args: argparse.Namespace) -> int:
    now = time.time()
    rows: list[dict[str, Any]] = []
    for record in live_sandboxes(state_root()):
        data = record.data
        started = float(data.get("started", now))
        lifetime = float(data.get("max_lifetime", 0))
        rows.append(
            {
                "kernel_id": data.get("kernel_id"),
                "sandbox_id": data.get("sandbox_id"),
                "address": data.get("address") or None,
                "pid": record.supervisor_pid,
                "sandbox_pid": data.get("sandbox_pid"),
                "owner": _command_name(int(data.get("owner_pid", 0))),
                "age_seconds": round(now - started, 1),
                "lifetime_left_seconds": round(max(0.0, started + lifetime - now), 1)
                if lifetime
                else None,
                "limits": data.get("limits", {}),
                "memory_bytes": record.memory_usage(),
                # The variables of the kernel's secrets, never their values.
                "secrets": data.get("secrets", []),
                # Outbound totals (allowed, denied, bytes each way); None without a policy.
                "network": data.get("network"),
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("No Hopx sandboxes are running.")
        return 0
    print(
        f"{'KERNEL ID':<36}  {'ADDRESS':<15}  {'PID':>7}  {'OWNER':<15}  {'AGE':>8}  "
        f"{'ENDS IN':>8}  {'MEMORY':>15}  {'CPUS':>4}  {'PIDS':>5}  {'NETWORK':<20}"
    )
    for row in rows:
        limits = row["limits"]
        used = _approximate(row["memory_bytes"]) if row["memory_bytes"] is not None else "?"
        limit = int(limits.get("memory", 0))
        memory = f"{used}/{format_size(limit) if limit else '-'}"
        left = row["lifetime_left_seconds"]
        ends = _age(left) if left is not None else "-"
        print(
            f"{row['kernel_id']:<36}  {row['address'] or '-':<15}  {row['pid']:>7}  "
            f"{row['owner']:<15.15}  {_age(row['age_seconds']):>8}  {ends:>8}  "
            f"{memory:>15}  {limits.get('cpus', 0):>4}  {limits.get('pids', 0):>5}  "
            f"{_network(row['network']):<20}"
        )
    return 0


def _command_name(pid: int) -> str:
    """What the process `pid` runs (jupyter-lab, papermill, python3...), for people."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return "?"
    words = [a.decode(errors="replace") for a in argv if a]
    if not words:
        return "?"
    # For `python script` or `python -m module`, the script or module says more.
    if os.path.basename(words[0]).startswith("python") and len(words) > 1:
        if words[1] == "-m" and len(words) > 2:
            return words[2]
        if not words[1].startswith("-"):
            return os.path.basename(words[1])
    return os.path.basename(words[0])


def _kill(args: argparse.Namespace) -> int:
    """SIGTERM each chosen supervisor (it stops its sandbox for reason "manual") and wait."""
    live = live_sandboxes(state_root())
    chosen: list[SandboxRecord] = []
    if args.all:
        chosen = live
    for wanted in args.kernel_ids:
        if not wanted.strip():
            print("jupyter hopx kill: an empty kernel id matches nothing", file=sys.stderr)
            return 1
        matches = [r for r in live if str(r.data.get("kernel_id", "")).startswith(wanted)]
        if len(matches) != 1:
            problem = "matches several sandboxes" if matches else "matches no running sandbox"
            print(
                f"jupyter hopx kill: {wanted!r} {problem}; see `jupyter hopx list`",
                file=sys.stderr,
            )
            return 1
        chosen += matches
    failed = 0
    for record in chosen:
        kernel_id = record.data.get("kernel_id")
        try:
            _stop_supervisor(record.supervisor_pid)
        except PermissionError:
            print(f"jupyter hopx kill: not allowed to stop kernel {kernel_id}", file=sys.stderr)
            failed += 1
        except TimeoutError:
            print(f"jupyter hopx kill: kernel {kernel_id} is still stopping", file=sys.stderr)
            failed += 1
        else:
            print(f"Killed kernel {kernel_id} (sandbox {record.data.get('sandbox_id')})")
    if not chosen:
        print("No Hopx sandboxes are running.")
    return 1 if failed else 0


def _stop_supervisor(pid: int) -> None:
    """Ask one supervisor to stop its sandbox and wait until it has exited.

    A pidfd pins the process, so a pid reused between the check and the signal is never hit.
    """
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return  # already gone
    try:
        if not is_supervisor(pid):
            return
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(pidfd, signal.SIGTERM)
        ready, _, _ = select.select([pidfd], [], [], KILL_WAIT)
        if not ready:
            raise TimeoutError(pid)
    finally:
        os.close(pidfd)


def _network(totals: dict[str, int] | None) -> str:
    """ "2 ok 1 denied 38.1M in": a sandbox's outbound totals; "-" without a policy."""
    if not totals:
        return "-"
    received = _approximate(int(totals.get("bytes_received", 0)))
    return f"{totals.get('allowed', 0)} ok {totals.get('denied', 0)} denied {received} in"


def _approximate(n: int) -> str:
    """A size for reading, to one decimal: 39907328 -> "38.1M"."""
    for unit, factor in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= factor:
            return f"{n / factor:.1f}{unit}"
    return str(n)


def _age(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


if __name__ == "__main__":
    sys.exit(main())
