"""The encrypted secret store: values round-trip and never appear in its files; files anyone else
could read, or that belong to someone else, are refused; a wrong or damaged key opens nothing;
a key rotation keeps every value, and one cut short is finished by the next use."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from hopx_kernel.secret_store import KEY_ENV, SecretStore, SecretStoreError

# Regex metacharacters, unicode, a newline: values are opaque.
ODD_VALUE = "s3cr3t.*+?^$[](){}|\\ ünïcødé ✓\nsecond line"


def store_in(tmp_path: Path, **environ: str) -> SecretStore:
    return SecretStore(tmp_path / "hopx" / "secrets.json", environ=environ)


def test_values_round_trip_and_are_nowhere_in_its_files(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    store.set("openai", ODD_VALUE)
    store.set("db.password", "correct horse battery staple")
    assert store.names() == ["db.password", "openai"]
    assert store.get("openai") == ODD_VALUE
    for path in (store.path, store.key_path):
        assert oct(path.stat().st_mode & 0o777) == "0o600"
        text = path.read_bytes()
        assert b"horse" not in text
        assert "ünïcødé".encode() not in text
    assert store.remove("openai")
    assert not store.remove("openai")
    assert store.names() == ["db.password"]
    with pytest.raises(SecretStoreError, match="no secret 'openai'"):
        store.get("openai")


def test_files_others_could_read_or_that_are_someone_elses_are_refused(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    store.set("token", "a value of some length")
    store.path.chmod(0o644)
    with pytest.raises(SecretStoreError, match=r"mode 644\): not used; chmod 600"):
        store.get("token")
    store.path.chmod(0o600)
    os.chown(store.key_path, 65534, 65534)
    with pytest.raises(SecretStoreError, match="belongs to uid 65534"):
        store.get("token")


def test_a_wrong_or_damaged_key_opens_nothing_and_says_no_value(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    store.set("token", "the secret value itself")
    other_key = base64.b64encode(AESGCM.generate_key(bit_length=256)).decode()
    with pytest.raises(SecretStoreError, match="sealed with another key") as wrong:
        store_in(tmp_path, **{KEY_ENV: other_key}).get("token")
    assert "the secret value itself" not in str(wrong.value)
    with pytest.raises(SecretStoreError, match=r"e\.g\. from `openssl rand -base64 32`"):
        store_in(tmp_path, **{KEY_ENV: "not a key"}).get("token")
    # A sealed value moved to another name does not open: the name is sealed with it.
    document = json.loads(store.path.read_text())
    document["secrets"]["moved"] = document["secrets"]["token"]
    store.path.write_text(json.dumps(document))
    with pytest.raises(SecretStoreError, match="'moved' in the store does not open"):
        store.get("moved")


def test_the_key_may_come_from_the_environment(tmp_path: Path) -> None:
    key = base64.b64encode(AESGCM.generate_key(bit_length=256)).decode()
    store = store_in(tmp_path, **{KEY_ENV: key})
    store.set("token", "from the environment's key")
    assert not store.key_path.exists()
    assert store_in(tmp_path, **{KEY_ENV: key}).get("token") == "from the environment's key"
    with pytest.raises(SecretStoreError, match=f"the key comes from {KEY_ENV}"):
        store.rotate_key()


def test_a_rotation_keeps_every_value_and_one_cut_short_is_finished(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    store.set("a", "first value")
    store.set("b", ODD_VALUE)
    old_key = store.key_path.read_text()
    assert store.rotate_key() == 2
    assert store.key_path.read_text() != old_key
    assert (store.get("a"), store.get("b")) == ("first value", ODD_VALUE)
    with pytest.raises(SecretStoreError, match="sealed with another key"):
        store_in(tmp_path, **{KEY_ENV: old_key.strip()}).get("a")

    # Cut short after the store was sealed with the new key, before the key was renamed.
    new_key = AESGCM.generate_key(bit_length=256)
    pending = store.key_path.with_name("secrets.key.new")
    pending.write_text(base64.b64encode(new_key).decode())
    pending.chmod(0o600)
    sealed_with_new = store_in(
        tmp_path / "elsewhere", **{KEY_ENV: base64.b64encode(new_key).decode()}
    )
    sealed_with_new.set("a", "first value")
    sealed_with_new.set("c", "sealed with the new key")
    store.path.write_bytes(sealed_with_new.path.read_bytes())
    assert store.get("c") == "sealed with the new key"
    assert not pending.exists()
    assert base64.b64decode(store.key_path.read_text()) == new_key


def test_the_cli_stores_lists_removes_and_rotates_without_showing_a_value(tmp_path: Path) -> None:
    """`jupyter hopx secrets`, as an admin runs it: the value comes on stdin, never as an
    argument; `list` shows names only."""
    where = ["--store", str(tmp_path / "secrets.json")]

    def hopx(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "hopx_kernel.cli", "secrets", *where, *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    assert hopx("set", "openai", stdin=ODD_VALUE + "\n").returncode == 0
    assert hopx("set", "db", stdin="another value\n").returncode == 0
    listed = hopx("list")
    assert listed.stdout.split() == ["db", "openai"]
    assert "another value" not in listed.stdout + listed.stderr
    store = SecretStore(tmp_path / "secrets.json", environ={})
    assert store.get("openai") == ODD_VALUE
    assert hopx("rotate-key").stdout.startswith("Sealed 2 secrets with a new key")
    assert store.get("db") == "another value"
    assert hopx("rm", "db").returncode == 0
    gone = hopx("rm", "db")
    assert gone.returncode == 1
    assert "no secret 'db'" in gone.stderr
    bad = hopx("set", "no spaces allowed", stdin="x")
    assert bad.returncode == 2
    assert "e.g. openai" in bad.stderr
