"""An auto-restarter that leaves kernels stopped by the timeout policy (or by hand) stopped.

jupyter_client's restarter brings back any kernel that died. A sandbox the supervisor stopped
at its max lifetime, or that `jupyter hopx kill` stopped, must stay down: this restarter shuts such
a kernel down for good instead, through the Jupyter server when there is one, so the server's
kernel list no longer shows it.
"""

from __future__ import annotations

from jupyter_client.ioloop.restarter import AsyncIOLoopKernelRestarter
from jupyter_client.multikernelmanager import MultiKernelManager
from jupyter_core.utils import ensure_async


class PolicyAwareRestarter(AsyncIOLoopKernelRestarter):
    async def poll(self) -> None:  # type: ignore[override]
        km = self.kernel_manager
        # is_alive first: polling the provisioner is what records why its sandbox ended.
        if not await km.is_alive() and getattr(km.provisioner, "stopped_by_policy", False):
            self.stop()
            self.log.info(
                "Hopx kernel %s was stopped (%s): not restarting it",
                km.kernel_id,
                km.provisioner.last_exit_reason,
            )
            await self._shut_down_for_good()
            return
        await super().poll()

    async def _shut_down_for_good(self) -> None:
        """Release what is left of the kernel and take it off its server's list."""
        km = self.kernel_manager
        server_kernels = km.parent
        if isinstance(server_kernels, MultiKernelManager) and km.kernel_id in server_kernels:
            await ensure_async(server_kernels.shutdown_kernel(km.kernel_id, now=True))
        else:
            await km.shutdown_kernel(now=True)
            self._fire_callbacks("dead")
