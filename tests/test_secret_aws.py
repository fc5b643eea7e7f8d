"""The aws: secret provider for real: boto3 against moto's AWS Secrets Manager (`moto_server`, the
test extra) on a loopback port, configured through the environment as on a server. Nothing
leaves the machine: the endpoint is the local server, the credentials are fake, no proxy, profile
or instance metadata is consulted."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests

from conftest import Kernel, terminate, wait_until
from hopx_kernel.secret_refs import (
    SecretError,
    SecretRef,
    Sources,
    aws_secrets_manager,
    parse_secrets,
    resolve,
)
from hopx_kernel.secret_store import SecretStore
from server_harness import free_port

ODD_VALUE = "s3cr3t.*+?^$[](){}|\\ ünïcødé ✓\nsecond line"
KNOWN_VALUE = "hx-aws-known-value-4711"
REGION = "us-east-1"


def outside_aws(name: str) -> bool:
    """Whether a variable of this machine's environment leaves the tests' AWS alone."""
    return not name.startswith("AWS_") and not name.lower().endswith("_proxy")


def local(method: str, url: str) -> requests.Response:
    """A request straight to the moto server, never through a proxy."""
    with requests.Session() as session:
        session.trust_env = False
        return session.request(method, url, timeout=5)


def answers(url: str) -> bool:
    try:
        return local("GET", f"{url}/moto-api/").ok
    except requests.RequestException:
        return False


@pytest.fixture(scope="module")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a moto server on a free loopback port, stopped (SIGTERM, then SIGKILL)
    after the module's tests."""
    program = Path(sys.executable).with_name("moto_server")
    assert program.exists(), f"{program} is missing: pip install -e '.[test]'"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path_factory.mktemp("moto") / "moto_server.log"
    with open(log_path, "wb") as log:
        server = subprocess.Popen(
            [str(program), "-H", "127.0.0.1", "-p", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            # moto uses botocore itself: no AWS profile or proxy of this machine.
            env={name: value for name, value in os.environ.items() if outside_aws(name)},
        )
    try:
        wait_until(lambda: server.poll() is not None or answers(url), 30)
        assert answers(url), log_path.read_text(errors="replace")[-3000:]
        yield url
    finally:
        terminate(server, 10)


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, moto_endpoint: str) -> str:
    """The environment boto3 reads, pointed at the moto server; returns its URL. Whatever of AWS
    this machine has (variables, ~/.aws, proxies) is out of the way."""
    for name in [name for name in os.environ if not outside_aws(name)]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    # Each test starts with no secrets.
    local("POST", f"{moto_endpoint}/moto-api/reset").raise_for_status()
    return moto_endpoint


@pytest.fixture
def put_secret(aws_env: str) -> Callable[..., str]:
    """Creates a secret in the moto server (SecretString or SecretBinary); returns its ARN."""
    client = boto3.session.Session().client("secretsmanager")

    def put(name: str, **value: Any) -> str:
        return str(client.create_secret(Name=name, **value)["ARN"])

    return put


@pytest.fixture
def fetch(aws_env: str) -> Callable[[str], str]:
    fetcher = aws_secrets_manager()
    assert fetcher is not None, "boto3 is part of the test extra: pip install -e '.[test]'"
    return fetcher


def failure(fetch: Callable[[str], str], target: str) -> str:
    with pytest.raises(SecretError) as failed:
        fetch(target)
    return str(failed.value)


@pytest.mark.parametrize(
    "value", [KNOWN_VALUE, ODD_VALUE, "   spaces kept  ", '{"looks": "like JSON"}']
)
def test_a_secret_string_comes_back_as_it_is(
    put_secret: Callable[..., str], fetch: Callable[[str], str], value: str
) -> None:
    put_secret("prod/app", SecretString=value)
    assert fetch("prod/app") == value


def test_a_field_of_a_json_secret(
    put_secret: Callable[..., str], fetch: Callable[[str], str]
) -> None:
    fields = {"username": "admin", "password": ODD_VALUE, "port": 5432, "tls": True}
    put_secret("prod/db", SecretString=json.dumps(fields))
    assert fetch("prod/db#password") == ODD_VALUE
    assert fetch("prod/db#username") == "admin"
    # As JSON writes them, not as Python does.
    assert fetch("prod/db#port") == "5432"
    assert fetch("prod/db#tls") == "true"


def test_a_secret_by_its_arn(put_secret: Callable[..., str], fetch: Callable[[str], str]) -> None:
    arn = put_secret("prod/db", SecretString=json.dumps({"password": KNOWN_VALUE}))
    assert arn.startswith("arn:aws:secretsmanager:us-east-1:")
    [ref] = parse_secrets({"DB_PASSWORD": f"aws:{arn}#password"})
    assert ref.target == f"{arn}#password"
    assert fetch(ref.target) == KNOWN_VALUE


def test_a_missing_secret_is_not_found_and_no_value_is_named(
    put_secret: Callable[..., str], fetch: Callable[[str], str]
) -> None:
    put_secret("prod/other", SecretString=KNOWN_VALUE)
    message = failure(fetch, "prod/missing")
    assert message == "prod/missing was not found in AWS Secrets Manager (region us-east-1)"
    assert KNOWN_VALUE not in failure(fetch, "prod/missing#password")


@pytest.mark.parametrize(
    ("value", "target"),
    [
        (json.dumps({"password": KNOWN_VALUE}), "prod/db#user"),
        (KNOWN_VALUE, "prod/db#password"),
        (json.dumps([KNOWN_VALUE]), "prod/db#0"),
        (json.dumps(KNOWN_VALUE), "prod/db#password"),
    ],
    ids=["no such field", "not JSON", "a JSON list", "a JSON string"],
)
def test_a_field_that_is_not_there(
    put_secret: Callable[..., str], fetch: Callable[[str], str], value: str, target: str
) -> None:
    put_secret("prod/db", SecretString=value)
    message = failure(fetch, target)
    key = target.partition("#")[2]
    assert message == f"prod/db is not a JSON object with a field {key!r}"
    assert KNOWN_VALUE not in message


def test_a_binary_secret_holds_no_text(
    put_secret: Callable[..., str], fetch: Callable[[str], str]
) -> None:
    put_secret("prod/key", SecretBinary=KNOWN_VALUE.encode())
    assert failure(fetch, "prod/key") == "prod/key holds no text (SecretString)"


def test_an_endpoint_that_does_not_answer(aws_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A closed loopback port, with boto3's default retries: a SecretError soon, not botocore's
    exception."""
    closed = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", closed)
    fetch = aws_secrets_manager()
    assert fetch is not None
    started = time.monotonic()
    message = failure(fetch, "prod/app")
    assert time.monotonic() - started < 20
    assert message == f'prod/app: Could not connect to the endpoint URL: "{closed}/"'


@pytest.mark.parametrize(
    ("variable", "setting"),
    [("AWS_ENDPOINT_URL", "not a URL"), ("AWS_MAX_ATTEMPTS", "three")],
)
def test_a_malformed_setting_is_a_secret_error(
    aws_env: str, monkeypatch: pytest.MonkeyPatch, variable: str, setting: str
) -> None:
    monkeypatch.setenv(variable, setting)
    fetch = aws_secrets_manager()
    assert fetch is not None
    assert failure(fetch, "prod/app").startswith("prod/app: ")


def test_the_region_from_aws_region_alone(
    put_secret: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """boto3 itself reads AWS_DEFAULT_REGION only; the AWS CLI v2 and the other SDKs read
    AWS_REGION, and so does the provider."""
    put_secret("prod/app", SecretString=KNOWN_VALUE)
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    fetch = aws_secrets_manager()
    assert fetch is not None
    assert fetch("prod/app") == KNOWN_VALUE
    # Secrets are per region.
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    fetch = aws_secrets_manager()
    assert fetch is not None
    assert failure(fetch, "prod/app") == (
        "prod/app was not found in AWS Secrets Manager (region eu-west-1)"
    )
    monkeypatch.delenv("AWS_REGION")
    fetch = aws_secrets_manager()
    assert fetch is not None
    assert failure(fetch, "prod/app") == (
        "no AWS region is set: set AWS_REGION in the server's environment"
    )


def test_one_client_for_every_secret_of_a_start(
    put_secret: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Making a client costs about 60 ms (it loads the service model); a start with several aws:
    secrets makes one."""
    sessions: list[object] = []

    class CountedSession(boto3.session.Session):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            sessions.append(self)

    put_secret("prod/db", SecretString=json.dumps({"user": "admin", "password": ODD_VALUE}))
    monkeypatch.setattr(boto3.session, "Session", CountedSession)
    fetch = aws_secrets_manager()
    assert fetch is not None
    assert [fetch("prod/db#user"), fetch("prod/db#password")] == ["admin", ODD_VALUE]
    with contextlib.suppress(SecretError):
        fetch("prod/missing")
    assert len(sessions) == 1


def test_resolve_through_sources(
    put_secret: Callable[..., str], fetch: Callable[[str], str], tmp_path: Path
) -> None:
    put_secret("prod/db", SecretString=json.dumps({"password": ODD_VALUE}))
    put_secret("prod/token", SecretString=KNOWN_VALUE)
    sources = Sources(
        environ={}, store=SecretStore(tmp_path / "secrets.json", environ={}), aws=fetch
    )
    refs = parse_secrets({"DB_PASSWORD": "aws:prod/db#password", "API_TOKEN": "aws:prod/token"})
    assert resolve(refs, sources) == {"DB_PASSWORD": ODD_VALUE, "API_TOKEN": KNOWN_VALUE}

    with pytest.raises(SecretError) as failed:
        resolve([*refs, SecretRef("OPENAI_API_KEY", "aws", "prod/openai")], sources)
    message = str(failed.value)
    assert message == (
        "the secret OPENAI_API_KEY (aws:) could not be had: "
        "prod/openai was not found in AWS Secrets Manager (region us-east-1)"
    )
    assert KNOWN_VALUE not in message
    assert ODD_VALUE not in message


def test_a_kernel_gets_its_secret_from_aws_and_masks_it(
    put_secret: Callable[..., str], start_kernel: Callable[..., Kernel]
) -> None:
    """A real kernel, its secret fetched from the moto server at its start."""
    put_secret("prod/app", SecretString=json.dumps({"api_key": ODD_VALUE}))
    kernel = start_kernel(secrets={"API_KEY": "aws:prod/app#api_key"})
    _, stdout = kernel.run(
        "import hashlib, os\n"
        "print(hashlib.sha256(os.environ['API_KEY'].encode()).hexdigest())\n"
        "print(os.environ['API_KEY'])"
    )
    digest, masked = stdout.split("\n", 1)
    assert digest == hashlib.sha256(ODD_VALUE.encode()).hexdigest()
    assert masked == "[secret API_KEY]\n"
    assert kernel.km.provisioner.secret_names == ["API_KEY"]
