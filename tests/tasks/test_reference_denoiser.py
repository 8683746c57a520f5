"""The exact reference denoiser: a diffusers model whose ideal prediction is known, so
seams are measured against the truth (issue: codenoise must match the stationary
statistics across window boundaries better than independent windows)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.quality import boundaries, items_for, reference_stats, render
from tasks.backends.components import GaussianProcessDenoiser, build_reference_pipeline


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return build_reference_pipeline(tmp_path_factory.mktemp("ref") / "reference", window=16, size=16)


def test_saves_and_loads_as_safetensors_and_is_exact_on_one_window(model):
    import diffusers

    import tasks.backends.components  # noqa: F401

    assert (model / "unet" / "diffusion_pytorch_model.safetensors").exists()
    pipe = diffusers.AnimateDiffPipeline.from_pretrained(model, local_files_only=True)
    unet = pipe.unet
    assert isinstance(unet, GaussianProcessDenoiser) and unet.config.window == 16
    assert float(unet.alphas_cumprod[0]) > 0.999 and float(unet.alphas_cumprod[-1]) < 1e-6
    # E[x0 | x_t] is linear: check it against a Monte-Carlo regression on one timestep
    t, frames = 400, 6
    k = unet.covariance(frames)
    x0 = torch.distributions.MultivariateNormal(torch.zeros(frames, dtype=torch.float64), k).sample((20000,))
    abar = unet.alphas_cumprod[t]
    xt = abar.sqrt() * x0 + (1 - abar).sqrt() * torch.randn_like(x0)
    regression = torch.linalg.lstsq(xt, x0).solution.T  # best linear predictor from samples
    torch.testing.assert_close(regression, unet.posterior_matrix(frames, t), atol=0.03, rtol=0)
    with pytest.raises(ValueError, match="at most 16 frames"):
        unet(torch.zeros(1, 3, 17, 2, 2), 10)


def test_codenoise_matches_the_stationary_truth_across_seams_better_than_independent(model):
    """8 seeds, 28 frames, two windows of 16 overlapping by 4: the mean deviation of the
    lag-1 and lag-2 correlation across window boundaries from the truth."""
    results = {}
    for mode in ("independent", "codenoise"):
        items = items_for(model, mode=mode, seeds=range(8), frames=28, length=16, overlap=4, size=16,
                          steps=10)  # fmt: skip
        from tasks.backends import load, spec_of

        autocov = load(spec_of(items[0])).pipe.unet.autocovariance.numpy()
        clips = [render(item) for item in items]
        assert boundaries(items[0]) == [12, 16]
        results[mode] = reference_stats(clips, boundaries(items[0]), autocov, lags=(1, 2))
    for lag in ("lag1", "lag2"):
        ind, cn = results["independent"][lag], results["codenoise"][lag]
        spread = max(ind["cross_std"], cn["cross_std"])
        assert ind["cross_mean"] - cn["cross_mean"] > 2 * spread, (lag, ind, cn)
        assert all(c < i for c, i in zip(cn["cross_per_seed"], ind["cross_per_seed"]))  # every seed
        print(lag, {m: {k: round(v, 4) for k, v in results[m][lag].items() if k != "cross_per_seed"} for m in results})
    assert np.isclose(results["codenoise"]["variance_ratio"]["median"], results["independent"]["variance_ratio"]["median"], rtol=0.1)
