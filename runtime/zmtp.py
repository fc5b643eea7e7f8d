"""The ZMTP framing of what a kernel sends its client, checked before the client reads it.

libzmq, in the Jupyter server or papermill, allocates a frame's whole announced size as soon as
it has read the frame's header, before CurveZMQ has checked anything: a kernel that announces an
8 GiB frame and sends it makes its client hold 8 GiB. The relay therefore reads the framing of
everything that comes out of the sandbox with a `KernelStream` and passes on only what it has
checked; the frame bodies it does not need to read (message data, encrypted) it may splice.

What a kernel may send, from ZMTP 3.x (rfc.zeromq.org/spec/23 and /spec/37) and CurveZMQ
(/spec/26) as libzmq speaks them, which is how every CurveZMQ kernel speaks:

- a 64-octet greeting: signature ``%xFF padding %x7F``, version 3.x, mechanism "CURVE", as-server
  0 or 1, 31 zero octets of filler. It is checked in the parts libzmq exchanges one after the
  other (signature, major version, the rest), so that each part can pass on as soon as it is
  checked and the two peers' incremental greeting exchange never waits on the relay;
- command frames (flags bit 2) of at most `MAX_COMMAND_BYTES`, MORE clear, with a well-formed
  name: the CurveZMQ handshake's WELCOME, READY, ERROR;
- once the kernel has sent its READY command, message frames of at most the connection's frame
  bound (the "max_frame_size" setting). CurveZMQ encrypts each message frame into one frame 33
  octets larger, whose size stays clear text; the MORE flag travels inside the encryption.

Anything else (another signature or version, the NULL mechanism, reserved flag bits, a message
frame before the handshake, an oversized frame) is a `ProtocolError`.

What this bounds: one frame. A client's libzmq holds one frame in the making per connection, and
frames are what it allocates for. It does not bound a whole message: which frame ends a message
is encrypted, and libzmq keeps the frames of an unfinished message until its last one.
"""

from __future__ import annotations

import struct

# Greeting parts, in the order libzmq sends them.
SIGNATURE_BYTES = 10
GREETING_BYTES = 64
MECHANISM = b"CURVE".ljust(20, b"\0")
ZMTP_MAJOR = 3

FLAG_MORE = 0x01
FLAG_LONG = 0x02
FLAG_COMMAND = 0x04
FLAGS_RESERVED = 0xF8
_LONG_SIZE = struct.Struct(">Q")

# The largest command a kernel may send: CurveZMQ's are 168 octets (WELCOME), READY carries the
# socket's metadata (a type and an identity of at most 255 octets), ERROR a reason of at most 255.
MAX_COMMAND_BYTES = 64 * 1024
# The frame bound unless the kernelspec says otherwise, and the least it may say: one output
# (a figure, a table's HTML) travels in one frame, and tens of MB are ordinary.
DEFAULT_MAX_FRAME_BYTES = 256 * 1024**2
MIN_MAX_FRAME_BYTES = 1024**2


class ProtocolError(ValueError):
    """What a kernel sent is not what a CurveZMQ peer may send; the message says what it sent
    and what was allowed."""


class KernelStream:
    """The checked kernel-to-client half of one relayed connection.

    `feed` is given the bytes read from the kernel so far; it returns how many of them are
    checked and may go to the client. While a message frame's body is being passed on,
    `body_left` says how many of its octets are still to come: those may be moved without
    being read, as long as `passed` is told of them.
    """

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self.max_frame = max_frame
        self.body_left = 0
        # The greeting parts still to check, or () once it has passed.
        self._greeting: tuple[int, ...] = (SIGNATURE_BYTES, 1, GREETING_BYTES - SIGNATURE_BYTES - 1)
        self._ready = False

    def feed(self, data: bytes | bytearray | memoryview) -> int:
        """Check `data`, the bytes read from the kernel and not yet passed on, from its start.

        Returns how many bytes at its start are checked; the rest, an incomplete greeting part,
        frame header or command, must be given again with the bytes that follow it. Raises
        ProtocolError at the first thing the kernel may not send."""
        view = memoryview(data)
        end = len(view)
        done = min(self.body_left, end)
        self.body_left -= done
        # One pass per frame: a kernel's output is mostly small frames, and this is the relay's
        # cost per frame.
        while done < end:
            if self._greeting:
                step = self._greeting_part(view[done:])
            else:
                flags = view[done]
                if flags & FLAGS_RESERVED:
                    msg = (
                        f"a frame whose flags octet is {flags:#04x}: bits 7-3 are reserved and "
                        "must be 0"
                    )
                    raise ProtocolError(msg)
                header = 9 if flags & FLAG_LONG else 2
                if end - done < header:
                    break
                if header == 2:
                    size = view[done + 1]
                else:
                    (size,) = _LONG_SIZE.unpack_from(view, done + 1)
                if not flags & FLAG_COMMAND:
                    self._check_message_frame(size)
                    body = min(size, end - done - header)
                    self.body_left = size - body
                    done += header + body
                    continue
                step = self._command(view[done:], flags, header, size)
            if not step:
                break
            done += step
        return done

    @property
    def ready(self) -> bool:
        """Whether the kernel has sent its READY command, which completes its handshake."""
        return self._ready

    def passed(self, count: int) -> None:
        """`count` octets of the current message frame's body went to the client unread."""
        if not 0 < count <= self.body_left:
            msg = f"{count} bytes passed, but {self.body_left} were left of the frame"
            raise ValueError(msg)
        self.body_left -= count

    def _check_message_frame(self, size: int) -> None:
        if not self._ready:
            msg = (
                f"a message frame of {size} bytes before the CurveZMQ handshake was complete; "
                "a kernel's first frames are commands"
            )
            raise ProtocolError(msg)
        if size > self.max_frame:
            msg = (
                f"a message frame of {size} bytes ({_mib(size)}); frames are limited to "
                f"{self.max_frame} bytes ({_mib(self.max_frame)}, the max_frame_size setting)"
            )
            raise ProtocolError(msg)

    def _greeting_part(self, view: memoryview) -> int:
        size = self._greeting[0]
        if len(view) < size:
            return 0
        part = bytes(view[:size])
        if len(self._greeting) == 3:
            if part[0] != 0xFF or part[9] != 0x7F:
                msg = (
                    f"a greeting that starts {part.hex()}, not a ZMTP 3 signature "
                    "(ff, 8 octets, 7f)"
                )
                raise ProtocolError(msg)
        elif len(self._greeting) == 2:
            if part[0] != ZMTP_MAJOR:
                msg = f"a greeting for ZMTP version {part[0]}, not {ZMTP_MAJOR}"
                raise ProtocolError(msg)
        else:
            mechanism, as_server, filler = part[1:21], part[21], part[22:]
            if mechanism != MECHANISM:
                shown = mechanism.rstrip(b"\0").decode("ascii", "replace")
                msg = f"a greeting for the security mechanism {shown!r}, not 'CURVE'"
                raise ProtocolError(msg)
            if as_server > 1 or any(filler):
                msg = f"a greeting whose as-server and filler octets are {part[21:].hex()}"
                raise ProtocolError(msg)
        self._greeting = self._greeting[1:]
        return size

    def _command(self, view: memoryview, flags: int, header: int, size: int) -> int:
        if size > MAX_COMMAND_BYTES:
            msg = (
                f"a command frame of {size} bytes ({_mib(size)}); commands are limited to "
                f"{MAX_COMMAND_BYTES} bytes"
            )
            raise ProtocolError(msg)
        if flags & FLAG_MORE:
            msg = "a command frame with the MORE flag, which commands never have"
            raise ProtocolError(msg)
        if len(view) < header + size:
            return 0
        body = bytes(view[header : header + size])
        name = body[1 : 1 + body[0]] if body else b""
        if not name or len(name) != body[0] or not (name.isascii() and name.isalpha()):
            msg = f"a command frame whose name is malformed: {body[:32].hex()}"
            raise ProtocolError(msg)
        if name == b"READY":
            self._ready = True
        return header + size


def _mib(size: int) -> str:
    return f"{size / 1024**2:.1f} MiB" if size < 1024**3 else f"{size / 1024**3:.1f} GiB"
