"""`/hopx/proxy/<kernel-id>/<port>/<path>`: a web app a notebook started in its sandbox, reached
through the Jupyter server, behind the same authentication and "kernels" permission as the
kernel itself, for HTTP and websocket upgrades alike.

The way in is the sandbox supervisor's inbound socket (runtime.inbound): nothing listens on a
TCP port outside the sandbox, and the URL names a port of that sandbox only, never a host.

What the app is sent: the request, without Jupyter's cookies, token or XSRF values (the app is
the kernel's, and the kernel is not trusted with the user's session), with `X-Forwarded-Prefix`,
`-Proto`, `-Host` and `-For`, and `X-Hopx-User` naming the authenticated user (a client's own
copies of these are dropped). What the browser is sent: the app's answer under a
Content-Security-Policy sandbox, so its pages run in an origin of their own that cannot use the
user's Jupyter session, and without cookies the app tries to set for the server's other paths.

`/hopx/share/<token>/<path>` is the same way in, opened by a share link (hopx_kernel.share_links)
instead of a login: for people without a Jupyter account, and for the user's own browser, whose
pages in their own origin carry no session cookie (the token in their path is what lets their
scripts, styles and calls through). The token is cut from the server's log.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
import time
from typing import Any, Final
from urllib.parse import parse_qsl, urlencode

from jupyter_core.utils import ensure_async
from jupyter_server.auth.decorator import allow_unauthenticated
from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.utils import url_path_join
from tornado import httputil, web
from tornado.http1connection import HTTP1Connection, HTTP1ConnectionParameters
from tornado.ioloop import IOLoop
from tornado.iostream import IOStream, StreamClosedError

from hopx_kernel.provisioner import HopxProvisioner
from hopx_kernel.share_links import ShareLinks
from runtime import inbound

KERNEL_ID = r"(?P<kernel_id>\w+-\w+-\w+-\w+-\w+)"
PORT = r"(?P<port>\d{1,5})"
SHARE_LINK = r"(?P<token>[A-Za-z0-9_-]{20,64})"  # a share link's token
# Bounds on what passes: a response head, and how long an app may take to begin its answer by
# default (a streamed answer may then last as long as it likes; the setting is proxy_timeout).
MAX_HEADER_BYTES: Final = 64 * 1024
ANSWER_TIMEOUT: Final = 60.0
TIMEOUT_SETTING: Final = "hopx_proxy_timeout"
ACTIVITY_SETTING: Final = "hopx_proxy_is_activity"
# A websocket to an app with nothing sent either way for this long is closed (proxy_idle_timeout).
IDLE_TIMEOUT: Final = 3600.0
IDLE_SETTING: Final = "hopx_proxy_idle_timeout"
# A client that sends nothing of its request's body, or takes nothing of an answer, for this long
# is cut off (proxy_client_timeout): a slow client keeps none of a sandbox's connections.
CLIENT_TIMEOUT: Final = 60.0
CLIENT_SETTING: Final = "hopx_proxy_client_timeout"
CONNECT_TIMEOUT: Final = 10.0
CHUNK: Final = 256 * 1024
UNBOUNDED_BODY: Final = 1 << 62

# Headers that describe one connection, not the message (RFC 9110 7.6.1), and those this proxy
# sets itself: a client's own copies never reach the app.
HOP_BY_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
SET_HERE: Final = frozenset(
    {
        "host",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-prefix",
        "x-forwarded-proto",
        "x-forwarded-port",
        "forwarded",
        "x-hopx-user",
    }
)
USER_HEADER: Final = "X-Hopx-User"
# Cookies of the Jupyter server and of JupyterHub: never sent to an app, never set by one.
SESSION_COOKIE_PREFIXES: Final = ("_xsrf", "username-", "jupyterhub-")
# The app's pages get an origin of their own: script runs, but not as the Jupyter server.
SANDBOX_POLICY: Final = (
    "sandbox allow-scripts allow-forms allow-popups allow-popups-to-escape-sandbox "
    "allow-modals allow-downloads"
)


HUNG_UP: Final = "The app in the sandbox ended the connection unanswered."


class ProxyError(web.HTTPError):
    """The app could not be reached; the message says why, in words for the user."""


@web.stream_request_body
class _AppProxy(JupyterHandler):
    """Forwards one request to a port of a sandbox, once a subclass has let it through."""

    SUPPORTED_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")

    _app: IOStream | None = None
    _connection: HTTP1Connection | None = None
    # Who the app is told made the request (X-Hopx-User), and the public prefix of its paths.
    _user_name = ""
    _public_prefix = ""
    # Whether the app is sent the whole path, prefix and all.
    _absolute = False
    # Cuts the client off unless the next part of its request's body comes in time.
    _body_deadline: object | None = None

    async def _forward(self, kernel_id: str, port: int) -> None:
        path = self._sandbox_socket(kernel_id)
        self._touch(kernel_id)
        if self._is_upgrade():
            await self._tunnel_websocket(path, port)
            return
        self._app = await _open_app(path, port)
        params = HTTP1ConnectionParameters(
            no_keep_alive=True,
            max_header_size=MAX_HEADER_BYTES,
            header_timeout=self._answer_timeout(),
            decompress=False,
            chunk_size=CHUNK,
            # The answer streams through in chunks: its size is not this process's concern (by
            # default tornado refuses one whose Content-Length exceeds the stream's buffer).
            max_body_size=UNBOUNDED_BODY,
        )
        self._connection = HTTP1Connection(self._app, True, params)
        start = httputil.RequestStartLine(self.request.method or "GET", self._target(), "HTTP/1.1")
        headers = self._headers_for_app(port)
        try:
            await self._connection.write_headers(start, headers)
        except StreamClosedError:
            raise ProxyError(502, HUNG_UP) from None
        if self._has_body():
            self._wait_for_body()

    async def data_received(self, chunk: bytes) -> None:
        if self._connection is None:
            return
        self._wait_for_body()
        try:
            await self._connection.write(chunk)
        except StreamClosedError:
            # The app has hung up: the rest of the body goes nowhere, and _answer says so.
            self._connection = None

    async def _answer(self, **_: str) -> None:
        """Once the request's body has gone to the app: its answer, streamed to the client."""
        self._stop_waiting_for_body()
        if self._connection is None:
            self._close_app()
            raise ProxyError(502, HUNG_UP)
        self._connection.finish()
        answer = _Answer(self)
        asked = time.monotonic()
        try:
            complete = await self._connection.read_response(answer)
        except (StreamClosedError, httputil.HTTPInputError):
            complete = False
        finally:
            self._close_app()
        if not answer.began:
            if time.monotonic() - asked >= self._answer_timeout():
                raise ProxyError(504, "The app in the sandbox did not answer in time.")
            raise ProxyError(502, HUNG_UP)
        if not complete and not self._finished:
            # Cut short after its head went out: the client must not take it for whole.
            self.detach().close()
            return
        if not self._finished:
            self.finish()

    get = post = put = patch = delete = options = head = _answer

    def on_connection_close(self) -> None:
        self._stop_waiting_for_body()
        self._close_app()

    def on_finish(self) -> None:
        self._stop_waiting_for_body()
        self._close_app()

    def _close_app(self) -> None:
        if self._app is not None:
            self._app.close()
            self._app = None

    # -- slow clients ---------------------------------------------------------------------------

    def _client_timeout(self) -> float:
        return float(self.settings.get(CLIENT_SETTING, CLIENT_TIMEOUT))

    def _has_body(self) -> bool:
        headers = self.request.headers
        chunked = "chunked" in headers.get("Transfer-Encoding", "").lower()
        return chunked or headers.get("Content-Length", "0").strip() not in ("", "0")

    def _wait_for_body(self) -> None:
        """(Re)start the wait for the next part of the request's body."""
        self._stop_waiting_for_body()
        timeout = self._client_timeout()
        if timeout:
            cut = functools.partial(self.cut_off_client, "sent nothing of its request")
            self._body_deadline = IOLoop.current().call_later(timeout, cut)

    def _stop_waiting_for_body(self) -> None:
        if self._body_deadline is not None:
            IOLoop.current().remove_timeout(self._body_deadline)
            self._body_deadline = None

    def cut_off_client(self, stalled: str) -> None:
        """The client has stalled: its connection and the app's are closed."""
        self._body_deadline = None
        self.log.warning(
            "Hopx: cut off a client of an app in a sandbox (%s %s from %s): it %s for %.0f s "
            "(proxy_client_timeout)",
            self.request.method,
            self.request.uri,
            self.request.remote_ip,
            stalled,
            self._client_timeout(),
        )
        self._close_app()
        self.request.connection.close()  # type: ignore[union-attr]

    # -- where and what -------------------------------------------------------------------------

    def _is_upgrade(self) -> bool:
        upgrade = self.request.headers.get("Upgrade", "").lower()
        return self.request.method == "GET" and upgrade == "websocket"

    def _sandbox_socket(self, kernel_id: str) -> str:
        try:
            km = self.kernel_manager.get_kernel(kernel_id)
        except KeyError:
            raise web.HTTPError(404, "No such kernel.") from None
        provisioner = km.provisioner
        if not isinstance(provisioner, HopxProvisioner) or not provisioner.has_process:
            raise web.HTTPError(404, "No running Hopx sandbox for this kernel.")
        return inbound.socket_path(provisioner.state_dir)

    def _touch(self, kernel_id: str) -> None:
        """A proxied request is activity (unless proxy_is_activity is off): an app in use
        keeps its kernel from the idle cull."""
        if not self.settings.get(ACTIVITY_SETTING, True):
            return
        with contextlib.suppress(KeyError):
            km: Any = self.kernel_manager.get_kernel(kernel_id)
            km.last_activity = self.kernel_manager.last_kernel_activity = _utcnow()

    def _prefix(self) -> str:
        return self._public_prefix

    def _answer_timeout(self) -> float:
        return float(self.settings.get(TIMEOUT_SETTING, ANSWER_TIMEOUT))

    def _target(self) -> str:
        """The path and query the app is asked for: below the prefix (the whole path for an
        app that lives under it, see AbsoluteProxyHandler), without Jupyter's token."""
        path = self.request.path if self._absolute else self.request.path[len(self._prefix()) :]
        path = path or "/"
        query = [(k, v) for k, v in parse_qsl(self.request.query, keep_blank_values=True)]
        kept = [(k, v) for k, v in query if k != "token"]
        if len(kept) == len(query):
            return path + (f"?{self.request.query}" if self.request.query else "")
        return path + (f"?{urlencode(kept)}" if kept else "")

    def _headers_for_app(self, port: int) -> httputil.HTTPHeaders:
        headers = httputil.HTTPHeaders()
        for name, value in self.request.headers.get_all():
            lower = name.lower()
            if lower in HOP_BY_HOP or lower in SET_HERE:
                continue
            if lower == "cookie":
                kept = _without_session_cookies(value)
                if kept:
                    headers.add(name, kept)
                continue
            if lower == "authorization" and value.lower().startswith("token "):
                continue
            if lower == "x-xsrftoken":
                continue
            headers.add(name, value)
        if self._is_upgrade():
            headers["Connection"] = "Upgrade"
            headers["Upgrade"] = "websocket"
        else:
            headers["Connection"] = "close"
        # To the app, a request comes from its own origin, by the name development servers
        # accept without being told (Bokeh, Panel and Vite check Host or Origin against
        # localhost:<port>). The proxy has already let the request through, and a page of the
        # app's under a share link says "null", which apps refuse.
        headers["Host"] = f"localhost:{port}"
        if "Origin" in self.request.headers:
            headers["Origin"] = f"http://localhost:{port}"
        headers["X-Forwarded-Host"] = self.request.host
        headers["X-Forwarded-Proto"] = self.request.protocol
        headers["X-Forwarded-Prefix"] = self._prefix()
        headers["X-Forwarded-For"] = self.request.remote_ip or ""
        headers[USER_HEADER] = self._user_name
        return headers

    def set_app_headers(self, headers: httputil.HTTPHeaders) -> None:
        """The app's answer's headers, as the client gets them."""
        for name, value in headers.get_all():
            lower = name.lower()
            if lower in HOP_BY_HOP:
                continue
            if lower == "set-cookie":
                cookie = _confined_cookie(value, self._prefix())
                if cookie:
                    self.add_header(name, cookie)
                continue
            self.add_header(name, value)
        self.add_header("Content-Security-Policy", SANDBOX_POLICY)
        self.set_header("X-Content-Type-Options", "nosniff")
        # A page's address may hold a share link's token: it goes nowhere else.
        self.set_header("Referrer-Policy", "no-referrer")

    # -- websockets ------------------------------------------------------------------------------

    async def _tunnel_websocket(self, path: str, port: int) -> None:
        """Send the upgrade to the app; if it switches protocols, join the two connections
        byte for byte, else pass its answer on and end."""
        app = await _open_app(path, port)
        try:
            head = f"GET {self._target()} HTTP/1.1\r\n"
            for name, value in self._headers_for_app(port).get_all():
                head += f"{name}: {value}\r\n"
            await app.write((head + "\r\n").encode("latin-1"))
            try:
                answer = await asyncio.wait_for(
                    app.read_until(b"\r\n\r\n", max_bytes=MAX_HEADER_BYTES),
                    self._answer_timeout(),
                )
            except (StreamClosedError, TimeoutError, asyncio.TimeoutError):
                raise ProxyError(502, "The app in the sandbox did not answer.") from None
            switched = answer.split(b"\r\n", 1)[0].split(b" ")[1:2] == [b"101"]
            client = self.detach()
            await client.write(answer)
            if switched:
                await _join(client, app, float(self.settings.get(IDLE_SETTING, IDLE_TIMEOUT)))
            client.close()
        finally:
            app.close()


class ProxyHandler(_AppProxy):
    """`/hopx/proxy/<kernel-id>/<port>/<path>`, for users of the Jupyter server."""

    auth_resource = "kernels"

    async def prepare(self) -> None:  # type: ignore[override]
        await super().prepare(_redirect_to_login=False)
        user = self.current_user
        if not user:
            # A browser is sent to log in; a websocket client or a script cannot follow that.
            accepts_html = "text/html" in self.request.headers.get("Accept", "")
            if self.request.method in ("GET", "HEAD") and accepts_html and not self._is_upgrade():
                web.authenticated(lambda _: None)(self)
                return
            raise web.HTTPError(403, "Log in to the Jupyter server to reach this kernel's servers.")
        if not await ensure_async(self.authorizer.is_authorized(self, user, "execute", "kernels")):
            raise web.HTTPError(403, "You may not reach this kernel's servers.")
        if self._is_upgrade() and not self.check_origin():
            # A cookie session's websocket opened by another site's page (the API's own rule).
            raise web.HTTPError(403, "This websocket comes from a page of another origin.")
        kernel_id, port = self.path_kwargs["kernel_id"], self.path_kwargs["port"]
        self._user_name = str(getattr(user, "username", ""))
        mode = ("absolute",) if self._absolute else ()
        self._public_prefix = url_path_join(self.base_url, "hopx", "proxy", *mode, kernel_id, port)
        await self._forward(kernel_id, int(port))


class AbsoluteProxyHandler(ProxyHandler):
    """`/hopx/proxy/absolute/<kernel-id>/<port>/<path>`: the same, for an app that must be told
    the prefix it lives under (Bokeh's `prefix`, Dash's `requests_pathname_prefix`, ...) and is
    sent the whole path, prefix and all."""

    _absolute = True


class SharedProxyHandler(_AppProxy):
    """`/hopx/share/<token>/<path>`: the kernel and port a live share link names, for anyone
    who has the link. Its token is the credential, not a cookie: no XSRF check applies, and
    any origin may read the answers (CORS), for the app's own pages run in an origin of their
    own (`null`), from which their calls to the app are cross-origin."""

    def initialize(self, links: ShareLinks) -> None:
        self.links = links

    def check_xsrf_cookie(self) -> None:
        return None

    def set_app_headers(self, headers: httputil.HTTPHeaders) -> None:
        super().set_app_headers(headers)
        self.set_header("Access-Control-Allow-Origin", "*")
        self.set_header("Access-Control-Expose-Headers", "*")

    def _answer_preflight(self) -> bool:
        """A browser asking whether an app's page may call the app (a JSON POST, say) is
        answered here: yes, with no credentials."""
        asked = self.request.headers.get("Access-Control-Request-Method")
        if self.request.method != "OPTIONS" or not asked:
            return False
        self.set_status(204)
        self.set_header("Access-Control-Allow-Origin", "*")
        self.set_header("Access-Control-Allow-Methods", ", ".join(self.SUPPORTED_METHODS))
        wanted = self.request.headers.get("Access-Control-Request-Headers")
        if wanted:
            self.set_header("Access-Control-Allow-Headers", wanted)
        self.set_header("Access-Control-Max-Age", "600")
        self.finish()
        return True

    async def prepare(self) -> None:  # type: ignore[override]
        token = self.path_kwargs["token"]
        # The access log shows the request's URI: not with the link's secret in it.
        self.request.uri = (self.request.uri or "").replace(token, "[share link]")
        await super().prepare(_redirect_to_login=False)
        link = self.links.find(token)
        if link is None or link.kernel_id not in self.kernel_manager:
            raise web.HTTPError(404, "This share link does not exist, has expired or was revoked.")
        self.log.info(
            "Hopx: share link %s (kernel %s, port %s, made by %s) used from %s: %s",
            link.id,
            link.kernel_id,
            link.port,
            link.created_by,
            self.request.remote_ip,
            self.request.method,
        )
        if self._answer_preflight():
            return
        self._user_name = ""
        self._absolute = link.absolute
        self._public_prefix = url_path_join(self.base_url, "hopx", "share", token)
        await self._forward(link.kernel_id, link.port)

    # Anyone with the link may use it, also where the server requires a login for everything.
    @allow_unauthenticated
    async def get(self, **path: str) -> None:
        await self._answer(**path)

    post = put = patch = delete = options = head = get


class _Answer(httputil.HTTPMessageDelegate):
    """Receives the app's answer and streams it to the client as it comes."""

    def __init__(self, handler: _AppProxy) -> None:
        self.handler = handler
        self.began = False

    def headers_received(
        self,
        start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
        headers: httputil.HTTPHeaders,
    ) -> None:
        assert isinstance(start_line, httputil.ResponseStartLine)
        self.began = True
        handler = self.handler
        handler.clear_header("Content-Type")
        handler.set_status(start_line.code, _safe_reason(start_line.reason))
        handler.set_app_headers(headers)

    async def data_received(self, chunk: bytes) -> None:
        handler = self.handler
        handler.write(chunk)
        try:
            await asyncio.wait_for(handler.flush(), handler._client_timeout() or None)
        except (TimeoutError, asyncio.TimeoutError):
            handler.cut_off_client("took nothing of the answer")
            raise StreamClosedError() from None

    def finish(self) -> None:
        pass


async def _open_app(path: str, port: int) -> IOStream:
    """A connection to `port` of the sandbox, through its supervisor's inbound socket."""
    stream = IOStream(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM), max_buffer_size=4 * CHUNK)
    try:
        await asyncio.wait_for(stream.connect(path), CONNECT_TIMEOUT)
        await stream.write(f"{port}\n".encode())
        said = await asyncio.wait_for(stream.read_until(b"\n", max_bytes=512), CONNECT_TIMEOUT)
    except (OSError, StreamClosedError, TimeoutError, asyncio.TimeoutError):
        stream.close()
        raise ProxyError(502, "The kernel's sandbox could not be reached.") from None
    if said != b"OK\n":
        stream.close()
        why = said.decode(errors="replace").removeprefix("ERR ").strip()
        raise ProxyError(502, f"The app could not be reached: {why}.")
    return stream


async def _join(client: IOStream, app: IOStream, idle: float) -> None:
    """Bytes both ways until either side ends, or neither has sent anything for `idle`
    seconds (0: no bound)."""
    last = [time.monotonic()]

    async def pump(source: IOStream, sink: IOStream) -> None:
        with contextlib.suppress(StreamClosedError):
            while True:
                data = await source.read_bytes(CHUNK, partial=True)
                last[0] = time.monotonic()
                await sink.write(data)

    pumps = [asyncio.ensure_future(pump(client, app)), asyncio.ensure_future(pump(app, client))]
    try:
        while True:
            wait = None if not idle else max(0.0, last[0] + idle - time.monotonic())
            done, _ = await asyncio.wait(pumps, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
            if done or (idle and time.monotonic() - last[0] >= idle):
                break
    finally:
        for pump_task in pumps:
            pump_task.cancel()
        client.close()
        app.close()


def _without_session_cookies(header: str) -> str:
    kept = []
    for pair in header.split(";"):
        name = pair.split("=", 1)[0].strip()
        if name and not name.startswith(SESSION_COOKIE_PREFIXES):
            kept.append(pair.strip())
    return "; ".join(kept)


def _confined_cookie(header: str, prefix: str) -> str:
    """A cookie the app sets, confined to its own prefix; '' for one named like a session
    cookie of the server's."""
    name_value, *attributes = header.split(";")
    name = name_value.split("=", 1)[0].strip()
    if not name or name.startswith(SESSION_COOKIE_PREFIXES):
        return ""
    kept = [
        a.strip()
        for a in attributes
        if a.strip() and a.split("=", 1)[0].strip().lower() not in ("path", "domain")
    ]
    return "; ".join([name_value.strip(), *kept, f"Path={prefix}/"])


def _safe_reason(reason: str) -> str:
    """A reason phrase fit for the status line: printable ASCII, bounded."""
    cleaned = "".join(c for c in reason if " " <= c <= "~")[:64]
    return cleaned or "Unknown"


def _utcnow() -> Any:
    from jupyter_server._tz import utcnow  # noqa: PLC0415 - a private helper, imported late

    return utcnow()


def proxy_handlers(links: ShareLinks) -> list[tuple[str, type[_AppProxy], dict[str, Any]]]:
    return [
        (rf"/hopx/proxy/{KERNEL_ID}/{PORT}(?P<path>/.*)?", ProxyHandler, {}),
        (rf"/hopx/proxy/absolute/{KERNEL_ID}/{PORT}(?P<path>/.*)?", AbsoluteProxyHandler, {}),
        (rf"/hopx/share/{SHARE_LINK}(?P<path>/.*)?", SharedProxyHandler, {"links": links}),
    ]
