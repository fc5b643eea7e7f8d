"""The owner's handle on one supervisor process: start it, command it, see it end, clean up.

Used by the provisioner (and by tests without Jupyter). A reader thread follows the supervisor's
events; if the supervisor dies without reporting an exit (kill -9), the thread removes what the
supervisor would have removed, so nothing depends on someone polling.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import IO, Any

from runtime import kernel_secrets
from runtime.cgroups import SandboxCgroup
from runtime.forkserver import ForkedProcess, fork_supervisor
from runtime.network_activity import NetworkActivity
from runtime.spec import SandboxSpec
from runtime.supervisor import STATE_RECORD

MAX_EVENT_BYTES = 64 * 1024

SupervisorProcess = subprocess.Popen[bytes] | ForkedProcess


class SandboxStartError(RuntimeError):
    """The supervisor reported that the sandbox could not start; the message says why."""


class SupervisorHandle:
    def __init__(self, spec: SandboxSpec, process: SupervisorProcess) -> None:
        self.spec = spec
        self.process = process
        self.started: dict[str, Any] = {}
        self.exited: dict[str, Any] = {}
        # Its outbound connections, from the supervisor's `connection` events.
        self.network = NetworkActivity()
        self._first_event: queue.Queue[dict[str, Any]] = queue.Queue()
        self._lock = threading.Lock()
        self._cleaned = False
        self._reader = threading.Thread(target=self._follow_events, daemon=True)

    @property
    def pid(self) -> int:
        return self.process.pid

    @classmethod
    def start(
        cls,
        spec: SandboxSpec,
        *,
        timeout: float = 30.0,
        python: str = sys.executable,
        launcher: Sequence[str] = (),
        secrets: Mapping[str, str] | None = None,
    ) -> SupervisorHandle:
        """Start a supervisor for `spec` and wait until the sandbox runs or has failed to start.
        `secrets` go to the kernel's environment only (see `runtime.kernel_secrets`).

        The supervisor is forked from this process's fork server (`runtime.forkserver`) for
        `python`. A `launcher` starts it as a new process instead: a command line that execs the
        supervisor in place, such as `systemd-run --scope`."""
        process: SupervisorProcess
        if launcher:
            process = subprocess.Popen(
                # -I: nothing from the environment or the current directory decides what runs as
                # the supervisor (a notebook folder with a "runtime" package must not shadow ours).
                [*launcher, python, "-I", "-m", "runtime.supervisor"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                cwd="/",
                start_new_session=True,
            )
        else:
            try:
                process = fork_supervisor(python)
            except OSError as e:
                raise SandboxStartError(str(e)) from e
        handle = cls(spec, process)
        assert process.stdin is not None
        try:
            process.stdin.write(spec.to_json().encode() + b"\n")
            process.stdin.write(kernel_secrets.encode_line(secrets or {}))
            process.stdin.flush()
        except OSError:
            pass  # the supervisor died at once; its exit is reported below
        handle._reader.start()
        try:
            event = handle._first_event.get(timeout=timeout)
        except queue.Empty:
            handle.kill_now()
            msg = f"the sandbox did not start within {timeout:.0f} s"
            raise SandboxStartError(msg) from None
        if event.get("event") != "started":
            status = handle.process.wait()
            handle.cleanup()
            error = str(event.get("error", "the sandbox supervisor failed"))
            if event.get("ended_early"):
                error += f" (exit status {status})"
                if launcher:
                    error += (
                        f"; it was started through {os.path.basename(launcher[0])}, whose "
                        "message is in the server's log; `jupyter hopx doctor` checks it"
                    )
            raise SandboxStartError(error)
        return handle

    def _follow_events(self) -> None:
        stdout = self.process.stdout
        assert stdout is not None
        for event in _read_events(stdout):
            if event.get("event") == "started":
                self.started = event
            elif event.get("event") == "exited":
                self.exited = event
            elif event.get("event") == "connection":
                self.network.add(event.get("record"))
            if event.get("event") in ("started", "failed"):
                self._first_event.put(event)
        stdout.close()
        self._first_event.put(
            {"event": "failed", "error": "the sandbox supervisor ended early", "ended_early": True}
        )
        # Its pipes close a moment before the process can be reaped; wait for that moment.
        self.process.wait()
        # The supervisor is gone. If it did not get to clean up, do it now.
        if self.started and not self.exited:
            self.cleanup()

    # -- commands -------------------------------------------------------------------------------

    def send(self, op: str, **fields: Any) -> bool:
        """Send one command; False if the supervisor is no longer listening."""
        stdin = self.process.stdin
        if stdin is None or stdin.closed:
            return False
        try:
            stdin.write(json.dumps({"op": op, **fields}).encode() + b"\n")
            stdin.flush()
        except (OSError, ValueError):
            return False
        return True

    def signal_kernel(self, signum: int) -> None:
        self.send("signal", signum=signum)

    def kill(self, reason: str = "killed") -> None:
        """End the sandbox now; falls back to killing the supervisor if it does not listen."""
        if not self.send("kill", reason=reason):
            self.kill_now()

    def terminate(self, reason: str = "terminated") -> None:
        if not self.send("terminate", reason=reason):
            self.kill_now()

    def kill_now(self) -> None:
        """SIGKILL the supervisor; bubblewrap dies with it and cleanup() removes the rest."""
        self.process.kill()
        self.process.wait()
        self.cleanup()

    def poll(self) -> int | None:
        status = self.process.poll()
        if status is not None:
            self._finish_reading()
        return status

    def wait(self, timeout: float | None = None) -> int:
        status = self.process.wait(timeout)
        self._finish_reading()
        return status

    def _finish_reading(self) -> None:
        """The supervisor has ended: let the reader take in its last event (the exit reason)."""
        if self._reader.is_alive() and threading.current_thread() is not self._reader:
            self._reader.join(2.0)

    @property
    def started_at(self) -> float:
        """When the supervisor started the sandbox (seconds since the epoch)."""
        return float(self.started.get("started_at", 0.0))

    @property
    def exit_reason(self) -> str:
        return str(self.exited.get("reason", "supervisor_died" if self.started else ""))

    @property
    def exit_detail(self) -> str:
        """For reason "protocol": what the kernel sent, on which channel, and the bound."""
        return str(self.exited.get("detail", ""))

    # -- cleanup --------------------------------------------------------------------------------

    def cleanup(self) -> None:
        """After the supervisor has ended: remove its cgroup and state record if it could not.

        Idempotent; a supervisor that exited normally has already done all of this.
        """
        with self._lock:
            if self._cleaned or self.process.poll() is None:
                return
            self._cleaned = True
        directories = list(self.started.get("cgroups", []))
        if directories:
            SandboxCgroup(os.path.basename(directories[0]), directories).remove()
        for channel in self.spec.channels:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(channel.host_path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.spec.state_dir, STATE_RECORD))
        if self.process.stdin:
            with contextlib.suppress(OSError):
                self.process.stdin.close()


def _read_events(stream: IO[bytes]) -> Any:
    """JSON event lines until EOF; malformed or over-long lines are skipped."""
    while True:
        try:
            line = stream.readline(MAX_EVENT_BYTES)
        except (OSError, ValueError):
            return
        if not line:
            return
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            if isinstance(event, dict):
                yield event
