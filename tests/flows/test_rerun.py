"""The operator's loop on the demo: a first run, a rerun with everything current (no Ray, a
fraction of the time, still in the ledger), `plan` saying why each item would run, `inspect`
as a readable record, and third-party notices only with -v.

The two runs are separate `framefold run` processes, as a user starts them (no Prefect API
set: the first run starts a temporary local Prefect server and a local Ray)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from flows.cli import main
from tasks.provenance import read_ledger

EXAMPLES = Path(__file__).resolve().parents[2] / "manifests" / "examples"


def _env(tmp: Path, ray_tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PREFECT_") and k not in {"RAY_ADDRESS", "FRAMEFOLD_RAY_ADDRESS"}}
    env.update(PREFECT_HOME=str(tmp / "prefect-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               RAY_USAGE_STATS_ENABLED="0", RAY_TMPDIR=str(ray_tmp), FRAMEFOLD_RAY_NUM_CPUS="2")
    return env


def _run(manifest: Path, env: dict, *args: str) -> tuple[float, dict, str]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "flows.cli", "run", str(manifest), "--json", *args], env=env,
                          capture_output=True, text=True, timeout=900)
    seconds = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr[-3000:]
    return seconds, json.loads(proc.stdout), proc.stderr


@pytest.mark.slow
def test_rerun_of_the_current_demo_starts_no_ray_and_plan_says_why(tmp_path, capsys):
    folder = tmp_path / "demo"
    shutil.copytree(EXAMPLES / "images", folder / "images")
    manifest = folder / "demo.yaml"
    shutil.copy(EXAMPLES / "demo.yaml", manifest)
    ray_tmp = Path(tempfile.mkdtemp(prefix="ffr", dir="/tmp"))  # short: Ray's socket paths have a length limit
    env = _env(tmp_path, ray_tmp)
    try:
        first_s, first, first_err = _run(manifest, env)
        assert first["counts"] == {"done": 3, "skipped": 0, "failed": 0} and first["ray"]
        sessions = sorted(p.name for p in (ray_tmp / "ray").glob("session_2*"))
        assert sessions, "the first run started a local Ray under RAY_TMPDIR"
        assert "Token authentication" not in first_err  # Ray's notice only with -v

        sheet = folder / "out" / "demo" / "contact-sheet.jpg"
        sheet.unlink()  # a run that skips everything draws the sheet again too
        again_s, again, _ = _run(manifest, env)
        ratio = again_s / first_s
        print(f"demo: first run {first_s:.1f} s, rerun with every item current {again_s:.1f} s, ratio {ratio:.3f}",
              file=sys.__stderr__)  # shown by `pytest -s` (capsys holds stdout)
        assert again["counts"] == {"done": 0, "skipped": 3, "failed": 0}
        assert again["ray"] is None and again["flow_run_id"] is None  # no Ray, no Prefect
        assert again["contact_sheet"] == str(sheet) and sheet.stat().st_size > 0
        assert sorted(p.name for p in (ray_tmp / "ray").glob("session_2*")) == sessions  # no new Ray session
        assert ratio <= 0.25
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)

    # the rerun is in the ledger: one skipped row per output, under its own run id
    out = folder / "out" / "demo"
    rows = [r for r in read_ledger(out).to_pylist() if r["run_id"] == again["run_id"]]
    assert {(r["item_id"], r["status"]) for r in rows} == {(i, "skipped") for i in ("coffee-steam", "chelsea", "rocket")}
    # the summary's frames are the outputs' frames, as in the ledger (not 0: nothing was rendered)
    assert {i["id"]: i["frames"] for i in again["items"]} == {r["item_id"]: r["frames"] for r in rows if r["format"] == "mp4"}
    assert {i["id"]: i["frames"] for i in again["items"]} == {i["id"]: i["frames"] for i in first["items"]}
    assert (out / "report.html").is_file()

    # plan: current for everything, with a GPU-seconds estimate from the ledger (0 for current items)
    capsys.readouterr()
    assert main(["plan", str(manifest), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert {r["id"]: (r["action"], r["why"]) for r in plan["items"]} == {
        i: ("skip", "current") for i in ("coffee-steam", "chelsea", "rocket")}
    assert plan["totals"]["to_make"] == 0 and plan["totals"]["gpu_seconds_estimate"] == 0

    # ... then one change of each kind
    doc = yaml.safe_load(manifest.read_text())
    doc["items"][1]["prompt"] = "a cat purring"  # parameters
    doc["items"].append({"id": "coffee-2", "image": "images/coffee.jpg"})  # new
    manifest.write_text(yaml.safe_dump(doc, sort_keys=False))
    shutil.copy(folder / "images" / "chelsea.png", folder / "images" / "chelsea-copy.png")
    (folder / "images" / "rocket.jpg").write_bytes((folder / "images" / "coffee.jpg").read_bytes())  # input bytes
    (out / "coffee-steam.poster.jpg").unlink()  # an output gone
    assert main(["plan", str(manifest), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert {r["id"]: (r["action"], r["why"]) for r in plan["items"]} == {
        "coffee-steam": ("make", "output missing or damaged"),
        "chelsea": ("make", "parameters changed"),
        "rocket": ("make", "input changed"),
        "coffee-2": ("make", "new"),
    }
    estimates = {r["id"]: r["gpu_seconds_estimate"] for r in plan["items"]}
    assert all(e is not None and e >= 0 for e in estimates.values())  # the ledger has this backend's history
    assert main(["plan", str(manifest)]) == 0
    table = capsys.readouterr().out
    assert "parameters changed" in table and "input changed" in table and "a run would make 4 item(s)" in table
    (out / "rocket.json").unlink()  # its outputs are there, their record is not
    assert main(["plan", str(manifest), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert {r["id"]: r["why"] for r in plan["items"]} == {
        "coffee-steam": "output missing or damaged", "chelsea": "parameters changed",
        "rocket": "output without provenance record", "coffee-2": "new"}  # fmt: skip

    # inspect: a readable record, not Python dicts
    assert main(["inspect", str(out / "chelsea.mp4")]) == 0
    shown = capsys.readouterr().out
    assert "sha256 " in shown
    for label in ("prompt", "inputs", "model", "seed", "windows", "metrics", "credentials"):
        assert f"  {label}" in shown, label
    assert "'a cat breathing softly'" in shown and "{" not in shown
