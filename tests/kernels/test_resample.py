import pytest
import torch
import torch.nn.functional as F

from kernels.resample import METHODS, resize

SIZES = [((16, 24), (16, 24)), ((16, 24), (40, 52)), ((37, 53), (20, 30)), ((9, 40), (31, 7)), ((5, 5), (1, 1))]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("batch", [(), (2,), (2, 3)])
def test_output_shape_and_dtype(method, batch):
    frames = torch.rand(*batch, 3, 12, 20, dtype=torch.float64)
    out = resize(frames, (25, 9), method=method)
    assert out.shape == (*batch, 3, 25, 9) and out.dtype == torch.float64


@pytest.mark.parametrize("method", METHODS)
def test_identity_size_returns_a_copy_of_the_input(method):
    frames = torch.rand(2, 3, 17, 23)
    out = resize(frames, (17, 23), method=method)
    torch.testing.assert_close(out, frames)
    out.add_(1)  # a new tensor: the caller may write into it
    assert float(frames.max()) <= 1


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("antialias", [True, False])
@pytest.mark.parametrize("src, dst", SIZES)
def test_constant_stays_constant(method, antialias, src, dst):
    out = resize(torch.full((2, *src), 0.3), dst, method=method, antialias=antialias)
    torch.testing.assert_close(out, torch.full((2, *dst), 0.3))


@pytest.mark.parametrize("method", ["bicubic", "bilinear", "nearest"])
@pytest.mark.parametrize("antialias", [True, False])
@pytest.mark.parametrize("src, dst", SIZES)
def test_interpolate_methods_match_torch(method, antialias, src, dst):
    frames = torch.rand(2, 3, *src, generator=torch.Generator().manual_seed(0))
    out = resize(frames, dst, method=method, antialias=antialias)
    if method == "nearest":
        expected = F.interpolate(frames, size=dst, mode="nearest-exact")
    else:
        expected = F.interpolate(frames, size=dst, mode=method, align_corners=False, antialias=antialias)
    torch.testing.assert_close(out, expected)


def test_lanczos_upscale_of_a_ramp_is_the_analytic_ramp():
    # pixel j holds the ramp at its centre, j + 0.5; output pixel i has its centre at (i + 0.5) * in / out
    n_in, n_out = 20, 57
    ramp = (torch.arange(n_in, dtype=torch.float64) + 0.5) / n_in
    out = resize(ramp.expand(1, 4, n_in), (4, n_out))[0, 0]
    expected = (torch.arange(n_out, dtype=torch.float64) + 0.5) / n_out
    interior = slice(3 * n_out // n_in, n_out - 3 * n_out // n_in)  # away from the truncated kernel at the edges
    torch.testing.assert_close(out[interior], expected[interior], atol=2e-3, rtol=0)


@pytest.mark.parametrize("src, dst", [((37, 53), (80, 100)), ((37, 53), (20, 30)), ((30, 40), (13, 90))])
def test_lanczos_matches_pillow(src, dst):
    from PIL import Image  # a dependency of framefold

    pixels = torch.rand(*src, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 255
    pil = Image.fromarray(pixels.float().numpy(), mode="F").resize((dst[1], dst[0]), Image.Resampling.LANCZOS)
    expected = torch.tensor(list(pil.getdata()), dtype=torch.float64).view(dst)
    torch.testing.assert_close(resize(pixels[None], dst)[0], expected, atol=1e-3, rtol=1e-5)


def test_lanczos_antialias_suppresses_aliasing_when_downscaling():
    stripes = (torch.arange(64) % 2).to(torch.float32).expand(1, 8, 64)  # Nyquist stripes, mean 0.5
    smooth = resize(stripes, (8, 20), antialias=True)[..., 3:-3]  # away from the truncated kernel at the edges
    aliased = resize(stripes, (8, 20), antialias=False)[..., 3:-3]
    torch.testing.assert_close(smooth, torch.full_like(smooth, 0.5), atol=0.01, rtol=0)
    assert float((aliased - 0.5).abs().max()) > 0.4


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("tile_rows", [1, 3, 7, 64])
@pytest.mark.parametrize("src, dst", [((23, 31), (50, 40)), ((40, 31), (17, 20))])
def test_tiled_equals_untiled(method, tile_rows, src, dst):
    frames = torch.rand(2, 3, *src, generator=torch.Generator().manual_seed(2))
    before = frames.clone()
    tiled = resize(frames, dst, method=method, tile_rows=tile_rows)
    torch.testing.assert_close(tiled, resize(frames, dst, method=method))
    assert torch.equal(frames, before)


def test_errors():
    frames = torch.rand(3, 8, 8)
    methods = r"\('lanczos', 'bicubic', 'bilinear', 'nearest'\)"
    with pytest.raises(ValueError, match=rf"method must be one of {methods}, got 'area'"):
        resize(frames, (4, 4), method="area")
    with pytest.raises(ValueError, match=r"size\[1\] must be >= 1, got 0"):
        resize(frames, (4, 0))
    with pytest.raises(ValueError, match=r"tile_rows must be >= 1, got 0"):
        resize(frames, (4, 4), tile_rows=0)
    with pytest.raises(ValueError, match=r"frames must be a float \(\.\.\., C, H, W\) tensor, got torch.uint8"):
        resize(frames.to(torch.uint8), (4, 4))
    with pytest.raises(ValueError, match=r"frames must be a float \(\.\.\., C, H, W\) tensor, got torch.float32 \(8,"):
        resize(frames[0], (4, 4))
