"""The same frames whatever the cluster: another worker count, another in-flight
bound, and (fake) GPUs scheduling the windows. Runs the real CLI in a fresh process
(its own Ray, on the session's Prefect server), so it is slow."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from flows.cli import main
from tests.fixtures.tiny_models import build_tiny_pipeline

pytestmark = pytest.mark.slow


def test_worker_count_and_fake_gpus_do_not_change_frames(small_job, tmp_path, shared, capsys):
    # beside the three motion items, a tiny model asked for float16
    build_tiny_pipeline("animatediff", "t2v", small_job.parent / "models" / "ad")
    doc = yaml.safe_load(small_job.read_text())
    doc["items"].append({"id": "d", "backend": "diffusers", "prompt": "a red ball", "loop": False, "steps": 2,
                         "model": {"family": "animatediff", "path": "models/ad", "dtype": "float16"},
                         "size": [32, 32], "frames": 14, "window": {"length": 8, "overlap": 2}})
    small_job.write_text(yaml.safe_dump(doc))
    out = small_job.parent / "out"
    assert main(["run", str(small_job)]) == 0  # in this process: 2 CPUs, no GPU
    reference = {i: json.loads((out / f"{i}.json").read_text()) for i in "abcd"}
    assert {r["device"]["gpus_per_window"] for r in reference.values()} == {0.0}

    env = {
        **os.environ,
        "FRAMEFOLD_RAY_NUM_CPUS": "1",
        "FRAMEFOLD_RAY_NUM_GPUS": "2",  # fake GPUs: Ray schedules by them, torch stays on CPU
        "FRAMEFOLD_WINDOWS_IN_FLIGHT": "1",
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_API_URL": shared.prefect_api_url,
    }
    for inherited in ("RAY_ADDRESS", "FRAMEFOLD_RAY_ADDRESS"):  # its own Ray
        env.pop(inherited, None)
    other = tmp_path / "other"
    proc = subprocess.run(
        [sys.executable, "-m", "flows.cli", "run", str(small_job), "--out", str(other), "--json"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    for item, ref in reference.items():
        got = json.loads((other / f"{item}.json").read_text())
        assert got["device"]["cluster_gpus"] == 2.0 and got["device"]["gpus_per_window"] == 1.0
        assert got["video"]["frames_sha256"] == ref["video"]["frames_sha256"], item
        # given a (fake) GPU torch cannot use, the workers computed on their CPUs, the model in float32
        assert got["device"]["compute_devices"] == ref["device"]["compute_devices"] == ["cpu"], got["device"]
        assert got["device"]["compute_dtype"] == ("float32" if item == "d" else None), got["device"]
    assert main(["inspect", str(other / "d.mp4")]) == 0
    shown = " ".join(capsys.readouterr().out.split())  # the console wraps long lines
    assert "dtype float16, scheduler DDIMScheduler (computed in float32 on CPU)" in shown, shown
