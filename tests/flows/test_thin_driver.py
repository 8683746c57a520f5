"""The driver only orchestrates: a codenoise run (tiny AnimateDiff) loads no pipeline and
holds no model in the process that reads the manifest, and that process's peak memory is
a motion-only run's. Each run is `framefold run` in a fresh subprocess (on the session's Ray
and Prefect server), which reports what it imported and its peak RSS after the run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import Shared, draw_image
from tests.fixtures.tiny_models import build_tiny_pipeline
from tests.reliability.conftest import child_env

PROBE = r"""
import gc, json, resource, sys
from flows.cli import main
code = main(["run", sys.argv[1], "--json"])
import torch
modules = [m for m in sys.modules if m.split(".")[0] in ("diffusers", "transformers", "spandrel")
           or m == "tasks.codenoise"]
models = sum(isinstance(o, torch.nn.Module) for o in gc.get_objects())
print("PROBE " + json.dumps({"exit": code, "modules": modules, "models": models,
                             "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _driver(manifest: Path, tmp: Path, shared: Shared) -> dict:
    env = child_env(tmp, shared=shared, HF_HUB_OFFLINE="1", FRAMEFOLD_DIGEST_CACHE=str(tmp / "digests"))
    done = subprocess.run([sys.executable, "-c", PROBE, str(manifest)], env=env, cwd=Path(__file__).parents[2],
                          capture_output=True, text=True, timeout=900)
    line = [x for x in done.stdout.splitlines() if x.startswith("PROBE ")]
    assert line, done.stderr[-3000:]
    return json.loads(line[-1][len("PROBE "):])


@pytest.mark.slow
def test_a_codenoise_run_keeps_models_and_frames_off_the_driver(tmp_path, shared):
    build_tiny_pipeline("animatediff", "t2v", tmp_path / "ad")
    draw_image(tmp_path / "still.png", (64, 64), seed=1)
    common = {"fps": 8, "frames": 20, "size": [32, 32], "seed": 3}
    codenoise = {"version": 1, "name": "cn", "output": "out-cn",
                 "defaults": {**common, "backend": "diffusers", "steps": 2, "guidance": 7.5,
                              "model": {"family": "animatediff", "path": "ad"},
                              "window": {"length": 8, "overlap": 4, "mode": "codenoise"}},
                 "items": [{"id": f"clip-{n}", "prompt": "waves"} for n in range(2)]}
    motion = {"version": 1, "name": "mo", "output": "out-mo", "defaults": {**common, "backend": "motion"},
              "items": [{"id": f"still-{n}", "image": "still.png"} for n in range(2)]}
    for doc in (codenoise, motion):
        (tmp_path / f"{doc['name']}.yaml").write_text(yaml.safe_dump(doc))

    cn = _driver(tmp_path / "cn.yaml", tmp_path, shared)
    mo = _driver(tmp_path / "mo.yaml", tmp_path, shared)
    assert cn["exit"] == 0 and mo["exit"] == 0
    assert cn["modules"] == [] and cn["models"] == 0  # no pipeline, text encoder or VAE in the driver
    record = json.loads((tmp_path / "out-cn" / "clip-1.json").read_text())
    assert record["plan"]["mode"] == "codenoise" and record["video"]["frames"] == 20
    print(f"driver peak RSS: codenoise {cn['peak_rss_mib']:.0f} MiB, motion {mo['peak_rss_mib']:.0f} MiB")
    assert cn["peak_rss_mib"] <= mo["peak_rss_mib"] + 100, (cn, mo)
