"""Every sandbox of a root server runs as a host uid of its own, from `sandbox_uid_range`.

Were a namespace escaped, two sandboxes would still be different users on the host: neither can
signal the other, and neither is `nobody`, whom host daemons run as. The claim on a uid is a lock
that dies with its supervisor, so no crash strands a uid.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import Kernel, assert_no_leaks, start_holder, wait_until
from hopx_kernel.host import state_root
from runtime.host_uids import (
    CLAIMS_DIR,
    DEFAULT_RANGE,
    UidRange,
    UidsExhausted,
    accounts_in_range,
    claim_uid,
    parse_uid_range,
    sweep_claims,
)
from runtime.registry import sweep
from runtime.units import LimitError

StartKernel = Callable[..., Kernel]

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="only a root server assigns host uids")


def host_uids(pid: int) -> list[int]:
    """Real, effective, saved and filesystem uid of a host process."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return [int(u) for u in line.split()[1:]]
    raise AssertionError(f"no Uid line for {pid}")


def sandbox_pid(kernel: Kernel) -> int:
    supervisor = kernel.km.provisioner.supervisor
    assert supervisor is not None
    return int(supervisor.started["sandbox_pid"])


def uid_of(kernel: Kernel) -> int:
    uids = set(host_uids(sandbox_pid(kernel)))
    assert len(uids) == 1, uids
    return uids.pop()


@pytest.fixture
def claims_dir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="hx-claims-", dir="/tmp")
    yield path
    subprocess.run(["rm", "-rf", path], check=True)


# -- the range and its claims, without a sandbox ---------------------------------------------------


def test_a_range_parses_and_rejects_root_and_no_uid_values() -> None:
    assert parse_uid_range("r", " 2000-2009 ") == UidRange(2000, 2009)
    assert len(parse_uid_range("r", DEFAULT_RANGE)) == 65536
    for bad in ["2000", "0-10", "10-5", "a-b", "65530-65540", "4294967290-4294967295", "-5-3"]:
        with pytest.raises(LimitError, match=f"r: .*{DEFAULT_RANGE}"):
            parse_uid_range("r", bad)


def test_accounts_in_the_range_are_found(tmp_path: Path) -> None:
    passwd = tmp_path / "passwd"
    passwd.write_text("root:x:0:0::/root:/bin/sh\nalice:x:3000:3000::/home/alice:/bin/sh\n")
    group = tmp_path / "group"
    group.write_text("staff:x:3005:\n")
    files = (str(passwd), str(group))
    assert accounts_in_range(UidRange(2000, 2999), files) == []
    assert accounts_in_range(UidRange(2000, 3010), files) == [
        f"alice (3000, {passwd})",
        f"staff (3005, {group})",
    ]
    # This host: the default range is free of accounts.
    assert accounts_in_range(parse_uid_range("r", DEFAULT_RANGE)) == []


def hold_claim(claims_dir: str, uids: str) -> tuple[subprocess.Popen[str], str]:
    """Another process holding the first free uid of `uids`, and that uid."""
    return start_holder(
        "from runtime.host_uids import claim_uid, parse_uid_range\n"
        f"held = claim_uid(parse_uid_range('r', {uids!r}), {claims_dir!r}).number"
    )


def test_claims_are_exclusive_and_die_with_their_holder(claims_dir: str) -> None:
    """A held uid is skipped; the range running out is an error naming it; a holder that is
    SIGKILLed frees its uid at once, and the sweep removes its file."""
    uids = "1879048300-1879048301"
    first, held = hold_claim(claims_dir, uids)
    assert held == "1879048300"
    second = claim_uid(parse_uid_range("r", uids), claims_dir)
    assert second.number == 1879048301
    with pytest.raises(UidsExhausted, match="all 2 sandbox uids of 1879048300-1879048301"):
        claim_uid(parse_uid_range("r", uids), claims_dir)
    first.kill()
    first.communicate()
    assert sweep_claims(claims_dir) == [f"{claims_dir}/1879048300"]
    assert sorted(os.listdir(claims_dir)) == ["1879048301"]  # held: kept
    again = claim_uid(parse_uid_range("r", uids), claims_dir)
    assert again.number == 1879048300
    for claim in (second, again):
        claim.release()
    assert os.listdir(claims_dir) == []


def test_a_zombie_does_not_hold_its_uid(claims_dir: str) -> None:
    """An exited, unreaped process of that uid (init reaps orphans when it gets to it) does not
    keep a uid out of circulation."""
    zombie = subprocess.Popen(["true"], user=1879048450, group=1879048450, extra_groups=[])
    assert wait_until(
        lambda: Path(f"/proc/{zombie.pid}/status").read_text().split("State:")[1].split()[0] == "Z"
    )
    claim = claim_uid(parse_uid_range("r", "1879048450-1879048451"), claims_dir)
    assert claim.number == 1879048450
    claim.release()
    zombie.wait()


def test_a_uid_a_process_still_runs_as_is_not_handed_out(claims_dir: str) -> None:
    """A leftover process of an ended sandbox keeps its uid out of circulation."""
    leftover = subprocess.Popen(["sleep", "60"], user=1879048400, group=1879048400, extra_groups=[])
    try:
        claim = claim_uid(parse_uid_range("r", "1879048400-1879048401"), claims_dir)
        assert claim.number == 1879048401
        claim.release()
    finally:
        leftover.kill()
        leftover.wait()


# -- sandboxes ----------------------------------------------------------------------------------


def test_each_sandbox_runs_as_a_host_uid_of_its_own(start_kernel: StartKernel) -> None:
    """Three sandboxes at once: three different uids (gid the same number) from the default
    range, each held by a claim in /run/hopx-kernel/uids; the uid inside is 1000 for all."""
    kernels = [start_kernel() for _ in range(3)]
    uids = [uid_of(k) for k in kernels]
    assert len(set(uids)) == 3, uids
    default = parse_uid_range("r", DEFAULT_RANGE)
    assert all(uid in default for uid in uids), uids
    assert 65534 not in uids
    for kernel, uid in zip(kernels, uids, strict=True):
        status = Path(f"/proc/{sandbox_pid(kernel)}/status").read_text()
        fields = dict(line.split(":", 1) for line in status.splitlines())
        assert set(fields["Gid"].split()) == {str(uid)}
        assert fields["Groups"].split() == []  # no supplementary groups
        assert (Path(CLAIMS_DIR) / str(uid)).exists()
        assert kernel.value("import os, json; print(json.dumps(os.getuid()))") == 1000


def test_a_sandbox_cannot_signal_another_sandbox_even_as_its_own_host_user(
    start_kernel: StartKernel,
) -> None:
    """What an escaped sandbox could do as its host uid: signal its own processes (control),
    but not another sandbox's, which a shared uid would allow."""
    first, second = start_kernel(), start_kernel()
    probe = (
        "import os, sys\n"
        "def attempt(pid):\n"
        "    try:\n"
        "        os.kill(pid, 0)\n"
        "        return 'ok'\n"
        "    except OSError as e:\n"
        "        return e.__class__.__name__\n"
        "print(attempt(int(sys.argv[1])), attempt(int(sys.argv[2])))\n"
    )
    uid = uid_of(first)
    seen = subprocess.run(
        [sys.executable, "-c", probe, str(sandbox_pid(first)), str(sandbox_pid(second))],
        user=uid,
        group=uid,
        extra_groups=[],
        capture_output=True,
        text=True,
        check=True,
    )
    assert seen.stdout.split() == ["ok", "PermissionError"]


def test_the_range_running_out_fails_clearly_and_a_stopped_sandbox_frees_its_uid(
    start_kernel: StartKernel, runtime_dir: Path
) -> None:
    """With a range of one uid, a second sandbox fails with an error naming the setting and
    leaves nothing; once the first stops, the second starts with the same uid."""
    one = "1879048500-1879048500"
    first = start_kernel(sandbox_uid_range=one)
    assert uid_of(first) == 1879048500
    with pytest.raises(Exception, match="sandbox_uid_range") as failure:
        start_kernel(sandbox_uid_range=one)
    assert "in use" in str(failure.value)
    first.kc.stop_channels()
    first.km.shutdown_kernel(now=False)
    assert not (Path(CLAIMS_DIR) / "1879048500").exists()
    assert_no_leaks(runtime_dir)
    second = start_kernel(sandbox_uid_range=one)
    assert uid_of(second) == 1879048500


def test_a_killed_supervisors_uid_is_free_again_and_swept(start_kernel: StartKernel) -> None:
    """SIGKILL of the supervisor: its sandbox dies, the uid can be claimed again at once, and
    the start-up sweep removes the stale claim file."""
    one = "1879048600-1879048600"
    kernel = start_kernel(sandbox_uid_range=one)
    pid = sandbox_pid(kernel)
    os.kill(kernel.supervisor_pid, signal.SIGKILL)
    assert wait_until(lambda: not Path(f"/proc/{pid}").exists())
    claim = Path(CLAIMS_DIR) / "1879048600"
    assert claim.exists()  # nobody released it...
    sweep(state_root())
    assert not claim.exists()  # ...but it was not held either
    again = claim_uid(parse_uid_range("r", one))
    assert again.number == 1879048600
    again.release()
