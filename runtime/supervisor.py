"""The host-side supervisor of one sandbox: `python -m runtime.supervisor`.

The provisioner starts one supervisor per kernel start and talks to it over pipes:

- stdin carries the `SandboxSpec` (one JSON line), the kernel's secrets (one JSON line, see
  `runtime.kernel_secrets`), then commands (JSON lines): ``signal``,
  ``notice``, ``terminate``, ``kill``. It is also the lifeline: end-of-file means the owner
  (Jupyter server, papermill) is gone, and the sandbox goes with it, cleanup included.
- stdout carries events (JSON lines): ``started``, ``failed``, ``exited``.
- SIGTERM from anyone else (`jupyter hopx kill`, an admin) stops the sandbox for reason
  "manual".
- A kernel that breaks the ZeroMQ protocol towards its client (see `runtime.zmtp`) is killed
  at once for reason "protocol"; the ``exited`` event's ``detail`` says what it sent.

A graceful stop escalates while the supervisor keeps relaying, so the owner can still shut the
kernel down cleanly: a stop notice to the kernel (see `runtime.stop_notice`), SIGTERM, SIGKILL.

The supervisor creates the cgroup, enters a private network namespace, listens on the kernel's
host sockets, starts bubblewrap joined to the cgroup (as an unprivileged uid when it is root), and
relays the kernel's channels until the sandbox ends. Every exit path removes the cgroup, the
sockets and the state record.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import resource
import selectors
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, replace
from typing import Any

from runtime import inbound, kernel_secrets, libc, own_size, quotas
from runtime.bwrap import SCRATCH_DIRS, HostLayout, SandboxFds, bwrap_argv, is_within
from runtime.cgroups import CgroupError, CgroupHost, SandboxCgroup, parents_within_own_cgroup
from runtime.claims import Claim
from runtime.connection_log import ConnectionLog
from runtime.host_uids import UidsExhausted, claim_uid, parse_uid_range
from runtime.inbound import InboundRelay
from runtime.kernel_launcher import Masker
from runtime.kernel_log import KernelLog, neutralise
from runtime.network_activity import NetworkActivity
from runtime.relay import Relay
from runtime.sandbox_files import generated_files
from runtime.sandbox_network import LISTENER_PORT, NetworkSetupError, SandboxNetwork
from runtime.seccomp import build_filter
from runtime.spec import CONNECTION_FILE, MAX_SPEC_BYTES, Channel, SandboxSpec
from runtime.stop_notice import STARTUP_FILE, notice_signal, startup_file
from runtime.units import LimitError
from runtime.zmtp import ProtocolError

STATE_RECORD = "sandbox.json"
PROCESS_NAME = "hopx-supervisor"
CGROUP_PREFIX = "hopx-"
# Where a root supervisor stages host paths for the sandbox uid, inside a private mount namespace.
STAGE_DIR = "/tmp/.hopx-stage"
# How long the owner gets, after the kernel was told why it is stopped, to shut it down itself.
NOTICE_GRACE = 1.0
# How long the kernel gets between SIGTERM and SIGKILL when the supervisor ends it.
TERMINATE_GRACE = 5.0
MAX_COMMAND_BYTES = 64 * 1024
STDERR_TAIL_BYTES = 4096
# The same network warning goes to the owner's log at most this often (seconds), for this many
# different destinations before they are forgotten.
WARN_INTERVAL = 60.0
# The state record is rewritten with new outbound totals at most this often (seconds).
STATE_RECORD_INTERVAL = 2.0
MAX_WARNED = 1024
OUTPUT_PIPE_BYTES = 1024 * 1024


def cgroup_name(sandbox_id: str, supervisor_pid: int) -> str:
    """The sandbox's cgroup name; it carries the supervisor's pid so a sweep can tell orphans."""
    return f"{CGROUP_PREFIX}{sandbox_id}.{supervisor_pid}"


class StartError(RuntimeError):
    """The sandbox could not be started; the message is shown to the user."""


def emit(event: str, **fields: Any) -> None:
    """Write one event line for the provisioner; a vanished reader is not an error."""
    line = json.dumps({"event": event, **fields}) + "\n"
    with contextlib.suppress(OSError):
        os.write(1, line.encode())


class Supervisor:
    def __init__(
        self, spec: SandboxSpec, owner_pid: int, secrets: dict[str, str] | None = None
    ) -> None:
        self.spec = spec
        self.owner_pid = owner_pid
        # Given to the kernel's environment at its start, then forgotten; their values are
        # masked in what the kernel writes to the log.
        self._secrets = dict(secrets or {})
        self._masker = Masker(self._secrets, by_line=True)
        self._secret_names = sorted(self._secrets)
        self.cgroup = SandboxCgroup(cgroup_name(spec.sandbox_id, os.getpid()))
        self.alive = threading.Event()
        self.relay = Relay(
            spec.channels,
            self.alive,
            max_frame=spec.max_frame_size,
            on_violation=self._on_protocol_violation,
        )
        self.process: subprocess.Popen[bytes] | None = None
        self.sandbox_pid = 0
        self.started_at = time.time()
        self._stderr_tail = bytearray()
        self._oom_kills_at_start = 0
        self._stop_reason = ""
        # What the kernel sent that broke the protocol, once it has.
        self._violation = ""
        # The next step of a graceful stop under way: ("terminate" | "kill", when).
        self._escalation: tuple[str, float] | None = None
        self._signal_r, self._signal_w = os.pipe()
        # The sandbox's own host uid, when a root supervisor took one from the range.
        self.uid_claim: Claim | None = None
        # Its address, and its egress process when its policy allows outbound traffic.
        self.network = SandboxNetwork(spec)
        # The way in to servers the notebook starts, for the Jupyter server's /hopx/proxy.
        self.inbound = InboundRelay(
            inbound.socket_path(spec.state_dir),
            [channel.sandbox_port for channel in spec.channels] + [LISTENER_PORT],
            lambda: self.address,
        )
        self.connection_log = (
            ConnectionLog(
                spec.connection_log, spec.connection_log_max_bytes, spec.connection_log_backups
            )
            if spec.connection_log
            else None
        )
        self._warned: dict[str, float] = {}
        # Outbound totals, for host tools (`jupyter hopx list`) through the state record.
        self.network_activity = NetworkActivity(recent=0)
        self._record_written = 0.0
        # When the state record is next to be rewritten with new totals, if it is.
        self._record_due: float | None = None

    # -- start ----------------------------------------------------------------------------------

    def start(self) -> None:
        spec = self.spec
        host = CgroupHost.detect()
        self.cgroup = SandboxCgroup.create(
            host,
            self.cgroup.name,
            spec.limits,
            parent=parents_within_own_cgroup(host)
            if spec.cgroup_within_own
            else spec.cgroup_parent,
            allow_unenforced=spec.allow_unenforced_limits,
        )
        self._oom_kills_at_start = self.cgroup.oom_kills()
        if spec.host_uid_range is not None:
            self.uid_claim = self._claim_host_uid(spec.host_uid_range)
        try:
            self.network.claim_address()
            # Before entering the sandbox's namespace: the egress process stays in the host's.
            self.network.start_egress(self.uid_claim.number if self.uid_claim else None)
        except NetworkSetupError as e:
            raise StartError(str(e)) from e
        # The channels' host sockets are bound first, in the host's network namespace: bound in
        # the sandbox's, /proc/net/unix would show the kernel their paths.
        self.relay.listen()
        self.inbound.listen()
        # A network namespace needs a single-threaded process: do it before any thread starts.
        try:
            libc.enter_private_network(unprivileged=os.geteuid() != 0)
            if os.geteuid() != 0:  # the sandbox will run as this uid: its quotas need caps
                quotas.limit_user_namespace()
        except OSError as e:
            msg = (
                "Enable user namespaces on this host (see the README's troubleshooting): the "
                f"sandbox's network namespace could not be made ({e.strerror})."
            )
            raise StartError(msg) from e
        try:
            self.network.configure()
        except NetworkSetupError as e:
            raise StartError(str(e)) from e
        self.alive.set()
        self._spawn_bwrap()
        self._write_state_record()

    @staticmethod
    def _claim_host_uid(uid_range: str) -> Claim:
        try:
            return claim_uid(parse_uid_range("sandbox_uid_range", uid_range))
        except (LimitError, UidsExhausted) as e:
            msg = f"Stop a kernel, or widen sandbox_uid_range: {e}."
            raise StartError(msg) from e

    @property
    def address(self) -> str:
        """The sandbox's own address, once claimed."""
        return str(self.network.address or "")

    def _spawn_bwrap(self) -> None:
        spec = self.spec
        files = generated_files(spec.hostname, ipv6=not self.network.outbound)
        if self.network.outbound:
            # The stub answers on every address; the sandbox's own names it plainly.
            files["/etc/resolv.conf"] = f"nameserver {self.address}\noptions timeout:2\n".encode()
        cpus = own_size.online_cpus(spec.limits.cpus, own_size.host_online_cpus())
        if cpus is not None:
            files[own_size.CPU_ONLINE] = cpus.encode()
        if spec.stop_notices:
            files[STARTUP_FILE] = startup_file(spec.stop_notices)
        file_fds = {dest: _data_fd(data) for dest, data in files.items()}
        connection_fd = _data_fd(spec.connection_json.encode())
        seccomp_fd = _data_fd(build_filter())
        secrets_fd = kernel_secrets.secrets_pipe(self._secrets) if self._secrets else None
        self._secrets = {}
        if secrets_fd is not None:
            spec = replace(spec, argv=kernel_secrets.launcher_argv(spec.argv, secrets_fd))
        info_r, info_w = os.pipe()
        err_r, err_w = os.pipe()
        # A larger pipe lets a flood of output be counted and dropped in fewer, larger reads.
        with contextlib.suppress(OSError):  # beyond /proc/sys/fs/pipe-max-size unprivileged
            fcntl.fcntl(err_r, fcntl.F_SETPIPE_SZ, OUTPUT_PIPE_BYTES)
        fds = SandboxFds(
            seccomp=seccomp_fd,
            info=info_w,
            files=file_fds,
            writable_files={CONNECTION_FILE: connection_fd},
        )
        staged = self._staged_sources() if self.uid_claim is not None else {}
        idmaps = self._workspace_idmap() if self.uid_claim is not None else {}
        scratch_root = self._scratch_root()
        scratch = {path: f"{scratch_root}/{i}" for i, path in enumerate(SCRATCH_DIRS)}
        argv = bwrap_argv(
            spec,
            HostLayout.detect(),
            fds,
            scratch=scratch,
            ptys=f"{scratch_root}/pts",
            sources=staged,
            cgroups=own_size.cgroup_binds(self.cgroup.by_controller),
        )
        inherited = [seccomp_fd, info_w, connection_fd, *file_fds.values()]
        if secrets_fd is not None:
            inherited.append(secrets_fd)
        # The forwarder thread starts only after fork: preexec_fn and threads do not mix.
        forwarder = threading.Thread(target=self._forward_stderr, args=(err_r,), daemon=True)
        failure: Exception | None = None
        try:
            self.process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=err_w,
                stderr=err_w,
                pass_fds=inherited,
                env=spec.env,
                cwd="/",
                # No other thread exists yet (the forwarder starts after the fork).
                preexec_fn=functools.partial(  # noqa: PLW1509
                    self._enter_sandbox_credentials, staged, idmaps, scratch_root
                ),
            )
        except (OSError, subprocess.SubprocessError) as e:
            failure = e
        for fd in (*inherited, *idmaps.values(), err_w):
            os.close(fd)
        forwarder.start()
        if failure is not None:
            forwarder.join(1.0)  # the child's own account of what failed
            msg = (
                "Check that bwrap_path names a working bubblewrap: it could not be run "
                f"({self._stderr_tail_text() or failure})."
            )
            raise StartError(msg)
        self.sandbox_pid = self._read_info(info_r)

    def _staged_sources(self) -> dict[str, str]:
        """Where each host path the sandbox sees is bound from, once staged for the sandbox uid.

        bubblewrap itself runs inside the staging namespace, whose /tmp is covered: one kept
        below /tmp is staged too."""
        paths = [*self.spec.read_only_paths]
        if self.spec.workspace and self.spec.workspace_mode != "none":
            paths.append(self.spec.workspace)
        if is_within(self.spec.bwrap, os.path.dirname(STAGE_DIR)):
            paths.append(self.spec.bwrap)
        return {path: f"{STAGE_DIR}/{i}" for i, path in enumerate(paths)}

    def _workspace_idmap(self) -> dict[str, int]:
        """A read-write notebook folder is mounted idmapped: its owner's files are the sandbox
        uid's inside, and what the kernel writes belongs to that owner on the host, not to a
        uid that the next sandbox, with another uid, could not change. So is a read-only one
        that others may not enter (a 0700 home, a server's own temporary folder): the sandbox
        reads it as its owner would, as the notebook's user expects.

        Returns {folder: user namespace fd holding the mapping}."""
        spec, claim = self.spec, self.uid_claim
        if claim is None or not spec.workspace or spec.workspace_mode == "none":
            return {}
        owner = os.stat(spec.workspace)
        if spec.workspace_mode == "ro" and owner.st_mode & 0o005 == 0o005:
            return {}  # readable as it is: the sandbox sees what any other user would
        try:
            fd = libc.user_namespace_fd(
                uid_map=f"{owner.st_uid} {claim.number} 1",
                gid_map=f"{owner.st_gid} {claim.number} 1",
            )
        except OSError as e:
            _warn_not_idmapped(spec.workspace, claim.number, e)
            return {}
        return {spec.workspace: fd}

    def _scratch_root(self) -> str:
        """Where the scratch filesystems are mounted before bubblewrap binds them in: inside the
        supervisor's private mount namespace, on a directory the sandbox's uid can reach."""
        if self.uid_claim is not None:
            return f"{STAGE_DIR}/scratch"
        path = os.path.join(self.spec.state_dir, "scratch")
        os.makedirs(path, mode=0o700, exist_ok=True)
        return path

    def _enter_sandbox_credentials(
        self, staged: dict[str, str], idmaps: dict[str, int], scratch_root: str
    ) -> None:
        """In the child, before exec'ing bwrap: join the cgroup, stage, drop to the sandbox uid.

        Runs between fork and exec, so only plain system calls happen here. subprocess reports
        a failure here only as "Exception occurred in preexec_fn", so say what it was on stderr.
        """
        try:
            self._join_cgroup_and_drop_privileges(staged, idmaps, scratch_root)
        except BaseException as e:
            what = str(e) if isinstance(e, CgroupError) else repr(e)
            os.write(2, f"hopx: preparing the sandbox process failed: {what}\n".encode())
            raise

    def _join_cgroup_and_drop_privileges(
        self, staged: dict[str, str], idmaps: dict[str, int], scratch_root: str
    ) -> None:
        for procs in self.cgroup.procs_files():
            try:
                with open(procs, "w") as f:
                    f.write("0")
            except OSError as e:
                msg = (
                    "Run the server inside cgroup_parent, or set systemd_scope = True: the "
                    f"sandbox cannot join {os.path.dirname(procs)} ({e.strerror}); on cgroup v2 "
                    "only a process already inside a subtree delegated to its user may move "
                    "into it."
                )
                raise CgroupError(msg) from e
        # No core dumps: a crashing kernel must not write its memory (keys included) anywhere,
        # and the sandbox cannot raise a hard limit again.
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        quotas.limit_process()
        if self.uid_claim is not None:
            uid = self.uid_claim.number  # the sandbox's own group has the same number
            self._stage(staged, idmaps, uid)
            self._mount_scratch(scratch_root, uid, uid)
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
        else:
            # The supervisor's own user namespace lets it mount in a mount namespace of its own.
            libc.unshare(libc.CLONE_NEWNS)
            libc.mount(None, "/", None, libc.MS_REC | libc.MS_PRIVATE)
            self._mount_scratch(scratch_root, os.getuid(), os.getgid())
        # Changing credentials clears the parent-death signal, so set it afterwards.
        libc.prctl(libc.PR_SET_PDEATHSIG, signal.SIGKILL)

    @staticmethod
    def _stage(staged: dict[str, str], idmaps: dict[str, int], uid: int) -> None:
        """Make host paths the sandbox uid could not traverse (a 0700 home) reachable by it.

        A private mount namespace gets its own /tmp with the paths bound below it; bubblewrap,
        running as the sandbox uid, binds them from there. The host's mount table is untouched.
        """
        libc.unshare(libc.CLONE_NEWNS)
        libc.mount(None, "/", None, libc.MS_REC | libc.MS_PRIVATE)
        # Copies taken before /tmp is covered: a staged path may be /tmp or lie below it.
        trees = {path: libc.clone_tree(path) for path in staged}
        for path, userns_fd in idmaps.items():
            try:
                libc.idmap_tree(trees[path], userns_fd)
            except OSError as e:  # a filesystem without idmapped mounts (NFS, ramfs)
                _warn_not_idmapped(path, uid, e)
        directories = {path for path in staged if os.path.isdir(path)}
        libc.mount("tmpfs", "/tmp", "tmpfs", libc.MS_NOSUID | libc.MS_NODEV, "mode=1777,size=4m")
        os.mkdir(STAGE_DIR, 0o755)
        for path, target in staged.items():
            if path in directories:
                os.mkdir(target, 0o755)
            else:
                os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o644))
            libc.attach_tree(trees[path], target)
            os.close(trees[path])

    def _mount_scratch(self, root: str, uid: int, gid: int) -> None:
        """Mount the sandbox's scratch filesystems below `root`, in the private mount namespace
        of the process about to become bubblewrap: capped in size and in files, owned by the
        sandbox's uid. Nothing of them appears in the host's mount table."""
        limits = self.spec.limits
        flags = libc.MS_NOSUID | libc.MS_NODEV
        os.makedirs(root, mode=0o755, exist_ok=True)
        libc.mount("tmpfs", root, "tmpfs", flags, "mode=0755,size=64k,nr_inodes=64")
        options = f"mode=0755,uid={uid},gid={gid},size={limits.disk},nr_inodes={limits.files}"
        for i in range(len(SCRATCH_DIRS)):
            os.mkdir(f"{root}/{i}", 0o755)
            libc.mount("hopx-scratch", f"{root}/{i}", "tmpfs", flags, options)
        os.mkdir(f"{root}/pts", 0o755)
        # Not nodev: /dev/pts/ptmx is the device that hands out the sandbox's terminals.
        pts_flags = libc.MS_NOSUID | libc.MS_NOEXEC
        libc.mount("devpts", f"{root}/pts", "devpts", pts_flags, quotas.devpts_options())

    def _read_info(self, info_r: int) -> int:
        """The sandbox's init pid, from bubblewrap's --info-fd; fails if bubblewrap gave up."""
        data = b""
        with os.fdopen(info_r, "rb") as info:
            data = info.read(MAX_COMMAND_BYTES)
        try:
            return int(json.loads(data)["child-pid"])
        except (ValueError, KeyError, TypeError):
            assert self.process is not None
            status = self.process.wait()
            time.sleep(0.05)  # let the stderr forwarder catch bubblewrap's last words
            msg = (
                "Run `jupyter hopx doctor` to see what this host lacks: bubblewrap could not "
                f"set up the sandbox (exit {status}): {self._stderr_tail_text()}"
            )
            raise StartError(msg) from None

    def _stderr_tail_text(self) -> str:
        tail = self._stderr_tail.decode(errors="replace")
        if len(self._stderr_tail) >= STDERR_TAIL_BYTES:  # its first line is the end of one
            tail = tail.partition("\n")[2]
        return neutralise(self._masker.text(tail).strip())

    def _forward_stderr(self, fd: int) -> None:
        """Pass the kernel's and bubblewrap's output on to the server log, marked, neutralised
        and rate-capped (runtime.kernel_log), keeping a short tail for start errors."""
        log = KernelLog(
            f"{self.spec.sandbox_id} {self.address}", _write_to_log, masker=self._masker
        )
        while chunk := os.read(fd, OUTPUT_PIPE_BYTES):
            log.feed(chunk)
            self._stderr_tail += chunk
            del self._stderr_tail[:-STDERR_TAIL_BYTES]
        log.close()
        os.close(fd)

    def _write_state_record(self) -> None:
        spec = self.spec
        record = {
            "kernel_id": spec.kernel_id,
            "sandbox_id": spec.sandbox_id,
            "supervisor_pid": os.getpid(),
            "owner_pid": self.owner_pid,
            "sandbox_pid": self.sandbox_pid,
            "started": self.started_at,
            "limits": vars(spec.limits),
            "cgroups": self.cgroup.directories,
            "memory_cgroup": self.cgroup.by_controller.get("memory", ("", 0))[0],
            "max_lifetime": spec.max_lifetime,
            "workspace": spec.workspace,
            "workspace_mode": spec.workspace_mode,
            "host_uid": self.host_uid,
            "address": self.address,
            "secrets": self._secret_names,  # names only
            "network": self.network_activity.totals() if self.network.outbound else None,
        }
        path = os.path.join(spec.state_dir, STATE_RECORD)
        with open(path + ".tmp", "w") as f:
            json.dump(record, f)
        os.replace(path + ".tmp", path)
        self._record_written = time.time()
        self._record_due = None

    @property
    def host_uid(self) -> int:
        return self.uid_claim.number if self.uid_claim is not None else os.getuid()

    # -- run ------------------------------------------------------------------------------------

    def supervise(self) -> int:
        """Relay and obey commands until the sandbox ends; returns the kernel's exit status."""
        assert self.process is not None
        selector = selectors.DefaultSelector()
        pidfd = os.pidfd_open(self.process.pid)
        selector.register(pidfd, selectors.EVENT_READ, "exited")
        selector.register(0, selectors.EVENT_READ, "command")
        selector.register(self._signal_r, selectors.EVENT_READ, "signal")
        for fd in self.relay.listeners:
            selector.register(fd, selectors.EVENT_READ, "accept")
        assert self.inbound.listener is not None
        selector.register(self.inbound.listener, selectors.EVENT_READ, "inbound")
        records = self.network.records_pipe
        if records is not None:
            selector.register(records, selectors.EVENT_READ, "network")
        os.set_blocking(0, False)
        pending = bytearray()
        deadline = self.started_at + self.spec.max_lifetime if self.spec.max_lifetime else None

        while self.process.poll() is None:
            ready = selector.select(self._time_to_next_step(deadline))
            if deadline is not None and time.time() >= deadline and not self._stop_reason:
                self.stop("max_lifetime", graceful=True)
            if self._escalation is not None and time.time() >= self._escalation[1]:
                self._escalate()
            if self._record_due is not None and time.time() >= self._record_due:
                self._write_state_record()
            for key, _ in ready:
                self._on_ready(selector, key, pending)
        selector.close()
        os.close(pidfd)
        return self.process.returncode

    def _on_ready(
        self, selector: selectors.BaseSelector, key: selectors.SelectorKey, pending: bytearray
    ) -> None:
        if key.data == "accept":
            self.relay.accept(int(key.fd))
        elif key.data == "inbound":
            self.inbound.accept()
        elif key.data == "network":
            self._on_connection_records()
            if self.network.records_ended:
                selector.unregister(key.fd)
                # Its listener went with it: the sandbox's connections are refused from now on.
                self._warn_once(
                    "egress",
                    "its egress process ended; the sandbox has no outbound "
                    "network until the kernel is restarted",
                )
        elif key.data == "command":
            if not self._read_commands(pending):
                selector.unregister(0)
                self.stop("owner_died", graceful=False)
        elif key.data == "signal":
            wakeups = os.read(self._signal_r, 64)
            if b"p" in wakeups:
                self.stop("protocol", graceful=False)
            if b"t" in wakeups:
                self.stop("manual", graceful=True)

    def _on_connection_records(self) -> None:
        """Logs, reports to the owner and, for a refusal, warns in the owner's log about what
        the egress process saw."""
        records = self.network.read_records()
        for record in records:
            fields = asdict(record)
            self.network_activity.add(fields)
            if self.connection_log is not None:
                try:
                    self.connection_log.write(record)
                except OSError as e:
                    self._warn_once("log", f"the connection log cannot be written ({e})")
            emit("connection", record=fields)
            if not record.allowed:
                target = record.destination_name or record.destination_address or "?"
                self._warn_once(
                    f"{target}:{record.port}",
                    f"denied {record.protocol} to {target} port {record.port}: {record.reason}; "
                    "to allow it, add a rule to network_allow (and none in network_deny)",
                )

        if records and self._record_due is None:
            # New totals for the state record: now, or once the last rewrite is old enough.
            self._record_due = max(time.time(), self._record_written + STATE_RECORD_INTERVAL)

    def _warn_once(self, key: str, what: str) -> None:
        """A WARNING line in the owner's log, at most once a minute for the same thing."""
        now = time.monotonic()
        if now - self._warned.get(key, -WARN_INTERVAL) < WARN_INTERVAL:
            return
        if len(self._warned) > MAX_WARNED:
            self._warned.clear()
        self._warned[key] = now
        _write_to_log(
            f"[W hopx] sandbox {self.spec.sandbox_id} ({self.address}) of kernel "
            f"{self.spec.kernel_id}: {neutralise(what)}\n"
        )

    def _time_to_next_step(self, deadline: float | None) -> float | None:
        """Seconds until the max lifetime, the next escalation step or the state record's next
        rewrite; None if none."""
        times = [] if deadline is None or self._stop_reason else [deadline]
        if self._escalation is not None:
            times.append(self._escalation[1])
        if self._record_due is not None:
            times.append(self._record_due)
        return max(0.0, min(times) - time.time()) if times else None

    def _read_commands(self, pending: bytearray) -> bool:
        """Handle complete command lines from stdin; False once the owner has gone."""
        try:
            chunk = os.read(0, 65536)
        except BlockingIOError:
            return True
        if not chunk:
            return False
        pending += chunk
        while b"\n" in pending:
            line, _, rest = bytes(pending).partition(b"\n")
            pending[:] = rest
            self._command(line)
        if len(pending) > MAX_COMMAND_BYTES:
            pending.clear()
            print("hopx supervisor: dropped an over-long command", file=sys.stderr)
        return True

    def _command(self, line: bytes) -> None:
        try:
            command = json.loads(line)
            op = command["op"]
        except (ValueError, KeyError, TypeError):
            print(f"hopx supervisor: ignored a malformed command {line[:80]!r}", file=sys.stderr)
            return
        if op == "signal":
            self.signal_kernel(int(command["signum"]))
        elif op == "notice":
            self.notify_kernel(str(command.get("reason", "")))
        elif op == "kill":
            self.stop(str(command.get("reason", "killed")), graceful=False)
        elif op == "terminate":
            self.stop(str(command.get("reason", "terminated")), graceful=True)

    def kernel_pid(self) -> int | None:
        """Host pid of the kernel: the first child of the sandbox's init process."""
        path = f"/proc/{self.sandbox_pid}/task/{self.sandbox_pid}/children"
        try:
            with open(path) as f:
                children = f.read().split()
        except OSError:
            return None
        return int(children[0]) if children else None

    def signal_kernel(self, signum: int) -> None:
        """Deliver `signum` to the kernel's process group (the kernel leads its own session)."""
        pid = self.kernel_pid()
        if pid is None:
            return
        try:
            os.killpg(pid, signum)
        except OSError:
            with contextlib.suppress(OSError):
                os.kill(pid, signum)

    def notify_kernel(self, reason: str) -> bool:
        """Tell the kernel why it is about to be stopped; False if it has no notice for that."""
        pid = self.kernel_pid()
        if reason not in self.spec.stop_notices or pid is None:
            return False
        try:
            os.kill(pid, notice_signal(reason))
        except (OSError, ValueError):
            return False
        return True

    def stop(self, reason: str, *, graceful: bool) -> None:
        """Begin ending the sandbox. Graceful: a notice the owner may act on, then SIGTERM, then
        SIGKILL, stepped by the supervise loop; otherwise SIGKILL at once. The first reason given
        is the one reported."""
        if not self._stop_reason:
            self._stop_reason = reason
        if not graceful:
            self._kill_everything()
        elif self._escalation is None:
            if self.notify_kernel(reason):
                self._escalation = ("terminate", time.time() + NOTICE_GRACE)
            else:
                self._escalation = ("terminate", time.time())
                self._escalate()

    def _escalate(self) -> None:
        assert self._escalation is not None
        step, _ = self._escalation
        if step == "terminate":
            self.signal_kernel(signal.SIGTERM)
            self._escalation = ("kill", time.time() + TERMINATE_GRACE)
        else:
            self._escalation = None
            self._kill_everything()

    def _kill_everything(self) -> None:
        self.cgroup.kill_all()
        if self.process is not None:
            with contextlib.suppress(OSError):
                self.process.kill()

    def exit_reason(self) -> str:
        if self._stop_reason:
            return self._stop_reason
        if self.cgroup.oom_kills() > self._oom_kills_at_start:
            return "oom"
        return "exited"

    def exit_detail(self) -> str:
        """What the owner should know beyond the reason: what a kernel stopped for "protocol"
        sent."""
        return self._violation if self._stop_reason == "protocol" else ""

    def _on_protocol_violation(self, channel: Channel, error: ProtocolError) -> None:
        """From a relay thread, whose connection is already cut: log what the kernel sent and
        have the supervise loop stop the kernel."""
        detail = f"on its {channel.name} channel it sent {error}"
        if not self._violation:
            self._violation = detail
        print(
            f"hopx supervisor: stopping sandbox {self.spec.sandbox_id} of kernel "
            f"{self.spec.kernel_id}: it broke the ZeroMQ protocol: {detail} (protocol)",
            file=sys.stderr,
            flush=True,
        )
        os.write(self._signal_w, b"p")

    # -- cleanup --------------------------------------------------------------------------------

    def cleanup(self) -> None:
        """Remove everything this sandbox made on the host; safe after a partial start."""
        self.alive.clear()
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.cgroup.remove()
        if self.uid_claim is not None:
            self.uid_claim.release()
        self.network.close()
        self.relay.close()
        self.inbound.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.spec.state_dir, STATE_RECORD))
        if self._stop_reason == "owner_died":
            for path in self.spec.owner_files:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            shutil.rmtree(self.spec.state_dir, ignore_errors=True)

    def on_sigterm(self, signum: int, frame: object) -> None:
        os.write(self._signal_w, b"t")


def _warn_not_idmapped(folder: str, uid: int, error: OSError) -> None:
    """Say in the server's log what a read-write folder that cannot be idmapped means."""
    os.write(
        2,
        f"hopx: {folder} cannot be mounted idmapped ({error}); the kernel, host uid {uid}, can "
        "write there only where the folder's permissions let any user write, and what it "
        "writes belongs to that uid\n".encode(),
    )


def _write_to_log(line: str) -> None:
    """One line to the owner's log (the supervisor's stderr); a full or closed log loses it."""
    data = line.encode()
    with contextlib.suppress(OSError):
        while data:
            data = data[os.write(2, data) :]


def _data_fd(data: bytes) -> int:
    """A readable fd holding `data`, for bubblewrap's --ro-bind-data and --seccomp."""
    fd = os.memfd_create("hopx-data", os.MFD_CLOEXEC)
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def main(owner_pid: int | None = None) -> int:
    """Run one supervisor on stdin and stdout. `owner_pid`: the process it serves, when that is
    not its parent (a supervisor forked by `runtime.forkserver`)."""
    # The name tells supervisors from other processes (`runtime.registry`), forked or not.
    with open("/proc/self/comm", "w") as f:
        f.write(PROCESS_NAME)
    # The supervisor ends with its owner (stdin EOF) or on request, never from a terminal ^C.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    line = sys.stdin.buffer.readline(MAX_SPEC_BYTES + 1)
    try:
        spec = SandboxSpec.from_json(line)
    except (ValueError, TypeError) as e:
        emit("failed", error=f"bad sandbox spec: {e}")
        return 2
    try:
        secrets = kernel_secrets.parse_line(
            sys.stdin.buffer.readline(kernel_secrets.MAX_LINE_BYTES + 1)
        )
        kernel_secrets.check(spec.argv, secrets)
    except kernel_secrets.SecretsError as e:
        emit("failed", error=str(e))
        return 2
    supervisor = Supervisor(spec, owner_pid or os.getppid(), secrets)
    del secrets
    signal.signal(signal.SIGTERM, supervisor.on_sigterm)
    try:
        supervisor.start()
    except Exception as e:
        emit("failed", error=str(e))
        supervisor.cleanup()
        return 70
    emit(
        "started",
        supervisor_pid=os.getpid(),
        sandbox_pid=supervisor.sandbox_pid,
        started_at=supervisor.started_at,
        cgroups=supervisor.cgroup.directories,
        memory_cgroup=supervisor.cgroup.by_controller.get("memory", ("", 0))[0],
        host_uid=supervisor.host_uid,
        address=supervisor.address,
        warnings=supervisor.cgroup.unenforced,
    )
    status = 1
    try:
        status = supervisor.supervise()
    finally:
        reason = supervisor.exit_reason()
        supervisor.cleanup()
        emit("exited", status=status, reason=reason, detail=supervisor.exit_detail())
        if reason == "owner_died":
            # Nobody is left to report this; stderr is still the owner's log (a file, journald).
            print(
                f"hopx supervisor: stopped sandbox {spec.sandbox_id} of kernel {spec.kernel_id}: "
                "its owner is gone (owner_died)",
                file=sys.stderr,
            )
    return status


if __name__ == "__main__":
    sys.exit(main())
