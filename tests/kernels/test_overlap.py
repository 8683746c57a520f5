import pytest
import torch

from kernels.overlap import overlap_add, overlap_add_tiles, plan_tiles, tile_weights
from kernels.windows import WEIGHTINGS, plan_windows, window_indices, window_weights

PLANS = [(1, 4, 1, False), (9, 4, 1, False), (23, 8, 3, False), (23, 8, 3, True), (40, 16, 4, True), (17, 5, 0, True)]


def _split(content, t, length, overlap, circular, kind="cosine"):
    plan = plan_windows(t, length=length, overlap=overlap, circular=circular)
    indices = [window_indices(w, t) for w in plan]
    weights = [window_weights(w.length, kind) for w in plan]
    return plan, [content[idx] for idx in indices], indices, weights


@pytest.mark.parametrize("t, length, overlap, circular", PLANS)
@pytest.mark.parametrize("kind", WEIGHTINGS)
def test_split_then_stitch_reconstructs(t, length, overlap, circular, kind):
    content = torch.rand(t, 2, 3, 4, generator=torch.Generator().manual_seed(t))
    _, values, indices, weights = _split(content, t, length, overlap, circular, kind)
    out = overlap_add(values, indices, weights, t)
    assert out.dtype == torch.float32 and out.shape == content.shape
    torch.testing.assert_close(out, content)


def test_uint8_and_float64_inputs_give_float32():
    content = torch.randint(0, 256, (12, 3), dtype=torch.uint8)
    _, values, indices, weights = _split(content, 12, 5, 2, False, "linear")
    torch.testing.assert_close(overlap_add(values, indices, weights, 12), content.float())
    out = overlap_add([v.double() for v in values], indices, [w.double() for w in weights], 12)
    assert out.dtype == torch.float32


def test_two_flat_windows_average_to_the_mean_in_the_overlap():
    a, b = 2.0, 5.0
    values = [torch.full((6, 2), a), torch.full((6, 2), b)]
    indices = [torch.arange(0, 6), torch.arange(4, 10)]
    out = overlap_add(values, indices, [torch.ones(6)] * 2, 10)
    expected = torch.tensor([a] * 4 + [(a + b) / 2] * 2 + [b] * 4).unsqueeze(1).expand(10, 2)
    torch.testing.assert_close(out, expected)
    # weighted: w_a = 1, w_b = 3 in the overlap -> (a + 3 b) / 4
    out = overlap_add(values, indices, [torch.ones(6), torch.full((6,), 3.0)], 10)
    torch.testing.assert_close(out[4:6], torch.full((2, 2), (a + 3 * b) / 4))


def test_inputs_not_mutated():
    content = torch.rand(23, 3)
    _, values, indices, weights = _split(content, 23, 8, 3, True)
    before = [t.clone() for t in values + indices + weights]
    overlap_add(values, indices, weights, 23)
    for x, y in zip(values + indices + weights, before):
        assert torch.equal(x, y)


def test_overlap_add_errors():
    ones = torch.ones(3)
    with pytest.raises(ValueError, match=r"got none at frame 3"):
        overlap_add([torch.zeros(3, 1)] * 2, [torch.arange(3), torch.arange(4, 7)], [ones, ones], 7)
    with pytest.raises(ValueError, match=r"indices\[1\] must be < size \(5\), got 6"):
        overlap_add([torch.zeros(3)] * 2, [torch.arange(3), torch.arange(4, 7)], [ones, ones], 5)
    with pytest.raises(ValueError, match=r"values\[0\] must have 3 rows \(len\(indices\[0\]\)\), got shape \(2, 1\)"):
        overlap_add([torch.zeros(2, 1)], [torch.arange(3)], [ones], 3)
    with pytest.raises(ValueError, match=r"values\[1\] must have trailing shape \(2,\) like values\[0\], got \(3,\)"):
        overlap_add([torch.zeros(3, 2), torch.zeros(3, 3)], [torch.arange(3)] * 2, [ones, ones], 3)
    with pytest.raises(ValueError, match=r"weights\[0\] must have shape \(3,\), got \(4,\)"):
        overlap_add([torch.zeros(3)], [torch.arange(3)], [torch.ones(4)], 3)
    with pytest.raises(ValueError, match=r"weights must hold one entry per window \(2\), got 1"):
        overlap_add([torch.zeros(3)] * 2, [torch.arange(3)] * 2, [ones], 3)


@pytest.mark.parametrize(
    "height, width, tile, overlap", [(5, 7, 8, 2), (32, 48, 16, 4), (33, 50, 16, 5), (9, 40, 8, 3)]
)
def test_tiles_split_then_stitch_reconstructs(height, width, tile, overlap):
    image = torch.rand(2, 3, height, width, dtype=torch.float64)
    boxes = plan_tiles(height, width, tile=tile, overlap=overlap)
    count = torch.zeros(height, width)
    for y, x, h, w in boxes:
        assert (h, w) == (min(tile, height), min(tile, width))
        count[y : y + h, x : x + w] += 1
    assert bool((count >= 1).all())
    tiles = [image[..., y : y + h, x : x + w] for y, x, h, w in boxes]
    weights = [tile_weights(h, w, "cosine") for _, _, h, w in boxes]
    out = overlap_add_tiles(tiles, boxes, weights, (height, width))
    assert out.dtype == torch.float32 and out.shape == image.shape
    torch.testing.assert_close(out, image.float())


def test_tiles_known_answer_and_weights():
    torch.testing.assert_close(
        tile_weights(3, 4, "linear"), window_weights(3, "linear")[:, None] * window_weights(4, "linear")[None, :]
    )
    tiles = [torch.full((1, 2, 3), 1.0), torch.full((1, 2, 3), 4.0)]
    out = overlap_add_tiles(tiles, [(0, 0, 2, 3), (0, 2, 2, 3)], [torch.ones(2, 3)] * 2, (2, 5))
    torch.testing.assert_close(out, torch.tensor([[[1.0, 1.0, 2.5, 4.0, 4.0]] * 2]))


def test_tiles_errors():
    ones = torch.ones(2, 2)
    with pytest.raises(ValueError, match=r"got none at pixel \(y=0, x=2\)"):
        overlap_add_tiles([ones, ones], [(0, 0, 2, 2), (0, 3, 2, 2)], [ones, ones], (2, 5))
    with pytest.raises(ValueError, match=r"boxes\[0\] must be ints \(y, x, h, w\) inside the output 2x5, got \(1, 0"):
        overlap_add_tiles([ones], [(1, 0, 2, 2)], [ones], (2, 5))
    with pytest.raises(ValueError, match=r"values\[1\] must have shape \(3, 2, 2\), got \(2, 2, 2\)"):
        overlap_add_tiles([torch.ones(3, 2, 2), torch.ones(2, 2, 2)], [(0, 0, 2, 2)] * 2, [ones, ones], (2, 2))
    with pytest.raises(ValueError, match=r"overlap must be < length \(4\), got 4"):
        plan_tiles(10, 10, tile=4, overlap=4)
