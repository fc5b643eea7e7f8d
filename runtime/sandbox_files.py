"""Small files generated for the inside of a sandbox: user database and hosts."""

from __future__ import annotations

from runtime.spec import SANDBOX_HOME, SANDBOX_UID, SANDBOX_USER


def generated_files(hostname: str, ipv6: bool = True) -> dict[str, bytes]:
    """Destination path -> contents, for the files the sandbox gets instead of the host's.
    Without `ipv6` (a sandbox with outbound access has none), localhost names no IPv6 address:
    a server that binds every address of localhost would fail on ::1."""
    uid = SANDBOX_UID
    hosts = f"127.0.0.1\tlocalhost {hostname}\n"
    if ipv6:
        hosts += "::1\tlocalhost ip6-localhost\n"
    return {
        "/etc/passwd": (
            f"root:x:0:0:root:/root:/usr/sbin/nologin\n"
            f"{SANDBOX_USER}:x:{uid}:{uid}:Hopx sandbox:{SANDBOX_HOME}:/bin/bash\n"
            "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
        ).encode(),
        "/etc/group": (f"root:x:0:\n{SANDBOX_USER}:x:{uid}:\nnogroup:x:65534:\n").encode(),
        "/etc/hosts": hosts.encode(),
        "/etc/hostname": f"{hostname}\n".encode(),
    }
