# Lockdown for a Jupyter server that runs untrusted notebooks. Copy these lines into the server's
# jupyter_server_config.py (or a JupyterHub image's), load this file with
# `jupyter server --config=examples/lockdown/jupyter_server_config.py`, or run
# `jupyter hopx install --lockdown`, which enables the same extension in a config.d file.
#
# Lockdown is the server extension hopx_kernel.lockdown. While it is enabled the server
# - has no terminals (/api/terminals and /terminals answer 404);
# - lists and starts only kernelspecs that start under Hopx; any other is refused before a process
#   starts, with a message naming the Hopx kernelspecs to pick instead;
# - sends JupyterLab's pages a Content-Security-Policy under which they load nothing from other
#   hosts (a Markdown cell's remote image is not fetched);
# - serves its files with a contents manager that follows no symbolic link, so a link a kernel
#   made in a read-write notebook folder cannot have the server read or write outside it.
# `jupyter hopx doctor` says whether it is on.
c = get_config()  # noqa: F821 - provided by Jupyter when it loads this file

c.ServerApp.jpserver_extensions.update({"hopx_kernel.lockdown": True})

# Lockdown (and the hopx_kernel extension) install this one when no contents manager is chosen;
# naming it keeps it if another file chooses one. Lockdown refuses to start with a contents
# manager that follows links (jupyter_server's own file managers, or classes built on them).
c.ServerApp.contents_manager_class = "hopx_kernel.contents.HopxContentsManager"

# The page policy. The default (hopx_kernel.lockdown.LOCKDOWN_CSP) keeps JupyterLab and sandboxed
# outputs working and allows no other host; change it only to allow more, e.g. a portal that embeds
# JupyterLab in a frame:
# c.HopxLockdown.content_security_policy = (
#     LOCKDOWN_CSP.replace("frame-ancestors 'self'", "frame-ancestors 'self' https://portal.example")
# )
# with `from hopx_kernel.lockdown import LOCKDOWN_CSP` at the top.

# Optional: every kernelspec that names no provisioner of its own (python3, ir, ...) starts under
# Hopx too, so none of them is refused.
# c.KernelProvisionerFactory.default_provisioner_name = "hopx-provisioner"
