"""The README's real-weights recipe, followed: its manifest as written, with a tiny random-weight
Wan saved under FRAMEFOLD_MODEL_ROOT by the name the recipe uses, validates and plans as the
recipe says; run with only steps and size made small, it makes the video."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from flows.cli import main
from tasks.encode import probe
from tests.fixtures.tiny_models import build_tiny_pipeline

README = Path(__file__).resolve().parents[2] / "README.md"


def _recipe_manifest() -> dict:
    text = README.read_text()
    section = text[text.index("### 1. Real weights"):text.index("### 2. A cluster")]
    (block,) = re.findall(r"```yaml\n(.*?)```", section, re.S)
    return yaml.safe_load(block)


@pytest.mark.slow
@pytest.mark.usefixtures("ray_cluster", "prefect_server")
def test_real_weights_recipe(tmp_path, monkeypatch, capsys):
    doc = _recipe_manifest()
    path = doc["defaults"]["model"]["path"]
    build_tiny_pipeline(doc["defaults"]["model"]["family"], "t2v", tmp_path / "models" / path)
    monkeypatch.setenv("FRAMEFOLD_MODEL_ROOT", str(tmp_path / "models"))
    manifest = tmp_path / "wan.yaml"
    manifest.write_text(yaml.safe_dump(doc, sort_keys=False))

    assert main(["validate", str(manifest)]) == 0
    assert main(["plan", str(manifest), "--json"]) == 0
    capsys.readouterr()
    assert main(["plan", str(manifest), "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["items"]
    assert (row["why"], row["windows"], row["frames"]) == ("new", 3, 97)

    # the one change for a CPU test: a tiny size and two steps (the tiny model's weights are random)
    doc["defaults"].update(size=[32, 32], steps=2)
    manifest.write_text(yaml.safe_dump(doc, sort_keys=False))
    assert main(["run", str(manifest)]) == 0
    video = tmp_path / doc["output"] / "harbour.mp4"
    info = probe(video)
    assert (info.width, info.height, info.frames) == (32, 32, 97)
    record = json.loads(video.with_suffix(".json").read_text())
    assert record["backend"]["family"] == "wan" and record["backend"]["weights_digest"].startswith("sha256:")
