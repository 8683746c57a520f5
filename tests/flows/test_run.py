"""End to end: manifest → Prefect flow → Ray windows → stitch → upscale → ffmpeg → provenance."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from flows.cli import main
from tasks.encode import decode, probe, read_tags
from tasks.provenance import read_ledger
from tests.conftest import draw_image

pytestmark = pytest.mark.usefixtures("ray_cluster", "prefect_server")


def _frames(path, width, height):
    return np.stack(list(decode(path, width=width, height=height)))


def test_run_writes_video_sidecar_and_ledger_per_item(small_job, capsys):
    assert main(["run", str(small_job)]) == 0
    out = small_job.parent / "out"
    ledger = read_ledger(out)
    assert sorted(ledger.column("item_id").to_pylist()) == ["a", "b", "c"]
    assert set(ledger.column("status").to_pylist()) == {"done"}
    for item in "abc":
        video, sidecar = out / f"{item}.mp4", out / f"{item}.json"
        info = probe(video)
        assert (info.width, info.height, info.fps, info.frames) == (128, 128, 12.0, 24)
        assert (info.codec, info.pix_fmt) == ("h264", "yuv420p")
        record = json.loads(sidecar.read_text())
        import hashlib

        assert record["output"]["sha256"] == hashlib.sha256(video.read_bytes()).hexdigest()
        assert record["inputs"]["image"]["sha256"] == hashlib.sha256(
            (small_job.parent / record["inputs"]["image"]["path"]).read_bytes()
        ).hexdigest()
        for field in ("framefold_version", "manifest", "params", "seed", "plan", "upscale", "timings_s",
                      "libraries", "device", "digital_source_type", "started_at", "finished_at", "backend"):
            assert record[field] not in (None, {}, ""), field
        assert set(record["timings_s"]) >= {"generate", "stitch", "upscale", "encode", "plan"}
        assert record["libraries"]["torch"] and record["libraries"]["ray"] and record["libraries"]["prefect"]
        # the embedded record equals the sidecar minus the files' own hashes
        embedded = json.loads(read_tags(video)["framefold"])
        assert embedded == {k: v for k, v in record.items() if k not in ("output", "outputs")}
        assert record["outputs"] == [record["output"]] and record["output"]["path"] == f"{item}.mp4"
        assert len(_frames(video, 128, 128)) == 24
    # no temporary files left behind
    assert not list(out.glob(".*.part"))
    # ledger rows hold the sidecar's facts
    row = {r["item_id"]: r for r in ledger.to_pylist()}["a"]
    assert row["output_sha256"] == json.loads((out / "a.json").read_text())["output"]["sha256"]
    assert (row["frames"], row["width"], row["height"]) == (24, 128, 128)
    printed = capsys.readouterr().out
    assert "done 3, skipped 0, failed 0" in printed


def test_inspect_prints_provenance_from_the_video_alone(small_job, tmp_path, capsys):
    assert main(["run", str(small_job), "--only", "c"]) == 0
    video = small_job.parent / "out" / "c.mp4"
    lone = tmp_path / "elsewhere" / "copy.mp4"
    lone.parent.mkdir()
    shutil.copy(video, lone)  # no sidecar next to it
    capsys.readouterr()
    assert main(["inspect", str(lone), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["item"]["id"] == "c"
    assert record["video"]["frames"] == 24 and record["video"]["width"] == 128
    assert record["digital_source_type"].endswith("algorithmicMedia")
    assert record["params"]["motion"]["zoom"] == 0.05
    # weight-free quality metrics travel with the file (the motion backend renders each
    # frame from its time alone, so windows agree and seams are no larger than other steps)
    metrics = record["metrics"]
    assert set(metrics) >= {"median_step", "loop_closure_ratio", "seam_ratio", "colour_drift"}
    assert metrics["seam_ratio"] < 2.0 and len(metrics["colour_drift"]["windows"]) == len(record["plan"]["windows"])
    capsys.readouterr()
    assert main(["run", str(small_job), "--only", "c", "--force", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["items"][0]["metrics"]["seam_ratio"] == pytest.approx(metrics["seam_ratio"])


def test_rerun_is_deterministic_and_skips_unchanged(small_job):
    out = small_job.parent / "out"
    assert main(["run", str(small_job)]) == 0
    first = {i: json.loads((out / f"{i}.json").read_text())["video"]["frames_sha256"] for i in "abc"}
    assert main(["run", str(small_job)]) == 0
    ledger = read_ledger(out).to_pylist()
    runs = sorted({r["run_id"] for r in ledger})
    assert len(runs) == 2
    assert {r["status"] for r in ledger if r["run_id"] == runs[1]} == {"skipped"}
    assert main(["run", str(small_job), "--force"]) == 0
    again = {i: json.loads((out / f"{i}.json").read_text())["video"]["frames_sha256"] for i in "abc"}
    assert again == first
    # one row per item per run, never duplicated
    ids = [r["row_id"] for r in read_ledger(out).to_pylist()]
    assert len(ids) == len(set(ids)) == 9


def test_other_window_plans_give_the_same_frames(small_job):
    out = small_job.parent / "out"
    assert main(["run", str(small_job), "--only", "a", "b"]) == 0
    reference = {i: json.loads((out / f"{i}.json").read_text())["video"]["frames_sha256"] for i in "ab"}
    doc = yaml.safe_load(small_job.read_text())
    for length, overlap, weighting in ((5, 1, "flat"), (12, 6, "gaussian"), (24, 0, "cosine")):
        doc["defaults"]["window"] = {"length": length, "overlap": overlap, "weighting": weighting}
        for item in doc["items"]:
            item.pop("window", None)
        small_job.write_text(yaml.safe_dump(doc))
        assert main(["run", str(small_job), "--only", "a", "b", "--force"]) == 0
        got = {i: json.loads((out / f"{i}.json").read_text())["video"]["frames_sha256"] for i in "ab"}
        assert got == reference, (length, overlap, weighting)


def test_leftovers_of_a_killed_run_go_even_when_the_item_is_current(small_job):
    out = small_job.parent / "out"
    assert main(["run", str(small_job), "--only", "a"]) == 0
    leftovers = [out / ".a.mp4.0badc0de.part", out / ".a.json.12345678.part",
                 out / "..a.mp4.0badc0de.part.k2j4x9.signing"]  # a C2PA signing copy of a part
    for p in leftovers:
        p.write_bytes(b"half a file")
    keep = out / ".a.mp4.notours.part"  # not a name framefold makes
    keep.write_bytes(b"x")
    assert main(["run", str(small_job), "--only", "a", "--json"]) == 0
    assert not any(p.exists() for p in leftovers)
    assert keep.exists()


def test_what_ray_prints_during_a_run_stays_off_the_json(small_job, capsys, monkeypatch):
    """Ray prints what the cluster reports (a worker that died, …) to the driver's sys.stdout;
    during `run --json` that goes to stderr, so stdout is one JSON document."""
    import flows.run
    from ray._private.worker import print_to_stdstream

    real = flows.run.run_job

    def run_job(*args, **kwargs):  # Ray's own report, as its error listener prints it mid-run
        print_to_stdstream({"lines": ["A worker died or was killed while executing a task by an unexpected system "
                                      "error."], "pid": "raylet", "is_err": False}, ignore_prefix=False)
        return real(*args, **kwargs)

    monkeypatch.setattr(flows.run, "run_job", run_job)
    assert main(["run", str(small_job), "--only", "a", "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["counts"]["done"] == 1
    assert "A worker died or was killed" in err


def test_image_broken_after_validation_fails_only_its_item(small_job, capsys):
    from flows.run import run_job
    from manifests import load_manifest

    job = load_manifest(small_job)  # valid now; the still breaks before the run reads it
    (small_job.parent / "img" / "b.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    summary = run_job(job)
    assert summary["counts"] == {"done": 2, "skipped": 0, "failed": 1}
    out = small_job.parent / "out"
    assert (out / "a.mp4").is_file() and (out / "c.mp4").is_file()
    assert not (out / "b.mp4").exists() and not (out / "b.json").exists()
    assert not list(out.glob(".*.part"))
    rows = {r["item_id"]: r for r in read_ledger(out).to_pylist()}
    assert rows["b"]["status"] == "failed" and "b.jpg" in rows["b"]["reason"]
    assert rows["a"]["status"] == rows["c"]["status"] == "done"
    # validated again, the broken still is refused before any work, at its item
    capsys.readouterr()
    assert main(["run", str(small_job)]) == 2
    assert "items[1].image (item 'b'): b.jpg: " in capsys.readouterr().err


def test_loop_closes_seamlessly(small_job):
    # Motion large enough that a frame step (~2.5 levels) stands above H.264's own
    # error on this noisy synthetic image (~3 levels), so the decoded check is meaningful.
    doc = yaml.safe_load(small_job.read_text())
    doc["items"][0]["motion"] = {"amplitude": 0.06}
    small_job.write_text(yaml.safe_dump(doc))
    assert main(["run", str(small_job), "--only", "a"]) == 0
    out = small_job.parent / "out"
    frames = _frames(out / "a.mp4", 128, 128).astype(np.float64)
    steps = np.abs(np.diff(frames, axis=0)).mean(axis=(1, 2, 3))
    wrap = np.abs(frames[0] - frames[-1]).mean()
    assert steps.min() > 0  # it does move
    assert wrap <= 1.5 * np.median(steps)
    # the ratio recorded in provenance is measured on the frames before encoding
    record = json.loads((out / "a.json").read_text())
    recorded = record["metrics"]["loop_closure_ratio"]
    assert 0 < recorded <= 1.5
    assert record["plan"]["loop_start"] == {"rule": "first", "start_frame": 0}  # an image's loop starts at the still


def test_ledger_is_plain_parquet(small_job):
    assert main(["run", str(small_job), "--only", "a"]) == 0
    files = list((small_job.parent / "out" / "ledger").glob("*.parquet"))
    assert len(files) == 1  # the run's part files were compacted
    table = pq.read_table(files[0])
    assert table.num_rows == 1 and table.column("status").to_pylist() == ["done"]


def test_grayscale_palette_rgba_and_exif_inputs(tmp_path):
    from PIL import Image

    draw_image(tmp_path / "g.png", mode="L")
    draw_image(tmp_path / "p.png", mode="P")
    draw_image(tmp_path / "t.png", mode="RGBA")
    im = Image.open(draw_image(tmp_path / "base.jpg"))
    exif = im.getexif()
    exif[0x0112] = 6  # rotated 90° clockwise
    im.save(tmp_path / "r.jpg", exif=exif)
    doc = {
        "version": 1, "name": "formats", "output": "out",
        "defaults": {"frames": 8, "fps": 8, "size": [32, 32], "window": {"length": 8, "overlap": 2}},
        "items": [{"id": n, "image": f"{n}.{'jpg' if n == 'r' else 'png'}"} for n in "gptr"],
    }
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(doc))
    assert main(["run", str(tmp_path / "job.yaml")]) == 0
    record = json.loads((tmp_path / "out" / "r.json").read_text())
    assert record["inputs"]["image"]["image"]["exif_rotated"] is True


def test_only_runs_despite_a_broken_still_of_another_item(small_job, capsys):
    """--only asks for some items: a missing or corrupt still of an item not asked for does
    not refuse the run (a plain run still does, exit 2 naming that item)."""
    (small_job.parent / "img" / "b.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    (small_job.parent / "img" / "c.png").unlink()
    assert main(["run", str(small_job)]) == 2
    err = capsys.readouterr().err
    assert "item 'b'" in err and "item 'c'" in err
    assert main(["run", str(small_job), "--only", "a", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert [(i["id"], i["status"]) for i in summary["items"]] == [("a", "done")]
    assert main(["run", str(small_job), "--only", "a", "b"]) == 2  # asked for b: its still is the problem
    assert "item 'b'" in capsys.readouterr().err
