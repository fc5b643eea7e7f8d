"""The Hopx jupyter_server extension: the timeout policy, its REST API and its events; a contents
manager that follows no symbolic link (hopx_kernel.contents); kernel websockets that keep their
session's replies (hopx_kernel.websocket_sessions); start failures told in words
(hopx_kernel.start_errors).

Enabled on install (`etc/jupyter/jupyter_server_config.d/hopx_kernel.json`); `jupyter server
extension list` shows it. Its timeout policy only acts on kernels started by the Hopx provisioner.
"""

from __future__ import annotations

from typing import Any

from jupyter_server.extension.application import ExtensionApp
from traitlets import Bool

from hopx_kernel import contents, events, start_errors, websocket_sessions
from hopx_kernel.culler import Culler
from hopx_kernel.gateway_forward import forward_handlers
from hopx_kernel.handlers import default_handlers
from hopx_kernel.proxy import (
    ACTIVITY_SETTING,
    CLIENT_SETTING,
    IDLE_SETTING,
    TIMEOUT_SETTING,
    proxy_handlers,
)
from hopx_kernel.share_links import ShareLinks
from hopx_kernel.traits import Duration


class HopxExtension(ExtensionApp):
    name = "hopx_kernel"
    description = "Sandboxed kernels: timeout policy, REST API and events"
    load_other_extensions = True

    share_link_lifetime = Duration(
        3600.0,
        help="""How long a share link to a notebook's web app lasts when its maker does not
        say (seconds, or e.g. '30m', '2h'). At most max_share_link_lifetime.""",
    ).tag(config=True)
    max_share_link_lifetime = Duration(
        86400.0,
        help="""The longest a share link may be asked to last (seconds, or e.g. '1d'). A link
        also ends when it is revoked and when its kernel ends.""",
    ).tag(config=True)

    proxy_timeout = Duration(
        60.0,
        help="""How long an app in a sandbox may take to begin answering a request through
        /hopx/proxy or a share link before the client gets a 504 (seconds, or e.g. '2m'). An
        answer that has begun may stream for as long as it likes.""",
    ).tag(config=True)

    proxy_idle_timeout = Duration(
        3600.0,
        help="""How long a websocket to a notebook's app may carry nothing either way before it
        is closed (seconds, or e.g. '30m'); 0 for no bound. Apps that keep their websockets
        open send pings well within it.""",
    ).tag(config=True)
    proxy_client_timeout = Duration(
        60.0,
        help="""How long a client of a notebook's app may send nothing of its request's body, or
        take nothing of an answer, before it is cut off (seconds, or e.g. '2m'); 0 for no
        bound. A slow client (slowloris) keeps none of a sandbox's 64 connections.""",
    ).tag(config=True)
    proxy_is_activity = Bool(
        True,
        help="""Whether requests to a notebook's web app through /hopx/proxy or a share link
        count as activity for the idle timeout. Yes by default: an app someone is using keeps
        its kernel alive, though no cell runs. With False, the kernel is culled after
        idle_timeout without cells or clients, whoever is using its app.""",
    ).tag(config=True)

    culler: Culler | None = None
    share_links: ShareLinks | None = None

    def _link_jupyter_server_extension(self, serverapp: Any) -> None:
        """Called by jupyter_server once its config is loaded, before it makes its managers: the
        one moment the contents manager's class can still be chosen."""
        super()._link_jupyter_server_extension(serverapp)
        contents.install(serverapp)

    def initialize_settings(self) -> None:
        assert self.serverapp is not None
        events.register(self.serverapp.event_logger)
        websocket_sessions.install(self.serverapp, self.settings)
        start_errors.install(self.serverapp)
        self.settings[TIMEOUT_SETTING] = self.proxy_timeout
        self.settings[ACTIVITY_SETTING] = self.proxy_is_activity
        self.settings[IDLE_SETTING] = self.proxy_idle_timeout
        self.settings[CLIENT_SETTING] = self.proxy_client_timeout

    def initialize_handlers(self) -> None:
        assert self.serverapp is not None
        if self.serverapp.gateway_config.gateway_enabled:
            # The kernels, their sandboxes and the policy are the gateway's (hopx_kernel.gateway).
            self.handlers.extend(forward_handlers())
            return
        self.culler = Culler(self.serverapp.kernel_manager, self.log)
        lifetime = min(self.share_link_lifetime, self.max_share_link_lifetime)
        self.share_links = ShareLinks(lifetime, self.max_share_link_lifetime)
        self.handlers.extend(default_handlers(self.culler, self.share_links))
        self.handlers.extend(proxy_handlers(self.share_links))

    async def _start_jupyter_server_extension(self, serverapp: Any) -> None:
        if self.culler is None:
            self.log.info("Hopx: the kernels' gateway runs their timeout policy")
            return
        self.culler.start()
        # A new kernel may be due sooner than the culler's next look at the others.
        serverapp.event_logger.add_listener(schema_id=events.SCHEMA_ID, listener=self._on_event)
        self.log.info("Hopx: timeout policy running for Hopx kernels")

    async def _on_event(self, logger: Any, schema_id: str, data: dict[str, Any]) -> None:
        if data.get("action") == "started" and self.culler is not None:
            self.culler.announce(str(data["kernel_id"]))
        # A kernel that ended takes its share links with it (a restart is not an end).
        ended = data.get("action") in ("culled", "killed") or data.get("reason") == "shutdown"
        if ended and self.share_links is not None:
            self.share_links.forget_kernel(str(data["kernel_id"]))

    async def stop_extension(self) -> None:
        if self.culler is not None:
            await self.culler.stop()
