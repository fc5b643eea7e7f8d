"""Start supervisors by forking them from one warm process: `python -m runtime.forkserver`.

A supervisor started as a new Python process spends most of its start-up in the interpreter and
its imports, and each one holds a private copy of the same modules. The fork server pays that once
per owner (a Jupyter server, a papermill run): it imports the supervisor and then forks one
supervisor per sandbox, which starts at once and shares the imported modules' memory with its
siblings until it changes them.

Protocol, over a SOCK_SEQPACKET socket that is the fork server's stdin:

- the owner sends ``F`` with three fds, the new supervisor's stdin, stdout and stderr (the same
  lifeline and event pipes a directly started supervisor has, and the owner's stderr as it is at
  that moment, which may not be what it was when the fork server started);
- the fork server answers ``F`` and the child's pid, with a pidfd for it, or ``E`` and an error;
- when a child ends, the fork server reaps it and sends ``X``, its pid and its exit status
  (negative: the signal that ended it, as subprocess reports it).

The fork server ends when the owner closes the socket; running supervisors keep their own
lifelines and are not affected. It never starts a thread, so a fork never copies a half-held lock
and the child may still enter a new user namespace, which requires a single thread.
"""

from __future__ import annotations

import array
import atexit
import contextlib
import gc
import os
import queue
import select
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
import traceback
import weakref
from collections.abc import Sequence
from typing import IO

from runtime import supervisor

REQUEST = b"F"
FORKED = struct.Struct("=ci")  # b"F", pid; a pidfd rides along
FAILED = b"E"
EXITED = struct.Struct("=cii")  # b"X", pid, exit status
MAX_MESSAGE = 4096
PROCESS_NAME = "hopx-forkserver"


def receive(sock: socket.socket, max_fds: int) -> tuple[bytes, list[int]]:
    """One message and the fds that came with it; b"" at end of stream."""
    fds = array.array("i")
    data, ancillary, _, _ = sock.recvmsg(MAX_MESSAGE, socket.CMSG_SPACE(max_fds * fds.itemsize))
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    return data, list(fds)


def send(sock: socket.socket, data: bytes, fds: Sequence[int] = ()) -> None:
    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
    sock.sendmsg([data], ancillary)


class ForkServer:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.owner_pid = os.getppid()
        self._wakeup_r, self._wakeup_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def serve(self) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.set_wakeup_fd(self._wakeup_w)
        selector = selectors.DefaultSelector()
        selector.register(self.sock, selectors.EVENT_READ, "request")
        selector.register(self._wakeup_r, selectors.EVENT_READ, "child")
        # Objects made so far live as long as the server: keep the collector's bookkeeping off
        # their pages, so the forked supervisors go on sharing them.
        gc.freeze()
        while True:
            for key, _ in selector.select():
                if key.data == "child":
                    with contextlib.suppress(BlockingIOError):
                        os.read(self._wakeup_r, 512)
                    self._reap()
                    continue
                data, fds = receive(self.sock, 3)
                if not data:
                    return  # the owner is gone
                if data == REQUEST and len(fds) == 3:
                    self._fork(fds, selector)
                else:
                    send(self.sock, FAILED + b"bad request")
                for fd in fds:
                    os.close(fd)

    def _fork(self, stdio: list[int], selector: selectors.BaseSelector) -> None:
        try:
            pid = os.fork()
        except OSError as e:
            send(self.sock, FAILED + str(e).encode())
            return
        if pid == 0:
            os._exit(self._become_supervisor(stdio, selector))
        pidfd = os.pidfd_open(pid)
        try:
            send(self.sock, FORKED.pack(REQUEST, pid), [pidfd])
        finally:
            os.close(pidfd)

    def _become_supervisor(self, stdio: list[int], selector: selectors.BaseSelector) -> int:
        """In the child: drop everything of the fork server, run a supervisor, return its status."""
        status = 70
        try:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            selector.close()
            for fd in (self.sock.detach(), self._wakeup_r, self._wakeup_w):
                os.close(fd)
            for target, fd in enumerate(stdio):
                os.dup2(fd, target)
            for fd in stdio:
                os.close(fd)
            os.setsid()
            status = supervisor.main(owner_pid=self.owner_pid)
        except SystemExit as e:
            status = e.code if isinstance(e.code, int) else 1
        except BaseException:
            traceback.print_exc()
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
        return status

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            with contextlib.suppress(OSError):
                send(self.sock, EXITED.pack(b"X", pid, os.waitstatus_to_exitcode(status)))


def main() -> int:
    with contextlib.suppress(OSError), open("/proc/self/comm", "w") as f:
        f.write(PROCESS_NAME)
    ForkServer(socket.socket(fileno=0)).serve()
    return 0


# -- the owner's side ---------------------------------------------------------------------------

# The exit status of a supervisor whose fork server died before it could report one.
UNKNOWN_STATUS = 255
# How long a fork may take, the fork server's own start-up included.
FORK_PATIENCE = 30.0


class ForkedProcess:
    """A supervisor forked by the fork server, with the part of `subprocess.Popen`'s interface
    that `runtime.handle` uses. It is not the owner's child: its end is seen through a pidfd, its
    status comes from the fork server, and a kill goes through the pidfd, so a reused pid is
    never signalled."""

    def __init__(self, pid: int, pidfd: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self.stdin: IO[bytes] | None = None
        self.stdout: IO[bytes] | None = None
        self._pidfd = pidfd
        weakref.finalize(self, os.close, pidfd)
        self._status = UNKNOWN_STATUS
        self._reported = threading.Event()

    def report(self, status: int) -> None:
        self._status = status
        self._reported.set()

    def poll(self) -> int | None:
        """Never blocks: an ended supervisor counts as running until its status is known."""
        if self.returncode is None and self._reported.is_set() and self._has_ended(0):
            self.returncode = self._status
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            if not self._has_ended(timeout):
                raise subprocess.TimeoutExpired(str(self.pid), timeout or 0.0)
            # The fork server reaps it and reports its status a moment later.
            self._reported.wait(FORK_PATIENCE)
            self.returncode = self._status
        return self.returncode

    def _has_ended(self, timeout: float | None) -> bool:
        return bool(select.select([self._pidfd], [], [], timeout)[0])

    def kill(self) -> None:
        if self.returncode is None:
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)


class ForkServerClient:
    """One fork server, started by this owner process, and the supervisors it forked."""

    def __init__(self, python: str) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with theirs:
            # -I: nothing from the environment or the current directory decides what runs.
            self.process = subprocess.Popen(
                [python, "-I", "-m", "runtime.forkserver"],
                stdin=theirs.fileno(),
                stdout=subprocess.DEVNULL,
                cwd="/",
                start_new_session=True,
            )
        self.sock = ours
        self.owner_pid = os.getpid()
        self._replies: queue.Queue[ForkedProcess | str] = queue.Queue()
        self._children: dict[int, ForkedProcess] = {}
        self._request_lock = threading.Lock()
        self._ended = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def close(self) -> None:
        """End the fork server now (it would end on its own once this process has exited)."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5.0)

    @property
    def usable(self) -> bool:
        return not self._ended.is_set() and self.owner_pid == os.getpid()

    def fork(self) -> ForkedProcess:
        """A new supervisor, waiting for its spec on its stdin."""
        stdin_r, stdin_w = os.pipe()
        stdout_r, stdout_w = os.pipe()
        try:
            with self._request_lock:
                send(self.sock, REQUEST, [stdin_r, stdout_w, 2])
                reply = self._replies.get(timeout=FORK_PATIENCE)
        except (OSError, queue.Empty) as e:
            reply = f"the supervisor fork server did not answer ({e or 'timeout'})"
        finally:
            os.close(stdin_r)
            os.close(stdout_w)
        if isinstance(reply, str):
            os.close(stdin_w)
            os.close(stdout_r)
            raise OSError(reply)
        reply.stdin = os.fdopen(stdin_w, "wb")
        reply.stdout = os.fdopen(stdout_r, "rb")
        return reply

    def _read(self) -> None:
        try:
            while True:
                data, fds = receive(self.sock, 1)
                if not data:
                    break
                if data[:1] == REQUEST and len(data) == FORKED.size and len(fds) == 1:
                    _, pid = FORKED.unpack(data)
                    process = ForkedProcess(pid, fds[0])
                    self._children[pid] = process
                    self._replies.put(process)
                elif data[:1] == FAILED:
                    self._replies.put(
                        f"cannot fork a supervisor: {data[1:].decode(errors='replace')}"
                    )
                elif len(data) == EXITED.size:
                    _, pid, status = EXITED.unpack(data)
                    child = self._children.pop(pid, None)
                    if child is not None:
                        child.report(status)
        except OSError:
            pass
        # The fork server is gone: nobody will report these statuses, and no fork will come.
        self._ended.set()
        for child in self._children.values():
            child.report(UNKNOWN_STATUS)
        self._replies.put("the supervisor fork server ended; see the server's log")
        self.sock.close()
        self.process.wait()


_clients: dict[str, ForkServerClient] = {}
_clients_lock = threading.Lock()


def fork_supervisor(python: str) -> ForkedProcess:
    """A new supervisor forked from this process's fork server for `python`, started if need be
    (the first time, after it ended, or in a forked copy of the owner)."""
    with _clients_lock:
        client = _clients.get(python)
        if client is None or not client.usable:
            if not _clients:
                atexit.register(_close_all)
            client = _clients[python] = ForkServerClient(python)
    return client.fork()


def _close_all() -> None:
    for client in _clients.values():
        if client.usable:
            client.close()


if __name__ == "__main__":
    sys.exit(main())
