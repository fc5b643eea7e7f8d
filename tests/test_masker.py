"""How secrets are masked, on its own: the forms a value takes in output, stream text held back
while it may be the start of one, and the log filter of the server's process. A real
jupyter_client Session sends through a socket stand-in that records the frames."""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

import pytest
from jupyter_client.session import Session

from hopx_kernel.log_redaction import LogRedaction
from runtime import kernel_launcher
from runtime.kernel_launcher import Masker, MaskingSend

VALUE = "sk-live-<&>'\"-0123456789"


def test_every_form_of_a_value_is_masked_and_short_values_are_not() -> None:
    masker = Masker({"KEY": VALUE, "PIN": "4711", "LONGER": VALUE + "-and-more"})
    text = f"{VALUE} {VALUE!r} {json.dumps(VALUE)} &lt;&amp;&gt; {VALUE}-and-more 4711"
    masked = masker.text(text)
    assert masked.count("[secret KEY]") == 3
    assert "[secret LONGER]" in masked  # the longer value first, whole
    assert "4711" in masked
    assert "0123456789" not in masked.replace("&lt;&amp;&gt;", "")


def test_content_is_masked_throughout_but_binary_payloads_are_not_searched() -> None:
    masker = Masker({"KEY": VALUE})
    content = {
        "data": {"text/plain": [VALUE], "image/png": VALUE, VALUE: 1},
        "metadata": {"n": 3, "t": (VALUE,)},
    }
    assert masker.content(content) == {
        "data": {"text/plain": ["[secret KEY]"], "image/png": VALUE, "[secret KEY]": 1},
        "metadata": {"n": 3, "t": ["[secret KEY]"]},
    }


def test_stream_text_that_may_start_a_secret_is_held_back() -> None:
    masker = Masker({"KEY": VALUE})
    key = ("cell-1", "stdout")
    assert masker.stream(key, "hello sk-li") == "hello "
    assert masker.stream(key, "ve-<&>'\"-01") == ""
    assert masker.stream(key, "23456789 done\n") == "[secret KEY] done\n"
    assert masker.stream(key, "sk-other") == "sk-other"  # no longer a start of it
    masker.stream(key, "s")
    assert masker.release("cell-2") == []
    assert masker.release("cell-1", but="stdout") == []
    assert masker.release("cell-1") == [(key, "s")]


def test_log_lines_mask_each_line_of_a_value_of_several() -> None:
    pem = "-----BEGIN KEY-----\nMIIEvQIBADANBgkqhkiG9w0B\n-----END KEY-----"
    masker = Masker({"PEM": pem}, by_line=True)
    assert masker.text("read MIIEvQIBADANBgkqhkiG9w0B") == "read [secret PEM]"
    assert masker.unfinished_end("cut at MIIEvQIB") == len("MIIEvQIB")


class Recorder:
    """Stands in for a zmq socket: the messages sent, decoded."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.sent: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def send_multipart(self, frames: list[bytes], **_: Any) -> None:
        _, parts = self.session.feed_identities(frames, copy=True)
        with self.lock:
            self.sent.append(self.session.deserialize(parts, content=True))

    def texts(self) -> list[tuple[str, str]]:
        with self.lock:
            return [(m["msg_type"], m["content"].get("text", "")) for m in self.sent]


def emit(send: MaskingSend, socket: Recorder, msg_type: str, content: dict[str, Any]) -> None:
    """What ipykernel does: build a message for the cell running, and send it."""
    msg = socket.session.msg(msg_type, content=content, parent=CELL)
    send(socket.session, socket, msg, ident=None, buffers=None, track=False)


CELL = Session().msg("execute_request", content={})


def test_held_back_text_goes_out_before_the_cells_next_message() -> None:
    send, socket = MaskingSend(Session.send, Masker({"KEY": VALUE})), Recorder(Session(key=b"k"))
    emit(send, socket, "stream", {"name": "stdout", "text": "a sk-live"})
    emit(send, socket, "status", {"execution_state": "idle"})
    assert socket.texts() == [("stream", "a "), ("stream", "sk-live"), ("status", "")]


def test_held_back_text_goes_out_after_a_while_when_nothing_follows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(kernel_launcher, "HOLD_SECONDS", 0.05)
    send, socket = MaskingSend(Session.send, Masker({"KEY": VALUE})), Recorder(Session(key=b"k"))
    emit(send, socket, "stream", {"name": "stdout", "text": "b sk-li"})
    for _ in range(200):
        if len(socket.texts()) == 2:
            break
        threading.Event().wait(0.01)
    assert socket.texts() == [("stream", "b "), ("stream", "sk-li")]


def test_the_log_filter_masks_messages_arguments_and_tracebacks() -> None:
    redaction = LogRedaction()
    logger = logging.getLogger("test_masker.redaction")
    logger.propagate = False
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    handler = Keep()
    logger.addHandler(handler)
    try:
        redaction.add("kernel-1", {"KEY": VALUE})
        assert redaction in handler.filters
        logger.warning("sent %s to the API", VALUE)
        try:
            int(VALUE)
        except ValueError:
            logger.exception("failed")
        redaction.remove("kernel-1")
        logger.warning("after %s", VALUE)
    finally:
        logger.removeHandler(handler)
    assert records[0] == "sent [secret KEY] to the API"
    assert "ValueError: invalid literal for int() with base 10: '[secret KEY]'" in records[1]
    assert VALUE not in records[1]
    assert records[2] == f"after {VALUE}"  # the kernel has gone: nothing to mask
