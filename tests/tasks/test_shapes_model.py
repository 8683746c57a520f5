"""The small model trained here (manifests/examples/models/shapes): its weights are the
ones its recipe records, and training from them still works (CI never retrains)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bench import train_tiny as T

MODEL = Path(__file__).resolve().parents[2] / "manifests" / "examples" / "models" / "shapes"
RECIPE = json.loads((T.training_dir(MODEL) / "recipe.json").read_text()) if MODEL.exists() else None

pytestmark = pytest.mark.skipif(RECIPE is None, reason="the shapes model is not in this checkout")


def test_weights_match_the_recipe_digest_and_size_budget(tmp_path, monkeypatch):
    from tasks.backends.weights import weights_digest

    monkeypatch.setenv("FRAMEFOLD_DIGEST_CACHE", str(tmp_path))  # hash the files, not a cached answer
    assert weights_digest(MODEL) == RECIPE["weights_digest"]
    size = sum(p.stat().st_size for p in MODEL.rglob("*.safetensors"))
    assert size <= 20 * 2**20, size
    assert RECIPE["seed"] == T.RECIPE["seed"] and RECIPE["data"] == json.loads(json.dumps(T.RECIPE["data"]))


def test_a_few_more_training_steps_lower_the_loss():
    import diffusers
    from transformers import CLIPTextModel

    torch.manual_seed(0)
    unet = diffusers.UNetMotionModel.from_pretrained(MODEL / "unet").train()
    text = CLIPTextModel.from_pretrained(MODEL / "text_encoder").train()
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(MODEL / "tokenizer")
    scheduler = diffusers.DDIMScheduler.from_pretrained(MODEL / "scheduler")
    rng = np.random.default_rng(7)
    params = T.sample_params(rng, 4)
    clips = T.render_clips(params, range(3, 3 + T.FRAMES))
    caps = T.captions_of(params)
    weights = list(unet.parameters()) + list(text.parameters())
    opt = torch.optim.AdamW(weights, lr=2e-5)  # the rate the last phase ended at: the weights are near a minimum

    def loss():
        return T.loss_on(unet, text, tok, scheduler, clips, caps, torch.Generator().manual_seed(0),
                         RECIPE.get("snr_clamp"))

    with torch.no_grad():
        before = float(loss())
    for _ in range(3):
        opt.zero_grad()
        loss().backward()
        opt.step()
    with torch.no_grad():
        after = float(loss())
    assert after < before, (before, after)


@pytest.mark.slow
@pytest.mark.usefixtures("ray_cluster", "prefect_server")
def test_the_example_manifest_runs_the_trained_model(tmp_path):
    """manifests/examples/shapes.yaml as written (fewer frames and steps): every mode it uses."""
    import shutil

    import yaml

    from flows.cli import main

    doc = yaml.safe_load((MODEL.parents[1] / "shapes.yaml").read_text())
    shutil.copytree(MODEL, tmp_path / "models" / "shapes")
    doc["defaults"].update(frames=16, steps=2)
    (tmp_path / "shapes.yaml").write_text(yaml.safe_dump(doc))
    assert main(["run", str(tmp_path / "shapes.yaml")]) == 0
    for item in doc["items"]:
        record = json.loads((tmp_path / "out" / "shapes" / f"{item['id']}.json").read_text())
        assert record["backend"]["weights_digest"] == RECIPE["weights_digest"]
        assert record["video"]["width"] == 128 and record["metrics"]["file"]["frames"] == 16
        if item.get("loop"):  # the loop item: its file starts after its smoothest step, and closes there
            assert record["plan"]["loop_start"]["rule"] == "smoothest"
            assert record["metrics"]["file"]["loop_closure_ratio"] <= 1.2


@pytest.mark.slow
def test_its_clips_are_coherent_and_show_the_prompted_shape():
    """Acceptance for the trained model, measured on decoded mp4s (bench.quality): frame-to-frame
    change within 2× the training clips', and the prompt's shape in most frames at about the
    size it has in training."""
    from bench.quality import trained

    res = trained(MODEL, mode="codenoise", seeds=2, frames=16, steps=5)
    assert res["median_step"]["mean"] <= 2 * res["training_median_step"], res
    assert res["frames_with_shape"]["mean"] >= 0.5, res
    assert res["background_error"]["mean"] <= 0.1, res


def _training_clip(**params) -> np.ndarray:
    base = {"colour": "red", "shape": "square", "motion": "moving right", "x": 30.0, "y": 16.0, "radius": 6.0,
            "angle": 0.3, "speed": 1.5, "spin": 0.2, "period": 8.0, "phase": 0.0}  # fmt: skip
    clip = T.render_clips([base | params], range(16))[0]
    return (clip * 255).round().byte().permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize(
    ("params", "prompt", "velocity"),
    [
        ({}, "a red square moving right", 1.5),  # starts at x = 30: crosses the right edge
        ({"motion": "moving left", "speed": 1.2}, "a red square moving left", 1.2),
        ({"motion": "moving up", "speed": 2.0, "y": 1.0}, "a red square moving up", 2.0),
        ({"motion": "moving left", "speed": 1.2}, "a red square moving right", -1.2),  # the wrong way
        ({"motion": "pulsing"}, "a red square moving down", 0.0),  # in place
    ],
)
def test_prompt_following_reads_direction_and_speed_off_training_clips(params, prompt, velocity):
    from bench.quality import prompt_following

    got = prompt_following(_training_clip(**params), prompt)
    assert got["velocity"] == pytest.approx(velocity, abs=0.15), got
    assert got["colour_match"] >= 0.9, got


def test_prompt_following_tells_a_wrong_colour_and_skips_velocity_without_a_direction():
    from bench.quality import prompt_following

    got = prompt_following(_training_clip(colour="green", motion="rotating"), "a red square rotating")
    assert got["colour_match"] <= 0.05 and "velocity" not in got, got
    assert prompt_following(_training_clip(colour="green"), "a green square rotating")["colour_match"] >= 0.9


@pytest.mark.slow
def test_it_draws_the_prompted_colour(tmp_path):
    """Colour is what the model follows of a prompt (docs/quality.md: the direction of motion it does not)."""
    import shutil

    from bench.quality import items_for, prompt_following, render

    work = tmp_path
    shutil.copytree(MODEL, work / "shapes")
    for prompt in ("a green circle pulsing", "a red square moving right"):
        items = items_for(work / "shapes", mode="independent", seeds=range(2), frames=8, length=8, overlap=4,
                          size=32, steps=5, prompt=prompt, guidance=3.0)  # fmt: skip
        for item in items:
            assert prompt_following(render(item).numpy(), prompt)["colour_match"] >= 0.9, (prompt, item.id)


def test_the_temporal_loss_counts_uneven_motion_and_only_with_x0_prediction():
    """``--temporal-weight``: an x̂₀ whose error differs between frames costs more than one whose
    error every frame shares, by the weight times the error in the frame differences."""
    import diffusers

    clips = T.render_clips(T.sample_params(np.random.default_rng(3), 2), range(T.FRAMES))
    x0 = T.to_latents(clips)
    scheduler = diffusers.DDIMScheduler(prediction_type="sample")
    shared = torch.zeros_like(x0) + 0.1  # the same error in every frame
    uneven = torch.zeros_like(x0)
    uneven[:, :, ::2] += 0.1  # the same size of error, on every other frame

    class Echo(torch.nn.Module):  # a "UNet" returning x₀ plus a fixed error
        def __init__(self, error):
            super().__init__()
            self.error = error

        def forward(self, xt, steps, encoder_hidden_states):
            return type("Out", (), {"sample": x0 + self.error})()

    text = lambda ids: (torch.zeros(len(ids), T.MAX_TOKENS, 64),)  # noqa: E731
    tok = lambda caps, **kw: type("Ids", (), {"input_ids": torch.zeros(len(caps), T.MAX_TOKENS)})()  # noqa: E731

    def loss(error, weight):
        return float(T.loss_on(Echo(error), text, tok, scheduler, clips, ["a"] * 2, torch.Generator().manual_seed(0),
                               temporal_weight=weight))

    assert loss(shared, 3.0) == pytest.approx(loss(shared, 0.0))  # shared error: frame differences exact
    frame_share = 0.1**2 * (x0.shape[2] // 2) / x0.shape[2]
    assert loss(uneven, 0.0) == pytest.approx(frame_share)
    assert loss(uneven, 3.0) == pytest.approx(frame_share + 3.0 * 0.1**2)  # every difference off by 0.1
    with pytest.raises(SystemExit, match="temporal-weight"):
        T.objective_of({"prediction_type": "v_prediction", "temporal_weight": 1.0}, None)
    with pytest.raises(SystemExit, match="must be >= 0, got -1.0"):
        T.objective_of({"temporal_weight": -1.0}, None)
