"""Stands in for `systemd-run --scope` on a host without systemd: move into the cgroup
directories named before `--` (as systemd moves a scope's process into the scope), then exec the
command after it in place, same pid, as systemd-run does."""

import os
import sys

split = sys.argv.index("--")
for directory in sys.argv[1:split]:
    with open(os.path.join(directory, "cgroup.procs"), "w") as f:
        f.write("0")
os.execv(sys.argv[split + 1], sys.argv[split + 1 :])  # noqa: S606 - as systemd-run does
