"""The diffusers backend with tiny random-weight pipelines built from configs, saved with
save_pretrained and loaded back through framefold's own loader (offline, safetensors)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from flows.cli import main
from kernels.noise import derive_seed
from tasks.backends import Conditioning, WindowRequest, spec_of
from tasks.backends.diffusers_backend import DiffusersBackend
from tasks.encode import probe
from tests.conftest import draw_image
from tests.fixtures.tiny_models import build_tiny_pipeline

# (family, task) -> a legal small item for it: size, frames, window
CASES = {
    ("animatediff", "t2v"): {"size": [32, 32], "frames": 14, "window": {"length": 8, "overlap": 2}},
    ("svd", "i2v"): {"size": [32, 32], "frames": 10, "window": {"length": 6, "overlap": 2}},
    ("wan", "t2v"): {"size": [32, 32], "frames": 13, "window": {"length": 5, "overlap": 1}},
    ("wan", "i2v"): {"size": [32, 32], "frames": 13, "window": {"length": 5, "overlap": 1}},
    ("cogvideox", "t2v"): {"size": [32, 32], "frames": 17, "window": {"length": 9, "overlap": 1}},
    ("cogvideox", "i2v"): {"size": [32, 32], "frames": 17, "window": {"length": 9, "overlap": 1}},
}


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("project")
    for family, task in CASES:
        build_tiny_pipeline(family, task, root / "models" / f"{family}-{task}")
    draw_image(root / "still.png", (48, 40), seed=9)
    return root


def _digest(path: Path) -> str:
    """Written independently of tasks.backends.weights: every safetensors/json/txt/model file."""
    h = hashlib.sha256()
    for p in sorted(q for q in path.rglob("*") if q.is_file() and q.suffix in (".safetensors", ".json", ".txt", ".model")):
        h.update(str(p.relative_to(path)).encode() + b"\0" + p.read_bytes())
    return "sha256:" + h.hexdigest()


def _manifest(root: Path, family: str, task: str, **extra) -> Path:
    case = CASES[(family, task)]
    item = {"id": f"{family}-{task}", "model": {"family": family, "path": f"models/{family}-{task}"},
            "prompt": "a red ball bouncing", **case, **extra}
    if task == "i2v":
        item["image"] = "still.png"
    doc = {"version": 1, "name": f"d-{family}-{task}", "output": f"out-{family}-{task}",
           "defaults": {"backend": "diffusers", "fps": 8, "steps": 2, "guidance": 3.0, "seed": 11},
           "items": [item]}
    path = root / f"{family}-{task}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _item(path: Path):
    from manifests import load_manifest

    return load_manifest(path).items[0]


@pytest.mark.slow
@pytest.mark.usefixtures("ray_cluster", "prefect_server")
@pytest.mark.parametrize(("family", "task"), list(CASES), ids=[f"{f}-{t}" for f, t in CASES])
def test_flow_runs_each_family_end_to_end(models, family, task):
    manifest = _manifest(models, family, task)
    assert main(["run", str(manifest)]) == 0
    out = models / f"out-{family}-{task}"
    item_id = f"{family}-{task}"
    case = CASES[(family, task)]
    info = probe(out / f"{item_id}.mp4")
    assert (info.width, info.height, info.frames, info.fps) == (*case["size"], case["frames"], 8.0)
    record = json.loads((out / f"{item_id}.json").read_text())
    assert record["backend"]["family"] == family and record["backend"]["task"] == task
    assert record["backend"]["weights_digest"] == _digest(models / "models" / item_id)
    # a model animating a real photo makes a composite; from text alone, trained algorithmic media
    expected = "/compositeWithTrainedAlgorithmicMedia" if task == "i2v" else "/trainedAlgorithmicMedia"
    assert record["digital_source_type"].endswith(expected)
    assert record["params"]["steps"] == 2 and "motion" not in record["params"]
    assert record["device"]["compute_devices"] == ["cpu"] and record["device"]["compute_dtype"] == "float32"


@pytest.mark.parametrize(("family", "task"), [("animatediff", "t2v"), ("wan", "t2v"), ("cogvideox", "i2v")])
def test_noise_of_an_absolute_frame_does_not_depend_on_the_window(models, family, task):
    item = _item(_manifest(models, family, task))
    backend = DiffusersBackend(spec_of(item))
    image = torch.rand(3, 32, 32) if task == "i2v" else None
    cond = Conditioning(item.id, item.seed, image, None, item.params())
    t = backend.family.temporal
    layout_frames = 2 if backend.family.layout == "B C F H W" else 1
    a = backend.latents(WindowRequest(0, tuple(range(0, 9 if t > 1 else 8)), 8.0), cond)
    b = backend.latents(WindowRequest(1, tuple(range(4, 13 if t > 1 else 12)), 8.0), cond)
    # latent frame 1 (pixels 4..) of window b is latent frame 1 + 4/t of window a
    shift = 4 // t
    torch.testing.assert_close(a.select(layout_frames, shift), b.select(layout_frames, 0), rtol=0, atol=0)
    assert not torch.equal(a.select(layout_frames, 0), b.select(layout_frames, 0))


@pytest.mark.parametrize(("family", "task"), [("animatediff", "t2v"), ("wan", "i2v"), ("svd", "i2v")])
def test_single_window_equals_the_plain_pipeline(models, family, task):
    item = _item(_manifest(models, family, task))
    backend = DiffusersBackend(spec_of(item))
    image = torch.rand(3, 32, 32) if task == "i2v" else None
    cond = Conditioning(item.id, item.seed, image, None, item.params())
    window = WindowRequest(0, tuple(range(item.window.length)), 8.0)
    ours = backend.generate(window, cond)
    # the plain diffusers pipeline, loaded by diffusers itself, same latents and generator seed
    import diffusers

    pipe = diffusers.DiffusionPipeline.from_pretrained(models / "models" / item.id, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    kwargs = dict(height=32, width=32, num_frames=len(window.frames), num_inference_steps=2,
                  latents=backend.latents(window, cond), output_type="pt",
                  generator=torch.Generator().manual_seed(derive_seed(item.seed, item.id, "pipeline")))
    if family == "svd":
        kwargs.update(image=cond.pil_image(), min_guidance_scale=1.0, max_guidance_scale=3.0, fps=7,
                      decode_chunk_size=len(window.frames))
    else:
        kwargs.update(prompt="a red ball bouncing", guidance_scale=3.0)
        if family == "animatediff":
            kwargs["clip_skip"] = None
        if task == "i2v":
            kwargs["image"] = cond.pil_image()
    with torch.inference_mode():
        plain = pipe(**kwargs).frames[0]
    torch.testing.assert_close(ours, torch.as_tensor(plain).float(), rtol=0, atol=1e-5)  # same ops, same order


@pytest.mark.usefixtures("ray_cluster")
def test_model_loads_once_per_actor_across_items_and_windows(models):
    import ray

    from tasks.generate import generate_windows
    from tasks.pool import ActorPool

    item = _item(_manifest(models, "wan", "t2v"))
    pool = ActorPool(spec_of(item), size=1, gpus=0)
    try:
        for item_id in ("first", "second"):
            cond = Conditioning(item_id, 1, None, None, item.params())
            requests = [WindowRequest(i, tuple(range(4 * i, 4 * i + 5)), 8.0) for i in range(3)]
            frames = list(generate_windows(pool.submit, cond, requests, [0, 1, 2], in_flight=2))
            assert len(frames) == 3 and frames[0][1].pixels.shape == (5, 32, 32, 3)
        assert ray.get(pool.actors[0].loads.remote()) == 1
    finally:
        pool.close()


def test_pickle_weights_wrong_family_path_or_dtype_exit_2(models, tmp_path, capsys):
    import shutil

    base = _manifest(models, "wan", "t2v")
    doc = yaml.safe_load(base.read_text())
    cases = {
        "family": ({"family": "sora"}, "model.family"),
        "path": ({"path": "models/nope"}, "model.path"),
        "dtype": ({"dtype": "float8"}, "model.dtype"),
        "escape": ({"path": "../../.."}, "model.path"),
    }
    for name, (patch, field) in cases.items():
        d = json.loads(json.dumps(doc))
        d["items"][0]["model"].update(patch)
        path = models / f"bad-{name}.yaml"
        path.write_text(yaml.safe_dump(d))
        assert main(["validate", str(path)]) == 2, name
        assert field in capsys.readouterr().err, name
    pickled = models / "models" / "wan-pickled"
    shutil.copytree(models / "models" / "wan-t2v", pickled)
    (pickled / "transformer" / "diffusion_pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    d = json.loads(json.dumps(doc))
    d["items"][0]["model"]["path"] = "models/wan-pickled"
    path = models / "bad-pickle.yaml"
    path.write_text(yaml.safe_dump(d))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "pickle" in err and "diffusion_pytorch_model.bin" in err


def test_family_rules_are_enforced_not_rounded(models, capsys):
    doc = yaml.safe_load(_manifest(models, "wan", "t2v").read_text())
    for patch, field in (({"window": {"length": 6, "overlap": 1}}, "window.length"),
                         ({"size": [40, 40]}, "size"),
                         ({"window": {"length": 9, "overlap": 2}}, "window.overlap"),
                         ({"loop": True}, "loop")):
        d = json.loads(json.dumps(doc))
        d["items"][0].update(patch)
        path = models / "rule.yaml"
        path.write_text(yaml.safe_dump(d))
        assert main(["validate", str(path)]) == 2, patch
        assert field in capsys.readouterr().err, patch


@pytest.mark.usefixtures("ray_cluster", "prefect_server")
def test_outpaint_conditions_each_window_on_the_previous_windows_frames(models):
    import ray

    from manifests import load_manifest
    from tasks.generate import generate_windows, outpaint_windows, task_submitter
    from tasks.plan import plan_item

    manifest = _manifest(models, "svd", "i2v", window={"length": 6, "overlap": 2, "mode": "outpaint"})
    assert main(["run", str(manifest)]) == 0  # end to end through the flow
    out = models / "out-svd-i2v"
    assert probe(out / "svd-i2v.mp4").frames == CASES[("svd", "i2v")]["frames"]
    assert json.loads((out / "svd-i2v.json").read_text())["plan"]["mode"] == "outpaint"

    item = load_manifest(manifest).items[0]
    plan = plan_item(item)
    assert len(plan.windows) >= 2
    from tasks.media import load_image

    image, _ = load_image(item.image, size=item.size, fit=item.fit, background=item.background, max_pixels=10**8)
    cond = Conditioning(item.id, item.seed, image, None, item.params())
    real = task_submitter(spec_of(item), gpus=0)
    seen: dict[int, torch.Tensor] = {}

    def submit(window, cond_ref):  # the real submitter; notes the image each window was conditioned on
        seen[window.index] = ray.get(cond_ref).image
        return real(window, cond_ref)

    starts = [w.start for w in plan.windows]
    chained = {i: r.pixels for i, r in outpaint_windows(submit, cond, plan.requests(item.fps), starts)}
    order = sorted(range(len(starts)), key=starts.__getitem__)
    torch.testing.assert_close(seen[order[0]], image, rtol=0, atol=0)
    for before, after in zip(order, order[1:]):
        frame = chained[before][starts[after] - starts[before]]  # where `after` starts, as `before` drew it
        expected = torch.from_numpy(frame.copy()).permute(2, 0, 1).float() / 255
        torch.testing.assert_close(seen[after], expected, rtol=0, atol=0)
    # independent windows all start from the still: the first window is the same, a later one is not
    independent = {i: r.pixels for i, r in generate_windows(real, cond, plan.requests(item.fps), order, in_flight=2)}
    assert np.array_equal(independent[order[0]], chained[order[0]])
    assert not np.array_equal(independent[order[-1]], chained[order[-1]])


@pytest.mark.parametrize(
    ("family", "task", "extra", "field", "words"),
    [
        ("animatediff", "t2v", {}, "window.mode", "supports window.mode independent, codenoise"),
        ("wan", "t2v", {}, "window.mode", "set image: PATH"),
        ("svd", "i2v", {"loop": True}, "loop", "cannot close a loop"),
    ],
)
def test_outpaint_is_refused_where_it_cannot_work(models, family, task, extra, field, words):
    from manifests import ManifestError, load_manifest

    case = CASES[(family, task)]
    manifest = _manifest(models, family, task, window={**case["window"], "mode": "outpaint"}, **extra)
    with pytest.raises(ManifestError) as caught:
        load_manifest(manifest)
    assert any(p.location.endswith(field) and words in p.message for p in caught.value.problems), caught.value.problems
