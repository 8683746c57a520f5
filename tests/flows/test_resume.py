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
from tests.reliability.conftest import child_env

pytestmark = pytest.mark.slow


def _env(tmp_path, shared):
    # the session's Prefect server and Ray: what is under test is the run's own files, not their start
    return child_env(tmp_path, shared=shared, FRAMEFOLD_WINDOWS_IN_FLIGHT="1")


def test_sigkill_mid_item_then_rerun_reuses_windows(tmp_path, shared, capsys):
    draw_image(tmp_path / "long.png", (128, 128), seed=4)
    doc = {
        "version": 1, "name": "resume", "output": "out",
        "defaults": {"fps": 24, "frames": 120, "size": [128, 128], "loop": True,
                     "window": {"length": 8, "overlap": 2}, "motion": {"modes": 4}},
        "items": [{"id": "long", "image": "long.png"}],
    }
    manifest = write_manifest(tmp_path, doc)
    out = tmp_path / "out"
    cache = out / ".framefold-cache" / "windows"
    cmd = [sys.executable, "-m", "flows.cli", "run", str(manifest), "--json"]

    proc = subprocess.Popen(cmd, env=_env(tmp_path, shared), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
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

    # --force regenerates: no window is read from the cache (into another output, the cache copied there);
    # this and the rerun run in this process, on the same Prefect server and Ray
    forced_out = tmp_path / "forced"
    shutil.copytree(out / ".framefold-cache", forced_out / ".framefold-cache")
    capsys.readouterr()
    assert main(["run", str(manifest), "--json", "--force", "--out", str(forced_out)]) == 0
    (item,) = json.loads(capsys.readouterr().out)["items"]
    assert item["status"] == "done" and item["windows_reused"] == 0 and item["reason"] == "forced", item
    assert {p.name: p.read_bytes() for p in cache.glob("*/*")} == kept  # this output's cache untouched

    assert main(["run", str(manifest), "--json"]) == 0
    (item,) = json.loads(capsys.readouterr().out)["items"]
    assert item["status"] == "done" and item["windows_reused"] >= cached_before - 1  # the last may be half-written
    assert "reused" in item["reason"]
    record = json.loads((out / "long.json").read_text())
    assert record["plan"]["windows_reused"] == item["windows_reused"]
    assert not list(out.glob(".*.part")) and not list(cache.glob("*/*.npy"))  # cache dropped once done
    ids = read_ledger(out).column("row_id").to_pylist()
    assert len(ids) == len(set(ids)) == 1

    # the same frames as an undisturbed run: the forced one, which read no window from a cache
    clean = json.loads((forced_out / "long.json").read_text())
    assert clean["video"]["frames_sha256"] == record["video"]["frames_sha256"]
    assert clean["plan"]["windows_reused"] == 0
