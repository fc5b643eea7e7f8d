"""Run by test_unprivileged.py as an unprivileged uid: start a Hopx kernel, probe it, report JSON.

argv: kernels dir, workspace, host TCP port and host file the kernel must not reach, and
"probe" (report and shut down), "oom" (also run a memory hog once the test says go on) or
"network" (fetch the URLs in $HOPX_TEST_URLS, a JSON object, and report what came back).
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
import time

from internet_harness import fetch_code
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager

PROBE = textwrap.dedent(
    """
    import json, os, socket
    def attempt(f):
        try:
            f()
            return "allowed"
        except OSError as e:
            return type(e).__name__
    result = {
        "uid": os.getuid(),
        "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
        "host_secret": attempt(lambda: open("SECRET").read()),
        "host_tcp": attempt(lambda: socket.create_connection(("127.0.0.1", PORT), timeout=2)),
        "proc_sys": attempt(lambda: open("/proc/sys/kernel/core_pattern", "w").write("x")),
        "workspace_write": attempt(lambda: open("probe.txt", "w").write("x")),
        "tmp_write": attempt(lambda: open("/tmp/probe.txt", "w").write("x")),
    }
    # Per-user quotas the sandbox shares with this server's uid: how much it can take.
    import ctypes, resource
    libc = ctypes.CDLL(None, use_errno=True)
    instances = []
    while len(instances) < 1000 and (fd := libc.inotify_init1(0)) >= 0:
        instances.append(fd)
    for fd in instances:
        os.close(fd)
    result["inotify_instances"] = len(instances)
    result["sigpending"] = resource.getrlimit(resource.RLIMIT_SIGPENDING)
    print(json.dumps(result))
    """
)


def main() -> None:
    kernels_dir, workspace, port, secret, mode = sys.argv[1:6]
    km = KernelManager(
        kernel_name="hopx-unpriv", kernel_spec_manager=KernelSpecManager(kernel_dirs=[kernels_dir])
    )
    try:
        km.start_kernel(cwd=workspace)
    except RuntimeError as e:
        print(json.dumps({"start_error": str(e)}), flush=True)
        return
    kc = km.client()
    kc.start_channels()
    report: dict[str, object] = {}
    try:
        kc.wait_for_ready(timeout=60)
        out: list[dict[str, object]] = []
        if mode == "network":
            code = fetch_code(json.loads(os.environ["HOPX_TEST_URLS"]))
        else:
            code = PROBE.replace("PORT", port).replace("SECRET", secret)
        kc.execute_interactive(code, output_hook=out.append, timeout=60)
        text = "".join(m["content"]["text"] for m in out if m["msg_type"] == "stream")  # type: ignore[index]
        report["probe"] = json.loads(text)
        supervisor = km.provisioner.supervisor
        report["cgroups"] = supervisor.started["cgroups"]
        report["sandbox_pid"] = supervisor.started["sandbox_pid"]
        report["warnings"] = supervisor.started["warnings"]
        report["address"] = supervisor.started["address"]
        print(json.dumps(report), flush=True)
        sys.stdin.readline()  # the test looks at the host side, then lets us go on
        if mode != "oom":
            return

        # A memory hog dies at the limit; the kernel manager sees the death.
        kc.execute("b = []\nwhile True: b.append(bytearray(16 << 20))")
        deadline = time.monotonic() + 30
        while km.is_alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        report = {"oom_dead": not km.is_alive(), "reason": supervisor.exit_reason}
        print(json.dumps(report), flush=True)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
        print(json.dumps({"shutdown": True}), flush=True)


if __name__ == "__main__":
    main()
