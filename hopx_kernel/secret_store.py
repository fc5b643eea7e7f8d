"""The encrypted local secret store behind `store:NAME` secrets and `jupyter hopx secrets`.

One JSON file maps each name to its value sealed with AES-256-GCM (a fresh 96-bit nonce per
value, the name as associated data, so a sealed value cannot be moved to another name). The
256-bit key is a file of its own or, instead, base64 in the environment variable
HOPX_SECRETS_KEY (for a server whose environment comes from a secret manager). Both files are
0600 and must belong to the user reading them: a store or key file anyone else could read or
replace is refused, not used.

Nothing here prints, logs or raises a value. Writes go to a temporary file in the same
directory, made 0600 before anything is written to it, then renamed over the old one.
A key rotation writes the new key beside the old one (`<key>.new`), then the store sealed with
it, then renames the key: a rotation cut short anywhere leaves a store one of the two keys opens,
and the next use finishes it.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import os
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from jupyter_core.paths import jupyter_data_dir

KEY_ENV: Final = "HOPX_SECRETS_KEY"
KEY_BYTES: Final = 32
NONCE_BYTES: Final = 12
FORMAT: Final = 1
# Names of stored secrets: what an environment variable or a kernelspec can carry.
NAME_CHARS: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")
MAX_NAME: Final = 128
MAX_VALUE_BYTES: Final = 64 * 1024


class SecretStoreError(Exception):
    """The store cannot be used as asked; the message says why and what to do, never a value."""


def default_dir() -> Path:
    return Path(jupyter_data_dir()) / "hopx"


class SecretStore:
    """The store at `path`, opened with the key at `key_path` or in HOPX_SECRETS_KEY."""

    def __init__(
        self,
        path: Path | None = None,
        key_path: Path | None = None,
        environ: Mapping[str, str] = os.environ,
    ) -> None:
        self.path = path or default_dir() / "secrets.json"
        self.key_path = key_path or self.path.with_name("secrets.key")
        self._environ = environ

    # -- what the CLI and the providers use ------------------------------------------------------

    def names(self) -> list[str]:
        return sorted(self._sealed())

    def get(self, name: str) -> str:
        sealed = self._sealed()
        if name not in sealed:
            msg = f"the secret store {self.path} has no secret {name!r} (jupyter hopx secrets list)"
            raise SecretStoreError(msg)
        return _open(self._key(), name, sealed[name])

    def set(self, name: str, value: str) -> None:
        check_name(name)
        if not value:
            msg = f"the value of {name!r} is empty; nothing was stored"
            raise SecretStoreError(msg)
        if len(value.encode()) > MAX_VALUE_BYTES:
            msg = f"the value of {name!r} is over {MAX_VALUE_BYTES // 1024} KiB; nothing was stored"
            raise SecretStoreError(msg)
        key = self._key(create=True)
        sealed = self._sealed()
        sealed[name] = _seal(key, name, value)
        self._write_store(sealed, key)

    def remove(self, name: str) -> bool:
        sealed = self._sealed()
        if name not in sealed:
            return False
        key = self._key()
        del sealed[name]
        self._write_store(sealed, key)
        return True

    def rotate_key(self) -> int:
        """Seal every value with a new key; the number of values."""
        if KEY_ENV in self._environ:
            msg = (
                f"the key comes from {KEY_ENV}: rotate it where that variable is set "
                "(unset it here to rotate a key file instead)"
            )
            raise SecretStoreError(msg)
        old = self._key()
        values = {name: _open(old, name, sealed) for name, sealed in self._sealed().items()}
        new = AESGCM.generate_key(bit_length=256)
        pending = self._pending_key_path()
        _write_private(pending, base64.b64encode(new) + b"\n")
        self._write_store({n: _seal(new, n, v) for n, v in values.items()}, new)
        os.replace(pending, self.key_path)
        return len(values)

    # -- files ----------------------------------------------------------------------------------

    def _sealed(self) -> dict[str, str]:
        if not self.path.exists():
            return {}
        document = _read_json(self.path)
        sealed = document.get("secrets")
        if document.get("format") != FORMAT or not isinstance(sealed, dict):
            msg = f"{self.path} is not a Hopx secret store (format {FORMAT})"
            raise SecretStoreError(msg)
        return {str(k): str(v) for k, v in sealed.items()}

    def _key_id_in_store(self) -> str | None:
        if not self.path.exists():
            return None
        key_id = _read_json(self.path).get("key_id")
        return key_id if isinstance(key_id, str) else None

    def _key(self, *, create: bool = False) -> bytes:
        if KEY_ENV in self._environ:
            key = _decode_key(self._environ[KEY_ENV], KEY_ENV)
            where = KEY_ENV
        else:
            self._finish_rotation()
            if not self.key_path.exists():
                if not create:
                    msg = f"no key for the secret store: {self.key_path} does not exist"
                    raise SecretStoreError(msg)
                self.key_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                _write_private(self.key_path, base64.b64encode(AESGCM.generate_key(256)) + b"\n")
            key = _decode_key(
                _read_private(self.key_path).decode(errors="replace"), str(self.key_path)
            )
            where = str(self.key_path)
        wanted = self._key_id_in_store()
        if wanted is not None and wanted != key_id(key):
            msg = (
                f"the key in {where} does not open the secret store {self.path}: "
                "it was sealed with another key"
            )
            raise SecretStoreError(msg)
        return key

    def _finish_rotation(self) -> None:
        """A rotation cut short after the store was sealed with the new key: take that key."""
        pending = self._pending_key_path()
        if not pending.exists():
            return
        new = _decode_key(_read_private(pending).decode(errors="replace"), str(pending))
        if self._key_id_in_store() == key_id(new):
            os.replace(pending, self.key_path)
        else:
            pending.unlink()

    def _pending_key_path(self) -> Path:
        return self.key_path.with_name(self.key_path.name + ".new")

    def _write_store(self, sealed: dict[str, str], key: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        document = {
            "format": FORMAT,
            "key_id": key_id(key),
            "secrets": dict(sorted(sealed.items())),
        }
        _write_private(self.path, (json.dumps(document, indent=1) + "\n").encode())


def check_name(name: str) -> None:
    if not name or len(name) > MAX_NAME or not set(name) <= NAME_CHARS:
        msg = (
            f"a secret's name is 1-{MAX_NAME} letters, digits, '_', '.' or '-', "
            f"e.g. openai; not {name[:MAX_NAME]!r}"
        )
        raise SecretStoreError(msg)


def key_id(key: bytes) -> str:
    """Which key sealed a store, without saying anything about the key."""
    return hashlib.sha256(b"hopx secret store key id\0" + key).hexdigest()[:16]


def _seal(key: bytes, name: str, value: str) -> str:
    nonce = secrets.token_bytes(NONCE_BYTES)
    return base64.b64encode(
        nonce + AESGCM(key).encrypt(nonce, value.encode(), name.encode())
    ).decode()


def _open(key: bytes, name: str, sealed: str) -> str:
    try:
        raw = base64.b64decode(sealed, validate=True)
        value = AESGCM(key).decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], name.encode())
    except (binascii.Error, ValueError, InvalidTag):
        msg = f"the secret {name!r} in the store does not open with this key (damaged or moved)"
        raise SecretStoreError(msg) from None
    return value.decode()


def _decode_key(text: str, where: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except binascii.Error:
        key = b""
    if len(key) != KEY_BYTES:
        msg = (
            f"{where} must hold a {KEY_BYTES}-byte key in base64, "
            "e.g. from `openssl rand -base64 32`"
        )
        raise SecretStoreError(msg)
    return key


def _check_private(path: Path, st: os.stat_result) -> None:
    if not stat.S_ISREG(st.st_mode):
        msg = f"{path} is not a regular file"
        raise SecretStoreError(msg)
    if st.st_uid != os.geteuid():
        msg = f"{path} belongs to uid {st.st_uid}, not to this user ({os.geteuid()}): not used"
        raise SecretStoreError(msg)
    if st.st_mode & 0o077:
        msg = (
            f"{path} can be read or written by others (mode {stat.S_IMODE(st.st_mode):o}): "
            f"not used; chmod 600 {path}"
        )
        raise SecretStoreError(msg)


def _read_private(path: Path) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        msg = f"cannot open {path}: {e.strerror}"
        raise SecretStoreError(msg) from None
    with os.fdopen(fd, "rb") as f:
        _check_private(path, os.fstat(f.fileno()))
        return f.read(1 << 24)


def _read_json(path: Path) -> dict[str, object]:
    try:
        document = json.loads(_read_private(path))
    except ValueError:
        msg = f"{path} is not a Hopx secret store (not JSON)"
        raise SecretStoreError(msg) from None
    if not isinstance(document, dict):
        msg = f"{path} is not a Hopx secret store"
        raise SecretStoreError(msg)
    return document


def _write_private(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
