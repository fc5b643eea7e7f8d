"""`jupyter hopx doctor --hub-user NAME`: what that user's Hopx kernels get under a JupyterHub
with HopxSpawner, checked for real.

Run as root, as the hub is: the user's cgroup is delegated as a spawn would delegate it
(hopx_kernel.user_cgroups), and the doctor runs as the user, inside it, with that cgroup as its
cgroup_parent: its report (the limits that hold, where the CPU figure comes from, a test kernel)
is the user's. A cgroup made for the check is removed afterwards; one a running server uses is
left as it was.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from hopx_kernel import user_cgroups
from runtime.cgroups import CgroupHost


class HubDoctorError(RuntimeError):
    pass


def run_as_hub_user(user: str, doctor_args: list[str], config_root: str = "/run/hopx-hub") -> int:
    """Run the doctor with `doctor_args` as `user`, in their delegated cgroup; its exit status
    (its report goes to this process's stdout). `config_root` is HopxSpawner.hopx_config_root."""
    if os.geteuid() != 0:
        msg = "--hub-user checks as the hub does: run it as root"
        raise HubDoctorError(msg)
    try:
        account = pwd.getpwnam(user)
    except KeyError:
        msg = f"there is no Unix user {user!r} on this host (HopxSpawner's users are Unix users)"
        raise HubDoctorError(msg) from None
    host = CgroupHost.detect()
    existed = [
        h for h in user_cgroups.hierarchies(host) if Path(h.path, user_cgroups.ROOT, user).is_dir()
    ]
    user_cgroup = user_cgroups.delegate(user, account.pw_uid, account.pw_gid, host)
    runtime = Path(tempfile.mkdtemp(prefix="hopx-hub-doctor-"))
    os.chown(runtime, account.pw_uid, account.pw_gid)
    groups = os.getgrouplist(user, account.pw_gid)

    def become_the_user() -> None:
        user_cgroup.join()  # as root still, as HopxSpawner does
        os.setgroups(groups)
        os.setresgid(account.pw_gid, account.pw_gid, account.pw_gid)
        os.setresuid(account.pw_uid, account.pw_uid, account.pw_uid)

    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "HOME": account.pw_dir,
        "USER": user,
        "JUPYTER_RUNTIME_DIR": str(runtime / "runtime"),
    }
    spawned = Path(config_root, user)
    if (spawned / "jupyter_server_config.json").is_file():
        # The configuration HopxSpawner wrote for the user's running server, reviewed too.
        env["JUPYTER_CONFIG_PATH"] = str(spawned)
    argv = [sys.executable, "-m", "hopx_kernel.cli", "doctor", *doctor_args]
    argv += ["--cgroup-parent", user_cgroup.cgroup_parent]
    try:
        return subprocess.run(
            argv,
            env=env,
            cwd="/",
            preexec_fn=become_the_user,  # the CLI runs no threads, so a preexec_fn is safe
            check=False,
        ).returncode
    finally:
        shutil.rmtree(runtime, ignore_errors=True)
        if not existed:
            user_cgroups.remove(user, host)
