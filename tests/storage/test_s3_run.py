"""End to end against a real S3-compatible server (moto in server mode on 127.0.0.1), driving
the CLI: a manifest, a catalog and stills in a bucket → outputs, sidecars, ledger, contact sheet
and report in the bucket; a re-run skips everything without reading a video; one replaced still
regenerates exactly one item; a store that goes away mid-run fails the affected items with a
reason naming the URI, leaves no incomplete object under a final key, and a re-run completes."""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time

import boto3
import pytest
import yaml

from flows.cli import main
from tasks import provenance, store
from tasks.encode import probe
from tests.conftest import draw_image
from tests.storage.conftest import keys
from tests.storage.test_manifest_in_store import catalog_bytes, put

pytestmark = [pytest.mark.usefixtures("ray_cluster", "prefect_server"), pytest.mark.slow]


@pytest.fixture
def job(s3, tmp_path, monkeypatch):
    """s3://BUCKET/jobs/spring.yaml: a catalog of ``n`` stills under s3://BUCKET/stills, output s3://BUCKET/out."""
    monkeypatch.setenv("FRAMEFOLD_INPUT_ROOTS", f"{s3}/stills")
    monkeypatch.setenv("FRAMEFOLD_OUTPUT_ROOTS", f"{s3}/out")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # staging and window cache: local, per test

    def make(ids: list[str]) -> str:
        for n, i in enumerate(ids):
            put(f"{s3}/stills/{i}.png", draw_image(tmp_path / f"{i}.png", (40, 32), seed=n).read_bytes())
        put(f"{s3}/jobs/catalog.parquet", catalog_bytes(ids, [f"{s3}/stills/{i}.png" for i in ids]))
        doc = {
            "version": 1, "name": "spring", "output": f"{s3}/out",
            "defaults": {"backend": "motion", "seed": 1, "frames": 8, "fps": 8, "size": [32, 32],
                         "window": {"length": 8, "overlap": 0}, "formats": ["mp4", "poster"]},
            "catalog": {"path": "catalog.parquet", "columns": {"id": "sku", "image": "still"}},
        }
        put(f"{s3}/jobs/spring.yaml", yaml.safe_dump(doc).encode())
        return f"{s3}/jobs/spring.yaml"

    return make


def _run(manifest: str, capsys) -> tuple[int, dict]:
    code = main(["run", manifest, "--json"])
    out = capsys.readouterr().out
    return code, json.loads(out[out.index("{"):])


def _get(s3: str, key: str) -> bytes:
    bucket = s3.removeprefix("s3://")
    return boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()


def test_catalog_in_a_bucket_to_outputs_in_the_bucket(s3, s3_server, job, capsys, monkeypatch):
    import subprocess

    import tasks.renditions

    def refuse(src, dst):  # the report's previews are made by the finishing tasks (Ray workers), not the driver
        raise subprocess.SubprocessError("the driver encoded a preview")

    monkeypatch.setattr(tasks.renditions, "encode_preview", refuse)
    manifest = job(["sku-a", "sku-b", "sku-c"])
    code, summary = _run(manifest, capsys)
    assert code == 0, summary
    assert summary["counts"] == {"done": 3, "skipped": 0, "failed": 0}
    objects = keys(s3)
    for i in ("sku-a", "sku-b", "sku-c"):
        record = json.loads(_get(s3, f"out/{i}.json"))
        for o in record["outputs"]:  # each output complete, as its sidecar describes it
            data = _get(s3, f"out/{o['path']}")
            assert (len(data), hashlib.sha256(data).hexdigest()) == (o["bytes"], o["sha256"])
            meta = store.stat(f"{s3}/out/{o['path']}").metadata
            assert meta == {"framefold-content-key": record["content_key"], "framefold-sha256": o["sha256"]}
        assert record["inputs"]["image"]["path"] == f"{s3}/stills/{i}.png"
        assert record["manifest"]["path"] == manifest
    assert {"out/contact-sheet.jpg", "out/report.html"} <= set(objects)
    previews = {k for k in objects if k.startswith("out/previews/")}  # made by the finishing tasks
    keys_of = {i: json.loads(_get(s3, f"out/{i}.json"))["content_key"][:12] for i in ("sku-a", "sku-b", "sku-c")}
    assert previews == {f"out/previews/{i}-{k}.webm" for i, k in keys_of.items()}
    assert all(f"previews/{i}-{k}.webm" in _get(s3, "out/report.html").decode() for i, k in keys_of.items())
    assert [k for k in objects if k.startswith("out/ledger/")] == [f"out/ledger/run-{summary['run_id']}.parquet"]
    assert not [k for k in objects if ".part" in k or "/." in k.replace("/.framefold-cache/", "/")]
    ledger = provenance.read_ledger(f"{s3}/out")
    assert sorted(set(ledger.column("item_id").to_pylist())) == ["sku-a", "sku-b", "sku-c"]
    assert set(ledger.column("status").to_pylist()) == {"done"}

    # inspect reads an output in the bucket as it reads a file: the mp4's own record, the poster's from its sidecar
    for name in ("sku-a.mp4", "sku-a.poster.jpg"):
        assert main(["inspect", f"{s3}/out/{name}", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["item"]["id"] == "sku-a"
    assert main(["inspect", f"{s3}/out/nothing.mp4"]) == 2
    assert f"{s3}/out/nothing.mp4: no such object" in capsys.readouterr().err.replace("\n", "")

    # a re-run skips everything, reading no video (sidecars and object metadata only)
    s3_server.clear()
    code, summary = _run(manifest, capsys)
    assert code == 0 and summary["counts"] == {"done": 0, "skipped": 3, "failed": 0}
    assert s3_server.gets(r"/out/.*\.(mp4|webm|gif)$") == [] and s3_server.gets(r"\.poster\.jpg$") == []
    assert {g.path.rsplit("/", 1)[-1] for g in s3_server.gets(r"/out/") if "/ledger/" not in g.path} <= {  # sidecars,
        # contact-sheet strips and the new sheet (the ledger parts are read back when the run compacts them)
        "sku-a.json", "sku-b.json", "sku-c.json", "sku-a.jpg", "sku-b.jpg", "sku-c.jpg", "contact-sheet.jpg"}
    assert not [r for r in s3_server.requests if r.method == "PUT" and re.search(r"/out/[^/]+\.(mp4|json)$", r.path)]

    # one replaced still: exactly that item is made again
    put(f"{s3}/stills/sku-b.png", draw_image(s3_server_tmp(capsys), (40, 32), seed=99).read_bytes())
    s3_server.clear()
    code, summary = _run(manifest, capsys)
    assert code == 0 and summary["counts"] == {"done": 1, "skipped": 2, "failed": 0}
    assert {r["id"]: r["reason"] for r in summary["items"] if r["status"] == "done"} == {"sku-b": "input changed"}
    uploads = sorted(r.path.rsplit("/", 1)[-1] for r in s3_server.requests
                     if r.method == "PUT" and re.search(r"/out/[^/]+$", r.path))
    assert uploads == ["contact-sheet.jpg", "report.html", "sku-b.json", "sku-b.mp4", "sku-b.poster.jpg"]
    new_key = json.loads(_get(s3, "out/sku-b.json"))["content_key"][:12]
    assert new_key != keys_of["sku-b"]  # sku-b's preview replaced, the others kept
    assert {k for k in keys(s3) if k.startswith("out/previews/")} == previews - {
        f"out/previews/sku-b-{keys_of['sku-b']}.webm"} | {f"out/previews/sku-b-{new_key}.webm"}

    # an output replaced by another tool (same size, one byte changed, none of framefold's metadata) is not current
    bucket, video = s3.removeprefix("s3://"), _get(s3, "out/sku-c.mp4")
    boto3.client("s3").put_object(Bucket=bucket, Key="out/sku-c.mp4", Body=video[:-1] + bytes([video[-1] ^ 1]))
    code, summary = _run(manifest, capsys)
    assert code == 0 and summary["counts"] == {"done": 1, "skipped": 2, "failed": 0}
    assert {r["id"]: r["reason"] for r in summary["items"] if r["status"] == "done"} == {
        "sku-c": "output missing or damaged"}
    record = json.loads(_get(s3, "out/sku-c.json"))
    assert store.stat(f"{s3}/out/sku-c.mp4").metadata["framefold-content-key"] == record["content_key"]
    assert hashlib.sha256(_get(s3, "out/sku-c.mp4")).hexdigest() == record["outputs"][0]["sha256"]


def s3_server_tmp(capsys):  # a scratch file for the replaced still
    import tempfile
    from pathlib import Path

    return Path(tempfile.mkdtemp()) / "new.png"


def test_store_stopped_mid_run_then_back(s3, s3_server, job, capsys, monkeypatch):
    ids = ["sku-1", "sku-2", "sku-3", "sku-4"]
    manifest = job(ids)
    monkeypatch.setenv("FRAMEFOLD_ITEMS_IN_FLIGHT", "1")  # one item after the other: the outage hits the later ones
    s3_server.clear()

    def stop_after_first_item() -> None:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if any(r.method == "PUT" and "/out/ledger/part-" in r.path and r.status == 200 for r in list(s3_server.requests)):
                s3_server.stop()
                return
            time.sleep(0.02)

    watcher = threading.Thread(target=stop_after_first_item, daemon=True)
    watcher.start()
    code, summary = _run(manifest, capsys)
    watcher.join(timeout=5)
    assert code == 1
    outage_run = summary["run_id"]
    status = {r["id"]: r for r in summary["items"]}
    failed = [r for r in status.values() if r["status"] == "failed"]
    assert len(failed) >= 2 and sum(r["status"] == "done" for r in status.values()) >= 1, summary
    for r in failed:  # a clear reason naming the URI
        assert re.search(rf"cannot \w+( \w+)? {re.escape(s3)}/\S+: connection refused \(after 3 attempts", r["reason"]), r

    s3_server.start()  # the same objects are back
    objects = keys(s3)
    assert not [k for k in objects if ".part" in k]
    assert boto3.client("s3").list_multipart_uploads(Bucket=s3.removeprefix("s3://")).get("Uploads", []) == []
    for key in objects:  # every object under a final key is complete
        if re.fullmatch(r"out/[^/]+\.mp4", key):
            local = s3_server_tmp(capsys).with_suffix(".mp4")
            local.write_bytes(_get(s3, key))
            assert probe(local).frames == 8, key
            sidecar = key.removesuffix(".mp4") + ".json"
            if sidecar in objects:
                record = json.loads(_get(s3, sidecar))
                assert record["output"]["sha256"] == hashlib.sha256(local.read_bytes()).hexdigest()

    code, summary = _run(manifest, capsys)
    assert code == 0, summary
    again = {r["id"]: r["status"] for r in summary["items"]}
    assert all(again[r["id"]] == "done" for r in failed) and set(again.values()) <= {"done", "skipped"}
    ledger = provenance.read_ledger(f"{s3}/out")
    rows = [r for r in ledger.to_pylist() if r["run_id"] == summary["run_id"]]
    assert {r["item_id"] for r in rows} == set(ids) and {r["status"] for r in rows} <= {"done", "skipped"}
    # the outage run's failures, kept on this machine while the store was down, are in the ledger now, once each
    outage = [r for r in ledger.to_pylist() if r["run_id"] == outage_run]
    assert sorted(r["item_id"] for r in outage if r["status"] == "failed") == sorted(r["id"] for r in failed), outage
    assert sum(r["status"] == "done" for r in outage) >= 1 and len({r["row_id"] for r in outage}) == len(outage)
    assert not list(provenance.pending_ledger(f"{s3}/out").glob("*.parquet"))
    print("outage run:", {r["id"]: (r["status"], r["reason"]) for r in status.values()})


def test_an_output_bucket_that_cannot_be_written_exits_2_before_any_work(s3, s3_server, job, tmp_path, capsys,
                                                                          monkeypatch):  # fmt: skip
    """A local manifest, outputs to a bucket that does not exist: exit 2 naming the output root,
    before Ray or any item starts (it was each item's "internal error: FileNotFoundError" after
    all the work, and a traceback with bad credentials)."""
    draw_image(tmp_path / "a.png", (40, 32), seed=1)
    doc = {"version": 1, "name": "local", "output": "out",
           "defaults": {"backend": "motion", "frames": 8, "fps": 8, "size": [32, 32], "window": {"length": 8}},
           "items": [{"id": "a", "image": "a.png"}]}  # fmt: skip
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(doc))
    monkeypatch.delenv("FRAMEFOLD_OUTPUT_ROOTS")
    started = []
    monkeypatch.setattr("flows.run.run_job", lambda *a, **k: started.append(1))
    assert main(["run", str(tmp_path / "job.yaml"), "--out", "s3://no-such-bucket/out"]) == 2
    err = capsys.readouterr().err.replace("\n", "")
    assert "cannot write to the output s3://no-such-bucket/out" in err and "bucket" in err, err
    assert "Traceback" not in err and not started
    s3_server.stop()  # unreachable: named the same way, exit 1 (nothing is wrong with the input; run again)
    assert main(["run", str(tmp_path / "job.yaml"), "--out", f"{s3}/out"]) == 1
    err = capsys.readouterr().err.replace("\n", "")
    assert f"cannot write {s3}/out/.framefold-cache/write-check-" in err and "connection refused" in err, err


def test_a_scheduled_run_to_an_unwritable_bucket_fails_before_any_item(s3, s3_server, tmp_path, monkeypatch):
    """The flow a deployment runs (no CLI in front of it) checks its output too: a missing
    bucket fails the flow run with one message naming the output, and no item is attempted."""
    from flows.run import run_manifest

    draw_image(tmp_path / "a.png", (40, 32), seed=1)
    doc = {"version": 1, "name": "nightly", "output": "out",
           "defaults": {"backend": "motion", "frames": 8, "fps": 8, "size": [32, 32], "window": {"length": 8}},
           "items": [{"id": "a", "image": "a.png"}]}  # fmt: skip
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(doc))
    monkeypatch.delenv("FRAMEFOLD_OUTPUT_ROOTS", raising=False)
    started = []
    monkeypatch.setattr("flows.run._make", lambda *a, **k: started.append(1))
    state = run_manifest(str(tmp_path / "job.yaml"), output="s3://no-such-bucket/out", return_state=True)
    assert state.is_failed() and not started
    with pytest.raises(store.StoreError, match=r"cannot write to the output s3://no-such-bucket/out: .*bucket"):
        state.result()


def test_a_rerun_that_skips_everything_adds_the_ledger_rows_kept_while_the_store_was_down(s3, s3_server, job, capsys,
                                                                                          monkeypatch):  # fmt: skip
    from manifests import load_manifest
    from tasks.freshness import settle_if_current

    manifest = job(["sku-1"])
    assert _run(manifest, capsys)[0] == 0
    monkeypatch.setenv("FRAMEFOLD_STORE_RETRIES", "1")
    row = provenance.ledger_row(run_id="20261205T000000Z-abcdef", item_id="sku-1", status="failed", reason="down")
    s3_server.stop()
    with pytest.raises(store.StoreError):
        provenance.append_rows(f"{s3}/out", row["run_id"], "sku-1", [row])
    s3_server.start()
    assert len(list(provenance.pending_ledger(f"{s3}/out").glob("*.parquet"))) == 1
    loaded = load_manifest(manifest)
    summary = settle_if_current(loaded, list(loaded.items))  # what `framefold run` does when everything is current
    assert summary is not None and summary["counts"]["skipped"] == 1 and summary["contact_sheet"]
    kept = [r for r in provenance.read_ledger(f"{s3}/out").to_pylist() if r["run_id"] == row["run_id"]]
    assert [(r["item_id"], r["status"]) for r in kept] == [("sku-1", "failed")]
    assert not list(provenance.pending_ledger(f"{s3}/out").glob("*.parquet"))
    assert f"out/ledger/run-{row['run_id']}.parquet" in keys(s3)
