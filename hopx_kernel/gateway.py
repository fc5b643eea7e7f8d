"""Hopx's policy on a Jupyter Kernel Gateway: a personality of the gateway's.

The gateway is not a Jupyter server, so no server extension loads there. It does load one
"personality", the module that makes its request handlers:

    # jupyter_kernel_gateway_config.py
    c.KernelGatewayApp.api = "hopx_kernel.gateway"

This one is the gateway's own websocket personality (the kernels, sessions and kernelspecs APIs
that JupyterLab's `--gateway-url` and papermill speak) plus, as on a Jupyter server, Hopx's
timeout policy (idle culling with warnings, keep-alive, max lifetime) and its REST API under
`/hopx/api/`, behind the gateway's own token. And every kernel the gateway starts is a Hopx
kernel: a kernelspec that names no provisioner (the stock `python3`) starts under Hopx, and one
that names another provisioner is refused (`allow_unsandboxed`), so a client that ignores the
kernel name (papermill's GatewayKernelManager starts the default one) never gets an unsandboxed
kernel.
"""

from __future__ import annotations

from typing import Any

from jupyter_client.provisioning.factory import KernelProvisionerFactory
from jupyter_server.utils import ensure_async, url_path_join
from kernel_gateway.jupyter_websocket import JupyterWebsocketPersonality
from kernel_gateway.mixins import CORSMixin, JSONErrorsMixin, TokenAuthorizationMixin
from traitlets import Bool

from hopx_kernel.culler import Culler
from hopx_kernel.handlers import default_handlers
from hopx_kernel.kernelspec import PROVISIONER_NAME, provisioner_of, starts_under_hopx
from hopx_kernel.share_links import ShareLinks
from hopx_kernel.start_errors import StartError


def with_gateway_auth(handler: type) -> type:
    """`handler` behind the gateway's token, with its CORS headers and JSON errors, as the
    gateway's own handlers are."""
    mixins = (TokenAuthorizationMixin, CORSMixin, JSONErrorsMixin, handler)
    return type(f"Gateway{handler.__name__}", mixins, {})


class HopxPersonality(JupyterWebsocketPersonality):  # type: ignore[misc]
    allow_unsandboxed = Bool(
        False,
        config=True,
        help="""Let kernelspecs that name another provisioner than Hopx's start as they are.
        By default such a start is refused (403): every kernel of this gateway is sandboxed.""",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Every kernel of this gateway under Hopx: kernelspecs that name no provisioner too.
        KernelProvisionerFactory.instance(
            parent=self.parent
        ).default_provisioner_name = PROVISIONER_NAME
        self.culler = Culler(self.parent.kernel_manager, self.log)
        self._announce_starts(self.parent.kernel_manager)

    def _announce_starts(self, kernel_manager: Any) -> None:
        """Tell the culler of each kernel started, as a Jupyter server's events do: it need not
        wait for its next look at the others to take a new kernel's policy into account."""
        start_kernel = kernel_manager.start_kernel

        async def start_and_announce(*args: Any, **kwargs: Any) -> Any:
            self._refuse_unsandboxed(
                kwargs.get("kernel_name") or kernel_manager.default_kernel_name
            )
            kernel_id = await ensure_async(start_kernel(*args, **kwargs))
            self.culler.announce(str(kernel_id))
            return kernel_id

        kernel_manager.start_kernel = start_and_announce

    def _refuse_unsandboxed(self, name: str) -> None:
        try:
            spec = self.parent.kernel_manager.kernel_spec_manager.get_kernel_spec(name)
        except (KeyError, OSError, ValueError):  # no such kernelspec: the start says so itself
            return
        if self.allow_unsandboxed or starts_under_hopx(spec.metadata or {}, PROVISIONER_NAME):
            return
        provisioner = provisioner_of(spec.metadata or {}, PROVISIONER_NAME)
        self.log.warning("Hopx: refused kernelspec %r (provisioner %s)", name, provisioner)
        msg = (
            f"This gateway runs every kernel in a Hopx sandbox, and the kernelspec {name!r} "
            f"names the provisioner {provisioner!r}: remove its kernel_provisioner stanza, or "
            "set HopxPersonality.allow_unsandboxed = True on the gateway."
        )
        raise StartError(403, msg)

    async def init_configurables(self) -> None:
        await super().init_configurables()
        self.culler.start()
        self.log.info("Hopx: timeout policy running for the gateway's kernels")

    def create_request_handlers(self) -> list[tuple[Any, ...]]:
        # Share links serve apps through a Jupyter server's proxy, which a gateway has not.
        links = ShareLinks(3600.0, 86400.0)
        hopx = [
            (url_path_join("/", self.parent.base_url, pattern), with_gateway_auth(cls), options)
            for pattern, cls, options in default_handlers(self.culler, links)
            if "/links" not in pattern
        ]
        return [*hopx, *super().create_request_handlers()]

    async def shutdown(self) -> None:
        await self.culler.stop()
        await super().shutdown()


def create_personality(*args: Any, **kwargs: Any) -> HopxPersonality:
    return HopxPersonality(*args, **kwargs)
