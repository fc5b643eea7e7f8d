"""The kernel's own first Python: its secrets into its environment, and masked in what it sends.

This file is not imported in the sandbox: the supervisor sends its source ahead of the secrets
through a pipe, and `runtime.kernel_secrets.BOOT`, run by the kernel's interpreter, compiles it
and calls `main`. Standard library only, then the kernel's own jupyter_client.

`main` sets the values in the environment, patches jupyter_client's `Session.send` (every
message an ipykernel-based kernel sends goes through it) so that each value shows as
`[secret NAME]`, and runs the kernel's command in this same process, as the interpreter would
have. Masking stops accidents (a print, a repr, a traceback, a DataFrame) reaching saved
notebooks; a kernel that means to leak a value can encode it first.
"""

from __future__ import annotations

import html
import json
import os
import runpy
import sys
import threading
from collections.abc import Callable, Mapping
from typing import Any

# Values shorter than this are given to the kernel but not masked: masking them would rewrite
# ordinary text. The server warns about them at start.
MIN_MASKED_LENGTH = 8
# Stream output that ends with the start of a secret is held back until more output comes, the
# cell ends, or this many seconds pass: a value printed in pieces is masked whole.
HOLD_SECONDS = 5.0
# Base64 payloads, in which a value cannot appear as text: not searched.
BINARY_MIMETYPES = frozenset(
    {"image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp", "application/pdf"}
)


def shown_forms(value: str) -> set[str]:
    """The ways a value appears in output: as it is, through a terminal (a shell command's, with
    CR LF line ends), inside a string literal (repr, JSON) and as HTML text (a DataFrame's)."""
    return {
        value,
        value.replace("\n", "\r\n"),
        repr(value)[1:-1],
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
        html.escape(value),
        html.escape(value, quote=False),
    }


class Masker:
    """Replaces secrets' values in message content; holds back stream text that may be the start
    of one. Not thread-safe: `MaskingSend` locks around it."""

    def __init__(
        self,
        secrets: Mapping[str, str],
        min_length: int = MIN_MASKED_LENGTH,
        *,
        by_line: bool = False,
    ) -> None:
        """`by_line`: also mask each line of a value of several lines (for line-based logs)."""
        marks: dict[str, str] = {}
        for name, value in secrets.items():
            if len(value) >= min_length:
                forms = shown_forms(value) | (set(value.splitlines()) if by_line else set())
                for form in forms:
                    if len(form) >= min_length:
                        marks.setdefault(form, f"[secret {name}]")
        # Longest first: a value that holds another is masked whole.
        self._marks = sorted(marks.items(), key=lambda mark: len(mark[0]), reverse=True)
        self._held: dict[tuple[str, str], str] = {}

    def __bool__(self) -> bool:
        return bool(self._marks)

    def text(self, text: str) -> str:
        for form, mark in self._marks:
            if form in text:
                text = text.replace(form, mark)
        return text

    def content(self, value: Any) -> Any:
        """`value` (a message's content or metadata) with every string masked."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list | tuple):
            return [self.content(item) for item in value]
        if isinstance(value, dict):
            return {
                self.text(key) if isinstance(key, str) else key: (
                    item if key in BINARY_MIMETYPES else self.content(item)
                )
                for key, item in value.items()
            }
        return value

    def stream(self, key: tuple[str, str], text: str) -> str:
        """What to send now of a stream's next `text`, joined to what was held back for `key`
        (parent message, stream name); the rest is held back."""
        text = self.text(self._held.pop(key, "") + text)
        keep = self.unfinished_end(text)
        if keep:
            self._held[key] = text[-keep:]
            return text[:-keep]
        return text

    def release(self, parent: str, but: str | None = None) -> list[tuple[tuple[str, str], str]]:
        """Take what is held back for `parent`'s streams (all but the stream `but`)."""
        keys = [key for key in self._held if key[0] == parent and key[1] != but]
        return [(key, self._held.pop(key)) for key in keys]

    def held(self, key: tuple[str, str]) -> str | None:
        return self._held.get(key)

    def unfinished_end(self, text: str) -> int:
        """The length of the longest end of `text` that a masked form begins with."""
        longest = 0
        for form, _ in self._marks:
            start = max(0, len(text) - len(form) + 1)
            while (start := text.find(form[0], start)) >= 0:
                if len(text) - start > longest and form.startswith(text[start:]):
                    longest = len(text) - start
                    break
                start += 1
        return longest


class MaskingSend:
    """`Session.send` with every message masked; held-back stream text goes out before the next
    message of its cell, or after HOLD_SECONDS."""

    def __init__(self, original: Callable[..., Any], masker: Masker) -> None:
        self._original = original
        self._masker = masker
        self._lock = threading.RLock()
        # Where held-back text goes: the session, socket, routing and parent of its stream.
        self._routes: dict[tuple[str, str], tuple[Any, Any, Any, dict[str, Any]]] = {}

    def __call__(
        self, session: Any, stream: Any, msg: Any, *, ident: Any, buffers: Any, track: bool
    ) -> Any:
        if not isinstance(msg, dict):  # a relayed Message object: ipykernel sends none
            return self._original(session, stream, msg, ident=ident, buffers=buffers)
        parent_id = str((msg.get("parent_header") or {}).get("msg_id", ""))
        content = msg.get("content") or {}
        name, text = content.get("name"), content.get("text")
        if msg.get("header", {}).get("msg_type") != "stream" or not isinstance(text, str):
            name = None
        with self._lock:
            self._release(parent_id, but=name)
            masked = {**msg, "metadata": self._masker.content(msg.get("metadata"))}
            if not isinstance(name, str) or not isinstance(text, str):
                masked["content"] = self._masker.content(msg.get("content"))
            else:  # stream text: masked with what was held back, its end perhaps held back
                key = (parent_id, name)
                now = self._masker.stream(key, text)
                held = self._masker.held(key)
                if held is not None:
                    self._routes[key] = (session, stream, ident, msg.get("parent_header") or {})
                    self._release_later(key, held)
                masked["content"] = {**content, "text": now}
                if not now:
                    return masked
            return self._original(
                session, stream, masked, ident=ident, buffers=buffers, track=track
            )

    def _release(self, parent_id: str, but: str | None = None) -> None:
        for key, text in self._masker.release(parent_id, but):
            session, stream, ident, parent = self._routes.pop(key)
            content = {"name": key[1], "text": text}
            self._original(session, stream, "stream", content=content, parent=parent, ident=ident)

    def _release_later(self, key: tuple[str, str], held: str) -> None:
        def release() -> None:
            with self._lock:
                if self._masker.held(key) == held:  # nothing came since
                    self._release(key[0])

        timer = threading.Timer(HOLD_SECONDS, release)
        timer.daemon = True
        timer.start()


def parse_secrets(data: bytes) -> dict[str, str]:
    """NAME\\0VALUE\\0... as the supervisor wrote it (runtime.kernel_secrets.secrets_pipe)."""
    items = data.split(b"\0")
    return {
        name.decode(): value.decode()
        for name, value in zip(items[0:-1:2], items[1::2], strict=True)
    }


def install(secrets: Mapping[str, str]) -> None:
    """Mask `secrets` in every message the kernel's jupyter_client Session sends."""
    masker = Masker(secrets)
    if not masker:
        return
    try:
        from jupyter_client.session import Session  # noqa: PLC0415
    except ImportError:
        print(
            "hopx: this kernel has secrets, and its Python has no jupyter_client to mask them "
            "in its output with; run an ipykernel-based kernel",
            file=sys.stderr,
        )
        raise SystemExit(70) from None
    masking_send = MaskingSend(Session.send, masker)

    # Session.send's own signature.
    def send(  # noqa: PLR0917
        self: Any,
        stream: Any,
        msg_or_type: Any,
        content: dict[str, Any] | None = None,
        parent: dict[str, Any] | None = None,
        ident: Any = None,
        buffers: Any = None,
        track: bool = False,
        header: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Any:
        if isinstance(msg_or_type, str):
            msg_or_type = self.msg(
                msg_or_type, content=content, parent=parent, header=header, metadata=metadata
            )
        return masking_send(self, stream, msg_or_type, ident=ident, buffers=buffers, track=track)

    Session.send = send  # type: ignore[method-assign]


def run(command: list[str]) -> None:
    """Run `python COMMAND` (interpreter options already applied) in this process."""
    safe_path = getattr(sys.flags, "safe_path", False) or sys.flags.isolated
    if command[0] == "-m":
        sys.argv = ["-m", *command[2:]]
        if not safe_path:
            sys.path.insert(0, os.getcwd())
        runpy._run_module_as_main(command[1])  # type: ignore[attr-defined]  # what -m calls
    elif command[0] == "-c":
        sys.argv = ["-c", *command[2:]]
        if not safe_path:
            sys.path.insert(0, "")
        main_globals = sys.modules["__main__"].__dict__
        exec(compile(command[1], "<string>", "exec"), main_globals)  # noqa: S102
    else:
        sys.argv = list(command)
        if not safe_path:
            sys.path.insert(0, os.path.dirname(os.path.realpath(command[0])))
        runpy.run_path(command[0], run_name="__main__")


def main(secrets_data: bytes, command: list[str]) -> None:
    # What BOOT left in __main__ is no business of the kernel, whose module runs there.
    main_globals = sys.modules["__main__"].__dict__
    for name in [name for name in main_globals if not name.startswith("__")]:
        del main_globals[name]
    # `python -c` put the working folder, which the kernel can write, first on the path: nothing
    # is imported from there before the kernel's command says so.
    if sys.path and sys.path[0] == "":
        del sys.path[0]
    secrets = parse_secrets(secrets_data)
    for name, value in secrets.items():
        os.environ[name] = value
    install(secrets)
    del secrets, secrets_data
    run(command)
