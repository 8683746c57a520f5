"""The store layer against a real S3-compatible server: atomic objects, metadata, bounded
retries with a reason naming the URI, aborted multipart uploads, the ledger in a bucket."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import boto3
import pytest

from tasks import provenance, store
from tests.storage.conftest import keys


def test_objects_round_trip_with_metadata_and_stat_without_reading(s3, s3_server):
    url = f"{s3}/out/a.json"
    store.write_json(url, {"x": 1}, metadata={"framefold-content-key": "k1"})
    s3_server.clear()
    found = store.stat(url)
    assert found is not None and found.metadata == {"framefold-content-key": "k1"} and found.size > 0
    assert s3_server.gets() == []  # size and metadata from one HEAD
    assert store.read_json(url) == {"x": 1}
    assert store.stat(f"{s3}/out/absent.mp4") is None and store.read_json(f"{s3}/out/absent.json") is None
    data, digest = store.read_hashed(url)
    assert digest == hashlib.sha256(data).hexdigest() == store.sha256_file(url)
    assert store.listdir(f"{s3}/out") == ["a.json"] and store.listdir(f"{s3}/nothing") == []
    store.delete(url)
    store.delete(url)  # absent is fine
    assert keys(s3) == {}


def test_local_paths_and_file_urls_behave_as_before(tmp_path):
    target = tmp_path / "sub" / "a.bin"
    store.write_bytes(f"file://{target}", b"abc")
    assert target.read_bytes() == b"abc" and not list(target.parent.glob(".*.part"))
    assert store.stat(target).size == 3 and store.read_hashed(target)[1] == hashlib.sha256(b"abc").hexdigest()
    with pytest.raises(ValueError, match="not host 'evil'"):
        store.local_or_url("file://evil/etc/passwd")


def test_throttling_and_5xx_are_retried_with_backoff(s3, s3_server):
    answers = iter([503, 500])
    s3_server.fail = lambda r: next(answers, None) if r.method == "PUT" else None
    store.write_bytes(f"{s3}/ok.bin", b"x" * 10)
    assert keys(s3) == {"ok.bin": 10}
    assert [r.status for r in s3_server.requests if r.method == "PUT"] == [503, 500, 200]


def test_a_store_that_keeps_failing_names_the_uri_after_bounded_attempts(s3, s3_server):
    s3_server.fail = lambda r: 503
    with pytest.raises(store.StoreError, match=rf"cannot write {s3}/out/v.mp4: HTTP 503 SlowDown \(after 3 attempts"):
        store.write_bytes(f"{s3}/out/v.mp4", b"x")
    assert len(s3_server.requests) == 3
    s3_server.fail = None
    assert keys(s3) == {}


def test_connection_refused_then_back(s3, s3_server):
    store.write_bytes(f"{s3}/a.bin", b"1")
    s3_server.stop()
    with pytest.raises(store.StoreError, match=rf"cannot read {s3}/a.bin: connection refused \(after 3 attempts"):
        store.read_bytes(f"{s3}/a.bin")
    s3_server.start()
    assert store.read_bytes(f"{s3}/a.bin") == b"1"


def test_failed_multipart_upload_is_aborted_and_leaves_no_object(s3, s3_server, tmp_path):
    big = tmp_path / "big.mp4"
    big.write_bytes(os.urandom(11 << 20))  # three parts of 5 MiB (S3's smallest part)
    s3_server.fail = lambda r: 500 if r.method == "POST" and "uploadId=" in r.query else None  # the completion
    with pytest.raises(store.StoreError, match=rf"cannot write {s3}/out/big.mp4: HTTP 500"):
        store.put_file(big, f"{s3}/out/big.mp4", chunksize=5 << 20)
    s3_server.fail = None
    bucket = s3.removeprefix("s3://")
    assert keys(s3) == {}
    assert boto3.client("s3").list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert big.exists()  # the local file stays for another attempt
    store.put_file(big, f"{s3}/out/big.mp4", chunksize=5 << 20, metadata={"framefold-sha256": "s"})
    assert keys(s3) == {"out/big.mp4": 11 << 20} and not big.exists()
    assert store.stat(f"{s3}/out/big.mp4").metadata == {"framefold-sha256": "s"}


def test_ledger_lives_in_the_bucket(s3):
    out = f"{s3}/out"
    for item in ("a", "b"):
        row = provenance.ledger_row(run_id="r1", item_id=item, status="done", output=f"{item}.mp4")
        provenance.append_rows(out, "r1", item, [row])
    assert provenance.has_rows(out, "r1", "a") and not provenance.has_rows(out, "r2", "a")
    assert sorted(provenance.read_ledger(out).column("item_id").to_pylist()) == ["a", "b"]
    merged = provenance.compact(out, "r1")
    assert merged == f"{out}/ledger/run-r1.parquet" and set(keys(s3)) == {"out/ledger/run-r1.parquet"}
    assert provenance.has_rows(out, "r1", "b")
    assert sorted(provenance.read_ledger(out).column("item_id").to_pylist()) == ["a", "b"]
    import pyarrow.parquet as pq  # a plain Parquet dataset for any reader of the store
    from tasks.store import filesystem

    fs, path = filesystem(out)
    assert pq.read_table(f"{path}/ledger", filesystem=fs).num_rows == 2
