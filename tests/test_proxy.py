"""`/hopx/proxy/<kernel-id>/<port>/<path>` with a real Jupyter server and real apps in a Hopx
kernel: HTTP (a body streamed up, an answer streamed down, server-sent events) and websockets
reach the app through its supervisor; the app sees honest forwarding headers and none of the
user's Jupyter credentials; without the server's authentication nothing gets through, for HTTP
and websocket upgrades alike."""

from __future__ import annotations

import contextlib
import json
import socket
import textwrap
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
import websocket

from server_harness import Server

# Apps a notebook could start, on the sandbox's loopback: HTTP on 8000 (says what it was sent;
# /stream sends three events a second apart; /cookie sets cookies; /big sends 64 MiB), a
# websocket echo on 8001, one that accepts and never answers on 8002, one that hangs up at once
# on 8003.
APPS = textwrap.dedent(
    """
    import asyncio, json, socket, threading
    import tornado.web, tornado.websocket

    class Seen(tornado.web.RequestHandler):
        async def get(self, *_):
            self.finish({"method": self.request.method, "uri": self.request.uri,
                         "headers": dict(self.request.headers.get_all()),
                         "body": len(self.request.body)})
        post = put = get

    class Stream(tornado.web.RequestHandler):
        async def get(self):
            self.set_header("Content-Type", "text/event-stream")
            for n in range(3):
                self.write(f"data: {n}\\n\\n")
                await self.flush()
                await asyncio.sleep(1)

    class Cookies(tornado.web.RequestHandler):
        def get(self):
            self.add_header("Set-Cookie", "_xsrf=planted; Path=/")
            self.add_header("Set-Cookie", "username-127-0-0-1-8888=stolen; Path=/")
            self.add_header("Set-Cookie", "app=1; Path=/; HttpOnly; Domain=example.org")
            self.finish("cookies")

    class Big(tornado.web.RequestHandler):
        async def get(self):
            self.set_header("Content-Length", str(64 << 20))
            for _ in range(64):
                self.write(b"x" * (1 << 20))
                await self.flush()

    class Echo(tornado.websocket.WebSocketHandler):
        def check_origin(self, origin):
            return True

        def on_message(self, message):
            self.write_message(message, binary=isinstance(message, bytes))

    def serve():
        asyncio.set_event_loop(asyncio.new_event_loop())
        tornado.web.Application([("/stream", Stream), ("/cookie", Cookies), ("/big", Big),
                                 ("/(.*)", Seen)]).listen(8000, "127.0.0.1")
        tornado.web.Application([("/echo", Echo)]).listen(8001, "127.0.0.1")
        asyncio.get_event_loop().run_forever()

    threading.Thread(target=serve, daemon=True).start()

    def silent(port, hang_up):
        listener = socket.create_server(("127.0.0.1", port))
        held = []
        while True:
            connection, _ = listener.accept()
            if hang_up:
                connection.close()
            else:
                held.append(connection)

    for port, hang_up in ((8002, False), (8003, True)):
        threading.Thread(target=silent, args=(port, hang_up), daemon=True).start()
    import time; time.sleep(0.5)
    print("serving")
    """
)


@dataclass
class App:
    server: Server
    kernel_id: str

    def url(self, port: int, path: str = "/") -> str:
        return f"{self.server.url}/hopx/proxy/{self.kernel_id}/{port}{path}"

    def ws_url(self, port: int, path: str) -> str:
        return self.url(port, path).replace("http://", "ws://", 1)


@pytest.fixture
def app(server: Server) -> App:
    kernel_id = server.start_kernel()
    ws = server.connect(kernel_id)
    _, stdout = ws.execute(APPS)
    assert "serving" in stdout, stdout
    return App(server, kernel_id)


def authorized(server: Server) -> dict[str, str]:
    return {"Authorization": f"token {server.token}"}


def test_http_reaches_the_app_with_honest_headers_and_no_credentials(app: App) -> None:
    server = app.server
    # A login cookie, an XSRF cookie, the token in the query, and forged forwarding headers:
    # the app gets none of them, and the proxy's own.
    cookies = {"username-127-0-0-1-8888": "session", "_xsrf": "xsrf", "theirs": "kept"}
    forged = {"X-Hopx-User": "mallory", "X-Forwarded-Prefix": "/elsewhere"}
    response = requests.get(
        app.url(8000, f"/some/path?a=1&token={server.token}&b=2"),
        headers={**authorized(server), **forged},
        cookies=cookies,
        timeout=30,
    )
    assert response.status_code == 200, response.text
    seen = response.json()
    assert seen["uri"] == "/some/path?a=1&b=2"
    headers = {k.lower(): v for k, v in seen["headers"].items()}
    assert headers["cookie"] == "theirs=kept"
    assert "authorization" not in headers
    assert server.token not in json.dumps(seen)
    prefix = f"/hopx/proxy/{app.kernel_id}/8000"
    assert headers["x-forwarded-prefix"] == prefix
    assert headers["x-forwarded-proto"] == "http"
    assert headers["x-forwarded-host"] == server.url.removeprefix("http://")
    assert headers["x-hopx-user"] not in ("", "mallory")
    assert headers["host"] == "localhost:8000"
    # Its pages run in an origin of their own.
    policies = response.headers["Content-Security-Policy"]
    assert "sandbox allow-scripts" in policies

    # A body streamed up, with every method.
    body = b"x" * (3 << 20)
    for method in ("POST", "PUT"):
        sent = requests.request(
            method, app.url(8000, "/upload"), data=body, headers=authorized(server), timeout=60
        )
        assert sent.status_code == 200, sent.text
        assert sent.json()["body"] == len(body)
        assert sent.json()["method"] == method


def test_answers_stream_as_they_come(app: App) -> None:
    """Server-sent events: the first arrives while the app is still sending."""
    with requests.get(
        app.url(8000, "/stream"), headers=authorized(app.server), stream=True, timeout=30
    ) as response:
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        started = time.monotonic()
        lines = response.iter_lines()
        first = next(line for line in lines if line)
        assert first == b"data: 0"
        assert time.monotonic() - started < 1.5  # not held until the end, 2 s later
        rest = [line for line in lines if line]
    assert rest == [b"data: 1", b"data: 2"]


def test_cookies_the_app_sets_stay_under_its_prefix(app: App) -> None:
    response = requests.get(app.url(8000, "/cookie"), headers=authorized(app.server), timeout=30)
    assert response.status_code == 200
    set_cookies = response.raw.headers.getlist("Set-Cookie")
    # (The server sets its own login cookie for a token-authenticated request, as everywhere.)
    assert f"app=1; HttpOnly; Path=/hopx/proxy/{app.kernel_id}/8000/" in set_cookies
    assert not [c for c in set_cookies if "planted" in c or "stolen" in c], set_cookies


def test_websockets_reach_the_app(app: App) -> None:
    ws = websocket.create_connection(
        app.ws_url(8001, "/echo"), header=[f"Authorization: token {app.server.token}"], timeout=30
    )
    try:
        ws.send("hello")
        assert ws.recv() == "hello"
        ws.send_binary(bytes(range(256)) * 1000)
        assert ws.recv() == bytes(range(256)) * 1000
    finally:
        ws.close()


def test_nothing_gets_through_without_the_servers_authentication(app: App) -> None:
    server = app.server
    for method in ("GET", "POST", "DELETE"):
        response = requests.request(method, app.url(8000, "/"), timeout=30)
        assert response.status_code == 403, (method, response.status_code)
    # Another server's token is no token here.
    response = requests.get(
        app.url(8000, "/"), headers={"Authorization": "token 0123456789abcdef"}, timeout=30
    )
    assert response.status_code == 403
    # A browser without a session is sent to log in, and nothing reaches the app.
    page = requests.get(
        app.url(8000, "/"), headers={"Accept": "text/html"}, allow_redirects=False, timeout=30
    )
    assert page.status_code == 302, page.text[-1500:]
    assert "/login" in page.headers["Location"]
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(app.ws_url(8001, "/echo"), timeout=30)
    assert refused.value.status_code == 403
    # Cookie-authenticated requests that change state need the XSRF token, as for the API.
    login = requests.Session()
    login.get(f"{server.url}/login?token={server.token}", timeout=30)
    assert login.get(app.url(8000, "/"), timeout=30).status_code == 200
    assert login.post(app.url(8000, "/"), data=b"x", timeout=30).status_code == 403


def test_only_the_sandboxs_own_listening_ports_can_be_reached(app: App) -> None:
    server = app.server
    headers = authorized(server)
    nothing = requests.get(app.url(8999, "/"), headers=headers, timeout=30)
    assert nothing.status_code == 502
    assert "nothing in the sandbox listens on port 8999" in nothing.text
    # A port on the host (the Jupyter server's own) is not the sandbox's.
    host_port = int(server.url.rsplit(":", 1)[1].split("/")[0])
    assert requests.get(app.url(host_port, "/"), headers=headers, timeout=30).status_code == 502
    unknown = requests.get(
        f"{server.url}/hopx/proxy/00000000-0000-0000-0000-000000000000/8000/",
        headers=headers,
        timeout=30,
    )
    assert unknown.status_code == 404
    # No host or address can be put in the URL: the port is all there is.
    for path in ("/127.0.0.1:8000/", "/localhost/8000/", "/8000@evil.example/"):
        response = requests.get(
            f"{server.url}/hopx/proxy/{app.kernel_id}{path}", headers=headers, timeout=30
        )
        assert response.status_code == 404, path


def make_link(app: App, port: int = 8000, **fields: Any) -> dict[str, Any]:
    response = app.server.api(
        "POST", f"/hopx/api/sandboxes/{app.kernel_id}/links", json={"port": port, **fields}
    )
    assert response.status_code == 201, response.text
    link: dict[str, Any] = response.json()
    return link


def test_a_share_link_reaches_one_port_without_a_login_until_revoked(app: App) -> None:
    server = app.server
    link = make_link(app)
    token = link["url"].rstrip("/").rsplit("/", 1)[1]
    url = f"{server.url}{link['url']}"
    # No login, no token, no XSRF: the link is the credential. The app knows it came by link.
    seen = requests.get(f"{url}deep/path?q=1", timeout=30).json()
    assert seen["uri"] == "/deep/path?q=1"
    headers = {k.lower(): v for k, v in seen["headers"].items()}
    assert headers["x-forwarded-prefix"] == f"/hopx/share/{token}"
    assert headers["x-hopx-user"] == ""
    assert requests.post(url, data=b"abc", timeout=30).json()["body"] == 3
    assert requests.get(f"{url}x", timeout=30).headers["Referrer-Policy"] == "no-referrer"
    echo = make_link(app, port=8001)
    ws = websocket.create_connection(
        f"{server.url.replace('http', 'ws', 1)}{echo['url']}echo", timeout=30
    )
    ws.send("by link")
    assert ws.recv() == "by link"
    ws.close()
    # Listed without its token; its secret is nowhere in the server's log.
    listed = server.api("GET", f"/hopx/api/sandboxes/{app.kernel_id}/links").json()
    assert [entry["id"] for entry in listed] == [link["id"], echo["id"]]
    assert token not in json.dumps(listed)
    assert token not in server.log()
    assert f"share link {link['id']}" in server.log()
    # A token one character off opens nothing.
    tampered = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert requests.get(f"{server.url}/hopx/share/{tampered}/", timeout=30).status_code == 404
    # Revoked: gone at once.
    revoked = server.api("DELETE", f"/hopx/api/sandboxes/{app.kernel_id}/links/{link['id']}")
    assert revoked.status_code == 204
    assert requests.get(url, timeout=30).status_code == 404
    assert "revoked by" in server.log()


def test_share_links_expire_and_die_with_their_kernel(app: App) -> None:
    server = app.server
    short = make_link(app, expires_in=1)
    assert requests.get(f"{server.url}{short['url']}", timeout=30).status_code == 200
    time.sleep(1.5)
    assert requests.get(f"{server.url}{short['url']}", timeout=30).status_code == 404
    # Only as long as the server allows, and only by someone who may use the kernel.
    too_long = server.api(
        "POST",
        f"/hopx/api/sandboxes/{app.kernel_id}/links",
        json={"port": 8000, "expires_in": 10 * 86400},
    )
    assert too_long.status_code == 400
    assert "max_share_link_lifetime" in too_long.json()["message"]
    anonymous = server.api(
        "POST", f"/hopx/api/sandboxes/{app.kernel_id}/links", json={"port": 8000}, token=False
    )
    assert anonymous.status_code == 403
    lasting = make_link(app)
    assert server.api("DELETE", f"/api/kernels/{app.kernel_id}").status_code == 204
    assert requests.get(f"{server.url}{lasting['url']}", timeout=30).status_code == 404


@pytest.mark.parametrize("server_args", [["--HopxExtension.proxy_timeout=2"]])
def test_a_hung_or_dead_app_gets_an_answer_from_the_proxy(app: App) -> None:
    """An app that never answers: 504 once proxy_timeout is up; one that hangs up: 502. The
    server answers other requests meanwhile."""
    headers = authorized(app.server)
    started = time.monotonic()
    hung = requests.get(app.url(8002, "/"), headers=headers, timeout=30)
    assert hung.status_code == 504
    assert time.monotonic() - started < 20
    assert requests.get(app.url(8003, "/"), headers=headers, timeout=30).status_code == 502
    # Hung up on while the request's head or body is still on its way: 502 all the same.
    for _ in range(20):
        assert requests.get(app.url(8003, "/"), headers=headers, timeout=30).status_code == 502
    upload = requests.post(app.url(8003, "/"), data=b"x" * (3 << 20), headers=headers, timeout=30)
    assert upload.status_code == 502
    assert requests.get(app.url(8000, "/"), headers=headers, timeout=30).status_code == 200


def test_what_the_proxy_says_reflects_no_markup(app: App) -> None:
    """CVE-2024-35225 (jupyter-server-proxy): markup in the path came back in an error page.
    Here the path never reaches an error message, for a port with no app, an unknown kernel, or
    a malformed share link."""
    headers = authorized(app.server)
    attack = "/%3Cscript%3Ealert(1)%3C/script%3E"
    urls = [
        app.url(8999, attack),
        f"{app.server.url}/hopx/proxy/00000000-0000-0000-0000-000000000000/8000{attack}",
        f"{app.server.url}/hopx/share/{'A' * 30}{attack}",
        f"{app.server.url}/hopx/share/%3Cscript%3E{attack}",
    ]
    for url in urls:
        response = requests.get(url, headers=headers, timeout=30)
        assert response.status_code in (404, 502), (url, response.status_code)
        assert "<script>alert" not in response.text, url


def test_a_websocket_from_another_sites_page_is_refused(app: App) -> None:
    """Cross-site websocket hijacking: a page elsewhere opening the proxy's websocket with the
    user's cookie session is refused, as jupyter_server refuses its own kernel websockets; the
    app itself sees every request as coming from its own origin."""
    server = app.server
    login = requests.Session()
    login.get(f"{server.url}/login?token={server.token}", timeout=30)
    cookie = "; ".join(f"{c.name}={c.value}" for c in login.cookies)
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(
            app.ws_url(8001, "/echo"), cookie=cookie, origin="https://evil.example", timeout=30
        )
    assert refused.value.status_code == 403
    ws = websocket.create_connection(app.ws_url(8001, "/echo"), cookie=cookie, timeout=30)
    ws.send("same origin")
    assert ws.recv() == "same origin"
    ws.close()
    seen = login.get(app.url(8000, "/"), headers={"Origin": server.url}, timeout=30).json()
    assert seen["headers"]["Origin"] == "http://localhost:8000"


def last_activity(app: App) -> str:
    model = app.server.api("GET", f"/hopx/api/sandboxes/{app.kernel_id}").json()
    return str(model["last_activity"])


def test_using_the_app_counts_as_activity(app: App) -> None:
    """By default an app in use keeps its kernel from the idle cull."""
    before = last_activity(app)
    time.sleep(1.1)
    assert requests.get(app.url(8000, "/"), headers=authorized(app.server), timeout=30).ok
    assert last_activity(app) > before


@pytest.mark.parametrize("server_args", [["--HopxExtension.proxy_is_activity=False"]])
def test_using_the_app_need_not_count_as_activity(app: App) -> None:
    before = last_activity(app)
    time.sleep(1.1)
    assert requests.get(app.url(8000, "/"), headers=authorized(app.server), timeout=30).ok
    assert last_activity(app) == before


def test_the_model_lists_the_ports_the_notebooks_servers_listen_on(app: App) -> None:
    """Read from the sandbox's own sockets, not the host's: the apps' ports, not the kernel's
    channels, and a new one as soon as a server listens on it."""
    server = app.server

    def ports() -> list[int]:
        model = server.api("GET", f"/hopx/api/sandboxes/{app.kernel_id}").json()
        return list(model["ports"])

    assert ports() == [8000, 8001, 8002, 8003]
    ws = server.connect(app.kernel_id)
    ws.execute("import socket\nlate = socket.create_server(('0.0.0.0', 8765))")
    assert ports() == [8000, 8001, 8002, 8003, 8765]
    ws.execute("late.close()")
    assert ports() == [8000, 8001, 8002, 8003]


def test_an_app_that_lives_under_its_prefix_gets_the_whole_path(app: App) -> None:
    """The absolute mode, for apps told their prefix (Bokeh's `prefix`, Dash's
    `requests_pathname_prefix`): the path arrives whole, and the prefix says so."""
    server = app.server
    prefix = f"/hopx/proxy/absolute/{app.kernel_id}/8000"
    response = requests.get(
        f"{server.url}{prefix}/page?x=1", headers=authorized(server), timeout=30
    )
    assert response.status_code == 200
    seen = response.json()
    assert seen["uri"] == f"{prefix}/page?x=1"
    assert seen["headers"]["X-Forwarded-Prefix"] == prefix
    assert requests.get(f"{server.url}{prefix}/", timeout=30).status_code == 403


def raw_request(server: Server, target: str, extra: str = "") -> tuple[int, bytes]:
    """One request written as is (no client normalises its path): the status and the body."""
    host = server.url.removeprefix("http://").split("/")[0]
    address, port = host.rsplit(":", 1)
    request = (
        f"GET {target} HTTP/1.1\r\nHost: {host}\r\nAuthorization: token {server.token}\r\n"
        f"{extra}Connection: close\r\n\r\n"
    )
    with socket.create_connection((address, int(port)), timeout=30) as sock:
        sock.sendall(request.encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_paths_that_climb_or_hide_slashes_stay_inside_the_app(app: App) -> None:
    """Dot segments and encoded slashes below the prefix are the app's path, passed as they
    came: they reach the same app and port, never the server's API or another port."""
    prefix = f"/hopx/proxy/{app.kernel_id}/8000"
    for tail in ("/../../../api/kernels", "/..%2F..%2F8001%2Fecho", "/%2e%2e/%2e%2e/api/status"):
        status, body = raw_request(app.server, prefix + tail)
        assert status == 200, (tail, status, body[:200])
        assert json.loads(body)["uri"] == tail


def test_line_breaks_in_the_url_reach_the_app_as_data_not_headers(app: App) -> None:
    """Header injection: CR LF in the path or the query (percent-encoded, the only way a client
    can send them; the query is re-encoded when Jupyter's token is taken out of it) stay encoded
    in the request line the app gets, and no header of the client's making appears."""
    server = app.server
    tail = "/x%0d%0aX-Injected:%20path"
    query = f"?a=1%0d%0aX-Injected:%20query&token={server.token}"
    response = requests.get(app.url(8000, tail + query), headers=authorized(server), timeout=30)
    seen = response.json()
    assert "x-injected" not in {name.lower() for name in seen["headers"]}
    assert "\r" not in seen["uri"]
    assert "\n" not in seen["uri"]
    assert seen["uri"].lower() == "/x%0d%0ax-injected:%20path?a=1%0d%0ax-injected%3a+query"


def test_oversized_headers_are_refused_before_the_app(app: App) -> None:
    """A 200 kB header: the server cuts the request off (a 4xx or a reset), and the next one
    works."""
    big = f"X-Big: {'a' * 200_000}\r\n"
    try:
        status, _ = raw_request(app.server, f"/hopx/proxy/{app.kernel_id}/8000/", big)
    except ConnectionResetError:
        status = 0
    assert status in (0, 400, 431)
    assert raw_request(app.server, f"/hopx/proxy/{app.kernel_id}/8000/")[0] == 200


def test_a_sandbox_takes_at_most_64_connections_at_once(app: App) -> None:
    """Websockets held open: the 65th and later get a 502 at once; one closed frees a place."""
    url = app.ws_url(8001, "/echo")
    header = [f"Authorization: token {app.server.token}"]
    held = [websocket.create_connection(url, header=header, timeout=30) for _ in range(64)]
    try:
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            websocket.create_connection(url, header=header, timeout=30)
        assert refused.value.status_code == 502
        held.pop().close()
        time.sleep(0.5)
        again = websocket.create_connection(url, header=header, timeout=30)
        again.send("room again")
        assert again.recv() == "room again"
        again.close()
    finally:
        for ws in held:
            ws.close()


@pytest.mark.parametrize("server_args", [["--HopxExtension.proxy_idle_timeout=2"]])
def test_an_idle_websocket_is_closed_after_proxy_idle_timeout(app: App) -> None:
    """One that talks stays open past the bound; one silent for longer is closed by the
    proxy."""
    header = [f"Authorization: token {app.server.token}"]
    talking = websocket.create_connection(app.ws_url(8001, "/echo"), header=header, timeout=30)
    silent = websocket.create_connection(app.ws_url(8001, "/echo"), header=header, timeout=30)
    for n in range(4):
        talking.send(f"still here {n}")
        assert talking.recv() == f"still here {n}"
        time.sleep(1)

    def talk_after_silence() -> Any:
        silent.send("too late")
        return silent.recv()

    with pytest.raises((websocket.WebSocketConnectionClosedException, OSError)):
        talk_after_silence()
    talking.close()


@pytest.mark.parametrize("server_args", [["--HopxExtension.proxy_client_timeout=2"]])
def test_a_client_that_stalls_is_cut_off(app: App) -> None:
    """Slow clients (slowloris) keep none of a sandbox's 64 connections: one that stops sending
    its request's body, or stops taking an answer, is cut off after proxy_client_timeout."""
    server = app.server
    url = urlsplit(server.url)
    assert url.hostname
    assert url.port
    head = f"Host: {url.netloc}\r\nAuthorization: token {server.token}\r\n"
    proxy = f"{url.path}/hopx/proxy/{app.kernel_id}/8000"
    with socket.create_connection((url.hostname, url.port), timeout=30) as uploader:
        request = f"POST {proxy}/upload HTTP/1.1\r\n{head}Content-Length: 1000\r\n\r\n"
        uploader.sendall(request.encode() + b"x" * 10)
        with contextlib.suppress(ConnectionResetError):
            assert uploader.recv(65536) == b""
    reader = socket.socket()
    reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    reader.settimeout(30)
    with reader:
        reader.connect((url.hostname, url.port))
        reader.sendall(f"GET {proxy}/big HTTP/1.1\r\n{head}\r\n".encode())
        time.sleep(6)
        received = 0
        with contextlib.suppress(ConnectionResetError):
            while chunk := reader.recv(1 << 20):
                received += len(chunk)
    assert received < 64 << 20
    log = server.log()
    assert "sent nothing of its request" in log, log[-3000:]
    assert "took nothing of the answer" in log, log[-3000:]
    # A client that keeps up gets the whole answer.
    whole = requests.get(app.url(8000, "/big"), headers=authorized(server), timeout=60)
    assert len(whole.content) == 64 << 20
