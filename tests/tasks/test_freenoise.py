"""window.mode: freenoise — diffusers' FreeNoise inside framefold: the same frames as
FreeNoise called directly, deterministic per seed, refused where it cannot run."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
import yaml

from kernels.noise import derive_seed, frame_noise
from manifests import load_manifest
from tasks.backends import Conditioning, WindowRequest, spec_of
from tasks.backends.diffusers_backend import DiffusersBackend, shuffle_context
from tasks.plan import plan_item


def _write(root, *, frames=22, family="animatediff", loop=False, weighting="linear", seed=3):
    doc = {"version": 1, "name": "fn", "output": "out",
           "defaults": {"backend": "diffusers", "fps": 8, "steps": 2, "guidance": 6.0, "seed": seed,
                        "size": [32, 32], "loop": loop},
           "items": [{"id": "clip", "prompt": "waves", "frames": frames,
                      "model": {"family": family, "path": "ad" if family == "animatediff" else "wan"},
                      "window": {"length": 8, "overlap": 4, "mode": "freenoise", "weighting": weighting}}]}  # fmt: skip
    (root / "fn.yaml").write_text(yaml.safe_dump(doc))
    return root / "fn.yaml"


def _diffusers_free_noise(path, *, frames, seed, item_id="clip"):
    """diffusers' FreeNoise called directly: same latents (the item's frame noise with
    FreeNoise's rescheduling) and the same generator."""
    import diffusers

    pipe = diffusers.AnimateDiffPipeline.from_pretrained(path, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    for c in pipe.components.values():
        if isinstance(c, torch.nn.Module):
            c.eval()
    # saved without its motion adapter (the modules live in the UNet); enable_free_noise reads only this
    object.__setattr__(pipe, "motion_adapter", SimpleNamespace(config=SimpleNamespace(motion_max_seq_length=32)))
    pipe.enable_free_noise(context_length=8, context_stride=4, weighting_scheme="pyramid", noise_type="shuffle_context")
    generator = torch.Generator().manual_seed(derive_seed(seed, item_id, "pipeline"))
    latents = frame_noise(seed, item_id, range(frames), (4, 4, 4)).permute(1, 0, 2, 3)[None]
    latents = shuffle_context(latents, 8, 4, generator)
    return pipe(prompt="waves", negative_prompt=None, guidance_scale=6.0, clip_skip=None, height=32, width=32,
                num_frames=frames, num_inference_steps=2, latents=latents, generator=generator,
                output_type="pt").frames[0]  # fmt: skip


def test_backend_equals_diffusers_free_noise_called_directly(project):
    item = load_manifest(_write(project)).items[0]
    plan = plan_item(item)
    assert [tuple(w) for w in plan.windows] == [(0, 22)]  # one actor renders the whole clip
    assert plan.as_dict()["freenoise"] == {"context_length": 8, "context_stride": 4, "weighting_scheme": "pyramid",
                                           "noise_type": "shuffle_context"}  # fmt: skip
    backend = DiffusersBackend(spec_of(item))
    cond = Conditioning(item.id, item.seed, None, None, item.params())
    (request,) = plan.requests(item.fps)
    ours = backend.generate(request, cond)
    torch.testing.assert_close(ours, _diffusers_free_noise(project / "ad", frames=22, seed=3), rtol=0, atol=0)
    torch.testing.assert_close(backend.generate(request, cond), ours, rtol=0, atol=0)  # deterministic
    # FreeNoise is switched off after the call: the cached pipeline still renders plain windows
    plain = Conditioning(item.id, item.seed, None, None, {**item.params(), "window": {**item.params()["window"],
                                                                                      "mode": "independent"}})
    assert backend.generate(WindowRequest(0, tuple(range(8)), 8.0), plain).shape == (8, 3, 32, 32)


def test_noise_rescheduling_equals_diffusers_own(project):
    import diffusers
    from diffusers.utils.torch_utils import randn_tensor

    pipe = diffusers.AnimateDiffPipeline.from_pretrained(project / "ad", local_files_only=True)
    object.__setattr__(pipe, "motion_adapter", SimpleNamespace(config=SimpleNamespace(motion_max_seq_length=32)))
    pipe.enable_free_noise(context_length=8, context_stride=3, noise_type="shuffle_context")
    for frames in (8, 21, 22, 30):
        theirs = pipe.prepare_latents(1, 4, frames, 32, 32, torch.float32, "cpu", torch.Generator().manual_seed(5))
        g = torch.Generator().manual_seed(5)
        ours = shuffle_context(randn_tensor((1, 4, frames, 4, 4), generator=g), 8, 3, g)
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("kwargs", "field", "words"),
    [({"family": "wan", "frames": 21}, "window.mode", "supports window.mode"),
     ({"loop": True}, "loop", "cannot close a loop"),
     ({"weighting": "cosine"}, "window.weighting", "pyramid")],
    ids=["other-family", "loop", "weighting"],
)  # fmt: skip
def test_refused_where_it_cannot_run(project, capsys, kwargs, field, words):
    from flows.cli import main

    path = _write(project, **kwargs)
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"items[0].{field}" in err and words in err and "fn.yaml" in err


@pytest.mark.slow
@pytest.mark.usefixtures("ray_cluster", "prefect_server")
def test_cli_runs_freenoise_end_to_end_deterministically(project):
    from flows.cli import main

    path = _write(project, frames=22)
    assert main(["run", str(path)]) == 0
    record = json.loads((project / "out" / "clip.json").read_text())
    assert record["plan"]["mode"] == "freenoise"
    assert record["plan"]["freenoise"]["context_length"] == 8 and record["plan"]["windows"] == [[0, 22]]
    assert record["video"]["frames"] == 22
    assert record["metrics"]["file"]["frames"] == 22  # measured on the decoded mp4
    again = project / "again.yaml"
    again.write_text(path.read_text().replace("output: out", "output: out2"))
    assert main(["run", str(again)]) == 0
    record2 = json.loads((project / "out2" / "clip.json").read_text())
    assert record2["video"]["frames_sha256"] == record["video"]["frames_sha256"]  # same seed, same frames


def test_components_read_meanwhile_are_the_loaded_ones(project):
    """A model actor renders a FreeNoise window on one thread while its codenoise thread
    builds a pipeline from the same loaded components: that thread waits for the call to
    end and gets the components as loaded, never FreeNoise's stand-in adapter."""
    import threading

    from tasks.backends.diffusers_backend import free_noise_enabled, loaded_components

    backend = DiffusersBackend(spec_of(load_manifest(_write(project)).items[0]))
    pipe = backend.pipe
    assert pipe.motion_adapter is None  # saved without one: FreeNoise needs a stand-in
    inside, release, seen = threading.Event(), threading.Event(), {}

    def freenoise_call():
        with free_noise_enabled(pipe, {"context_length": 8, "context_stride": 4, "weighting_scheme": "pyramid",
                                       "noise_type": "shuffle_context"}):  # fmt: skip
            inside.set()
            release.wait(10)

    def codenoise_start():
        seen.update(loaded_components(pipe))

    first = threading.Thread(target=freenoise_call)
    first.start()
    assert inside.wait(10)
    second = threading.Thread(target=codenoise_start)
    second.start()
    second.join(0.5)
    assert second.is_alive() and not seen  # waits while FreeNoise holds the pipeline
    release.set()
    first.join(10)
    second.join(10)
    assert seen["motion_adapter"] is None and seen["unet"] is pipe.unet
    assert pipe.motion_adapter is None
