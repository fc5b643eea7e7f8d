"""A real web framework's server in a Hopx kernel, reached through the proxy: a Bokeh server app,
started as a notebook would start it, with the prefix it must be told. Its page, its scripts and
its websocket session (the document comes over it) work through `/hopx/proxy/absolute/...` with
the server's authentication, and through a share link made before the app started, without."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any
from urllib.parse import urlsplit

import requests
import websocket
from framework_apps import BOKEH_PORT, start_bokeh_cell

from server_harness import Server


def start_bokeh(server: Server, kernel_id: str, prefix: str) -> None:
    _, stdout = server.connect(kernel_id).execute(start_bokeh_cell(prefix), timeout=120)
    assert "serving" in stdout, stdout


def check_bokeh_app(app_url: str, **auth: Any) -> None:
    """The app's page and scripts load from `app_url`, and a websocket session opened as its
    page opens one gets the document, the button's label and all."""
    page = requests.get(app_url, timeout=30, **auth)
    assert page.status_code == 200, page.text[-2000:]
    prefix = urlsplit(app_url).path.removesuffix("/ask")
    scripts = re.findall(r'<script[^>]+src="([^"]+)"', page.text)
    assert scripts, page.text[:2000]
    origin = app_url[: -len(urlsplit(app_url).path)]
    for src in scripts:
        assert src.startswith(f"{prefix}/static/"), src
        script = requests.get(f"{origin}{src}", timeout=30, **auth)
        assert script.status_code == 200, src
        assert "javascript" in script.headers["Content-Type"]
    session_token = re.search(r'"token":\s*"([^"]+)"', page.text)
    assert session_token, page.text[-3000:]
    headers = [f"{k}: {v}" for k, v in auth.get("headers", {}).items()]
    ws = websocket.create_connection(
        f"{app_url.replace('http', 'ws', 1)}/ws",
        header=headers,
        subprotocols=["bokeh", session_token.group(1)],
        timeout=30,
    )
    try:
        assert json.loads(ws.recv())["msgtype"] == "ACK"
        ws.recv(), ws.recv()  # the ACK's metadata and content
        request_id = uuid.uuid4().hex
        for part in ({"msgid": request_id, "msgtype": "PULL-DOC-REQ"}, {}, {}):
            ws.send(json.dumps(part))
        header = json.loads(ws.recv())
        assert header["msgtype"] == "PULL-DOC-REPLY"
        assert header["reqid"] == request_id
        ws.recv()  # metadata
        assert "Ask the kernel" in ws.recv()
    finally:
        ws.close()


def test_a_bokeh_app_works_through_the_proxy_with_the_servers_authentication(
    server: Server,
) -> None:
    kernel_id = server.start_kernel()
    prefix = f"/hopx/proxy/absolute/{kernel_id}/{BOKEH_PORT}"
    start_bokeh(server, kernel_id, prefix)
    auth = {"headers": {"Authorization": f"token {server.token}"}}
    check_bokeh_app(f"{server.url}{prefix}/ask", **auth)
    # Without the server's authentication, neither the page nor the websocket.
    assert requests.get(f"{server.url}{prefix}/ask", timeout=30).status_code == 403


def test_a_bokeh_app_works_through_a_share_link_made_before_it_started(server: Server) -> None:
    kernel_id = server.start_kernel()
    links = f"/hopx/api/sandboxes/{kernel_id}/links"
    wrong = server.api("POST", links, json={"port": BOKEH_PORT, "absolute": "yes"})
    assert wrong.status_code == 400
    assert 'e.g. {"absolute": true}' in wrong.json()["message"]
    made = server.api("POST", links, json={"port": BOKEH_PORT, "absolute": True})
    assert made.status_code == 201, made.text
    link = made.json()
    assert link["absolute"] is True
    start_bokeh(server, kernel_id, link["url"].rstrip("/"))
    check_bokeh_app(f"{server.url}{link['url']}ask")
    # The link's token, which is in the app's prefix, stays out of the server's log.
    token = link["url"].rstrip("/").rsplit("/", 1)[1]
    assert token not in server.log()
