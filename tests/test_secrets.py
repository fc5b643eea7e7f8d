"""Named secrets reach the kernel's environment, and only it: real kernels, with values from a
file and from the encrypted store, then a search of every host process's command line and
environment, the runtime and state directories, the kernelspec and the sandbox's own writable
places. Values are fetched again at a restart; a provider that fails stops the start, saying
which variable and provider, and leaves nothing behind."""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from traitlets import TraitError

from conftest import Kernel
from hopx_kernel.secret_store import KEY_ENV, SecretStore


def odd_value(tag: str) -> str:
    """Unique, with regex metacharacters, unicode and a newline."""
    return f"{tag}-{secrets.token_hex(12)}.*+?^$[](){{}}|\\ ünïcødé ✓\nsecond line"


def digest_in_kernel(kernel: Kernel, variable: str) -> str:
    _, stdout = kernel.run(
        f"import hashlib, os; print(hashlib.sha256(os.environ[{variable!r}].encode()).hexdigest())"
    )
    return stdout.strip()


def sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def processes_holding(value: str) -> dict[int, list[str]]:
    """Host processes whose command line or environment holds `value`, and where."""
    needle = value.encode()
    found: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        for part in ("cmdline", "environ"):
            try:
                data = Path(f"/proc/{entry}/{part}").read_bytes()
            except OSError:
                continue
            if needle in data:
                found.setdefault(int(entry), []).append(part)
    return found


def files_holding(value: str, roots: list[Path], but: set[Path]) -> list[Path]:
    needle = value.encode()
    hits = []
    for root in roots:
        for path in [root] if root.is_file() else root.rglob("*"):
            if path in but or not path.is_file() or path.is_symlink():
                continue
            try:
                if needle in path.read_bytes():
                    hits.append(path)
            except OSError:
                continue
    return hits


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SecretStore:
    monkeypatch.delenv(KEY_ENV, raising=False)
    return SecretStore(tmp_path / "store" / "secrets.json", environ={})


def test_secrets_reach_the_kernels_environment_and_nothing_else(
    start_kernel: Callable[..., Kernel],
    store: SecretStore,
    tmp_path: Path,
    runtime_dir: Path,
    kernels_dir: Path,
) -> None:
    from_file, from_store = odd_value("from-file"), odd_value("from-store")
    secret_file = tmp_path / "mounted-secret"
    secret_file.write_text(from_file + "\n")
    store.set("openai", from_store)
    kernel = start_kernel(
        secrets={"FROM_FILE": f"file:{secret_file}", "OPENAI_API_KEY": "store:openai"},
        secret_store=str(store.path),
    )
    assert digest_in_kernel(kernel, "FROM_FILE") == sha256(from_file)
    assert digest_in_kernel(kernel, "OPENAI_API_KEY") == sha256(from_store)

    # The processes the kernel starts inherit them.
    _, stdout = kernel.run(
        "import subprocess\n"
        "print(subprocess.run(['sh', '-c', 'printf %s \"$FROM_FILE\" | sha256sum'],"
        " capture_output=True, text=True).stdout.split()[0])"
    )
    assert stdout.strip() == sha256(from_file)

    for value in (from_file, from_store):
        # The kernel set them in its environment after it started, so not even its own
        # /proc/PID/environ (its environment when exec'd) shows them.
        assert processes_holding(value) == {}
        roots = [runtime_dir, kernels_dir, store.path.parent]
        assert files_holding(value, roots, but={secret_file}) == []
    # Nor any file the sandbox can write: its scratch space, its home, /run.
    _, stdout = kernel.run(
        "import os\n"
        "needle = os.environ['OPENAI_API_KEY'].encode()\n"
        "hits = []\n"
        "for top in ('/tmp', '/var/tmp', '/run', '/dev/shm', os.path.expanduser('~')):\n"
        "    for folder, _, names in os.walk(top):\n"
        "        for name in names:\n"
        "            try:\n"
        "                with open(os.path.join(folder, name), 'rb') as f:\n"
        "                    hits += [name] if needle in f.read() else []\n"
        "            except OSError:\n"
        "                pass\n"
        "print('hits', hits)\n"
    )
    assert "hits []" in stdout, stdout


def test_a_secret_from_the_servers_environment(
    start_kernel: Callable[..., Kernel], monkeypatch: pytest.MonkeyPatch
) -> None:
    """env: takes a variable of the server's environment (a spawner's, a unit's), which is
    otherwise not passed on: the kernel has it under the secret's name only."""
    value = odd_value("from-env")
    monkeypatch.setenv("HOPX_TEST_GITHUB_TOKEN", value)
    kernel = start_kernel(secrets={"GITHUB_TOKEN": "env:HOPX_TEST_GITHUB_TOKEN"})
    assert digest_in_kernel(kernel, "GITHUB_TOKEN") == sha256(value)
    _, stdout = kernel.run("import os; print('HOPX_TEST_GITHUB_TOKEN' in os.environ)")
    assert stdout == "False\n"


def test_values_are_fetched_again_at_a_restart(
    start_kernel: Callable[..., Kernel], tmp_path: Path
) -> None:
    secret_file = tmp_path / "rotated"
    secret_file.write_text("the first value of it")
    kernel = start_kernel(secrets={"TOKEN": f"file:{secret_file}"})
    assert digest_in_kernel(kernel, "TOKEN") == sha256("the first value of it")
    secret_file.write_text("the value after rotation")
    kernel.km.restart_kernel(now=True)
    kernel.kc.wait_for_ready(timeout=60)
    assert digest_in_kernel(kernel, "TOKEN") == sha256("the value after rotation")


def test_a_provider_that_fails_stops_the_start_and_says_which(
    start_kernel: Callable[..., Kernel],
    store: SecretStore,
    runtime_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store.set("openai", "a value sealed with the store's key")
    other_key = base64.b64encode(AESGCM.generate_key(bit_length=256)).decode()
    monkeypatch.setenv(KEY_ENV, other_key)
    with pytest.raises(RuntimeError) as failed:
        start_kernel(secrets={"OPENAI_API_KEY": "store:openai"}, secret_store=str(store.path))
    message = str(failed.value)
    assert "the secret OPENAI_API_KEY (store:) could not be had" in message
    assert "sealed with another key" in message
    assert "a value sealed" not in message
    # Nothing is left: no sandbox directory, no supervisor.
    assert not [p for p in (runtime_dir / "hopx").glob("*") if p.is_dir()]


@pytest.mark.parametrize(
    ("settings", "says"),
    [
        ({"secrets": {"PATH": "env:X"}}, "PATH is set by the sandbox itself"),
        ({"secrets": {"KEY": "vault:x"}}, "must name a provider"),
    ],
)
def test_bad_secret_settings_fail_before_anything_starts(
    make_kernelspec: Callable[..., str], settings: dict[str, Any], says: str
) -> None:
    with pytest.raises(TraitError, match=says) as refused:
        make_kernelspec("bad-secrets", **settings)
    assert "HopxProvisioner.secrets" in str(refused.value)
