"""A kernel websocket whose client has gone never takes its session's replies from a live one.

jupyter_server gives every websocket of a session the session's ZeroMQ routing id, and the
kernel's ROUTER sockets give a routing id to the connection made last. When a second websocket
of a session arrives, jupyter_server closes the one it has registered ("Replacing stale
connection"), but one still being prepared (its upgrade not answered yet) is not closed by that:
it goes on to connect its channels. A websocket the browser dropped at once (a reload, a network
blip) and the one that replaced it are prepared side by side, in an order the server cannot
know (their requests are read within a millisecond), and either can connect last. When the
dropped one does, it takes the session's replies and the live one waits for them forever (the
notebook stays at "Unknown"); when the dropped one registers last, it closes the live one. It
happens with any kernel: under load, about one new websocket in 300 after an aborted one.

What the server can know is whether a websocket's client is still there: its connection has
not been closed or reset. So a websocket whose client has gone registers nothing, closes
nothing and connects nothing; one that finds its session taken by a websocket whose client has
gone takes it back; of two live ones, the one registered last connects, as before, and the other
is refused (409) before it connects. The checks are made as the websocket registers and once it
is prepared, just before it connects (nothing else runs between the two).
"""

from __future__ import annotations

import socket
from typing import Any

from jupyter_server.services.kernels.connection.channels import ZMQChannelsWebsocketConnection
from tornado import web

GONE = "The client of this websocket has gone."
REPLACED = "A later websocket of this session has replaced this one."


class SessionWebsocketConnection(ZMQChannelsWebsocketConnection):
    async def _register_session(self) -> None:
        self.session_key = f"{self.kernel_id}:{self.session.session}"
        if client_gone(self.websocket_handler):
            raise web.HTTPError(409, GONE)
        await super()._register_session()  # type: ignore[no-untyped-call]

    async def prepare(self) -> None:
        await super().prepare()  # type: ignore[no-untyped-call]
        registered = self._open_sessions.get(self.session_key)
        if client_gone(self.websocket_handler):
            if registered is self.websocket_handler:
                del self._open_sessions[self.session_key]
            raise web.HTTPError(409, GONE)
        if registered is self.websocket_handler:
            return
        if registered is not None and not client_gone(registered):
            self.log.info(
                "Hopx: a later websocket of session %s has replaced this one", self.session_key
            )
            raise web.HTTPError(409, REPLACED)
        # Taken by a websocket whose client has gone: it will connect nothing.
        self._open_sessions[self.session_key] = self.websocket_handler


def client_gone(handler: Any) -> bool:
    """Whether the client of a websocket `handler` serves has closed or reset its connection."""
    if getattr(handler, "_on_close_called", False):
        return True
    upgraded = getattr(handler, "ws_connection", None)
    stream = getattr(upgraded, "stream", None) or getattr(
        handler.request.connection, "stream", None
    )
    if stream is None or stream.closed() or stream.socket is None:
        return True
    try:
        # A client waits for the answer to its upgrade before it sends: nothing to read but an
        # end (b"") or an error, unless it has gone.
        return bool(stream.socket.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"")
    except BlockingIOError:
        return False
    except OSError:
        return True


def install(serverapp: Any, settings: dict[str, Any]) -> None:
    """Make the server use SessionWebsocketConnection (through the extension's `settings`, which
    jupyter_server merges into its web application's), unless the admin chose a class
    (ServerApp.kernel_websocket_connection_class) or kernels run behind a gateway."""
    if "kernel_websocket_connection_class" in serverapp.config.get("ServerApp", {}):
        return
    chosen = serverapp.web_app.settings.get("kernel_websocket_connection_class")
    if chosen is ZMQChannelsWebsocketConnection:
        settings["kernel_websocket_connection_class"] = SessionWebsocketConnection
        serverapp.log.info(
            "Hopx: a kernel websocket whose client has gone connects nothing and replaces "
            "no other of its session"
        )
