"""Concurrency: two runs of one manifest at once write every output exactly once and intact, with
a consistent ledger; and a long batch runs in memory that does not grow with the item count."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest

from tasks.encode import probe
from tasks.provenance import read_ledger
from tests.conftest import draw_image, write_manifest
from tests.reliability.conftest import assert_consistent, child_env, run_cmd, summary_of

pytestmark = pytest.mark.slow


def test_two_simultaneous_runs_write_each_output_once(tmp_path, shared):
    ids = [f"item-{n}" for n in range(6)]
    for n in range(6):
        draw_image(tmp_path / "img" / f"{n}.png", (64, 48), seed=n)
    doc = {"version": 1, "name": "twice", "output": "out",
           "defaults": {"frames": 24, "fps": 12, "size": [64, 64], "window": {"length": 8, "overlap": 2},
                        "upscale": {"factor": 2}},
           "items": [{"id": item, "image": f"img/{n}.png"} for n, item in enumerate(ids)]}
    manifest = write_manifest(tmp_path, doc)
    env = child_env(tmp_path, shared=shared)
    runs = [subprocess.Popen(run_cmd(manifest), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    results = [(p.wait(timeout=300), *p.communicate()) for p in runs]
    for code, _, err in results:
        assert code == 0, err[-3000:]
    summaries = [summary_of(out) for _, out, _ in results]

    out = tmp_path / "out"
    records = assert_consistent(out, ids)
    rows = read_ledger(out).to_pylist()
    assert sorted(r["run_id"] for r in rows) == sorted([s["run_id"] for s in summaries] * len(ids))
    # exactly one run produced each item; the other found it current (it waited on the item's lock)
    done = Counter(r["item_id"] for r in rows if r["status"] == "done")
    skipped = Counter(r["item_id"] for r in rows if r["status"] == "skipped")
    assert done == Counter(ids) and skipped == Counter(ids), (done, skipped)
    producer = {r["item_id"]: r for r in rows if r["status"] == "done"}
    for item in ids:
        assert records[item]["run_id"] == producer[item]["run_id"]
        assert records[item]["output"]["sha256"] == producer[item]["output_sha256"]
        info = probe(out / f"{item}.mp4")
        assert (info.frames, info.width, info.height) == (24, 128, 128)
    assert not list(out.glob(".*.part"))


def _many(folder: Path, count: int) -> Path:
    for n in range(4):
        draw_image(folder / "img" / f"{n}.png", (24, 24), seed=n)
    doc = {"version": 1, "name": f"many-{count}", "output": "out",
           "defaults": {"fps": 8, "size": [16, 16], "window": {"length": 2, "overlap": 0}},
           "items": [{"id": f"i{n:04d}", "image": f"img/{n % 4}.png", "frames": 2 + n % 3} for n in range(count)]}
    return write_manifest(folder, doc)


def _peak_memory(cmd: list[str], env: dict) -> tuple[int, int, float, dict]:
    """Run ``cmd``; peak memory (bytes) of it with all its descendants (its own Ray: GCS, raylet
    and workers; ffmpeg), and of the run process alone, sampled every 0.25 s. PSS, not RSS: a
    child forked to exec ffmpeg shares the parent's pages for a moment, RSS would count them twice;
    and a vfork()ed child shares the very address space until it execs, so children still showing
    the run's own command line are skipped."""
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    root = psutil.Process(proc.pid)
    peak, own, done, at_peak = 0, 0, threading.Event(), {}

    def sample() -> None:
        nonlocal peak, own, at_peak
        while not done.wait(0.25):
            sizes = {}
            try:
                command = root.cmdline()  # read now: just after Popen it can still be this process's
            except psutil.Error:
                continue
            for p in [root, *root.children(recursive=True)]:
                try:
                    if p.pid != root.pid and p.cmdline() == command:
                        continue  # between fork and exec: the run's own memory
                    sizes[p.pid] = (p.name(), p.memory_full_info().pss)
                except psutil.Error:
                    pass
            own = max(own, sizes.get(root.pid, ("", 0))[1])
            if sum(v for _, v in sizes.values()) > peak:
                peak, at_peak = sum(v for _, v in sizes.values()), sizes

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        out, err = proc.communicate(timeout=900)
    finally:
        done.set()
        sampler.join()
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait()
    assert proc.returncode == 0, err[-3000:]
    print(sorted(((name, round(v / 2**20)) for name, v in at_peak.values()), key=lambda x: -x[1])[:8])
    return peak, own, time.monotonic() - t0, summary_of(out)


def test_memory_is_flat_in_item_count(tmp_path, shared):
    """30 items, then N (FRAMEFOLD_TEST_MANY_ITEMS; default 150, as 1,000 take about 3 min here):
    the peak memory of the run with its own Ray, and of the run process alone, stays within 1.5×."""
    results = {}
    for count in (30, int(os.environ.get("FRAMEFOLD_TEST_MANY_ITEMS", "150"))):
        manifest = _many(tmp_path / str(count), count)
        env = child_env(tmp_path / str(count), PREFECT_API_URL=shared.prefect_api_url,
                        FRAMEFOLD_RAY_NUM_CPUS="2", FRAMEFOLD_ITEMS_IN_FLIGHT="4")
        peak, own, seconds, summary = _peak_memory(run_cmd(manifest), env)
        assert summary["counts"] == {"done": count, "skipped": 0, "failed": 0}
        assert len(read_ledger(tmp_path / str(count) / "out")) == count
        results[count] = (peak, own, seconds)
    print({n: (f"{p / 2**20:.0f} MiB all", f"{o / 2**20:.0f} MiB run process", f"{s:.0f} s")
           for n, (p, o, s) in results.items()})
    (small, small_own, _), (large, large_own, _) = results.values()
    assert large <= 1.5 * small, results
    assert large_own <= 1.5 * small_own, results
