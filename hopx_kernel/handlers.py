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
    GET    /hopx/api/sandboxes/<kernel_id>/links   its live share links (never their tokens)
    POST   /hopx/api/sandboxes/<kernel_id>/links   a share link to one of its ports: {"port": 8050,
                                                   "expires_in": 3600} (optional, default
                                                   share_link_lifetime), "absolute": true for
                                                   an app sent the whole path; 201 with its
                                                   "url", the only time its token is shown
    DELETE /hopx/api/sandboxes/<kernel_id>/links/<id>   revoke it; 204
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
from jupyter_server.utils import url_path_join
from tornado import web

from hopx_kernel import lockdown
from hopx_kernel.culler import Culler, UnknownSandbox
from hopx_kernel.kernelspec import default_provisioner_name, hopx_kernelspecs
from hopx_kernel.share_links import ShareLinkError, ShareLinks

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


class ShareLinksHandler(SandboxAPIHandler):
    def initialize(self, culler: Culler, links: ShareLinks) -> None:  # type: ignore[override]
        super().initialize(culler)
        self.links = links

    def _running(self, kernel_id: str) -> None:
        self._model(kernel_id)  # 404 unless it is a Hopx kernel of this server

    @web.authenticated
    @authorized
    async def get(self, kernel_id: str) -> None:
        self._running(kernel_id)
        self.finish(json.dumps([link.model() for link in self.links.of_kernel(kernel_id)]))

    @web.authenticated
    @authorized
    async def post(self, kernel_id: str) -> None:
        self._running(kernel_id)
        request = _json_object(self.request.body, '{"port": 8050}')
        port, seconds = request.get("port"), request.get("expires_in")
        if isinstance(port, bool) or not isinstance(port, int):
            raise web.HTTPError(400, 'port must be a number, e.g. {"port": 8050}')
        if seconds is not None and (
            isinstance(seconds, bool)
            or not isinstance(seconds, (int, float))
            or not math.isfinite(seconds)
        ):
            raise web.HTTPError(400, 'expires_in must be seconds, e.g. {"expires_in": 3600}')
        absolute = request.get("absolute", False)
        if not isinstance(absolute, bool):
            raise web.HTTPError(400, 'absolute must be true or false, e.g. {"absolute": true}')
        user = str(getattr(self.current_user, "username", ""))
        try:
            link, token = self.links.create(kernel_id, port, user, seconds, absolute=absolute)
        except ShareLinkError as e:
            raise web.HTTPError(400, str(e)) from None
        self.log.info(
            "Hopx: share link %s to port %s of kernel %s made by %s from %s, expires at %s",
            link.id,
            port,
            kernel_id,
            user,
            self.request.remote_ip,
            link.expires_at,
        )
        url = url_path_join(self.base_url, "hopx", "share", token) + "/"
        self.set_status(201)
        self.finish(json.dumps({**link.model(), "url": url}))


class ShareLinkHandler(ShareLinksHandler):
    @web.authenticated
    @authorized
    async def delete(self, kernel_id: str, link_id: str) -> None:
        link = self.links.revoke(kernel_id, link_id)
        if link is None:
            raise web.HTTPError(404, f"kernel {kernel_id} has no share link {link_id}")
        self.log.info(
            "Hopx: share link %s of kernel %s revoked by %s from %s",
            link.id,
            kernel_id,
            getattr(self.current_user, "username", ""),
            self.request.remote_ip,
        )
        self.set_status(204)
        self.finish()


def _json_object(body: bytes, example: str) -> dict[str, Any]:
    try:
        request = json.loads(body or b"{}")
    except (ValueError, RecursionError):
        raise web.HTTPError(400, f"the body must be JSON, e.g. {example}") from None
    if not isinstance(request, dict):
        raise web.HTTPError(400, f"the body must be a JSON object, e.g. {example}")
    return request


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


def default_handlers(
    culler: Culler, links: ShareLinks
) -> list[tuple[str, type[APIHandler], dict[str, Any]]]:
    options: dict[str, Any] = {"culler": culler}
    with_links = {**options, "links": links}
    return [
        (r"/hopx/api/sandboxes/?", SandboxesHandler, options),
        (rf"/hopx/api/sandboxes/{KERNEL_ID}/?", SandboxHandler, options),
        (rf"/hopx/api/sandboxes/{KERNEL_ID}/extend/?", SandboxExtendHandler, options),
        (rf"/hopx/api/sandboxes/{KERNEL_ID}/network/?", SandboxNetworkHandler, options),
        (rf"/hopx/api/sandboxes/{KERNEL_ID}/links/?", ShareLinksHandler, with_links),
        (
            rf"/hopx/api/sandboxes/{KERNEL_ID}/links/(?P<link_id>[0-9a-f]{{16}})/?",
            ShareLinkHandler,
            with_links,
        ),
        (r"/hopx/api/kernelspecs/?", KernelspecsHandler, {}),
    ]
