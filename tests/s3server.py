"""A real S3 endpoint on 127.0.0.1 for the s3:// tests: moto's server in a thread.

Registered in conftest.py, so any test can ask for it::

    def test_something(s3_server, tmp_path):
        bucket = s3_server.make_bucket()          # a fresh, uniquely named bucket
        s3_server.client().put_object(Bucket=bucket, Key="m/config.json", Body=b"{}")
        fetch(f"s3://{bucket}/m", cache_dir=tmp_path)   # finds the endpoint through the env

``s3_bucket`` is the same for tests that only need one empty bucket.

While the server runs (the whole session, from the first test that asks for it), the
environment points botocore at it: AWS_ENDPOINT_URL_S3, dummy credentials, us-east-1, and
no ~/.aws files or EC2 metadata lookups, so the developer's own AWS setup never leaks in.
Everything is restored when the session ends. moto keeps state in memory for the whole
session: isolate tests by bucket name, not by resetting it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

# Values the server's session runs with; None removes the variable.
ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_SESSION_TOKEN": None,
    "AWS_PROFILE": None,
    "AWS_DEFAULT_PROFILE": None,
    "AWS_ENDPOINT_URL": None,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}


@dataclass(frozen=True)
class S3Server:
    """The running server: its URL, a boto3 client for it, and fresh buckets on demand."""

    endpoint_url: str

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint_url, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def make_bucket(self, name: str | None = None) -> str:
        """Create a bucket (a unique ``test-…`` name when none is given) and return its name."""
        name = name or f"test-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto's S3 on a free loopback port, with the environment pointing at it."""
    server_module = pytest.importorskip("moto.server", reason="moto[server] is not installed (extra [test])")
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    saved = {name: os.environ.get(name) for name in [*ENV, "AWS_ENDPOINT_URL_S3"]}
    _set_env({**ENV, "AWS_ENDPOINT_URL_S3": endpoint})
    try:
        yield S3Server(endpoint)
    finally:
        _set_env(saved)
        server.stop()


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> str:
    """The name of a fresh, empty bucket on ``s3_server``."""
    return s3_server.make_bucket()


def _set_env(values: dict[str, str | None]) -> None:
    for name, value in values.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
