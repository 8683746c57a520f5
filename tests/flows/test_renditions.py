"""Renditions (aspects × formats from one generation), the contact sheet and the Prefect
artifacts of a run."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import yaml
from PIL import Image

from flows.cli import main
from tasks.encode import decode, probe, read_tags
from tasks.provenance import read_ledger
from manifests import crop_box
from tests.conftest import draw_image, write_manifest


@pytest.mark.parametrize(
    ("size", "aspect", "box"),
    [
        ((128, 96), "native", (0, 0, 128, 96)),
        ((128, 96), "9:16", (37, 0, 54, 96)),  # 96 * 9/16 = 54
        ((128, 96), "1:1", (16, 0, 96, 96)),
        ((128, 96), "16:9", (0, 12, 128, 72)),  # 128 * 9/16 = 72
        ((128, 96), "4:5", (26, 0, 76, 96)),  # 96 * 4/5 = 76.8 -> 76, (128 - 76) / 2 = 26
        ((100, 100), "3:2", (0, 17, 100, 66)),  # 100 * 2/3 = 66.7 -> 66
    ],
)
def test_crop_is_the_largest_centred_box_with_even_sides(size, aspect, box):
    assert crop_box(size, aspect) == box


def _mean_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


@pytest.mark.usefixtures("ray_cluster", "prefect_server")
def test_every_rendition_decodes_at_its_size_and_the_run_reports_it(tmp_path, capsys):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    from flows.run import run_job
    from manifests import load_manifest

    draw_image(tmp_path / "img" / "a.png", (80, 60), seed=4)
    draw_image(tmp_path / "img" / "broken.png", (80, 60), seed=5)
    doc = {"version": 1, "name": "renditions", "output": "out",
           "defaults": {"fps": 12, "frames": 12, "size": [64, 48], "seed": 1, "window": {"length": 6, "overlap": 2},
                        "upscale": {"factor": 2}, "motion": {"amplitude": 0.05}},
           "items": [{"id": "a", "image": "img/a.png", "formats": ["mp4", "webm", "gif", "poster"],
                      "aspects": ["native", "9:16", "16:9"]},
                     {"id": "b", "image": "img/broken.png"}]}
    manifest = write_manifest(tmp_path, doc)
    out = tmp_path / "out"
    job = load_manifest(manifest)  # valid now; b's still breaks before the run reads it
    (tmp_path / "img" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n cut short")
    summary = run_job(job)
    assert summary["counts"] == {"done": 1, "skipped": 0, "failed": 1}  # b fails: its image cannot be decoded

    # the documented names and sizes; each file decodes with its codec and every frame
    expected = {"": (128, 96), ".9x16": (54, 96), ".16x9": (128, 72)}
    for infix, (w, h) in expected.items():
        for ext, codec in (("mp4", "h264"), ("webm", "vp9"), ("gif", "gif")):
            info = probe(out / f"a{infix}.{ext}")
            assert (info.codec, info.width, info.height, info.frames) == (codec, w, h, 12), (infix, ext)
        assert Image.open(out / f"a{infix}.poster.jpg").size == (w, h)
    assert probe(out / "a.mp4").pix_fmt == probe(out / "a.webm").pix_fmt == "yuv420p"
    mp4 = (out / "a.mp4").read_bytes()
    assert mp4.index(b"moov") < mp4.index(b"mdat")  # faststart
    gif = (out / "a.gif").read_bytes()
    assert gif[gif.index(b"NETSCAPE2.0") + 11 : gif.index(b"NETSCAPE2.0") + 15] == b"\x03\x01\x00\x00"  # loop forever

    # every aspect shows the centre of the same generation; the poster is the middle frame
    native = np.stack(list(decode(out / "a.mp4", width=128, height=96)))
    tall = np.stack(list(decode(out / "a.9x16.mp4", width=54, height=96)))
    assert _mean_abs(tall, native[:, :, 37:91]) < 4
    assert _mean_abs(tall, native[:, :, 20:74]) > 2 * _mean_abs(tall, native[:, :, 37:91])  # not any crop
    poster = np.asarray(Image.open(out / "a.poster.jpg").convert("RGB"))
    distance = [_mean_abs(poster, frame) for frame in native]
    assert distance[6] < 4 and int(np.argmin(distance)) == 6

    # mp4 and webm carry the record; the sidecar lists every file with its bytes' hash
    assert json.loads({k.lower(): v for k, v in read_tags(out / "a.9x16.webm").items()}["framefold"])["item"]["id"] == "a"
    record = json.loads((out / "a.json").read_text())
    names = [o["path"] for o in record["outputs"]]
    assert len(names) == 12 and names[0] == "a.mp4"
    for o in record["outputs"]:
        assert hashlib.sha256((out / o["path"]).read_bytes()).hexdigest() == o["sha256"]
    rows = [r for r in read_ledger(out).to_pylist() if r["item_id"] == "a"]
    assert sorted(r["output"] for r in rows) == sorted(names) and {r["status"] for r in rows} == {"done"}
    assert {(r["output"], r["width"], r["height"]) for r in rows if r["format"] == "webm"} == {
        ("a.webm", 128, 96), ("a.9x16.webm", 54, 96), ("a.16x9.webm", 128, 72)}

    # contact sheet: one row per item (first, middle, last frames for a; a red tile for b)
    sheet = Image.open(out / "contact-sheet.jpg")
    assert summary["contact_sheet"] == str(out / "contact-sheet.jpg")
    assert sheet.height == 2 * (96 + 4)
    assert np.asarray(sheet.convert("RGB"))[150, 210, 0] > 90  # b's tile: dark red

    # Prefect artifacts of this flow run: items table, summary, link to the contact sheet
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[summary["flow_run_id"]])))
    by_key = {a.key: a for a in artifacts}
    assert {"framefold-items", "framefold-summary", "framefold-contact-sheet"} <= set(by_key)
    table = json.loads(by_key["framefold-items"].data) if isinstance(by_key["framefold-items"].data, str) \
        else by_key["framefold-items"].data
    assert {(r["item"], r["status"]) for r in table} == {("a", "done"), ("b", "failed")}
    assert "failed **1**" in by_key["framefold-summary"].data and "broken.png" in by_key["framefold-summary"].data
    assert "contact-sheet.jpg" in by_key["framefold-contact-sheet"].data

    # unchanged: every rendition skipped (its contact-sheet strip, deleted with the cache, is
    # rebuilt from the video); fewer renditions asked for: the others are removed
    draw_image(tmp_path / "img" / "broken.png", (80, 60), seed=5)  # repaired: the manifest validates again
    strip = out / ".framefold-cache" / "thumbs" / "a.jpg"
    before = np.asarray(Image.open(strip).convert("RGB")).astype(np.int16)
    strip.unlink()
    assert main(["run", str(manifest), "--only", "a", "--json"]) == 0
    assert np.abs(np.asarray(Image.open(strip).convert("RGB")).astype(np.int16) - before).mean() < 6
    again = json.loads(capsys.readouterr().out)
    assert again["counts"]["skipped"] == 1 and again["items"][0]["outputs"] == names
    doc["items"][0]["formats"], doc["items"][0]["aspects"] = ["mp4"], ["1:1"]
    manifest.write_text(yaml.safe_dump(doc))
    assert main(["run", str(manifest), "--only", "a"]) == 0
    assert sorted(p.name for p in out.glob("a.*")) == ["a.1x1.mp4", "a.json"]
    assert probe(out / "a.1x1.mp4").width == 96


def test_the_contact_sheet_artifact_stays_under_prefects_event_limit(tmp_path):
    """A contact sheet of many items is tall; its artifact (a JPEG data URI) is scaled down
    until the JPEG fits ARTIFACT_IMAGE_BYTES, keeping its proportions (Prefect refuses to
    publish an event over 1.5 MB, with a warning on the run's console)."""
    import base64
    import io

    from flows.run import ARTIFACT_IMAGE_BYTES, _data_uri

    rng = np.random.default_rng(0)
    tall = tmp_path / "tall.jpg"  # noise: about the hardest picture to compress
    Image.fromarray(rng.integers(0, 256, (12000, 500, 3), dtype=np.uint8)).save(tall, quality=90)
    small = draw_image(tmp_path / "small.png", (300, 200))
    for path, fits in ((tall, False), (small, True)):
        uri = _data_uri(path)
        assert uri.startswith("data:image/jpeg;base64,")
        data = base64.b64decode(uri.split(",", 1)[1])
        assert len(data) <= ARTIFACT_IMAGE_BYTES
        with Image.open(io.BytesIO(data)) as im, Image.open(path) as original:
            assert im.width <= 1024
            assert im.width / im.height == pytest.approx(original.width / original.height, rel=0.02)
            assert (im.size == original.size) == fits  # a small picture is not shrunk


@pytest.mark.usefixtures("prefect_server")
def test_the_items_table_artifact_is_capped_with_failures_first(monkeypatch):
    """A catalog's items table (and list of failures) would outgrow Prefect's event limit: the
    table shows the first ARTIFACT_TABLE_ROWS items, failures first, the summary the first
    ARTIFACT_FAILURES failures, and both say where the rest are."""
    import uuid

    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from prefect.runtime import flow_run

    import flows.run

    monkeypatch.setattr(flows.run, "ARTIFACT_TABLE_ROWS", 3)
    monkeypatch.setattr(flows.run, "ARTIFACT_FAILURES", 1)
    items = [{"id": f"i{n}", "status": "failed" if n in (3, 4) else "done", "reason": "new", "seconds": 1.0,
              "gpu_seconds": 0.0, "metrics": {}, "outputs": [f"i{n}.mp4"]} for n in range(5)]
    summary = {"run_id": uuid.uuid4().hex, "job": "capped", "items": items, "output": "out", "seconds": 1.0,
               "gpu_seconds": 0.0, "counts": {"done": 3, "skipped": 0, "failed": 2}, "contact_sheet": None}

    @flow
    def report() -> str:
        flows.run._artifacts(summary)
        return str(flow_run.id)

    run_id = report()
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])))
    (table,) = [a for a in artifacts if a.key == "framefold-items"]
    rows = json.loads(table.data) if isinstance(table.data, str) else table.data
    assert [(r["item"], r["status"]) for r in rows] == [("i3", "failed"), ("i4", "failed"), ("i0", "done")]
    assert "the first 3 of 5, failures first" in table.description
    (markdown,) = [a for a in artifacts if a.key == "framefold-summary"]
    assert "- `i3`: new" in markdown.data and "`i4`" not in markdown.data and "… and 1 more" in markdown.data
