"""JupyterHub in the box: every user's kernels in Hopx sandboxes, on a hub that spawns local
processes as the users' own Unix accounts.

    # jupyterhub_config.py
    c.JupyterHub.spawner_class = "hopx_kernel.jupyterhub.HopxSpawner"
    c.HopxSpawner.hopx_settings = {"memory_limit": "2G", "idle_timeout": "1h"}

`HopxSpawner` is JupyterHub's LocalProcessSpawner, and for each spawn it

- delegates a cgroup to the user (`hopx_kernel.user_cgroups`: v1, v2 or hybrid, no systemd
  needed) and starts the user's server in it, so that every sandbox gets its limits and figures;
  the cgroup goes, with anything left in it, when the server stops;
- writes the user's Hopx configuration (root's, readable by the user, not writable) and points
  the server at it: `cgroup_parent`, the settings for this user (`hopx_settings`, a mapping or a
  function of the spawner, so per user or group), every kernel started under Hopx whatever
  kernelspec a notebook names (`KernelProvisionerFactory.default_provisioner_name`), and
  lockdown (`hopx_lockdown`, on by default);
- ignores the user's own `~/.jupyter` (`disable_user_config`), which could undo all that.
"""

from __future__ import annotations

import json
import os
import pwd
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jupyterhub.spawner import LocalProcessSpawner
from traitlets import Any as AnyTrait
from traitlets import Bool, Unicode, default

from hopx_kernel import user_cgroups
from hopx_kernel.kernelspec import PROVISIONER_NAME, validate_settings


class HopxSpawner(LocalProcessSpawner):  # type: ignore[misc]
    hopx_settings = AnyTrait(
        {},
        config=True,
        help="""HopxProvisioner settings for this user's kernels: a mapping, e.g.
        {"memory_limit": "2G"}, or a function of the spawner returning one (to set them per user
        or group: spawner.user.name, [g.name for g in spawner.user.groups]).""",
    )
    hopx_lockdown = Bool(
        True,
        config=True,
        help="""Run the user's server in lockdown (hopx_kernel.lockdown): no terminals, only
        Hopx kernels, a content security policy for outputs.""",
    )
    hopx_config_root = Unicode(
        "/run/hopx-hub",
        config=True,
        help="""Where each user's Hopx configuration is written (one folder per user, root's).""",
    )

    _user_cgroup: user_cgroups.UserCgroup | None = None

    @default("disable_user_config")
    def _no_user_config(self) -> bool:
        # A user's own ~/.jupyter could switch lockdown off or start kernels outside Hopx.
        return True

    def settings_for_user(self) -> dict[str, Any]:
        settings = self.hopx_settings
        if callable(settings):
            settings = settings(self)
        if not isinstance(settings, dict):
            msg = "HopxSpawner.hopx_settings must give a dict, e.g. {'memory_limit': '2G'}"
            raise TypeError(msg)
        return dict(settings)

    async def start(self) -> Any:
        account = pwd.getpwnam(self.user.name)
        settings = self.settings_for_user()
        if os.geteuid() == 0:
            self._user_cgroup = user_cgroups.delegate(
                self.user.name, account.pw_uid, account.pw_gid
            )
            settings["cgroup_parent"] = self._user_cgroup.cgroup_parent
        # A bad setting fails the spawn with its own words, before anything runs.
        validate_settings(settings)
        environment: dict[str, str] = dict(getattr(self, "environment", {}))
        environment["JUPYTER_CONFIG_PATH"] = str(self._write_config(settings))
        self.environment = environment
        return await super().start()

    def make_preexec_fn(self, name: str) -> Callable[[], None]:
        drop_privileges = super().make_preexec_fn(name)
        user_cgroup = self._user_cgroup

        def preexec() -> None:
            if user_cgroup is not None:
                user_cgroup.join()  # as root still: on v2 only root may move it there
            drop_privileges()

        return preexec

    def run_post_stop_hook(self) -> Any:
        if self._user_cgroup is not None:
            try:
                user_cgroups.remove(self.user.name)
            except user_cgroups.DelegationError:
                self.log.exception("Hopx: the cgroup of %s was not removed", self.user.name)
            self._user_cgroup = None
        return super().run_post_stop_hook()

    def _write_config(self, settings: dict[str, Any]) -> Path:
        folder = Path(self.hopx_config_root, str(self.user.name))
        folder.mkdir(mode=0o755, parents=True, exist_ok=True)
        closed = [p for p in (folder, *folder.parents) if not p.stat().st_mode & stat.S_IXOTH]
        if closed:
            msg = (
                f"Set HopxSpawner.hopx_config_root to a folder every user can reach: "
                f"{closed[0]} is closed to others, so {self.user.name}'s server cannot read "
                f"its Hopx configuration"
            )
            raise PermissionError(msg)
        config: dict[str, Any] = {
            "HopxProvisioner": settings,
            "KernelProvisionerFactory": {"default_provisioner_name": PROVISIONER_NAME},
        }
        if self.hopx_lockdown:
            config["ServerApp"] = {"jpserver_extensions": {"hopx_kernel.lockdown": True}}
        path = folder / "jupyter_server_config.json"
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(config, indent=2))
        temporary.chmod(0o644)
        temporary.replace(path)
        return folder
