"""REST API of the Hopx server extension, under `/hopx/api/`.

Every handler is authenticated and authorized like the jupyter_server API it extends: the sandbox
handlers on the "kernels" resource, like `/api/kernels` (whoever may list, start or shut down
kernels may do the same here, and nobody else), the kernelspec handler on "kernelspecs", like
`/api/kernelspecs`.

    GET    /hopx/api/sandboxes                     every Hopx kernel: state, limits, usage,
                                                   idle since, next cull and its reason
    GET    /hopx/api/sandboxes/<kernel_id>         one of them
    DELETE /hopx/api/sandboxes/<kernel_id>         kill it (reason "manual"); 204 once gone
    POST   /hopx/api/sandboxes/<kernel_id>/extend  keep it alive: {"seconds": 600} (optional,
                                                   default its idle timeout), capped by its
                                                   max lifetime
    GET    /hopx/api/kernelspecs                   {"hopx": [listed kernelspecs that start under
                                                   Hopx], "lockdown": true|false}
"""

from __future__ import annotations

import json
import math
from typing import Any

from jupyter_core.utils import ensure_async
from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from tornado import web

from hopx_kernel import lockdown
from hopx_kernel.culler import Culler, UnknownSandbox
from hopx_kernel.kernelspec import default_provisioner_name, hopx_kernelspecs

KERNEL_ID = r"(?P<kernel_id>\w+-\w+-\w+-\w+-\w+)"
# Longest keep-alive one request may ask for; the max lifetime usually caps it far sooner.
MAX_EXTEND_SECONDS = 366 * 86400


class SandboxAPIHandler(APIHandler):
    auth_resource = "kernels"

    def initialize(self, culler: Culler) -> None:
        self.culler = culler

    def _model(self, kernel_id: str) -> dict[str, Any]:
        try:
            return self.culler.model(kernel_id)
        except UnknownSandbox:
            raise web.HTTPError(404, f"no Hopx sandbox for kernel {kernel_id}") from None


class SandboxesHandler(SandboxAPIHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.finish(json.dumps(self.culler.models()))


class SandboxHandler(SandboxAPIHandler):
    @web.authenticated
    @authorized
    async def get(self, kernel_id: str) -> None:
        self.finish(json.dumps(self._model(kernel_id)))

    @web.authenticated
    @authorized
    async def delete(self, kernel_id: str) -> None:
        try:
            await self.culler.kill(kernel_id)
        except UnknownSandbox:
            raise web.HTTPError(404, f"no Hopx sandbox for kernel {kernel_id}") from None
        self.set_status(204)
        self.finish()


class SandboxNetworkHandler(SandboxAPIHandler):
    @web.authenticated
    @authorized
    async def get(self, kernel_id: str) -> None:
        try:
            self.finish(json.dumps(self.culler.network(kernel_id)))
        except UnknownSandbox:
            raise web.HTTPError(404, f"no Hopx sandbox for kernel {kernel_id}") from None


class SandboxExtendHandler(SandboxAPIHandler):
    @web.authenticated
    @authorized
    async def post(self, kernel_id: str) -> None:
        seconds = self._requested_seconds()
        try:
            model = self.culler.extend(kernel_id, seconds)
        except UnknownSandbox:
            raise web.HTTPError(404, f"no Hopx sandbox for kernel {kernel_id}") from None
        self.finish(json.dumps(model))

    def _requested_seconds(self) -> float | None:
        """The body's "seconds", if any; anything but a positive number is a 400."""
        body = self.request.body.strip()
        if not body:
            return None
        try:
            request = json.loads(body)
        except (ValueError, RecursionError):  # deeply nested arrays exhaust the parser's stack
            raise web.HTTPError(400, 'the body must be JSON, e.g. {"seconds": 600}') from None
        seconds = request.get("seconds") if isinstance(request, dict) else "not an object"
        if seconds is None:
            return None
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, (int, float))
            or not math.isfinite(seconds)
            or not 0 < seconds <= MAX_EXTEND_SECONDS
        ):
            msg = f"seconds must be a number above 0 and at most {MAX_EXTEND_SECONDS}"
            raise web.HTTPError(400, f'{msg}, e.g. {{"seconds": 600}}')
        return float(seconds)


class KernelspecsHandler(APIHandler):
    """Which of the server's kernelspecs start sandboxed, for JupyterLab to tell notebooks on
    Hopx kernels from the others, and whether the server is in lockdown."""

    auth_resource = "kernelspecs"

    @web.authenticated
    @authorized
    async def get(self) -> None:
        listing = await ensure_async(self.kernel_spec_manager.get_all_specs())
        hopx = hopx_kernelspecs(listing, default_provisioner_name(self.serverapp))
        lockdown_on = bool(self.settings.get(lockdown.SETTING, False))
        self.finish(json.dumps({"hopx": hopx, "lockdown": lockdown_on}))


def default_handlers(culler: Culler) -> list[tuple[str, type[APIHandler], dict[str, Any]]]:
    options = {"culler": culler}
    return [
        (r"/hopx/api/sandboxes/?", SandboxesHandler, options),
        (rf"/hopx/api/sandboxes/{KERNEL_ID}/?", SandboxHandler, options),
        (rf"/hopx/api/sandboxes/{KERNEL_ID}/extend/?", SandboxExtendHandler, options),
        (rf"/hopx/api/sandboxes/{KERNEL_ID}/network/?", SandboxNetworkHandler, options),
        (r"/hopx/api/kernelspecs/?", KernelspecsHandler, {}),
    ]
