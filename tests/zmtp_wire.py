"""ZMTP 3 bytes as a CurveZMQ kernel (libzmq) sends them, for tests that play the kernel."""

from __future__ import annotations

import os
import random

SIGNATURE = b"\xff" + bytes(8) + b"\x7f"
# libzmq's whole greeting: signature, version 3.1, "CURVE", as-server and filler all zero.
GREETING = SIGNATURE + bytes([3, 1]) + b"CURVE".ljust(20, b"\0") + bytes(32)


def frame(body: bytes, *, command: bool = False, more: bool = False, long: bool = False) -> bytes:
    """One frame: flags, a short size (long if asked or needed), the body."""
    flags = (4 if command else 0) | (1 if more else 0)
    if long or len(body) > 255:
        return bytes([flags | 2]) + len(body).to_bytes(8, "big") + body
    return bytes([flags, len(body)]) + body


def command(name: bytes, data: bytes = b"") -> bytes:
    return frame(bytes([len(name)]) + name + data, command=True)


# A CurveZMQ server's side of the handshake, the sizes libzmq's have.
HANDSHAKE = GREETING + command(b"WELCOME", bytes(160)) + command(b"READY", bytes(57))


def message_frame(size: int) -> bytes:
    """A message frame as CurveZMQ sends one: "\\x07MESSAGE", a nonce, and a box (random)."""
    return frame(b"\x07MESSAGE" + os.urandom(max(0, size - 8)))


def session(total: int, seed: int = 0) -> bytes:
    """The handshake, then message frames of assorted sizes (33 octets to 3 MiB) adding up to
    at least `total` bytes."""
    rng = random.Random(seed)  # noqa: S311 - frame sizes, not secrets
    parts = [HANDSHAKE]
    size = len(HANDSHAKE)
    while size < total:
        part = message_frame(rng.choice([33, 200, 255, 256, 5000, 70_000, 1 << 20, 3 << 20]))
        parts.append(part)
        size += len(part)
    return b"".join(parts)
