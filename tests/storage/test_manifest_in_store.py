"""A manifest, its catalog and its stills in a bucket: `framefold validate s3://…` reads the
manifest from the store, the catalog through pyarrow (only the mapped columns' bytes), and
checks the stills with one listing per folder."""

from __future__ import annotations

import io

import boto3
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from flows.cli import main
from tests.conftest import draw_image
from tests.storage.conftest import keys


def put(url: str, data: bytes) -> None:
    bucket, _, key = url.removeprefix("s3://").partition("/")
    boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=data)


def still(tmp_path, name: str, seed: int) -> bytes:
    return draw_image(tmp_path / name, (48, 40), seed=seed).read_bytes()


def catalog_bytes(ids: list[str], images: list[str], *, noise_bytes: int = 0) -> bytes:
    rng = np.random.default_rng(0)
    table = pa.table({
        "sku": ids, "still": images, "prompt": [f"product {i}" for i in ids],
        # a wide column nobody maps: pyarrow must not fetch it
        "description": [rng.bytes(noise_bytes).hex() for _ in ids],
    })
    buffer = io.BytesIO()
    pq.write_table(table, buffer, row_group_size=len(ids))
    return buffer.getvalue()


def manifest(output: str = "s3://{bucket}/out") -> dict:
    return {
        "version": 1, "name": "catalog", "output": output,
        "defaults": {"backend": "motion", "frames": 8, "fps": 8, "size": [32, 32],
                     "window": {"length": 8, "overlap": 0}},
        "catalog": {"path": "catalog.parquet", "columns": {"id": "sku", "image": "still", "prompt": "prompt"}},
    }


def test_validate_a_manifest_in_a_bucket(s3, s3_server, tmp_path, monkeypatch, capsys):
    bucket = s3.removeprefix("s3://")
    monkeypatch.setenv("FRAMEFOLD_INPUT_ROOTS", f"{s3}/stills")
    ids = [f"sku-{n}" for n in range(6)]
    for n, i in enumerate(ids):
        put(f"{s3}/stills/{i}.png", still(tmp_path, f"{i}.png", n))
    data = catalog_bytes(ids, [f"{s3}/stills/{i}.png" for i in ids], noise_bytes=200_000)
    put(f"{s3}/jobs/catalog.parquet", data)
    put(f"{s3}/jobs/spring.yaml", yaml.safe_dump({**manifest(), "output": f"{s3}/jobs/out"}).encode())
    s3_server.clear()
    assert main(["validate", f"{s3}/jobs/spring.yaml"]) == 0, capsys.readouterr().err
    assert "6 item(s)" in capsys.readouterr().out
    catalog_reads = s3_server.gets(r"/jobs/catalog\.parquet$")
    asked = sum(r.bytes_asked(len(data)) for r in catalog_reads)
    assert catalog_reads and asked < len(data) // 4, (asked, len(data))  # the mapped columns only
    assert len(s3_server.gets(r"/stills/.+")) == len(ids)  # each still listed with its folder, then read once (decoded)
    listings = [r for r in s3_server.requests if r.method == "GET" and r.path.rstrip("/") == f"/{bucket}" and "list-type" in r.query]
    assert sorted(r.query.split("prefix=")[1].split("&")[0] for r in listings) == ["jobs%2F", "stills%2F"]  # one per folder

    # a missing still and a key outside the roots: exit 2, each located
    images = [f"{s3}/stills/{i}.png" for i in ids]
    images[2] = f"{s3}/stills/gone.png"
    images[4] = f"{s3}/private/{ids[4]}.png"
    put(f"{s3}/jobs/catalog.parquet", catalog_bytes(ids, images))
    assert main(["validate", f"{s3}/jobs/spring.yaml"]) == 2
    err = capsys.readouterr().err.replace("\n", "")
    assert f"catalog row 3 (item 'sku-2').image: file not found: {s3}/stills/gone.png" in err
    assert "catalog row 5 (item 'sku-4').image" in err and "escapes the manifest folder" in err


def test_a_store_that_is_down_exits_1_naming_the_manifest(s3, s3_server, capsys):
    """Nothing is known to be wrong with the manifest: exit 1 (run again), not 2 (bad input)."""
    put(f"{s3}/jobs/spring.yaml", yaml.safe_dump(manifest()).encode())
    s3_server.stop()
    for command in ("validate", "plan", "run", "submit"):  # submit: before anything reaches a cluster
        assert main([command, f"{s3}/jobs/spring.yaml"]) == 1, command
        err = capsys.readouterr().err.replace("\n", "")
        assert "a store did not answer" in err and "invalid manifest" not in err, err
        assert f"cannot read manifest {s3}/jobs/spring.yaml" in err and "connection refused" in err, err
        assert "check that the store is reachable, then run again" in err, err
    for command in ("serve", "deploy"):  # deployments of a manifest in a store name it as a URL too
        assert main([command, f"{s3}/jobs/spring.yaml", "--name", "nightly", "--out", f"{s3}/out"]) == 2
        err = capsys.readouterr().err.replace("\n", "")
        assert f"cannot read manifest {s3}/jobs/spring.yaml" in err, err


def test_a_catalog_read_is_retried_and_one_that_never_answers_exits_1(s3, s3_server, tmp_path, monkeypatch, capsys):
    """pyarrow's reads of a catalog in a bucket go through the store's retries: a 503 answer is
    tried again; a store that keeps failing after the listing found the catalog is an outage
    (exit 1, the catalog named), not a bad catalog (2)."""
    monkeypatch.setenv("FRAMEFOLD_INPUT_ROOTS", f"{s3}/stills")
    ids = ["sku-0", "sku-1"]
    for n, i in enumerate(ids):
        put(f"{s3}/stills/{i}.png", still(tmp_path, f"{i}.png", n))
    put(f"{s3}/jobs/catalog.parquet", catalog_bytes(ids, [f"{s3}/stills/{i}.png" for i in ids]))
    put(f"{s3}/jobs/spring.yaml", yaml.safe_dump({**manifest(), "output": f"{s3}/jobs/out"}).encode())
    catalog = r"/jobs/catalog\.parquet$"

    failed = []

    def first_read_fails(request):
        if request.method == "GET" and "catalog.parquet" in request.path and not failed:
            failed.append(request)
            return 503
        return None

    s3_server.fail = first_read_fails
    assert main(["validate", f"{s3}/jobs/spring.yaml"]) == 0, capsys.readouterr().err
    assert "2 item(s)" in capsys.readouterr().out
    assert [r.status for r in s3_server.gets(catalog)][:2] == [503, 206], s3_server.gets(catalog)

    s3_server.fail = lambda request: 503 if request.method == "GET" and "catalog.parquet" in request.path else None
    for command in ("validate", "run"):
        assert main([command, f"{s3}/jobs/spring.yaml"]) == 1, command
        err = capsys.readouterr().err.replace("\n", "")
        assert "a store did not answer" in err and "invalid manifest" not in err, err
        assert f"catalog.path: cannot read catalog {s3}/jobs/catalog.parquet: HTTP 503 SlowDown (after 3 attempts" in err, err
    assert not [key for key in keys(s3) if key.startswith("jobs/out/")]  # nothing written

    s3_server.fail = None  # the store answers; the file is not Parquet: bad input, named as such
    put(f"{s3}/jobs/catalog.parquet", b"not a parquet file")
    assert main(["validate", f"{s3}/jobs/spring.yaml"]) == 2
    err = capsys.readouterr().err.replace("\n", "")
    assert f"catalog.path: cannot read {s3}/jobs/catalog.parquet as Parquet: ArrowInvalid" in err, err


def test_stills_in_a_store_that_is_down_exit_1_for_a_local_manifest(s3, s3_server, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FRAMEFOLD_INPUT_ROOTS", f"{s3}/stills")
    put(f"{s3}/stills/a.png", still(tmp_path, "a.png", 0))
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({**manifest(output=str(tmp_path / "out")), "catalog": None,
                                   "items": [{"id": "a", "image": f"{s3}/stills/a.png", "prompt": "a still"}]}))
    s3_server.stop()
    assert main(["run", str(job)]) == 1
    err = capsys.readouterr().err.replace("\n", "")
    assert "a store did not answer" in err and "invalid manifest" not in err, err
    assert f"{job}: items[0].image (item 'a'): cannot list {s3}/stills: connection refused" in err, err
    assert not (tmp_path / "out").exists()


def test_a_manifest_url_with_credentials_is_refused_without_printing_them(capsys):
    assert main(["run", "s3://AKIAEXAMPLE:topsecret@assets/jobs/spring.yaml"]) == 2
    err = capsys.readouterr().err
    assert "carries credentials" in err and "s3://***@assets/jobs/spring.yaml" in err, err
    assert "topsecret" not in err and "AKIAEXAMPLE" not in err, err
