"""Secret references: checked when read, with errors naming the field and an example; fetched from
the server's environment, a file, the encrypted store and an admin's command (real programs, run
without a shell); every failure names the variable and the provider, never a value."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from hopx_kernel.secret_refs import (
    SecretError,
    SecretRef,
    Sources,
    parse_secrets,
    resolve,
)
from hopx_kernel.secret_store import SecretStore

ODD_VALUE = "s3cr3t.*+?^$[](){}|\\ ünïcødé ✓\nsecond line"


@pytest.fixture
def sources(tmp_path: Path) -> Sources:
    store = SecretStore(tmp_path / "store" / "secrets.json", environ={})
    store.set("openai", ODD_VALUE)
    return Sources(
        environ={"PATH": "/usr/bin:/bin", "FROM_SPAWNER": "spawner's value"},
        store=store,
        exec_timeout=2.0,
    )


@pytest.mark.parametrize(
    ("setting", "says"),
    [
        ({"1BAD": "env:X"}, "not an environment variable's name"),
        ({"PATH": "env:X"}, "PATH is set by the sandbox itself"),
        ({"KEY": "vault:x"}, "must name a provider (env:, file:, store:, exec:, aws:)"),
        ({"KEY": "env:"}, "must name a provider"),
        ({"KEY": 42}, "must name a provider"),
        ({"KEY": "file:relative/path"}, "file: takes an absolute path"),
        ({"KEY": "exec:vault 'unclosed"}, "exec: cannot split the command"),
    ],
)
def test_bad_references_are_refused_with_the_field_and_an_example(
    setting: dict[str, object], says: str
) -> None:
    with pytest.raises(SecretError) as refused:
        parse_secrets(setting, "HopxProvisioner.secrets")
    assert says in str(refused.value)
    assert str(refused.value).startswith("HopxProvisioner.secrets")


def test_each_provider_gives_its_value(sources: Sources, tmp_path: Path) -> None:
    secret_file = tmp_path / "openai"
    secret_file.write_text(ODD_VALUE + "\n")
    refs = parse_secrets(
        {
            "FROM_ENV": "env:FROM_SPAWNER",
            "FROM_FILE": f"file:{secret_file}",
            "FROM_STORE": "store:openai",
            "FROM_EXEC": "exec:printf %s 'printed by a helper'",
        }
    )
    assert resolve(refs, sources) == {
        "FROM_ENV": "spawner's value",
        "FROM_FILE": ODD_VALUE,
        "FROM_STORE": ODD_VALUE,
        "FROM_EXEC": "printed by a helper",
    }


@pytest.mark.parametrize(
    ("reference", "says"),
    [
        ("env:NOT_SET", "the server's environment has no NOT_SET"),
        ("file:/nonexistent/secret", "cannot read /nonexistent/secret: No such file"),
        ("store:missing", "has no secret 'missing'"),
        ("exec:no-such-helper get it", "no-such-helper was not found"),
        ("exec:sh -c 'echo permission denied >&2; exit 3'", "sh exited with status 3: permission"),
        ("exec:sleep 30", "sleep did not finish within 2 s"),
        ("exec:true", "is empty"),
        ("aws:prod/openai", "AWS Secrets Manager needs boto3"),
    ],
)
def test_a_provider_that_fails_stops_with_the_variable_and_the_provider(
    sources: Sources, reference: str, says: str
) -> None:
    with pytest.raises(SecretError) as failed:
        resolve([SecretRef("OPENAI_API_KEY", *reference.split(":", 1))], sources)
    message = str(failed.value)
    assert says in message, message
    assert "OPENAI_API_KEY" in message
    assert f"({reference.split(':', maxsplit=1)[0]}:" in message


def test_no_message_holds_a_value(sources: Sources) -> None:
    """A helper that prints the value and then fails: the error says it failed, and only its
    last line of stderr, never what it printed."""
    helper = "exec:sh -c 'printf the-printed-value; echo failing >&2; exit 1'"
    with pytest.raises(SecretError) as failed:
        resolve(parse_secrets({"KEY": helper}), sources)
    assert "the-printed-value" not in str(failed.value)
    assert "failing" in str(failed.value)


def test_a_helper_that_hangs_is_stopped_with_what_it_started(sources: Sources) -> None:
    """Its child too: left running, it would hold the start for its whole minute."""
    started = time.monotonic()
    with pytest.raises(SecretError, match="did not finish within 2 s"):
        resolve(parse_secrets({"KEY": "exec:sh -c 'sleep 61.25 & wait'"}), sources)
    assert time.monotonic() - started < 30
    left = subprocess.run(["pgrep", "-f", "sleep 61.25"], capture_output=True, check=False)
    assert left.stdout == b"", left.stdout
