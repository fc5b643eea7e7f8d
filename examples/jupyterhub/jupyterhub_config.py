"""A JupyterHub whose users' kernels all run in Hopx sandboxes.

Run as root (the hub starts each user's server as their own Unix account):

    jupyterhub -f examples/jupyterhub/jupyterhub_config.py

Each spawn delegates a cgroup to the user and starts their server in it (no systemd needed), and
their server runs every kernel under Hopx, whatever kernelspec a notebook names, in lockdown (no
terminals). Users log in with their Unix password (PAM); choose another authenticator as usual.
"""

# ruff: noqa: F821 - `c` is the configuration object JupyterHub gives this file.

c.JupyterHub.spawner_class = "hopx_kernel.jupyterhub.HopxSpawner"


# Settings for every user's kernels, or per user and group: a function of the spawner.
def hopx_settings(spawner):
    groups = {group.name for group in spawner.user.groups}
    settings = {"memory_limit": "2G", "cpu_limit": 2, "idle_timeout": "1h", "max_lifetime": "24h"}
    if "gpu-users" in groups:  # an example of a group with more room
        settings["memory_limit"] = "8G"
    return settings


c.HopxSpawner.hopx_settings = hopx_settings

# The users' notebooks are in their home directories.
c.Spawner.notebook_dir = "~"
c.Spawner.default_url = "/lab"
