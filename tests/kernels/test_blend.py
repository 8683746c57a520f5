"""The stitch kernel (StreamingBlend) against overlap_add: same averages, in the windows' dtype."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from kernels.blend import StreamingBlend
from kernels.overlap import overlap_add
from kernels.windows import emission_order, plan_windows, window_indices, window_weights

PLANS = [  # (frames, length, overlap, circular)
    (40, 16, 4, False), (40, 16, 4, True), (33, 8, 3, False), (30, 10, 6, False), (25, 7, 0, True), (9, 16, 4, False),
]


def _windows(t, length, overlap, circular, dtype, weighting="cosine", seed=0):
    plan = plan_windows(t, length=length, overlap=overlap, circular=circular)
    gen = torch.Generator().manual_seed(seed)
    if dtype == torch.uint8:
        values = [torch.randint(0, 256, (w.length, 3, 5, 3), dtype=torch.uint8, generator=gen) for w in plan]
    else:
        values = [torch.rand((w.length, 3, 5, 3), generator=gen) for w in plan]
    indices = [window_indices(w, t) for w in plan]
    weights = [window_weights(w.length, weighting) for w in plan]
    return plan, values, indices, weights


def _run(blend, values, order):
    chunks = []
    for i in order:
        first = blend.next_frame
        out = blend.add(i, values[i])
        assert sum(len(c) for c in out) == blend.next_frame - first
        chunks += out
    assert blend.done and blend.buffered == 0
    return torch.cat(chunks)


@pytest.mark.parametrize(("t", "length", "overlap", "circular"), PLANS)
@pytest.mark.parametrize("order", ["emission", "random"])
@pytest.mark.parametrize("weighting", ["cosine", "flat", "gaussian"])
def test_uint8_frames_are_the_rounded_weighted_average(t, length, overlap, circular, order, weighting):
    plan, values, indices, weights = _windows(t, length, overlap, circular, torch.uint8, weighting)
    expected = overlap_add(values, indices, weights, t).round().clamp(0, 255).to(torch.uint8)
    windows = emission_order(plan, t)
    if order == "random":
        random.Random(t).shuffle(windows)
    got = _run(StreamingBlend(indices, weights), values, windows)
    assert got.dtype == torch.uint8 and got.shape == expected.shape
    most = int(torch.stack([torch.bincount(i, minlength=t) for i in indices]).sum(0).max())
    # two windows per frame: the same float32 operations as overlap_add, so the same bytes;
    # more: the sum's order follows arrival, which may move a value across a rounding edge
    tolerance = 0 if most <= 2 else 1
    assert (got.int() - expected.int()).abs().max() <= tolerance


@pytest.mark.parametrize(("t", "length", "overlap", "circular"), PLANS)
def test_float32_frames_equal_overlap_add(t, length, overlap, circular):
    plan, values, indices, weights = _windows(t, length, overlap, circular, torch.float32)
    got = _run(StreamingBlend(indices, weights), values, emission_order(plan, t))
    torch.testing.assert_close(got, overlap_add(values, indices, weights, t))


def test_frames_of_one_window_are_views_not_copies():
    plan, values, indices, weights = _windows(40, 16, 4, False, torch.uint8)
    blend = StreamingBlend(indices, weights)
    chunks = blend.add(0, values[0])  # frames 0..11 are window 0's alone
    assert [len(c) for c in chunks] == [12]
    assert np.shares_memory(chunks[0].numpy(), values[0].numpy())
    assert torch.equal(chunks[0], values[0][:12])
    chunks = blend.add(1, values[1])  # frames 12..15 averaged (new), 16..23 window 1's alone (a view)
    assert [len(c) for c in chunks] == [4, 8]
    assert not np.shares_memory(chunks[0].numpy(), values[1].numpy())
    assert np.shares_memory(chunks[1].numpy(), values[1].numpy())


def test_window_arrays_are_released_once_their_frames_are_out():
    plan, values, indices, weights = _windows(40, 16, 4, False, torch.uint8)
    blend = StreamingBlend(indices, weights)
    blend.add(0, values[0])
    assert blend.held == [0]  # its last 4 frames wait for window 1
    blend.add(1, values[1])
    assert blend.held == [1]
    blend.add(2, values[2])
    assert blend.held == [] and blend.done


def test_errors_name_the_problem():
    blend = StreamingBlend([torch.arange(0, 4), torch.arange(3, 6)], [torch.ones(4), torch.ones(3)])
    blend.add(0, torch.zeros((4, 2), dtype=torch.uint8))
    with pytest.raises(ValueError, match="added once"):
        blend.add(0, torch.zeros((4, 2), dtype=torch.uint8))
    with pytest.raises(ValueError, match="3 rows for window 1"):
        blend.add(1, torch.zeros((2, 2), dtype=torch.uint8))
    with pytest.raises(ValueError, match="uint8 with trailing shape"):
        blend.add(1, torch.zeros((3, 2), dtype=torch.float32))
    with pytest.raises(ValueError, match="uint8 or float32"):
        StreamingBlend([torch.arange(2)], [torch.ones(2)]).add(0, torch.zeros((2, 1), dtype=torch.float64))
    with pytest.raises(ValueError, match="covered by a window, got none at frame 2"):
        StreamingBlend([torch.tensor([0, 1]), torch.tensor([3])], [torch.ones(2), torch.ones(1)])
    with pytest.raises(ValueError, match="weight > 0, got none at frame 1"):
        StreamingBlend([torch.tensor([0, 1])], [torch.tensor([1.0, 0.0])])


@pytest.mark.parametrize("circular", [False, True])
def test_frames_come_out_early_with_a_bounded_buffer(circular):
    t, length, overlap = 200, 16, 4
    plan = plan_windows(t, length=length, overlap=overlap, circular=circular)
    blend = StreamingBlend([window_indices(w, t) for w in plan], [window_weights(length)] * len(plan))
    order = emission_order(plan, t)
    peak, emitted_after = 0, []
    for i in order:
        blend.add(i, torch.zeros((length, 3, 8, 8), dtype=torch.uint8))
        peak = max(peak, blend.buffered)
        emitted_after.append(blend.next_frame)
    first_final = 2 if circular else 1  # the wrapping window also covers frame 0
    assert emitted_after[first_final - 1] == plan[order[first_final]].start  # all before the next window
    assert all(b > a for a, b in zip(emitted_after[first_final - 1 : -1], emitted_after[first_final:]))
    assert peak <= 2 * length  # never the whole clip
    assert blend.done


def test_inputs_are_not_mutated():
    plan, values, indices, weights = _windows(40, 16, 4, True, torch.float32)
    before = [x.clone() for x in values + indices + weights]
    _run(StreamingBlend(indices, weights), values, emission_order(plan, 40))
    assert all(torch.equal(x, y) for x, y in zip(values + indices + weights, before))
