"""Learned upscaling: random-weight spandrel models (RRDBNet, SRVGGNetCompact, SPAN) built from
spandrel's own architecture classes, saved as safetensors and loaded through framefold's loader;
tiling against whole frames; the manifest rules; a run end to end on the actor pool."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import save_file

from flows.cli import main
from tasks.encode import probe
from tasks.superres import TiledUpscaler, UpscalerError, describe, import_spandrel
from tests.conftest import draw_image, write_manifest

# Tiled output differs from whole-frame output only where a tile's border effects reach
# past the cross-faded overlap, so the tolerance depends on the model's receptive field:
# (architecture, tile, overlap) -> (max, mean) abs difference in 8-bit levels, measured here.
TILED_TOLERANCE = {
    ("RRDBNet", 32, 8): (2, 0.1),
    ("RRDBNet", 32, 16): (2, 0.1),
    ("SRVGGNetCompact", 32, 8): (2, 0.1),
    ("SRVGGNetCompact", 32, 16): (2, 0.1),
    ("SPAN", 64, 32): (8, 0.02),  # a wider receptive field needs a wider overlap
}


def _architectures():
    import_spandrel()
    from spandrel.architectures.Compact import Compact
    from spandrel.architectures.ESRGAN import ESRGAN
    from spandrel.architectures.SPAN import SPAN

    return {
        "RRDBNet": (lambda: ESRGAN(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=4), "ESRGAN", 4),
        "SRVGGNetCompact": (lambda: Compact(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=2, upscale=4),
                            "RealESRGAN Compact", 4),
        "SPAN": (lambda: SPAN(num_in_ch=3, num_out_ch=3, feature_channels=8, upscale=2), "SPAN", 2),
    }


def save_model(path: Path, name: str, seed: int = 0) -> Path:
    """A random-weight model of spandrel's architecture ``name``, saved as safetensors."""
    torch.manual_seed(seed)
    net = _architectures()[name][0]()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return path


def _photo_frames(k: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """Smooth, photo-like uint8 frames (k, H, W, 3)."""
    rng = np.random.default_rng(seed)
    coarse = torch.tensor(rng.random((k, 3, height // 6, width // 6)), dtype=torch.float32)
    fine = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)
    return (fine.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("sr")
    return {name: save_model(folder / f"{name}.safetensors", name) for name in _architectures()}


@pytest.mark.parametrize("name", ["RRDBNet", "SRVGGNetCompact", "SPAN"])
def test_loader_reads_architecture_scale_and_digest(models, name):
    info = describe(models[name])
    _, architecture, scale = _architectures()[name]
    assert (info.architecture, info.scale) == (architecture, scale)
    assert info.weights_digest == "sha256:" + hashlib.sha256(models[name].read_bytes()).hexdigest()


@pytest.mark.parametrize("name", ["RRDBNet", "SRVGGNetCompact", "SPAN"])
def test_whole_frames_equal_the_model_applied_frame_by_frame(models, name):
    """Untiled framefold output == spandrel's own descriptor called on each frame alone."""
    spandrel = import_spandrel()
    frames = _photo_frames(3, 24, 32)
    ours = TiledUpscaler(models[name], tile=0, overlap=0)(frames)
    scale = describe(models[name]).scale
    assert ours.shape == (3, 24 * scale, 32 * scale, 3) and ours.dtype == np.uint8
    reference = spandrel.ModelLoader().load_from_file(models[name]).eval()
    with torch.inference_mode():
        for frame, got in zip(frames, ours):
            x = torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 255
            want = (reference(x)[0].permute(1, 2, 0) * 255).round().clamp(0, 255).to(torch.uint8).numpy()
            assert np.abs(want.astype(int) - got.astype(int)).max() <= 1  # batched vs single-frame float order
    assert ours.std() > 2  # random weights still make an image, not a constant


@pytest.mark.parametrize(("name", "tile", "overlap"), list(TILED_TOLERANCE))
def test_tiled_equals_untiled_within_tolerance(models, name, tile, overlap):
    frames = _photo_frames(2, 144, 160, seed=1)
    whole = TiledUpscaler(models[name], tile=0, overlap=0)(frames).astype(int)
    tiler = TiledUpscaler(models[name], tile=tile, overlap=overlap)
    assert len(tiler.grid(144, 160)) >= 9  # really tiled
    diff = np.abs(tiler(frames).astype(int) - whole)
    most, mean = TILED_TOLERANCE[(name, tile, overlap)]
    assert diff.max() <= most and diff.mean() <= mean, (diff.max(), diff.mean())
    # without the overlap the tile borders show: the tolerance is not vacuous
    hard = np.abs(TiledUpscaler(models[name], tile=tile, overlap=0)(frames).astype(int) - whole)
    assert hard.mean() > 2 * diff.mean()


def test_tile_grid_depends_only_on_the_frame_size(models):
    tiler = TiledUpscaler(models["SRVGGNetCompact"], tile=32, overlap=8)
    grid = tiler.grid(72, 80)
    assert grid == tiler.grid(72, 80) and grid[0] == (0, 0, 32, 32) and grid[-1] == (40, 48, 32, 32)
    assert TiledUpscaler(models["SRVGGNetCompact"], tile=128, overlap=8).grid(72, 80) == [(0, 0, 72, 80)]


def test_spandrel_import_leaves_no_torchvision_behind():
    import importlib.util
    import sys

    import_spandrel()
    if importlib.util.find_spec("torchvision") is None:
        assert "torchvision" not in sys.modules


def _doc(upscale: dict, **defaults) -> dict:
    return {"version": 1, "name": "sr", "output": "out",
            "defaults": {"size": [48, 32], "frames": 10, "fps": 10, "window": {"length": 6, "overlap": 2},
                         "upscale": upscale, **defaults},
            "items": [{"id": "a", "image": "a.png"}]}


def test_manifest_rules_for_a_model_upscaler(tmp_path, capsys):
    draw_image(tmp_path / "a.png", (48, 32))
    save_model(tmp_path / "sr.safetensors", "SRVGGNetCompact")
    (tmp_path / "sr.pth").write_bytes(b"\x80\x04pickle")
    import_spandrel()
    from spandrel.architectures.DnCNN import DnCNN

    save_file({k: v.contiguous() for k, v in DnCNN(in_nc=3, out_nc=3, nc=8, nb=3).state_dict().items()},
              str(tmp_path / "denoise.safetensors"))
    (tmp_path / "cut.safetensors").write_bytes((tmp_path / "sr.safetensors").read_bytes()[:200])
    cases = {
        "no path": ({"method": "model"}, "upscale.path", "needs path"),
        "pickle": ({"method": "model", "path": "sr.pth"}, "upscale.path", "safetensors"),
        "missing": ({"method": "model", "path": "nope.safetensors"}, "upscale.path", "not found"),
        "escape": ({"method": "model", "path": "../sr.safetensors"}, "upscale.path", "escapes"),
        "not sr": ({"method": "model", "path": "denoise.safetensors"}, "upscale.path", "super-resolution model"),
        "truncated": ({"method": "model", "path": "cut.safetensors"}, "upscale.path", "damaged"),
        "overlap": ({"method": "model", "path": "sr.safetensors", "tile": 16, "tile_overlap": 16}, "upscale.tile_overlap", "< tile"),
        "path without model": ({"path": "sr.safetensors"}, "upscale.path", "method: model"),
        "factor above scale": ({"method": "model", "path": "sr.safetensors", "factor": 8}, "upscale.factor", "×4"),
    }
    for name, (upscale, field, words) in cases.items():
        manifest = write_manifest(tmp_path, _doc(upscale), f"{name.replace(' ', '-')}.yaml")
        assert main(["validate", str(manifest)]) == 2, name
        err = capsys.readouterr().err
        # set in defaults: reported once, at defaults, whether the loader or the preflight finds it
        assert f"(1 problem):\n{manifest}: defaults.{field}: " in err and words in err, (name, err)
    # the factor defaults to the model's scale
    manifest = write_manifest(tmp_path, _doc({"method": "model", "path": "sr.safetensors"}), "ok.yaml")
    assert main(["plan", str(manifest), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["items"][0]["output_size"] == [192, 128]


@pytest.mark.usefixtures("ray_cluster", "prefect_server")
@pytest.mark.timeout(300)  # a resource deadlock would hang: fail instead
def test_run_upscales_on_the_pool_with_digest_and_flicker_in_provenance(tmp_path, capsys, monkeypatch):
    draw_image(tmp_path / "a.png", (48, 32), seed=5)
    model = save_model(tmp_path / "models" / "x4.safetensors", "SRVGGNetCompact")
    doc = _doc({"method": "model", "path": "models/x4.safetensors", "tile": 24, "tile_overlap": 8},
               motion={"amplitude": 0.05})
    # two resampled items (Ray tasks needing a CPU each) between the two items on the model pool, whose two
    # actors hold both CPUs: run in manifest order, c and e would wait for CPUs the pool keeps for b
    monkeypatch.setenv("FRAMEFOLD_ACTORS", "2")
    for item_id in "ce":
        doc["items"].append({"id": item_id, "image": "a.png", "upscale": {"method": "lanczos", "factor": 1}})  # default path unused
    doc["items"].append({"id": "b", "image": "a.png", "upscale": {"factor": 2}})  # x4 model, x2 output
    manifest = write_manifest(tmp_path, doc)
    assert main(["run", str(manifest), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    out = tmp_path / "out"
    sizes = {"a": (192, 128), "b": (96, 64)}
    for item, (w, h) in sizes.items():
        info = probe(out / f"{item}.mp4")
        assert (info.width, info.height, info.frames) == (w, h, 10)
        record = json.loads((out / f"{item}.json").read_text())
        up = record["upscale"]["model"]
        assert up["weights_digest"] == "sha256:" + hashlib.sha256(model.read_bytes()).hexdigest()
        assert (up["architecture"], up["scale"], up["tile"], up["path"]) == ("RealESRGAN Compact", 4, 24, "models/x4.safetensors")
        flicker = record["metrics"]["flicker"]
        assert flicker["before_upscale"] > 0 and flicker["after_upscale"] > 0
        assert flicker["ratio"] == pytest.approx(flicker["after_upscale"] / flicker["before_upscale"], rel=1e-3)
        row = next(r for r in summary["items"] if r["id"] == item)
        assert row["metrics"]["flicker"] == flicker

    # new weights for the same path: the items that use them run again, said to be for the upscaler,
    # and their pixels change (the model made them); the Lanczos item is untouched
    pixels = {i: json.loads((out / f"{i}.json").read_text())["video"]["frames_sha256"] for i in "abc"}
    save_model(model, "SRVGGNetCompact", seed=1)
    assert main(["run", str(manifest), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert {r["id"]: r["reason"] for r in again["items"]} == {"a": "upscaler changed", "b": "upscaler changed",
                                                             "c": "unchanged", "e": "unchanged"}
    changed = {i: json.loads((out / f"{i}.json").read_text())["video"]["frames_sha256"] != pixels[i] for i in "abc"}
    assert changed == {"a": True, "b": True, "c": False}
    assert main(["run", str(manifest), "--json"]) == 0
    assert {r["status"] for r in json.loads(capsys.readouterr().out)["items"]} == {"skipped"}


@pytest.mark.usefixtures("ray_cluster")
def test_each_actor_loads_the_upscaler_once(models):
    import ray

    from tasks.pool import ActorPool

    pool = ActorPool({"backend": "motion"}, size=1, gpus=0)
    try:
        sr = {"path": str(models["SRVGGNetCompact"]), "tile": 16, "tile_overlap": 4}
        refs = [pool.upscale(sr, _photo_frames(2, 24, 32, seed=s)) for s in range(3)]
        results = ray.get(refs)
        assert [r.pixels.shape for r in results] == [(2, 96, 128, 3)] * 3
        assert ray.get(pool.actors[0].upscaler_loads.remote()) == 1
    finally:
        pool.close()
