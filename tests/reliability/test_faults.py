"""Faults: a Ray worker killed mid-window, the flow process killed at random points again and
again, the output filesystem refusing writes, ffmpeg missing or failing, and crashes between
the steps that commit an item. After each, outputs are whole (a video's sidecar describes it
exactly), the ledger is readable with one row per run and item, and a re-run completes."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from collections import Counter

import psutil
import pyarrow.parquet as pq
import pytest
import yaml

from flows.cli import main
from tasks import store
from tasks.encode import ffmpeg_exe, probe
from tasks.provenance import read_ledger
from tests.conftest import draw_image, write_manifest
from tests.reliability.conftest import assert_consistent, child_env, run_cmd, summary_of


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


# --- (a) a Ray worker SIGKILLed while it renders a window ------------------------------------
@pytest.mark.slow
def test_worker_killed_mid_window_is_retried_and_frames_are_unchanged(tmp_path, shared):
    draw_image(tmp_path / "still.png", (256, 256), seed=8)
    doc = {"version": 1, "name": "workerkill", "output": "out",
           "defaults": {"fps": 24, "frames": 120, "size": [320, 320], "loop": True,
                        "window": {"length": 24, "overlap": 4}},
           "items": [{"id": "slow", "image": "still.png"}]}
    manifest = write_manifest(tmp_path, doc)
    # an own Ray for the child (no RAY_ADDRESS): its workers are its descendants, and only those are killed
    env = child_env(tmp_path, FRAMEFOLD_RAY_NUM_CPUS="2", FRAMEFOLD_WINDOWS_IN_FLIGHT="2",
                    PREFECT_API_URL=shared.prefect_api_url)
    proc = subprocess.Popen(run_cmd(manifest), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    killed = None
    try:
        root = psutil.Process(proc.pid)
        deadline = time.monotonic() + 240
        while killed is None and time.monotonic() < deadline and proc.poll() is None:
            for p in root.children(recursive=True):
                try:
                    if "ray::render_window" in " ".join(p.cmdline()):
                        time.sleep(0.2)  # inside the window, not at its end
                        if "ray::render_window" in " ".join(p.cmdline()):
                            p.send_signal(signal.SIGKILL)
                            killed = p.pid
                            break
                except psutil.Error:
                    continue
            time.sleep(0.05)
        assert killed is not None, (f"no worker was seen rendering a window (run exit code {proc.poll()}, "
                                    f"{time.monotonic() - deadline + 240:.0f} s watched)")
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        _kill_group(proc)
    assert not psutil.pid_exists(killed) or psutil.Process(killed).status() == psutil.STATUS_ZOMBIE
    assert proc.returncode == 0, stderr[-3000:]
    (item,) = summary_of(stdout)["items"]
    assert item["status"] == "done", item
    record = json.loads((tmp_path / "out" / "slow.json").read_text())
    assert record["video"]["frames"] == 120

    # the same frames as an undisturbed run (in this process, on the session's Ray)
    assert main(["run", str(manifest), "--out", str(tmp_path / "clean")]) == 0
    clean = json.loads((tmp_path / "clean" / "slow.json").read_text())
    assert clean["video"]["frames_sha256"] == record["video"]["frames_sha256"]


# --- (b) the flow process SIGKILLed at random points, over and over ------------------------
@pytest.mark.slow
def test_flow_killed_at_random_points_then_completed(tmp_path, zygote):
    """Runs are forked from a pre-imported parent (zygote.py), so each kill costs the run's own
    time, not the imports. After a run that finished, the next starts a new version of the job
    (every item to make again); after a kill, the next resumes it (or, sometimes, --force redoes
    it all). Kill times are drawn over the length of a whole run (the longest one seen finishing)."""
    ids = [f"item-{n:02d}" for n in range(20)]
    for n in range(5):
        draw_image(tmp_path / "img" / f"{n}.png", (40, 40), seed=n)
    doc = {"version": 1, "name": "kills", "output": "out",
           "defaults": {"fps": 8, "frames": 8, "size": [32, 32], "seed": 0, "window": {"length": 4, "overlap": 1},
                        "upscale": {"factor": 2}},
           "items": [{"id": item, "image": f"img/{n % 5}.png"} for n, item in enumerate(ids)]}
    manifest = write_manifest(tmp_path, doc)
    out = tmp_path / "out"
    rng = random.Random(20261122)
    duration, new_version = 10.0, True  # a first guess of a whole run, then the longest seen
    kills, log = 0, []
    for cycle in range(80):
        if kills >= 10:
            break
        if new_version:
            doc["defaults"]["seed"] = cycle
            manifest.write_text(yaml.safe_dump(doc))
        force = ["--force"] if not new_version and rng.random() < 0.25 else []
        delay = rng.uniform(0.05, 1.0) * duration
        t0 = time.monotonic()
        pid = zygote.start(["run", str(manifest), "--json", *force])
        code = zygote.wait(delay)
        if code is None:
            assert zygote.kill(pid) == -signal.SIGKILL
            kills, new_version = kills + 1, False
            log.append(f"killed at {delay:.1f} s{' (--force)' if force else ''} [{time.monotonic() - t0:.1f}]")
        else:
            assert code == 0, zygote.stderr.read_text()[-3000:]
            took = time.monotonic() - t0
            duration, new_version = (took if new_version else max(duration, took)), True
            log.append(f"completed in {took:.1f} s")
        assert_consistent(out, ids, complete=False)  # after every kill: nothing torn, ledger readable
    assert kills >= 10, log

    # a clean run completes the last version; nothing is lost, nothing duplicated. It starts a
    # Ray of its own: the shared test cluster, after ten of its drivers were SIGKILLed, starts
    # a fresh worker for almost every task for a while (seen at ~6 s a window here).
    t0 = time.monotonic()
    code, stdout, stderr = zygote.run(["run", str(manifest), "--json"], timeout=600,
                                      env={"RAY_ADDRESS": None, "FRAMEFOLD_RAY_NUM_CPUS": "2"})
    log.append(f"final run {time.monotonic() - t0:.1f} s")
    print("\n".join(log))
    assert code == 0, stderr[-3000:]
    summary = summary_of(stdout)
    assert summary["counts"]["failed"] == 0 and len(summary["items"]) == 20
    records = assert_consistent(out, ids)
    assert not [p.name for p in out.iterdir() if p.name.endswith(".part")]
    for f in (out / "ledger").glob("*.parquet"):  # every file under a final ledger name is whole
        pq.read_table(f)
    rows = read_ledger(out).to_pylist()
    for item in ids:
        record = records[item]
        assert record["params"]["seed"] == doc["defaults"]["seed"]
        made = [r for r in rows if r["item_id"] == item and r["status"] == "done"
                and r["output_sha256"] == record["output"]["sha256"]]
        assert len(made) == 1, (item, made)  # the run that made the current output, recorded once
        assert made[0]["run_id"] == record["run_id"] and made[0]["content_key"] == record["content_key"]
        assert probe(out / f"{item}.mp4").frames == 8
    print(log)


# --- crashes between the steps that commit an item (deterministic) -------------------------
@pytest.fixture
def one_item(tmp_path):
    draw_image(tmp_path / "a.png", (32, 32))
    doc = {"version": 1, "name": "steps", "output": "out",
           "defaults": {"fps": 8, "frames": 8, "size": [32, 32], "window": {"length": 4, "overlap": 1}},
           "items": [{"id": "a", "image": "a.png"}]}
    return write_manifest(tmp_path, doc)


@pytest.mark.usefixtures("ray_cluster", "prefect_server")
def test_crash_after_the_video_is_committed_leaves_no_stale_sidecar(one_item, monkeypatch):
    out = one_item.parent / "out"
    assert main(["run", str(one_item)]) == 0

    def crash(*args, **kwargs):
        raise OSError("simulated crash between committing the video and writing its sidecar")

    monkeypatch.setattr(store, "write_json", crash)
    assert main(["run", str(one_item), "--force"]) == 1
    monkeypatch.undo()
    # the new video is in place; a sidecar left from the previous run would describe another file
    sidecar = out / "a.json"
    assert not sidecar.exists() or json.loads(sidecar.read_text())["output"]["sha256"] == store.sha256_file(out / "a.mp4")
    assert main(["run", str(one_item)]) == 0
    assert_consistent(out, ["a"])


@pytest.mark.usefixtures("ray_cluster", "prefect_server")
def test_killed_before_its_ledger_row_the_output_is_still_recorded(one_item):
    out = one_item.parent / "out"
    assert main(["run", str(one_item)]) == 0
    record = json.loads((out / "a.json").read_text())
    for f in (out / "ledger").iterdir():  # the state a kill after the sidecar, before the row, leaves
        f.unlink()
    assert main(["run", str(one_item)]) == 0  # skipped: the output is current
    rows = read_ledger(out).to_pylist()
    made = [r for r in rows if r["status"] == "done"]
    assert len(made) == 1 and made[0]["run_id"] == record["run_id"]
    assert made[0]["output_sha256"] == record["output"]["sha256"] and made[0]["frames"] == 8
    assert [r["status"] for r in rows if r["run_id"] != record["run_id"]] == ["skipped"]
    assert main(["run", str(one_item)]) == 0  # recovered once, not again
    assert Counter(r["status"] for r in read_ledger(out).to_pylist()) == {"done": 1, "skipped": 2}


# --- (c) the output filesystem refuses writes ("no space": RLIMIT_FSIZE) -------------------
@pytest.mark.slow
def test_file_size_limit_fails_the_item_cleanly(tmp_path, zygote):
    draw_image(tmp_path / "small.png", (32, 32), seed=1)
    draw_image(tmp_path / "big.png", (256, 256), seed=2)
    doc = {"version": 1, "name": "nospace", "output": "out",
           "defaults": {"fps": 12, "window": {"length": 8, "overlap": 2}},
           "items": [{"id": "small", "image": "small.png", "frames": 8, "size": [32, 32]},
                     {"id": "big", "image": "big.png", "frames": 32, "size": [192, 192], "upscale": {"factor": 2},
                      "motion": {"amplitude": 0.05}}]}
    manifest = write_manifest(tmp_path, doc)
    # RLIMIT_FSIZE in the run process: no file it (or its ffmpeg) writes may grow past 64 KiB (big.mp4 is ~120 KB)
    code, stdout, stderr = zygote.run(["run", str(manifest), "--json"], fsize=64 * 1024)
    assert code == 1, stderr[-3000:]
    assert "Traceback" not in stderr
    items = {i["id"]: i for i in summary_of(stdout)["items"]}
    assert items["small"]["status"] == "done"
    assert items["big"]["status"] == "failed"
    reason = items["big"]["reason"]
    assert "internal error" not in reason and ("file size limit" in reason or "too large" in reason.lower()), reason
    out = tmp_path / "out"
    assert not [p.name for p in out.iterdir() if "big" in p.name]  # no video, sidecar or .part
    rows = {r["item_id"]: r for r in read_ledger(out).to_pylist()}
    assert rows["big"]["status"] == "failed" and rows["small"]["status"] == "done"
    assert_consistent(out, ["small"])
    # with room again, the failed item is made and the finished one kept
    code, stdout, stderr = zygote.run(["run", str(manifest), "--json"])
    assert code == 0, stderr[-3000:]
    assert {i["id"]: i["status"] for i in summary_of(stdout)["items"]} == {"small": "skipped", "big": "done"}
    assert_consistent(out, ["small", "big"])


# --- (d) ffmpeg missing, or failing for one item -------------------------------------------
@pytest.fixture
def three_items(tmp_path):
    for n in range(3):
        draw_image(tmp_path / f"{n}.png", (32, 32), seed=n)
    doc = {"version": 1, "name": "ffmpeg", "output": "out",
           "defaults": {"fps": 8, "frames": 8, "size": [32, 32], "window": {"length": 4, "overlap": 1}},
           "items": [{"id": name, "image": f"{n}.png"} for n, name in enumerate(["first", "doomed", "last"])]}
    return write_manifest(tmp_path, doc)


@pytest.mark.slow
@pytest.mark.usefixtures("ray_cluster", "prefect_server")
def test_ffmpeg_missing_fails_every_item_with_a_clear_reason(three_items, monkeypatch, capsys):
    monkeypatch.setenv("FRAMEFOLD_FFMPEG", "/nonexistent/ffmpeg")
    assert main(["run", str(three_items), "--json"]) == 1
    summary = json.loads(capsys.readouterr().out)
    assert [i["status"] for i in summary["items"]] == ["failed"] * 3  # every item was tried
    for item in summary["items"]:
        assert "ffmpeg not found" in item["reason"] and "/nonexistent/ffmpeg" in item["reason"], item
    out = three_items.parent / "out"
    assert not [p.name for p in out.iterdir() if p.suffix in (".mp4", ".json", ".part")]
    assert [r["status"] for r in read_ledger(out).to_pylist()] == ["failed"] * 3


@pytest.mark.slow
@pytest.mark.usefixtures("ray_cluster", "prefect_server")
def test_ffmpeg_failing_fails_its_item_and_the_batch_continues(three_items, monkeypatch, capsys, tmp_path):
    real = ffmpeg_exe()
    script = tmp_path / "ffmpeg"
    script.write_text(f'#!/bin/sh\ncase "$*" in *doomed*) echo "disk on fire" >&2; exit 1;; esac\nexec "{real}" "$@"\n')
    script.chmod(0o755)
    monkeypatch.setenv("FRAMEFOLD_FFMPEG", str(script))
    assert main(["run", str(three_items), "--json"]) == 1
    monkeypatch.undo()
    items = {i["id"]: i for i in json.loads(capsys.readouterr().out)["items"]}
    assert items["first"]["status"] == items["last"]["status"] == "done"
    assert items["doomed"]["status"] == "failed"
    assert "ffmpeg exited with code 1" in items["doomed"]["reason"] and "disk on fire" in items["doomed"]["reason"]
    out = three_items.parent / "out"
    assert not [p.name for p in out.iterdir() if "doomed" in p.name]
    assert_consistent(out, ["first", "last"])
