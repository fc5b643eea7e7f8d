"""Named secrets: which environment variable of the kernel gets which secret, and from where.

A `secrets` setting maps a variable to a reference, `provider:target`:

    env:NAME             the server's own environment variable NAME
    file:/path           a file's content (Docker and Kubernetes secrets, systemd credentials)
    store:NAME           the encrypted local store (hopx_kernel.secret_store)
    exec:COMMAND ARGS    what an admin's command prints (vault, aws, op: the credential-helper
                         pattern), run without a shell, within a timeout
    aws:SECRET_ID[#KEY]  AWS Secrets Manager through boto3 (the `aws` extra); #KEY picks one
                         field of a JSON secret

References are checked when the setting is read, values fetched at each start. No message here
holds a value: a failure names the variable and the provider, and what to do.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shlex
import signal
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from hopx_kernel.secret_store import SecretStore, SecretStoreError
from runtime.kernel_launcher import MIN_MASKED_LENGTH

PROVIDERS: Final = ("env", "file", "store", "exec", "aws")
EXAMPLE: Final = '{"OPENAI_API_KEY": "store:openai"}'
VARIABLE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# Variables the sandbox sets itself: a secret cannot replace them.
RESERVED: Final = frozenset({"PATH", "HOME", "USER", "LOGNAME", "SHELL", "TMPDIR", "PWD"})
EXEC_TIMEOUT: Final = 10.0
MAX_VALUE_BYTES: Final = 64 * 1024


class SecretError(ValueError):
    """A secret that cannot be had; the message names the variable and the provider, never the
    value."""


@dataclass(frozen=True)
class SecretRef:
    variable: str
    provider: str
    target: str

    def __str__(self) -> str:
        return f"{self.provider}:{self.target}"


def parse_secrets(setting: Mapping[str, object], field: str = "secrets") -> list[SecretRef]:
    """The references of a `secrets` setting, checked; `field` names it in errors."""
    if not isinstance(setting, Mapping):
        msg = f"{field} must map variables to secrets, e.g. {EXAMPLE}"
        raise SecretError(msg)
    refs = []
    for variable, reference in setting.items():
        if not isinstance(variable, str) or not VARIABLE.match(variable):
            msg = f"{field}: {variable!r} is not an environment variable's name, e.g. {EXAMPLE}"
            raise SecretError(msg)
        if variable in RESERVED:
            msg = f"{field}: {variable} is set by the sandbox itself; name the secret otherwise"
            raise SecretError(msg)
        refs.append(parse_reference(variable, reference, field))
    return refs


def parse_reference(variable: str, reference: object, field: str = "secrets") -> SecretRef:
    provider, _, target = reference.partition(":") if isinstance(reference, str) else ("", "", "")
    if provider not in PROVIDERS or not target.strip():
        choices = ", ".join(f"{p}:" for p in PROVIDERS)
        msg = f"{field}: {variable} must name a provider ({choices}), e.g. {EXAMPLE}"
        raise SecretError(msg)
    if provider == "file" and not os.path.isabs(target):
        msg = f"{field}: {variable}: file: takes an absolute path, e.g. file:/run/secrets/openai"
        raise SecretError(msg)
    if provider == "exec":
        try:
            shlex.split(target)
        except ValueError as e:
            msg = f"{field}: {variable}: exec: cannot split the command ({e})"
            raise SecretError(msg) from None
    return SecretRef(variable, provider, target.strip())


@dataclass
class Sources:
    """Where values come from; tests replace what they need."""

    environ: Mapping[str, str]
    store: SecretStore
    exec_timeout: float = EXEC_TIMEOUT
    aws: Callable[[str], str] | None = None


def resolve(refs: list[SecretRef], sources: Sources) -> dict[str, str]:
    """Every reference's value, fetched now; the first failure stops it."""
    values = {}
    for ref in refs:
        try:
            value = _fetch(ref, sources)
        except SecretError as e:
            msg = f"the secret {ref.variable} ({ref.provider}:) could not be had: {e}"
            raise SecretError(msg) from None
        if not value:
            msg = f"the secret {ref.variable} ({ref}) is empty"
            raise SecretError(msg)
        if "\0" in value or len(value.encode()) > MAX_VALUE_BYTES:
            msg = (
                f"the secret {ref.variable} ({ref}) holds a NUL byte or is over "
                f"{MAX_VALUE_BYTES // 1024} KiB; an environment variable cannot carry it"
            )
            raise SecretError(msg)
        values[ref.variable] = value
    return values


def too_short_to_mask(values: Mapping[str, str]) -> list[str]:
    """The variables whose values the kernel's output cannot be masked for (see
    runtime.kernel_launcher)."""
    return sorted(name for name, value in values.items() if len(value) < MIN_MASKED_LENGTH)


def _fetch(ref: SecretRef, sources: Sources) -> str:
    if ref.provider == "env":
        if ref.target not in sources.environ:
            msg = f"the server's environment has no {ref.target}"
            raise SecretError(msg)
        return sources.environ[ref.target]
    if ref.provider == "file":
        return _read_file(Path(ref.target))
    if ref.provider == "store":
        try:
            return sources.store.get(ref.target)
        except SecretStoreError as e:
            raise SecretError(str(e)) from None
    if ref.provider == "exec":
        return _run(ref.target, sources)
    if sources.aws is None:
        msg = "AWS Secrets Manager needs boto3: pip install 'hopx-kernel[aws]'"
        raise SecretError(msg)
    return sources.aws(ref.target)


def _read_file(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as e:
        msg = f"cannot read {path}: {e.strerror}"
        raise SecretError(msg) from None
    try:
        text = data.decode()
    except UnicodeDecodeError:
        msg = f"{path} is not UTF-8 text"
        raise SecretError(msg) from None
    # Files written by `echo` or an editor end in a newline that is not part of the secret.
    return text.removesuffix("\n").removesuffix("\r")


def _run(command: str, sources: Sources) -> str:
    argv = shlex.split(command)
    try:
        # A session of its own, so that a helper that does not finish in time is stopped with
        # everything it started.
        helper = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(sources.environ),
            start_new_session=True,
        )
    except FileNotFoundError:
        msg = f"{argv[0]} was not found (exec: runs a program without a shell, found on PATH)"
        raise SecretError(msg) from None
    except OSError as e:
        msg = f"{argv[0]} could not run: {e.strerror}"
        raise SecretError(msg) from None
    try:
        stdout, stderr = helper.communicate(timeout=sources.exec_timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(helper.pid, signal.SIGKILL)
        helper.communicate()
        msg = f"{argv[0]} did not finish within {sources.exec_timeout:g} s"
        raise SecretError(msg) from None
    if helper.returncode != 0:
        # Its last words say why (permission denied, no such secret); a failed helper printed
        # no value to leak.
        said = stderr.decode(errors="replace").strip().splitlines()
        why = f": {said[-1][:200]}" if said else ""
        msg = f"{argv[0]} exited with status {helper.returncode}{why}"
        raise SecretError(msg)
    try:
        return stdout.decode().removesuffix("\n")
    except UnicodeDecodeError:
        msg = f"{argv[0]} printed something that is not UTF-8 text"
        raise SecretError(msg) from None


def aws_secrets_manager() -> Callable[[str], str] | None:
    """A fetcher from AWS Secrets Manager, configured as boto3 is (AWS_REGION, AWS_ENDPOINT_URL,
    credentials, from the server's environment); None without boto3. It makes one client, at its
    first fetch."""
    try:
        import boto3  # noqa: PLC0415
        from botocore.exceptions import BotoCoreError, ClientError, NoRegionError  # noqa: PLC0415
    except ImportError:
        return None

    @functools.cache
    def client() -> Any:
        # botocore reads AWS_DEFAULT_REGION only; AWS_REGION, which the other AWS SDKs and the
        # AWS CLI v2 read, comes before it, as it does there.
        region = os.environ.get("AWS_REGION") or None
        return boto3.session.Session(region_name=region).client("secretsmanager")

    def fetch(target: str) -> str:
        secret_id, _, key = target.partition("#")
        try:
            answer = client().get_secret_value(SecretId=secret_id)
        except NoRegionError:
            msg = "no AWS region is set: set AWS_REGION in the server's environment"
            raise SecretError(msg) from None
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                region = client().meta.region_name
                msg = f"{secret_id} was not found in AWS Secrets Manager (region {region})"
            else:
                msg = f"{secret_id}: {e}"
            raise SecretError(msg) from None
        except (BotoCoreError, ValueError) as e:
            # ValueError: a malformed setting, such as AWS_ENDPOINT_URL or AWS_MAX_ATTEMPTS.
            msg = f"{secret_id}: {e}"
            raise SecretError(msg) from None
        value = answer.get("SecretString")
        if not isinstance(value, str):
            msg = f"{secret_id} holds no text (SecretString)"
            raise SecretError(msg)
        if not key:
            return value
        try:
            field = json.loads(value)[key]
        except (ValueError, KeyError, TypeError):
            msg = f"{secret_id} is not a JSON object with a field {key!r}"
            raise SecretError(msg) from None
        # A number or true is given as JSON writes it, not as Python does (True).
        return field if isinstance(field, str) else json.dumps(field)

    return fetch
