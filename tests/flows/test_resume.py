"""A run killed mid-item resumes: finished windows are reused, nothing partial is
left under a final name, the ledger has no duplicate rows, frames equal a clean run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from flows.cli import main
from tasks.provenance import read_ledger
from tests.conftest import draw_image, write_manifest

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_cluster", "prefect_server")]


def _env(tmp_path):
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "FRAMEFOLD_RAY_NUM_CPUS": "1",
           "FRAMEFOLD_WINDOWS_IN_FLIGHT": "1"}
    for inherited in ("PREFECT_API_URL", "RAY_ADDRESS", "FRAMEFOLD_RAY_ADDRESS"):
        env.pop(inherited, None)
    return env


def test_sigkill_mid_item_then_rerun_reuses_windows(tmp_path):
    draw_image(tmp_path / "long.png", (256, 256), seed=4)
    doc = {
        "version": 1, "name": "resume", "output": "out",
        "defaults": {"fps": 24, "frames": 120, "size": [256, 256], "loop": True,
                     "window": {"length": 8, "overlap": 2}, "motion": {"modes": 4}},
        "items": [{"id": "long", "image": "long.png"}],
    }
    manifest = write_manifest(tmp_path, doc)
    out = tmp_path / "out"
    cache = out / ".framefold-cache" / "windows"
    cmd = [sys.executable, "-m", "flows.cli", "run", str(manifest), "--json"]

    proc = subprocess.Popen(cmd, env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and len(list(cache.glob("*/*.npy"))) < 6:
            assert proc.poll() is None, "the run finished before it could be killed"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    cached_before = len(list(cache.glob("*/*.npy")))
    assert cached_before >= 6
    assert not (out / "long.mp4").exists() and not (out / "long.json").exists()
    kept = {p.name: p.read_bytes() for p in cache.glob("*/*")}

    # --force regenerates: no window is read from the cache (into another output, the cache copied there)
    forced_out = tmp_path / "forced"
    shutil.copytree(out / ".framefold-cache", forced_out / ".framefold-cache")
    forced = subprocess.run([*cmd, "--force", "--out", str(forced_out)], env=_env(tmp_path), capture_output=True,
                            text=True, timeout=400)
    assert forced.returncode == 0, forced.stderr[-2000:]
    (item,) = json.loads(forced.stdout[forced.stdout.index("{"):])["items"]
    assert item["status"] == "done" and item["windows_reused"] == 0 and item["reason"] == "forced", item
    assert {p.name: p.read_bytes() for p in cache.glob("*/*")} == kept  # this output's cache untouched

    rerun = subprocess.run(cmd, env=_env(tmp_path), capture_output=True, text=True, timeout=400)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    summary = json.loads(rerun.stdout[rerun.stdout.index("{"):])
    (item,) = summary["items"]
    assert item["status"] == "done" and item["windows_reused"] >= cached_before - 1  # the last may be half-written
    assert "reused" in item["reason"]
    record = json.loads((out / "long.json").read_text())
    assert record["plan"]["windows_reused"] == item["windows_reused"]
    assert not list(out.glob(".*.part")) and not list(cache.glob("*/*.npy"))  # cache dropped once done
    ids = read_ledger(out).column("row_id").to_pylist()
    assert len(ids) == len(set(ids)) == 1

    # the same frames as an undisturbed run
    assert main(["run", str(manifest), "--out", str(tmp_path / "clean")]) == 0
    clean = json.loads((tmp_path / "clean" / "long.json").read_text())
    assert clean["video"]["frames_sha256"] == record["video"]["frames_sha256"]
    assert clean["plan"]["windows_reused"] == 0
