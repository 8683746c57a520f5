"""codenoise: the distributed co-denoising equals a single-process MultiDiffusion loop,
for any actor count and through the loss of an actor."""

from __future__ import annotations

import pytest
import ray
import torch
import yaml

from kernels.noise import derive_seed, frame_noise
from manifests import load_manifest
from tasks.backends import Conditioning, spec_of
from tasks.codenoise import codenoise_frames, latent_plan
from tasks.pool import ActorPool
from tests.reference_multidiffusion import multidiffusion_animatediff

pytestmark = pytest.mark.usefixtures("ray_cluster")


def _item(root, *, family="animatediff", frames=20, length=8, overlap=4, loop=False, seed=3, weighting="cosine"):
    doc = {"version": 1, "name": "cn", "output": "out",
           "defaults": {"backend": "diffusers", "fps": 8, "steps": 2, "guidance": 7.5, "seed": seed,
                        "size": [32, 32], "loop": loop},
           "items": [{"id": "clip", "prompt": "waves", "frames": frames,
                      "model": {"family": family, "path": "ad" if family == "animatediff" else "wan"},
                      "window": {"length": length, "overlap": overlap, "mode": "codenoise", "weighting": weighting}}]}
    (root / "cn.yaml").write_text(yaml.safe_dump(doc))
    item = load_manifest(root / "cn.yaml").items[0]
    return item, Conditioning(item.id, item.seed, None, None, item.params())


def _run(item, cond, actors, *, on_call=None):
    pool = ActorPool(spec_of(item), size=actors, gpus=0, cpus=min(1.0, 2 / actors))  # the test cluster has 2 CPUs
    calls = []

    def submit(key, x, shared, own):
        calls.append(1)
        if on_call is not None:
            on_call(len(calls), pool)
        return pool.denoise(key, x, shared, own)

    try:
        return codenoise_frames(spec_of(item), item.params(), cond, submit=submit)
    finally:
        pool.close()


@pytest.fixture(scope="module")
def by_actors(project):
    """The default item made by 1, 2 and 3 actors: (frames, stats) keyed by the count."""
    item, cond = _item(project)
    return {n: _run(item, cond, n) for n in (1, 2, 3)}


def test_equals_single_process_reference_for_1_2_3_actors(project, by_actors):
    import diffusers

    item, cond = _item(project)
    results = [by_actors[n][0] for n in (1, 2, 3)]
    torch.testing.assert_close(results[1], results[0], rtol=0, atol=0)
    torch.testing.assert_close(results[2], results[0], rtol=0, atol=0)

    pipe = diffusers.AnimateDiffPipeline.from_pretrained(project / "ad", local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    count, windows = latent_plan(20, length=8, overlap=4, temporal=1, circular=False)
    latents = frame_noise(item.seed, item.id, range(count), (4, 4, 4)).permute(1, 0, 2, 3)[None]
    reference = multidiffusion_animatediff(
        pipe, prompt="waves", negative_prompt=None, latents=latents, steps=2, guidance=7.5, windows=windows,
        weighting="cosine", generator=torch.Generator().manual_seed(derive_seed(item.seed, item.id, "pipeline")),
    )
    # the actors compute single-threaded, this process with two threads: float rounding only
    torch.testing.assert_close(results[0], reference, rtol=0, atol=1e-4)


def test_one_window_over_the_clip_equals_the_plain_pipeline(project):
    import diffusers

    item, cond = _item(project, frames=8, length=8, overlap=2)
    ours, stats = _run(item, cond, 1)
    assert len(stats["latent_windows"]) == 1
    pipe = diffusers.AnimateDiffPipeline.from_pretrained(project / "ad", local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    latents = frame_noise(item.seed, item.id, range(8), (4, 4, 4)).permute(1, 0, 2, 3)[None]
    with torch.inference_mode():
        plain = pipe(prompt="waves", num_frames=8, height=32, width=32, num_inference_steps=2, guidance_scale=7.5,
                     latents=latents, output_type="pt", clip_skip=None,
                     generator=torch.Generator().manual_seed(derive_seed(item.seed, item.id, "pipeline"))).frames[0]
    torch.testing.assert_close(ours, plain.float(), rtol=0, atol=1e-4)


def test_an_actor_killed_mid_run_changes_nothing(project, by_actors):
    item, cond = _item(project)
    undisturbed, stats = by_actors[2]

    def kill_on_fifth_call(n, pool):
        if n == 5:
            ray.kill(pool.actors[0], no_restart=False)  # Ray restarts it and re-runs its windows

    disturbed, _ = _run(item, cond, 2, on_call=kill_on_fifth_call)
    torch.testing.assert_close(disturbed, undisturbed, rtol=0, atol=0)
    assert stats["calls"] == 2 and stats["exchange_bytes"] > 0  # 2 steps, one batched cond+uncond call each


def test_wan_dit_codenoise_runs_and_matches_across_actor_counts(project):
    item, cond = _item(project, family="wan", frames=17, length=9, overlap=5)
    one, stats = _run(item, cond, 1)
    two, _ = _run(item, cond, 2)
    assert one.shape == (17, 3, 32, 32)
    # 17 frames → 5 latent frames; windows of 9 frames (3 latents) with stride 4 (1 latent)
    assert stats["latent_frames"] == 5 and stats["latent_windows"] == [[0, 3], [1, 3], [2, 3]]
    torch.testing.assert_close(two, one, rtol=0, atol=0)


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_flow_runs_a_looped_codenoise_item(project):
    import json

    from flows.cli import main

    _item(project, frames=24, length=8, overlap=4, loop=True)
    assert main(["run", str(project / "cn.yaml")]) == 0
    record = json.loads((project / "out" / "clip.json").read_text())
    assert record["plan"]["mode"] == "codenoise"
    stats = record["plan"]["codenoise"]
    assert stats["latent_frames"] == 24 and stats["calls"] == 2 and "computed_on" not in stats
    assert record["device"]["compute_devices"] == ["cpu"] and record["device"]["compute_dtype"] == "float32"
    # circular plan: one window wraps from the end to the start of the latent
    assert any(start + length > 24 for start, length in stats["latent_windows"])
    assert record["video"]["frames"] == 24
    assert 0 < record["metrics"]["loop_closure_ratio"] <= 1.2  # the latent wraps: no crossfade needed
    # a text-to-video loop starts after its smoothest step; the metrics see the windows where the file has them
    cut = record["plan"]["loop_start"]
    assert cut["rule"] == "smoothest" and 0 <= cut["start_frame"] < 24 and cut["generated_wrap_ratio"] > 0
    assert [w["start"] for w in record["metrics"]["colour_drift"]["windows"]] == [
        (start - cut["start_frame"]) % 24 for start, _ in record["plan"]["windows"]]


def test_wan_decode_in_chunks_equals_the_pipeline_decode(project):
    """Wan's latent decoded a few latent frames at a time (the causal cache carried between
    chunks) is WanPipeline's own decode, to the last bit, whatever the chunk size."""
    import diffusers

    from tasks.codenoise import wan_decode_chunks

    pipe = diffusers.WanPipeline.from_pretrained(project / "wan", local_files_only=True)
    vae = pipe.vae
    latents = torch.randn(1, vae.config.z_dim, 5, 4, 4, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        shape = (1, vae.config.z_dim, 1, 1, 1)
        z = latents / (1.0 / torch.tensor(vae.config.latents_std).view(shape)) + torch.tensor(
            vae.config.latents_mean).view(shape)
        whole = pipe.video_processor.postprocess_video(vae.decode(z, return_dict=False)[0], output_type="pt")[0]
        assert whole.shape == (17, 3, 32, 32)
        for chunk in (1, 2, 5):
            parts = []
            for part in wan_decode_chunks(vae, latents, chunk):
                parts.append(part)
                vae.decode(z[:, :, :2])  # another caller of the VAE meanwhile (the actor's other thread)
            latent_counts = [min(chunk, 5 - start) for start in range(0, 5, chunk)]
            assert [len(p) for p in parts] == [4 * n - 3 * (i == 0) for i, n in enumerate(latent_counts)]
            torch.testing.assert_close(torch.cat(parts), whole.float(), rtol=0, atol=0)
