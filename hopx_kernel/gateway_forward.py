"""The Hopx REST API of a Jupyter server whose kernels run on a Kernel Gateway
(`--gateway-url`): every `/hopx/api/` request is passed on to the gateway, where the kernels, their
sandboxes and the timeout policy are (`hopx_kernel.gateway`), with the gateway's credentials
(GatewayClient), once the user is authenticated and authorized here. The answer comes back as
the gateway gave it, so JupyterLab's status bar, Sandboxes panel, warnings, keep-alive and kill
work as with local kernels.
"""

from __future__ import annotations

from typing import Any

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.gateway.gateway_client import GatewayClient, gateway_request
from jupyter_server.utils import url_path_join
from tornado import web

# What the gateway's answer may say about itself; other headers are the gateway's business.
PASSED_HEADERS = ("Content-Type",)


class GatewayForwardHandler(APIHandler):
    auth_resource = "kernels"

    @web.authenticated
    @authorized
    async def get(self, path: str) -> None:
        await self._forward(path)

    @web.authenticated
    @authorized
    async def post(self, path: str) -> None:
        await self._forward(path)

    @web.authenticated
    @authorized
    async def delete(self, path: str) -> None:
        await self._forward(path)

    async def _forward(self, path: str) -> None:
        url = url_path_join(str(GatewayClient.instance().url or ""), "hopx/api", path)
        if self.request.query:
            url = f"{url}?{self.request.query}"
        options: dict[str, Any] = {"method": self.request.method, "raise_error": False}
        if self.request.method == "POST":
            options["body"] = self.request.body or b""
        response = await gateway_request(url, **options)
        self.set_status(response.code)
        for name in PASSED_HEADERS:
            if name in response.headers:
                self.set_header(name, response.headers[name])
        if response.code != 204:
            self.write(response.body or b"")
        self.finish()


def forward_handlers() -> list[tuple[str, type[APIHandler], dict[str, Any]]]:
    return [(r"/hopx/api/(?P<path>.*)", GatewayForwardHandler, {})]
