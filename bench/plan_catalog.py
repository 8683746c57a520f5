"""How long validating and planning a large catalog takes.

Builds a realistic synthetic catalog in a temporary folder — ``--rows`` rows (default
10,000) of sku, image_path (pointing at 20 distinct real PNG files), caption, category,
updated_at (a timestamp) and seed, plus a per-row ``motion.amplitude`` override — and a
manifest that maps it, then times:

* ``load_manifest`` (read, filter, resolve and validate every row), in this process;
* ``framefold plan --json``, as a user runs it: a fresh process, Python start-up included;
  and again inside this process, to separate validating and planning from start-up.

Both are run once without and once with a ``catalog.filter``. Usage::

    .venv/bin/python bench/plan_catalog.py [--rows 10000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

IMAGES = 20
CATEGORIES = ("mugs", "bowls", "plates", "vases", "lamps")
FILTER = "category = 'mugs' AND updated_at > '2026-11-01'"


def build(folder: Path, rows: int) -> tuple[Path, Path]:
    """Write images/, catalog.parquet and two manifests (all rows, filtered) into `folder`."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    import yaml
    from PIL import Image

    rng = np.random.default_rng(0)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for n in range(IMAGES):
        pixels = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels, "RGB").save(folder / "images" / f"product-{n:02d}.png")
    start = datetime(2026, 9, 1, tzinfo=timezone.utc)
    table = pa.table(
        {
            "sku": [f"sku-{n:06d}" for n in range(rows)],
            "image_path": [f"images/product-{n % IMAGES:02d}.png" for n in range(rows)],
            "caption": [f"product {n}: a slow turn, soft light" for n in range(rows)],
            "category": [CATEGORIES[n % len(CATEGORIES)] for n in range(rows)],
            "updated_at": pa.array(
                [start + timedelta(minutes=int(m)) for m in rng.integers(0, 120 * 24 * 60, rows)],
                pa.timestamp("us", tz="UTC"),
            ),
            "seed": pa.array(rng.integers(0, 2**31, rows), pa.int64()),
            "amp": pa.array([None if n % 3 else 0.02 for n in range(rows)], pa.float64()),
        }
    )
    pq.write_table(table, folder / "catalog.parquet")
    manifest = {
        "version": 1,
        "name": "bench",
        "output": "out",
        "defaults": {"fps": 24, "duration": 2.0, "size": [256, 256], "loop": True, "window": {"length": 16, "overlap": 4}},
        "catalog": {
            "path": "catalog.parquet",
            "columns": {"id": "sku", "image": "image_path", "prompt": "caption", "seed": "seed", "motion.amplitude": "amp"},
        },
    }
    everything = folder / "all.yaml"
    everything.write_text(yaml.safe_dump(manifest, sort_keys=False))
    manifest["catalog"]["filter"] = FILTER
    filtered = folder / "filtered.yaml"
    filtered.write_text(yaml.safe_dump(manifest, sort_keys=False))
    return everything, filtered


def time_load(path: Path) -> tuple[int, float]:
    from manifests import load_manifest

    started = time.perf_counter()
    job = load_manifest(path)
    return len(job.items), time.perf_counter() - started


def time_plan_cli(path: Path) -> tuple[int, float]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "flows.cli", "plan", str(path), "--json"],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False,
    )
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"framefold plan failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout)["totals"]["items"], seconds


def time_plan_in_process(path: Path) -> float:
    """`framefold plan --json` through flows.cli.main in this (warm) process: no start-up, no imports."""
    import contextlib
    import io

    from flows.cli import main as cli

    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        code = cli(["plan", str(path), "--json"])
    if code != 0:
        raise SystemExit(f"framefold plan failed ({code})")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--keep", type=Path, help="build the catalog here and keep it (default: a temporary folder)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="framefold-bench-") as tmp:
        folder = args.keep or Path(tmp)
        started = time.perf_counter()
        everything, filtered = build(folder, args.rows)
        print(f"rows: {args.rows} ({IMAGES} distinct images), built in {time.perf_counter() - started:.2f} s")
        for label, path in (("all rows", everything), (f"filter {FILTER!r}", filtered)):
            time_load(path)  # warm: imports and the file cache, as in a CLI process that is already running
            items, load_s = time_load(path)
            planned, plan_s = time_plan_cli(path)
            assert planned == items, (planned, items)
            time_plan_in_process(path)  # warm the imports
            warm_s = time_plan_in_process(path)
            print(
                f"{label}: {items} items; load_manifest {load_s:.2f} s; framefold plan --json {plan_s:.2f} s "
                f"in a fresh process ({warm_s:.2f} s of it validating and planning, the rest start-up and imports)"
            )


if __name__ == "__main__":
    main()
