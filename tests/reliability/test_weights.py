"""Model directories that must not be loaded: pickle weights (which run code when unpickled)
unless FRAMEFOLD_ALLOW_PICKLE=1, and damaged .safetensors files (a truncated download) — both
refused before any work with exit 2, naming the file, and no traceback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from flows.cli import main
from tests.fixtures.tiny_models import build_tiny_pipeline

WEIGHTS = "transformer/diffusion_pytorch_model.safetensors"


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """A real tiny Wan text-to-video pipeline, saved with save_pretrained (safetensors)."""
    root = tmp_path_factory.mktemp("weights")
    build_tiny_pipeline("wan", "t2v", root / "pristine")
    return root / "pristine"


@pytest.fixture
def project(tmp_path, model):
    shutil.copytree(model, tmp_path / "models" / "wan")
    doc = {"version": 1, "name": "weights", "output": "out",
           "defaults": {"backend": "diffusers", "fps": 8, "steps": 2, "seed": 1},
           "items": [{"id": "w", "model": {"family": "wan", "path": "models/wan"}, "prompt": "a ball",
                      "size": [32, 32], "frames": 5, "window": {"length": 5, "overlap": 0}}]}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(doc))
    return tmp_path


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _refused(project: Path, capsys, *names: str) -> str:
    before = _tree(project)
    messages = ""
    for command in ("validate", "run"):
        assert main([command, str(project / "job.yaml")]) == 2, command
        err = capsys.readouterr().err
        assert "job.yaml" in err and "model.path" in err and "Traceback" not in err, err
        for name in names:
            assert name in err, (name, err)
        messages += err
    assert _tree(project) == before, "a refused model left files behind"
    return messages


def test_the_pristine_model_validates(project, capsys):
    assert main(["validate", str(project / "job.yaml")]) == 0


@pytest.mark.parametrize("name", ["transformer/diffusion_pytorch_model.bin", "text_encoder/pytorch_model.pt",
                                  "vae/model.ckpt", "extra/weights.pth", "transformer/DIFFUSION_PYTORCH_MODEL.BIN"])
def test_pickle_weights_are_refused_unless_allowed(project, capsys, monkeypatch, name):
    pickled = project / "models" / "wan" / name
    pickled.parent.mkdir(parents=True, exist_ok=True)
    pickled.write_bytes(b"\x80\x04\x95 cos\nsystem\n(S'echo pwned'\ntR.")  # a pickle that would run a command
    message = _refused(project, capsys, name)
    assert "pickle" in message and "FRAMEFOLD_ALLOW_PICKLE" in message
    monkeypatch.setenv("FRAMEFOLD_ALLOW_PICKLE", "1")
    assert main(["validate", str(project / "job.yaml")]) == 0


@pytest.mark.parametrize(("damage", "words"), [
    (lambda b: b[: len(b) // 2], "truncated"),
    (lambda b: b[:-1], "truncated"),
    (lambda b: b[:5], "shorter than a safetensors header"),
    (lambda b: b"", "shorter than a safetensors header"),
    (lambda b: b"\xff" * 8 + b[8:], "header claims"),
    (lambda b: b[:8] + b"{not json" + b[17:], "unreadable safetensors header"),
], ids=["half", "last-byte", "5-bytes", "empty", "huge-header-length", "garbage-header"])  # fmt: skip
def test_damaged_safetensors_are_refused_naming_the_file(project, capsys, damage, words):
    weights = project / "models" / "wan" / WEIGHTS
    weights.write_bytes(damage(weights.read_bytes()))
    message = _refused(project, capsys, WEIGHTS)
    assert words in message


def test_a_pickle_in_a_symlinked_component_folder_is_refused(project, capsys, tmp_path):
    """A component linked from a shared folder is part of the model: its pickle is found too."""
    shared = tmp_path / "models" / "shared-transformer"
    shutil.move(project / "models" / "wan" / "transformer", shared)
    (project / "models" / "wan" / "transformer").symlink_to(shared, target_is_directory=True)
    assert main(["validate", str(project / "job.yaml")]) == 0  # linked, intact: fine
    (shared / "diffusion_pytorch_model.bin").write_bytes(b"\x80\x04N.")
    _refused(project, capsys, "transformer/diffusion_pytorch_model.bin")


def test_the_weights_digest_follows_symlinked_folders_and_counts_pickles(model, tmp_path, monkeypatch):
    from tasks.backends.weights import weights_digest

    monkeypatch.setenv("FRAMEFOLD_DIGEST_CACHE", str(tmp_path / "digests"))
    wan = tmp_path / "wan"
    shutil.copytree(model, wan)
    shutil.move(wan / "transformer", tmp_path / "shared")
    (wan / "transformer").symlink_to(tmp_path / "shared", target_is_directory=True)
    (wan / "loop").symlink_to(wan, target_is_directory=True)  # a link back up the tree is read once
    linked = weights_digest(wan)
    assert linked == weights_digest(model)  # the same files, linked or not
    data = bytearray((tmp_path / "shared" / "diffusion_pytorch_model.safetensors").read_bytes())
    data[-1] ^= 0xFF  # a weight changed in the shared folder
    (tmp_path / "shared" / "diffusion_pytorch_model.safetensors").write_bytes(bytes(data))
    changed = weights_digest(wan)
    assert changed != linked
    (tmp_path / "shared" / "extra.bin").write_bytes(b"\x80\x04N.")  # pickle weights, where allowed, count too
    assert weights_digest(wan) != changed


def test_allowing_pickle_still_loads_a_safetensors_model(project, monkeypatch):
    """FRAMEFOLD_ALLOW_PICKLE=1 allows pickle weights; it does not ask diffusers for them only."""
    from tasks.backends import load, spec_of
    from manifests import load_manifest

    monkeypatch.setenv("FRAMEFOLD_ALLOW_PICKLE", "1")
    item = load_manifest(project / "job.yaml").items[0]
    spec = spec_of(item)
    assert spec["allow_pickle"] is True
    assert load(spec).pipe.transformer is not None


def test_a_model_that_fails_to_load_fails_its_item_once_in_one_line(project, capsys):
    """Weights that do not fit their config pass every file check; loading them fails. The item
    fails with diffusers' reason in one line: the actor is not restarted to load it again, and
    no window is retried."""
    config = project / "models" / "wan" / "transformer" / "config.json"
    doc = json.loads(config.read_text())
    config.write_text(json.dumps({**doc, "num_layers": doc["num_layers"] + 1}))  # a layer with no weights
    assert main(["validate", str(project / "job.yaml")]) == 0
    capsys.readouterr()
    assert main(["run", str(project / "job.yaml"), "--json"]) == 1
    summary = json.loads(capsys.readouterr().out)
    (item,) = summary["items"]
    assert item["status"] == "failed" and item["reason"].startswith("cannot load WanPipeline from "), item
    assert "retries" not in item["reason"] and "Traceback" not in item["reason"] and "\n" not in item["reason"], item
