"""Kernel quotas a sandbox shares with others, capped per sandbox.

Some kernel resources are counted per user rather than per cgroup: inotify instances and
watches, queued signals, POSIX message queue bytes. Under an unprivileged server the sandbox
runs as the server's own uid, so without caps one sandbox could take them all and leave the
server failing with EMFILE or EAGAIN. Pseudo-terminals come from one pool for all devpts
instances but the host's (kernel.pty.max less kernel.pty.reserve): each sandbox gets a devpts
instance of its own with a maximum.
"""

from __future__ import annotations

import os
import resource

# Pseudo-terminals one sandbox may hold at once: shells and pexpect need a few.
PTY_LIMIT = 64
# Per-user limits of the supervisor's own user namespace (unprivileged servers), which every
# process of the sandbox counts against as well as against the host's.
USER_NAMESPACE_LIMITS = {"max_inotify_instances": 32, "max_inotify_watches": 16384}
# Resource limits, soft and hard, of the sandbox's processes: per user, hierarchical across
# user namespaces, so a sandbox cannot raise them nor take more of its owner's.
PROCESS_LIMITS = {
    resource.RLIMIT_SIGPENDING: 1024,
    resource.RLIMIT_MSGQUEUE: 819_200,  # bytes; Linux's default
}


def devpts_options() -> str:
    """Mount options for the sandbox's own devpts instance (as bubblewrap makes it, plus max)."""
    return f"newinstance,ptmxmode=0666,mode=620,max={PTY_LIMIT}"


def limit_user_namespace(proc: str = "/proc") -> None:
    """Cap per-user quotas in the calling process's own user namespace (which it must own)."""
    for name, value in USER_NAMESPACE_LIMITS.items():
        with open(os.path.join(proc, "sys", "user", name), "w") as f:
            f.write(str(value))


def limit_process() -> None:
    """Lower the calling process's per-user resource limits for good (inherited by the sandbox);
    never raises one above what the process already had."""
    for which, value in PROCESS_LIMITS.items():
        _, hard = resource.getrlimit(which)
        cap = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(which, (cap, cap))
