"""Headless Chromium driven over the DevTools protocol, and nothing more: pages are opened,
navigated and evaluated in; the frames a page makes are left alone until asked for.

Playwright (which the browser tests use) attaches to every frame that runs in another process, as
sandboxed frames do, and holds each at its start while it instruments it. That costs each Hopx
output frame time that no user's browser spends, and its network instrumentation slows large
scripts (Plotly's) for both kernels: timings taken through it are not the browser's. Here no
protocol domain is enabled and no frame is attached to while a page is timed.

The protocol runs over a pipe (file descriptors 3 and 4 of the browser), not a TCP port that any
local user could connect to while the browser holds a Jupyter session.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
TIMEOUT = 60.0

# A browser that contacts nothing but the pages it is sent to and does not throttle a page that
# has no window on a screen.
FLAGS = [
    "--headless",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-sync",
    "--disable-breakpad",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--no-pings",
    "--metrics-recording-only",
    "--disable-features=Translate,OptimizationHints,MediaRouter,NetworkTimeServiceQuerying",
    "--disable-background-timer-throttling",
    "--disable-backgrounding-occluded-windows",
    "--disable-renderer-backgrounding",
    "--password-store=basic",
    "--use-mock-keychain",
    "--force-color-profile=srgb",
    "--hide-scrollbars",
    "--mute-audio",
    "--remote-debugging-pipe",
]


class DevToolsError(RuntimeError):
    """The browser refused a protocol call, or went away."""


class DevTools:
    """The protocol's messages over the browser's pipe: calls and their results; events, which
    nothing here asks for, are dropped."""

    def __init__(self, to_browser: int, from_browser: int) -> None:
        self._out, self._in = to_browser, from_browser
        self._ids = itertools.count(1)
        self._buffer = b""

    def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        session: str | None = None,
        timeout: float = TIMEOUT,
    ) -> dict[str, Any]:
        call_id = next(self._ids)
        message: dict[str, Any] = {"id": call_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._out, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._receive(deadline, method)
            if reply.get("id") != call_id:
                continue
            if "error" in reply:
                msg = f"{method}: {reply['error'].get('message', reply['error'])}"
                raise DevToolsError(msg)
            result: dict[str, Any] = reply.get("result", {})
            return result

    def _receive(self, deadline: float, method: str) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._in], [], [], left)[0]:
                msg = f"{method}: no answer from the browser"
                raise DevToolsError(msg)
            chunk = os.read(self._in, 1 << 20)
            if not chunk:
                msg = f"{method}: the browser has gone"
                raise DevToolsError(msg)
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        parsed: dict[str, Any] = json.loads(message)
        return parsed


@dataclass(frozen=True)
class Frame:
    """A frame of a page, evaluated in through a world of its own (it shares the DOM with the
    frame's scripts, not their variables)."""

    devtools: DevTools
    session: str
    context: int
    parent: Frame | None

    def evaluate(self, expression: str) -> Any:
        reply = self.devtools.call(
            "Runtime.evaluate",
            {"expression": expression, "contextId": self.context, "returnByValue": True},
            self.session,
        )
        return _value(reply, expression)


class Page:
    """A page (a tab) of the browser."""

    def __init__(self, devtools: DevTools, target: str, session: str) -> None:
        self.devtools, self.target, self.session = devtools, target, session

    def navigate(self, url: str) -> None:
        self.devtools.call("Page.navigate", {"url": url}, self.session)

    def evaluate(self, expression: str, timeout: float = TIMEOUT) -> Any:
        """The value of `expression` in the page (a promise is waited for)."""
        reply = self.devtools.call(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True},
            self.session,
            timeout,
        )
        return _value(reply, expression)

    def wait_for(self, expression: str, timeout: float = TIMEOUT, interval: float = 0.1) -> Any:
        """Evaluates `expression` every `interval` s until it is truthy; its value. A page that
        is navigating counts as not yet."""
        deadline = time.monotonic() + timeout
        error = ""
        while True:
            try:
                if value := self.evaluate(expression):
                    return value
            except DevToolsError as e:
                error = f" (last error: {e})"
            if time.monotonic() > deadline:
                msg = f"{expression} was not true within {timeout:.0f} s{error}"
                raise TimeoutError(msg)
            time.sleep(interval)

    def frames(self) -> list[Frame]:
        """Every frame below the page, those in other processes included (attached to now,
        for the rest of the page's life)."""
        found: list[Frame] = []
        parents: dict[str, Frame | None] = {self.target: None}  # frame id → Frame; the page
        page = self.devtools.call("Page.getFrameTree", {}, self.session)["frameTree"]
        for child in page.get("childFrames", []):  # frames in the page's own process
            self._add(child, self.session, None, parents, found)
        attached: set[str] = set()
        while True:
            targets = self.devtools.call("Target.getTargets")["targetInfos"]
            new = [
                t
                for t in targets
                if t["type"] == "iframe"
                and t["targetId"] not in attached
                and t.get("parentFrameId") in parents
            ]
            if not new:
                return found
            for target in new:
                attached.add(target["targetId"])
                session = self.devtools.call(
                    "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}
                )["sessionId"]
                tree = self.devtools.call("Page.getFrameTree", {}, session)["frameTree"]
                self._add(tree, session, parents[target["parentFrameId"]], parents, found)

    def _add(
        self,
        tree: dict[str, Any],
        session: str,
        parent: Frame | None,
        parents: dict[str, Frame | None],
        found: list[Frame],
    ) -> None:
        frame_id = tree["frame"]["id"]
        context = self.devtools.call(
            "Page.createIsolatedWorld", {"frameId": frame_id, "worldName": "benchmark"}, session
        )["executionContextId"]
        frame = Frame(self.devtools, session, context, parent)
        parents[frame_id] = frame
        found.append(frame)
        for child in tree.get("childFrames", []):
            self._add(child, session, frame, parents, found)

    def close(self) -> None:
        self.devtools.call("Target.closeTarget", {"targetId": self.target})


def _value(reply: dict[str, Any], expression: str) -> Any:
    if "exceptionDetails" in reply:
        details = reply["exceptionDetails"]
        text = details.get("exception", {}).get("description") or details.get("text")
        msg = f"{expression[:80]}: {text}"
        raise DevToolsError(msg)
    return reply["result"].get("value")


class Chromium:
    """Headless Chromium with a profile of its own, for the life of a `with` block."""

    def __init__(self, executable: str = CHROMIUM, width: int = 1400, height: int = 900) -> None:
        self.executable, self.width, self.height = executable, width, height

    def __enter__(self) -> Chromium:
        if not os.path.exists(self.executable):
            msg = f"Chromium is missing at {self.executable}: install it (apt install chromium)"
            raise RuntimeError(msg)
        self._profile = tempfile.TemporaryDirectory(prefix="hopx-bench-chromium-")
        browser_reads, to_browser = os.pipe()
        from_browser, browser_writes = os.pipe()
        flags = [*FLAGS, f"--user-data-dir={self._profile.name}"]
        if os.geteuid() == 0:
            flags.append("--no-sandbox")  # Chromium refuses to start as root with its sandbox
        # The protocol pipe is the browser's file descriptors 3 (it reads) and 4 (it writes).
        self._process = subprocess.Popen(
            [
                "/bin/sh",
                "-c",
                f'exec "$0" "$@" 3<&{browser_reads} 4>&{browser_writes}',
                self.executable,
                *flags,
            ],
            pass_fds=(browser_reads, browser_writes),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(browser_reads)
        os.close(browser_writes)
        self._fds = (to_browser, from_browser)
        self.devtools = DevTools(to_browser, from_browser)
        self.devtools.call("Browser.getVersion")
        return self

    def new_page(self) -> Page:
        target = self.devtools.call(
            "Target.createTarget",
            {"url": "about:blank", "newWindow": True, "width": self.width, "height": self.height},
        )["targetId"]
        session = self.devtools.call("Target.attachToTarget", {"targetId": target, "flatten": True})
        return Page(self.devtools, target, session["sessionId"])

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        with contextlib.suppress(DevToolsError):
            self.devtools.call("Browser.close", timeout=10)
        for stop in (None, signal.SIGTERM, signal.SIGKILL):
            if stop is not None:
                self._process.send_signal(stop)
            try:
                self._process.wait(10)
                break
            except subprocess.TimeoutExpired:
                continue
        for fd in self._fds:
            os.close(fd)
        self._profile.cleanup()
