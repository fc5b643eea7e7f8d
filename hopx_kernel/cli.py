"""`jupyter hopx`: install the kernelspec and look at running sandboxes."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from traitlets import TraitError

from hopx_kernel import kernelspec
from hopx_kernel.host import state_root
from runtime.registry import live_sandboxes
from runtime.units import LimitError, format_size

# CLI flag -> provisioner setting, for `install`.
INSTALL_SETTINGS = {
    "memory": "memory_limit",
    "cpus": "cpu_limit",
    "pids": "pids_limit",
    "disk": "disk_limit",
    "workspace": "workspace",
    "max_lifetime": "max_lifetime",
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
    install.add_argument("--workspace", choices=["ro", "rw", "none"])
    install.add_argument("--max-lifetime", help="hard cap on a kernel's age, e.g. 8h")

    listing = commands.add_parser("list", help="list running sandboxes")
    listing.add_argument("--json", action="store_true", help="machine-readable output")

    args = parser.parse_args(argv)
    if args.command == "install":
        return _install(args)
    return _list(args)


def _install(args: argparse.Namespace) -> int:
    settings = {
        setting: getattr(args, flag)
        for flag, setting in INSTALL_SETTINGS.items()
        if getattr(args, flag) is not None
    }
    prefix = sys.prefix if args.sys_prefix else args.prefix
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
    return 0


def _list(args: argparse.Namespace) -> int:
    now = time.time()
    rows: list[dict[str, Any]] = []
    for record in live_sandboxes(state_root()):
        data = record.data
        rows.append(
            {
                "kernel_id": data.get("kernel_id"),
                "sandbox_id": data.get("sandbox_id"),
                "pid": record.supervisor_pid,
                "sandbox_pid": data.get("sandbox_pid"),
                "age_seconds": round(now - float(data.get("started", now)), 1),
                "limits": data.get("limits", {}),
                "memory_bytes": record.memory_usage(),
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("No Hopx sandboxes are running.")
        return 0
    header = f"{'KERNEL ID':<36}  {'PID':>7}  {'AGE':>8}  {'MEMORY':>15}  {'CPUS':>4}  {'PIDS':>5}"
    print(header)
    for row in rows:
        limits = row["limits"]
        used = _approximate(row["memory_bytes"]) if row["memory_bytes"] is not None else "?"
        limit = int(limits.get("memory", 0))
        memory = f"{used}/{format_size(limit) if limit else '-'}"
        print(
            f"{row['kernel_id']:<36}  {row['pid']:>7}  {_age(row['age_seconds']):>8}  "
            f"{memory:>15}  {limits.get('cpus', 0):>4}  {limits.get('pids', 0):>5}"
        )
    return 0


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
