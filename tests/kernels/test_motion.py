import pytest
import torch

from kernels.metrics import loop_closure_ratio
from kernels.motion import MotionTexture, animate, displacement, motion_texture


def _image(height, width, channels=3):
    """A smooth, textured still in [0, 1] (so warps visibly change it)."""
    y = torch.arange(height, dtype=torch.float32)[:, None]
    x = torch.arange(width, dtype=torch.float32)[None, :]
    phase = torch.arange(channels, dtype=torch.float32).view(-1, 1, 1)
    return 0.5 + 0.4 * torch.sin(x / 2.5 + phase) * torch.cos(y / 3.0 - phase)


def _texture(height, width, seed=0, **kwargs):
    return motion_texture(height, width, generator=torch.Generator().manual_seed(seed), **kwargs)


@pytest.mark.parametrize("height, width", [(1, 1), (7, 5), (16, 16), (24, 40), (45, 20)])
def test_shapes(height, width):
    tex = _texture(height, width, modes=3)
    assert isinstance(tex, MotionTexture)
    assert tex.freqs.shape == (3,) and tex.coeffs.shape == (3, 2, 2, height, width)
    times = torch.linspace(0, 1, 5)
    assert displacement(tex, times).shape == (5, 2, height, width)
    frames = animate(_image(height, width), tex, times, zoom=0.05, pan=(0.02, -0.01))
    assert frames.shape == (5, 3, height, width) and frames.dtype == torch.float32
    assert float(frames.min()) >= 0 and float(frames.max()) <= 1


def test_window_render_equals_full_render_bitwise():
    image, tex = _image(24, 40), _texture(24, 40, period=3.0)
    times = torch.arange(60, dtype=torch.float32) / 20
    kwargs = dict(zoom=0.1, pan=(0.05, 0.02), period=3.0, mask=torch.linspace(0, 1, 40).expand(24, 40))
    full = animate(image, tex, times, **kwargs)
    for lo, hi in [(0, 16), (13, 29), (20, 21), (41, 60)]:
        assert torch.equal(animate(image, tex, times[lo:hi], **kwargs), full[lo:hi])
    assert torch.equal(animate(image, tex, times.flip(0), **kwargs), full.flip(0))
    assert torch.equal(displacement(tex, times[5:9]), displacement(tex, times)[5:9])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_looped_clip_closes_seamlessly(seed):
    fps, period = 12, 4.0
    n = int(period * fps)
    image, tex = _image(32, 48), _texture(32, 48, seed=seed, period=period, amplitude=0.03)
    times = torch.arange(n + 1, dtype=torch.float32) / fps
    frames = animate(image, tex, times, zoom=0.1, pan=(0.05, 0.0), period=period)
    torch.testing.assert_close(frames[n], frames[0], atol=1e-5, rtol=0)
    assert float((frames[1] - frames[0]).abs().mean()) > 1e-3  # it does move
    assert loop_closure_ratio(frames[:n]) <= 1.5


def test_frequencies():
    for seed in range(10):
        freqs = _texture(8, 8, seed=seed, modes=4, period=5.0, max_hz=2.0).freqs
        multiples = freqs.double() * 5.0
        torch.testing.assert_close(multiples, multiples.round(), atol=1e-5, rtol=0)
        assert len(set(multiples.round().tolist())) == 4 and float(multiples.min()) >= 1
        assert float(freqs.max()) <= 2.0 + 1e-6
        assert bool((freqs[1:] > freqs[:-1]).all())
        free = _texture(8, 8, seed=seed, modes=4, max_hz=2.0).freqs
        assert float(free.min()) > 0.1 and float(free.max()) <= 2.0
    # the only admissible multiples are used when modes equals their count
    only = _texture(8, 8, modes=3, period=1.0, max_hz=3.0).freqs
    torch.testing.assert_close(only, torch.tensor([1.0, 2.0, 3.0]))


def test_amplitude_is_a_fraction_of_the_short_side():
    height, width, amplitude = 30, 50, 0.02
    tex = _texture(height, width, amplitude=amplitude, period=2.0)
    d = displacement(tex, torch.linspace(0, 2.0, 101))
    pixels = torch.stack([d[:, 0] * width / 2, d[:, 1] * height / 2], dim=1)
    peak = float(pixels.norm(dim=1).max())
    target = amplitude * min(height, width)
    assert 0.3 * target <= peak <= target * (1 + 1e-5)
    torch.testing.assert_close(displacement(tex, torch.zeros(1))[0], tex.coeffs[:, 0].sum(0))


def test_deterministic_for_a_generator_seed():
    a, b, c = _texture(16, 24, seed=5), _texture(16, 24, seed=5), _texture(16, 24, seed=6)
    assert torch.equal(a.freqs, b.freqs) and torch.equal(a.coeffs, b.coeffs)
    assert not torch.equal(a.coeffs, c.coeffs)


def test_zero_mask_gives_the_still_and_mask_confines_motion():
    image, tex = _image(20, 30), _texture(20, 30, amplitude=0.05)
    times = torch.linspace(0, 2, 7)
    still = animate(image, tex, times, mask=torch.zeros(20, 30))
    torch.testing.assert_close(still, image.expand(7, -1, -1, -1))
    mask = torch.zeros(20, 30)
    mask[:, 15:] = 1
    frames = animate(image, tex, times, mask=mask)
    torch.testing.assert_close(frames[..., :15], image[..., :15].expand(7, -1, -1, -1))
    assert float((frames[..., 15:] - image[..., 15:]).abs().max()) > 1e-2


def test_pan_is_an_exact_translation_of_a_ramp():
    # bilinear sampling reproduces a linear ramp exactly, so a pan by p (normalized) adds p to it
    height, width, period, pan = 8, 32, 4.0, 0.25
    xs = (2 * torch.arange(width, dtype=torch.float64) + 1) / width - 1
    image = (0.5 + 0.25 * xs).expand(1, height, width)  # value = 0.5 + x / 4
    tex = _texture(height, width)
    frame = animate(image, tex, torch.tensor([period / 2], dtype=torch.float64), mask=torch.zeros(height, width),
                    pan=(pan, 0.0), period=period)[0]  # c(period / 2) = 1
    assert frame.dtype == torch.float64
    inside = xs + pan < 1 - 1 / width  # away from the reflected border
    torch.testing.assert_close(frame[..., inside], (0.5 + 0.25 * (xs + pan)).expand(1, height, width)[..., inside])


def test_inputs_not_mutated():
    image, tex, mask, times = _image(10, 12), _texture(10, 12), torch.rand(10, 12), torch.linspace(0, 1, 4)
    before = [t.clone() for t in (image, tex.coeffs, tex.freqs, mask, times)]
    animate(image, tex, times, mask=mask, zoom=0.1)
    for x, y in zip((image, tex.coeffs, tex.freqs, mask, times), before):
        assert torch.equal(x, y)


def test_errors():
    gen = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match=r"period \(0.2 s\) is too short for max_hz \(3.0\)"):
        motion_texture(8, 8, period=0.2, max_hz=3.0, generator=gen)
    with pytest.raises(ValueError, match=r"modes must be <= 3 .*period 1.0 s.*max_hz 3.0\), got 4"):
        motion_texture(8, 8, modes=4, period=1.0, max_hz=3.0, generator=gen)
    with pytest.raises(ValueError, match=r"height must be >= 1, got 0"):
        motion_texture(0, 8, generator=gen)
    tex = motion_texture(8, 8, generator=gen)
    with pytest.raises(ValueError, match=r"texture must match the image size \(8, 9\), got \(8, 8\)"):
        animate(torch.rand(3, 8, 9), tex, torch.zeros(1))
    with pytest.raises(ValueError, match=r"mask must have shape \(8, 8\), got \(8, 9\)"):
        animate(torch.rand(3, 8, 8), tex, torch.zeros(1), mask=torch.ones(8, 9))
    with pytest.raises(ValueError, match=r"mask must lie in \[0, 1\], got \[0.0, 2.0\]"):
        animate(torch.rand(3, 8, 8), tex, torch.zeros(1), mask=torch.tensor([0.0, 2.0]).repeat(8, 4))
    with pytest.raises(ValueError, match=r"image must be a float \(C, H, W\) tensor"):
        animate(torch.zeros(3, 8, 8, dtype=torch.uint8), tex, torch.zeros(1))
    with pytest.raises(ValueError, match=r"times must be a 1-D float tensor of seconds"):
        animate(torch.rand(3, 8, 8), tex, torch.zeros(2, 2))
