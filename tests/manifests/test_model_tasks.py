"""A wan or cogvideox model directory is text- or image-to-video by its weights, not its
family: an item that gives an image to a text-to-video model (or none to an image-to-video
one) is refused by `framefold validate`, exit 2, naming the item, the field and the fix,
before any model is loaded (it failed at its first window, exit 1)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from PIL import Image

from flows.cli import main
from manifests.paths import model_tasks
from tests.fixtures.tiny_models import build_tiny_pipeline

CASES = {  # family: (window frames, size)
    "wan": (5, 32),
    "cogvideox": (9, 32),
}


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("models")
    for family in CASES:
        for task in ("t2v", "i2v"):
            build_tiny_pipeline(family, task, root / f"{family}-{task}")
    return root


def _validate(tmp_path: Path, models: Path, family: str, model_task: str, with_image: bool, capsys, monkeypatch):
    monkeypatch.setenv("FRAMEFOLD_MODEL_ROOT", str(models))
    frames, size = CASES[family]
    item = {"id": "shot", "prompt": "waves"}
    if with_image:
        Image.new("RGB", (40, 30), (200, 120, 40)).save(tmp_path / "still.png")
        item["image"] = "still.png"
    doc = {"version": 1, "name": "tasks", "output": "out",
           "defaults": {"backend": "diffusers", "model": {"family": family, "path": f"{family}-{model_task}"},
                        "frames": frames, "size": [size, size], "steps": 1,
                        "window": {"length": frames, "overlap": 0}},
           "items": [item]}  # fmt: skip
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(doc))
    capsys.readouterr()
    code = main(["validate", str(tmp_path / "job.yaml")])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.mark.parametrize("family", sorted(CASES))
def test_the_directory_says_what_it_does(models, family):
    assert model_tasks(models / f"{family}-t2v", family)[0] == ("t2v",)
    assert model_tasks(models / f"{family}-i2v", family)[0] == ("i2v",)
    assert model_tasks(models / f"{family}-i2v", "animatediff") is None  # the family decides alone there


@pytest.mark.parametrize("family", sorted(CASES))
@pytest.mark.parametrize(("model_task", "with_image", "fix"), [
    ("t2v", True, "is text-to-video (its transformer takes"),
    ("i2v", False, "is image-to-video (its transformer takes"),
])  # fmt: skip
def test_a_task_the_model_cannot_do_is_refused(tmp_path, models, family, model_task, with_image, fix, capsys,
                                               monkeypatch):
    code, out = _validate(tmp_path, models, family, model_task, with_image, capsys, monkeypatch)
    assert code == 2, out
    assert "job.yaml" in out and "shot" in out and "image" in out and fix in out, out
    assert "set image: PATH" in out if model_task == "i2v" else "remove image" in out, out


@pytest.mark.parametrize("family", sorted(CASES))
@pytest.mark.parametrize(("model_task", "with_image"), [("t2v", False), ("i2v", True)])
def test_a_task_the_model_does_validates(tmp_path, models, family, model_task, with_image, capsys, monkeypatch):
    code, out = _validate(tmp_path, models, family, model_task, with_image, capsys, monkeypatch)
    assert code == 0, out


def test_wan_ti2v_does_both(tmp_path, models):
    """Wan 2.2's TI2V: latent channels in, expand_timesteps in its model_index: text or image."""
    import shutil

    ti2v = tmp_path / "wan-ti2v"
    shutil.copytree(models / "wan-t2v", ti2v)
    index = json.loads((ti2v / "model_index.json").read_text())
    (ti2v / "model_index.json").write_text(json.dumps({**index, "expand_timesteps": True}))
    assert model_tasks(ti2v, "wan")[0] == ("t2v", "i2v")


def _doc(tmp_path: Path, family: str, path: str, frames: int = 9) -> Path:
    doc = {"version": 1, "name": "dirs", "output": "out",
           "defaults": {"backend": "diffusers", "model": {"family": family, "path": path}, "frames": frames,
                        "size": [32, 32], "steps": 1, "window": {"length": frames, "overlap": 0}},
           "items": [{"id": "shot", "prompt": "waves"}]}  # fmt: skip
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(doc))
    return tmp_path / "job.yaml"


def _refused(manifest: Path, capsys, *fragments: str) -> str:
    capsys.readouterr()
    assert main(["validate", str(manifest)]) == 2
    err = capsys.readouterr().err
    assert "job.yaml" in err and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    return err


def test_a_model_of_another_family_is_refused_naming_it(tmp_path, models, capsys, monkeypatch):
    """A cogvideox directory given as wan failed in the middle of loading (exit 1)."""
    monkeypatch.setenv("FRAMEFOLD_MODEL_ROOT", str(models))
    _refused(_doc(tmp_path, "wan", "cogvideox-t2v"), capsys, "model.family", "CogVideoXPipeline",
             "set model.family: cogvideox")


def test_a_model_of_no_family_is_refused_naming_its_class(tmp_path, models, capsys, monkeypatch):
    """A pipeline class no family runs (here a text-to-image one) failed at its first window (exit 1)."""
    import shutil

    shutil.copytree(models / "wan-t2v", tmp_path / "models" / "sd")
    index = tmp_path / "models" / "sd" / "model_index.json"
    index.write_text(json.dumps({**json.loads(index.read_text()), "_class_name": "StableDiffusionPipeline"}))
    monkeypatch.setenv("FRAMEFOLD_MODEL_ROOT", str(tmp_path / "models"))
    _refused(_doc(tmp_path, "wan", "sd"), capsys, "model.path", "is a StableDiffusionPipeline",
             "point model.path at a wan model (a Wan… pipeline")


def test_a_missing_component_folder_is_named(tmp_path, models, capsys, monkeypatch):
    import shutil

    shutil.copytree(models / "cogvideox-t2v", tmp_path / "models" / "cog")
    shutil.rmtree(tmp_path / "models" / "cog" / "vae")
    monkeypatch.setenv("FRAMEFOLD_MODEL_ROOT", str(tmp_path / "models"))
    _refused(_doc(tmp_path, "cogvideox", "cog"), capsys, "model.path", "no vae/ (AutoencoderKLCogVideoX, listed in model_index.json)",
             "save_pretrained")


def test_a_model_outside_the_model_root_names_the_setting_to_change(tmp_path, models, capsys, monkeypatch):
    monkeypatch.setenv("FRAMEFOLD_MODEL_ROOT", str(tmp_path / "elsewhere"))
    (tmp_path / "elsewhere").mkdir()
    err = _refused(_doc(tmp_path, "cogvideox", str(models / "cogvideox-t2v")), capsys, "FRAMEFOLD_MODEL_ROOT")
    assert "FRAMEFOLD_INPUT_ROOTS" not in err, err  # inputs' setting: no help for model weights
    monkeypatch.delenv("FRAMEFOLD_MODEL_ROOT")
    err = _refused(_doc(tmp_path, "cogvideox", str(models / "cogvideox-t2v")), capsys, "FRAMEFOLD_MODEL_ROOT")
    assert "FRAMEFOLD_INPUT_ROOTS" not in err, err


def _two_expert_wan(models: Path, dest: Path) -> Path:
    """The tiny wan with a second expert, as Wan 2.2 A14B is saved (transformer_2, boundary_ratio)."""
    import shutil

    shutil.copytree(models / "wan-t2v", dest)
    shutil.copytree(dest / "transformer", dest / "transformer_2")
    index = json.loads((dest / "model_index.json").read_text())
    (dest / "model_index.json").write_text(json.dumps(
        {**index, "transformer_2": index["transformer"], "boundary_ratio": 0.5}))
    return dest


def test_codenoise_on_a_two_expert_wan_is_refused(tmp_path, models, capsys, monkeypatch):
    """codenoise windows one transformer: on a model that switches experts it ran the first only."""
    _two_expert_wan(models, tmp_path / "models" / "wan22")
    monkeypatch.setenv("FRAMEFOLD_MODEL_ROOT", str(tmp_path / "models"))
    manifest = _doc(tmp_path, "wan", "wan22", frames=9)
    doc = yaml.safe_load(manifest.read_text())
    doc["defaults"].update(frames=13, window={"length": 9, "overlap": 5, "mode": "codenoise"})
    manifest.write_text(yaml.safe_dump(doc))
    _refused(manifest, capsys, "window.mode", "transformer_2", "use window.mode independent")
    doc["defaults"]["window"]["mode"] = "independent"
    manifest.write_text(yaml.safe_dump(doc))
    assert main(["validate", str(manifest)]) == 0


def test_a_codenoise_pipeline_keeps_the_loaded_settings(tmp_path, models):
    """Rebuilt around the windowed denoiser, the pipeline keeps wan's expand_timesteps (Wan 2.2 TI2V)."""
    import diffusers

    from tasks.codenoise import pipeline_settings

    ti2v = tmp_path / "ti2v"
    import shutil

    shutil.copytree(models / "wan-t2v", ti2v)
    index = json.loads((ti2v / "model_index.json").read_text())
    (ti2v / "model_index.json").write_text(json.dumps({**index, "expand_timesteps": True}))
    loaded = diffusers.WanPipeline.from_pretrained(ti2v)
    components = dict(loaded.components)
    settings = pipeline_settings(loaded, diffusers.WanPipeline, components)
    assert settings.get("expand_timesteps") is True
    assert diffusers.WanPipeline(**components, **settings).config.expand_timesteps is True


def test_variant_weights_need_model_variant_and_load_with_it(tmp_path, capsys, monkeypatch):
    """A model saved with save_pretrained(variant="fp16") has only *.fp16.safetensors files:
    without model.variant validate names the setting (it failed at run time); with it, it loads."""
    import diffusers

    from manifests import load_manifest
    from tasks.backends import identify, load, spec_of

    build_tiny_pipeline("wan", "t2v", tmp_path / "plain")
    pipe = diffusers.WanPipeline.from_pretrained(tmp_path / "plain")
    pipe.save_pretrained(tmp_path / "models" / "wan16", variant="fp16", safe_serialization=True)
    assert list((tmp_path / "models" / "wan16" / "transformer").glob("*.fp16.safetensors"))
    monkeypatch.setenv("FRAMEFOLD_MODEL_ROOT", str(tmp_path / "models"))
    manifest = _doc(tmp_path, "wan", "wan16", frames=5)
    _refused(manifest, capsys, "model.variant", "set model.variant: fp16", "transformer/")
    doc = yaml.safe_load(manifest.read_text())
    doc["defaults"]["model"]["variant"] = "fp16"
    manifest.write_text(yaml.safe_dump(doc))
    assert main(["validate", str(manifest)]) == 0
    spec = spec_of(load_manifest(manifest).items[0])
    assert load(spec).pipe.transformer is not None
    assert identify(spec)["variant"] == "fp16"


def test_a_cut_short_or_damaged_copy_is_named(tmp_path, models, capsys, monkeypatch):
    """A sharded transformer missing a shard, and a config that is not JSON: named at validate
    (both failed when the model was loaded, after the work had started)."""
    import diffusers
    import shutil

    sharded = tmp_path / "models" / "wan"
    diffusers.WanPipeline.from_pretrained(models / "wan-t2v").save_pretrained(sharded, max_shard_size="20KB")
    shards = sorted((sharded / "transformer").glob("*-of-*.safetensors"))
    assert len(shards) > 1
    monkeypatch.setenv("FRAMEFOLD_MODEL_ROOT", str(tmp_path / "models"))
    manifest = _doc(tmp_path, "wan", "wan", frames=5)
    assert main(["validate", str(manifest)]) == 0  # sharded and whole: fine
    shards[-1].unlink()
    _refused(manifest, capsys, "model.path", f"no transformer/{shards[-1].name}", "save_pretrained")
    shutil.rmtree(sharded)
    shutil.copytree(models / "wan-t2v", sharded)
    (sharded / "vae" / "config.json").write_text("{not json")
    _refused(manifest, capsys, "vae/config.json is not JSON")


def test_an_unknown_scheduler_is_refused_with_the_closest_name(tmp_path, models, capsys, monkeypatch):
    monkeypatch.setenv("FRAMEFOLD_MODEL_ROOT", str(models))
    manifest = _doc(tmp_path, "wan", "wan-t2v", frames=5)
    doc = yaml.safe_load(manifest.read_text())
    doc["defaults"]["model"]["scheduler"] = "UniPCMultiStepScheduler"
    manifest.write_text(yaml.safe_dump(doc))
    _refused(manifest, capsys, "model.scheduler", "'UniPCMultiStepScheduler' is not a diffusers scheduler",
             "did you mean UniPCMultistepScheduler?")
    doc["defaults"]["model"]["scheduler"] = "UniPCMultistepScheduler"
    manifest.write_text(yaml.safe_dump(doc))
    assert main(["validate", str(manifest)]) == 0


def test_variant_only_lists_a_model_once_and_sees_a_file_added(tmp_path):
    """A catalog's items share one model: its component folders are listed once, until a
    folder changes (a plain weights file added next to the fp16 one)."""
    import json
    import os

    from manifests import paths

    root = tmp_path / "m"
    (root / "unet").mkdir(parents=True)
    (root / "model_index.json").write_text(json.dumps({"_class_name": "AnimateDiffPipeline",
                                                       "unet": ["diffusers", "UNetMotionModel"]}))
    (root / "unet" / "diffusion_pytorch_model.fp16.safetensors").write_bytes(b"")
    assert paths.variant_only(root) == {"unet": "fp16"}
    listed = paths._kept_variants.cache_info().misses
    for _ in range(100):
        assert paths.variant_only(root) == {"unet": "fp16"}
    assert paths._kept_variants.cache_info().misses == listed  # not listed again
    (root / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    stat = (root / "unet").stat()
    os.utime(root / "unet", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # a coarse clock: mtime moves
    assert paths.variant_only(root) == {}
