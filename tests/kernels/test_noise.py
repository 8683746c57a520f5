import pytest
import torch

from kernels.noise import derive_seed, frame_noise


def test_derive_seed_is_pinned_and_63_bit():
    # Pinned: changing the encoding would silently change every item's noise.
    assert derive_seed(0, "item", 3) == 8649021178283873793
    assert derive_seed(42) == 1053579724844920789
    seeds = {derive_seed(s, "item", f) for s in range(5) for f in range(50)}
    assert len(seeds) == 250 and all(0 <= s < 2**63 for s in seeds)


def test_derive_seed_encoding_is_unambiguous():
    assert derive_seed(0, "a", 1) != derive_seed(0, "a1")
    assert derive_seed(0, 1) != derive_seed(0, "1")
    assert derive_seed(0, "ab", "c") != derive_seed(0, "a", "bc")
    assert derive_seed(1, "x") != derive_seed(0, 1, "x")


def test_frame_noise_depends_only_on_the_absolute_frame():
    full = frame_noise(7, "sku-1", list(range(20)), (4, 3, 5))
    assert full.shape == (20, 4, 3, 5) and full.dtype == torch.float32
    window = frame_noise(7, "sku-1", torch.arange(12, 20), (4, 3, 5))
    assert torch.equal(window, full[12:])
    assert torch.equal(frame_noise(7, "sku-1", [19, 3], (4, 3, 5)), full[[19, 3]])
    # the row of frame f is the documented generator draw
    g = torch.Generator(device="cpu").manual_seed(derive_seed(7, "sku-1", 5))
    assert torch.equal(full[5], torch.randn((4, 3, 5), generator=g))


def test_frame_noise_differs_across_frames_items_seeds():
    base = frame_noise(0, "a", [0, 1], (64,))
    assert not torch.equal(base[0], base[1])
    assert not torch.equal(base, frame_noise(0, "b", [0, 1], (64,)))
    assert not torch.equal(base, frame_noise(1, "a", [0, 1], (64,)))


def test_frame_noise_is_standard_normal_and_follows_dtype():
    x = frame_noise(3, "stats", list(range(8)), (64, 64))
    assert abs(float(x.mean())) < 0.02 and abs(float(x.std()) - 1) < 0.02
    half = frame_noise(3, "stats", [2], (64, 64), dtype=torch.float16)
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.float(), x[2:3], atol=2e-3, rtol=2e-3)
    assert frame_noise(3, "stats", [], (2, 2)).shape == (0, 2, 2)


def test_frame_noise_errors():
    with pytest.raises(ValueError, match=r"frames\[1\] must be an int >= 0, got -1"):
        frame_noise(0, "a", [0, -1], (2,))
    with pytest.raises(ValueError, match=r"frames must be a 1-D integer tensor, got torch.float32"):
        frame_noise(0, "a", torch.tensor([0.0]), (2,))
    with pytest.raises(ValueError, match=r"item_id must be a str, got int 5"):
        frame_noise(0, 5, [0], (2,))
    with pytest.raises(ValueError, match=r"dtype must be a floating point dtype, got torch.int64"):
        frame_noise(0, "a", [0], (2,), dtype=torch.int64)
    with pytest.raises(ValueError, match=r"parts\[0\] must be an int or str, got float 1.5"):
        derive_seed(0, 1.5)
    with pytest.raises(ValueError, match=r"seed must be an int, got bool True"):
        derive_seed(True)
