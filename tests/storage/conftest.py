from __future__ import annotations

import secrets

import pytest

from tests.storage.s3server import S3Server


@pytest.fixture(scope="module")
def s3_server():
    server = S3Server().start()
    yield server
    server.stop()


@pytest.fixture
def s3(s3_server, monkeypatch):
    """A fresh bucket on the test server, reached through the standard AWS_* environment
    (AWS_ENDPOINT_URL: an S3-compatible endpoint, as for MinIO); yields ``s3://BUCKET``."""
    import boto3

    for name, value in {
        "AWS_ENDPOINT_URL": s3_server.endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1", "FRAMEFOLD_STORE_BACKOFF": "0.05", "FRAMEFOLD_STORE_RETRIES": "3",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    bucket = f"ff-{secrets.token_hex(4)}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    s3_server.fail = None
    s3_server.clear()
    yield f"s3://{bucket}"
    s3_server.fail = None
    if s3_server._server is None:
        s3_server.start()


def keys(url: str) -> dict[str, int]:
    """Every object in the bucket of ``url``: key → size."""
    import boto3

    bucket = url.removeprefix("s3://").split("/")[0]
    out = {}
    for page in boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket):
        out.update({o["Key"]: o["Size"] for o in page.get("Contents", [])})
    return out
