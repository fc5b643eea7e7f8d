"""The check of what a kernel sends its client (runtime.zmtp.KernelStream), on bytes alone: what
passes, what is held until it is complete, and what is refused with which words."""

from __future__ import annotations

import random

import pytest
from zmtp_wire import GREETING, HANDSHAKE, SIGNATURE, command, frame, message_frame, session

from runtime.zmtp import MAX_COMMAND_BYTES, KernelStream, ProtocolError

MiB = 1024**2


def checked(data: bytes) -> int:
    """How many bytes of `data` pass when it is fed whole."""
    return KernelStream().feed(data)


def checked_in_pieces(data: bytes, cuts: list[int]) -> int:
    """How many bytes pass when `data` arrives cut at `cuts`, each held rest given again with
    the next piece, as the relay does."""
    stream = KernelStream()
    passed = 0
    for end in [*cuts, len(data)]:
        passed += stream.feed(data[passed:end])
    return passed


def test_a_curvezmq_session_passes_whole_and_cut_anywhere() -> None:
    data = session(8 * MiB)
    assert checked(data) == len(data)
    rng = random.Random(1)  # noqa: S311 - cut points, not secrets
    for _ in range(20):
        cuts = sorted(rng.sample(range(1, len(data)), 200))
        assert checked_in_pieces(data, cuts) == len(data)


def test_empty_frames_pass_and_do_not_stop_the_check() -> None:
    """An empty message frame (short or long size) is a whole frame: what follows it in the
    same read is checked too, or the relay would sit on checked bytes waiting for more."""
    data = HANDSHAKE + frame(b"") + frame(b"", long=True) + message_frame(40)
    assert checked(data) == len(data)


def test_a_session_passes_one_byte_at_a_time() -> None:
    data = HANDSHAKE + message_frame(300) + message_frame(40) + frame(b"", long=True)
    assert checked_in_pieces(data, list(range(1, len(data)))) == len(data)


def test_greeting_parts_pass_only_when_complete() -> None:
    """The signature (10 octets), the major version (1), the rest (53): each is held until it
    is all there, then passes, as libzmq's greeting exchange needs."""
    stream = KernelStream()
    assert stream.feed(SIGNATURE[:9]) == 0
    assert stream.feed(SIGNATURE) == 10
    assert stream.feed(GREETING[10:11]) == 1
    assert stream.feed(GREETING[11:63]) == 0
    assert stream.feed(GREETING[11:]) == 53


def test_a_frame_header_and_a_command_pass_only_when_complete() -> None:
    stream = KernelStream()
    assert stream.feed(GREETING) == 64
    welcome = command(b"WELCOME", bytes(160))
    assert stream.feed(welcome[:1]) == 0
    assert stream.feed(welcome[:-1]) == 0
    assert stream.feed(welcome) == len(welcome)


def test_a_message_body_passes_as_it_comes_and_can_be_passed_unread() -> None:
    stream = KernelStream()
    assert stream.feed(HANDSHAKE) == len(HANDSHAKE)
    body = bytes(MiB)
    header = frame(body)[:9]
    assert stream.feed(header + body[:100]) == 109
    assert stream.body_left == MiB - 100
    stream.passed(MiB - 200)
    assert stream.feed(body[:100] + frame(b"x")) == 100 + 3
    assert stream.body_left == 0
    with pytest.raises(ValueError, match="left of the frame"):
        stream.passed(1)


def test_a_frame_at_the_bound_passes_and_one_octet_more_is_refused() -> None:
    stream = KernelStream(max_frame=MiB)
    stream.feed(HANDSHAKE)
    assert stream.feed(frame(bytes(MiB))) == MiB + 9
    with pytest.raises(ProtocolError) as refused:
        stream.feed(frame(bytes(MiB + 1))[:9])
    assert str(refused.value) == (
        "a message frame of 1048577 bytes (1.0 MiB); frames are limited to 1048576 bytes "
        "(1.0 MiB, the max_frame_size setting)"
    )


def test_a_command_at_its_bound_passes_and_an_8_gib_one_is_refused_from_its_header() -> None:
    stream = KernelStream()
    stream.feed(GREETING)
    largest = command(b"READY", bytes(MAX_COMMAND_BYTES - 6))
    assert stream.feed(largest) == len(largest)
    header = bytes([0x06]) + (8 << 30).to_bytes(8, "big")
    with pytest.raises(ProtocolError, match=r"^a command frame of 8589934592 bytes \(8\.0 GiB\)"):
        stream.feed(header)


BAD_GREETINGS = {
    # ZMTP 1.0: a frame where the signature belongs (first octet a size, or bit 0 of the tenth
    # clear), which libzmq would read without any security.
    "zmtp1-short": (b"\x05\x00abcd" + bytes(4), "not a ZMTP 3 signature"),
    "zmtp1-long": (b"\xff" + (8 << 30).to_bytes(8, "big") + b"\x00", "not a ZMTP 3 signature"),
    "zmtp2": (SIGNATURE + b"\x01", "ZMTP version 1, not 3"),
    "zmtp4": (SIGNATURE + b"\x04", "ZMTP version 4, not 3"),
    "null-mechanism": (GREETING[:12] + b"NULL".ljust(20, b"\0") + bytes(32), "'NULL', not 'CURVE'"),
    "plain-mechanism": (GREETING[:12] + b"PLAIN".ljust(20, b"\0") + bytes(32), "'PLAIN'"),
    "curve-with-junk": (GREETING[:12] + b"CURVEX".ljust(20, b"\0") + bytes(32), "'CURVEX'"),
    "as-server-2": (GREETING[:32] + b"\x02" + bytes(31), "as-server and filler"),
    "filler": (GREETING[:63] + b"\x01", "as-server and filler"),
}


@pytest.mark.parametrize("case", BAD_GREETINGS)
def test_a_bad_greeting_is_refused_before_its_part_passes(case: str) -> None:
    data, words = BAD_GREETINGS[case]
    stream = KernelStream()
    with pytest.raises(ProtocolError, match=words):
        stream.feed(data + bytes(64))


BAD_FRAMES = {
    "message-before-ready": (
        GREETING + command(b"WELCOME", bytes(160)) + message_frame(40),
        "a message frame of 40 bytes before the CurveZMQ handshake was complete",
    ),
    "reserved-flag-bits": (HANDSHAKE + b"\x08\x00", "flags octet is 0x08"),
    "command-with-more": (
        HANDSHAKE + bytes([0x05, 7]) + b"\x05READY0",
        "a command frame with the MORE flag",
    ),
    "command-without-name": (HANDSHAKE + frame(b"", command=True), "name is malformed"),
    "command-name-too-long": (HANDSHAKE + frame(b"\x09READY", command=True), "name is malformed"),
    "command-name-not-letters": (HANDSHAKE + command(b"READ\x00"), "name is malformed"),
}


@pytest.mark.parametrize("case", BAD_FRAMES)
def test_a_bad_frame_is_refused(case: str) -> None:
    data, words = BAD_FRAMES[case]
    with pytest.raises(ProtocolError, match=words):
        KernelStream().feed(data)


def test_what_precedes_a_refused_frame_was_checked_by_an_earlier_feed() -> None:
    """The relay sends on only what a feed returned; a feed that raises passes nothing."""
    stream = KernelStream(max_frame=MiB)
    assert stream.feed(HANDSHAKE) == len(HANDSHAKE)
    with pytest.raises(ProtocolError):
        stream.feed(message_frame(100) + frame(bytes(2 * MiB))[:9])
