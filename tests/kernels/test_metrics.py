import math

import pytest
import torch

from kernels.metrics import frame_steps, loop_closure_ratio


def test_frame_steps_known_answer():
    frames = torch.zeros(4, 2, 3, 3)
    frames[1] += 0.5
    frames[2, 0] += 1.0  # half of frame 2 at 1.0, half at 0.0
    torch.testing.assert_close(frame_steps(frames), torch.tensor([0.5, 0.5, 0.5]))
    steps = frame_steps(torch.tensor([[0, 10], [4, 10]], dtype=torch.uint8))
    assert steps.dtype == torch.float32
    torch.testing.assert_close(steps, torch.tensor([2.0]))
    assert frame_steps(torch.zeros(1, 3)).shape == (0,)


def test_loop_closure_ratio():
    base = torch.sin(2 * math.pi * torch.arange(24, dtype=torch.float64) / 24)
    travelling = torch.stack([base.roll(k) for k in range(24)])  # a wave moving one sample a frame
    assert loop_closure_ratio(travelling) == pytest.approx(1.0)  # the wrap is one more step of the wave
    t = torch.arange(24, dtype=torch.float64)
    ramp = t[:, None].expand(24, 3)
    assert loop_closure_ratio(ramp) == pytest.approx(23.0)  # a jump back of 23 steps
    assert loop_closure_ratio(torch.ones(5, 2)) == 1.0
    assert loop_closure_ratio(torch.tensor([0.0, 0.0, 1.0])) == math.inf


def test_metrics_errors():
    with pytest.raises(ValueError, match=r"frames must be \(T, \.\.\.\) with T >= 2, got shape \(1, 3\)"):
        loop_closure_ratio(torch.zeros(1, 3))
    with pytest.raises(ValueError, match=r"frames must be \(T, \.\.\.\) with T >= 1, got shape \(\)"):
        frame_steps(torch.tensor(1.0))


def test_seam_ratio_finds_a_jump_at_window_boundaries():
    from kernels.metrics import StreamingClipStats, seam_ratio

    frames = torch.arange(20, dtype=torch.float32)[:, None, None, None].expand(20, 2, 2, 3).clone()
    frames[10:] += 5.0  # a jump between frames 9 and 10
    stats = StreamingClipStats()
    for chunk in frames.split(7):
        stats.update(chunk)
    summary = stats.summary([(0, 12), (8, 12)])  # windows end at 12 and start at 8: no seam at 10
    assert summary["seam_ratio"] == pytest.approx(1.0)
    summary = stats.summary([(0, 10), (10, 10)])  # the seam is at 10
    assert summary["seam_ratio"] == pytest.approx(6.0)
    assert seam_ratio(torch.ones(5), []) is None
    drift = summary["colour_drift"]
    assert [w["start"] for w in drift["windows"]] == [0, 10]
    assert drift["max_mean_spread"] == pytest.approx((14.5 + 5) - 4.5)


def test_quietest_start_is_the_frame_after_the_first_smallest_step():
    from kernels.metrics import quietest_start

    assert quietest_start(torch.tensor([2.0, 0.5, 3.0, 0.5])) == 2  # equal minima: the first
    assert quietest_start(torch.tensor([1.0, 1.0, 1.0])) == 1
    assert quietest_start(torch.tensor([4.0, 2.0, 0.0])) == 0  # the wrap (last step) is the quietest
    assert quietest_start(torch.tensor([0.0])) == 0
    with pytest.raises(ValueError, match=r"steps must be \(T,\) with T >= 1, got shape \(0,\)"):
        quietest_start(torch.zeros(0))
    with pytest.raises(ValueError, match=r"got shape \(2, 2\)"):
        quietest_start(torch.zeros(2, 2))


def test_a_loops_summary_counts_its_wrap_as_a_step():
    """Around a circle the wrap is a step like any other: it is in the largest-step ratio
    (the same wherever the file starts) and a window edge at frame 0 is a seam there."""
    from kernels.metrics import StreamingClipStats

    def summary(frames, windows):
        stats = StreamingClipStats()
        stats.update(frames)
        return stats.summary(windows, loop=True), stats.summary(windows)

    values = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0])
    frames = values[:, None].expand(12, 3).clone()  # steps of 1; the wrap 11 → 0 is a jump of 11
    rolled = torch.roll(frames, -5, dims=0)  # the same circle, started at frame 5: the jump now inside
    windows = [(0, 12)]  # its only edge is at frame 0 (= 12): the wrap
    circle, line = summary(frames, windows)
    assert circle["largest_step_ratio"] == pytest.approx(11.0) and "largest_step_ratio" not in line
    assert circle["seam_ratio"] == pytest.approx(11.0)
    assert line["seam_ratio"] is None  # a line has no step at its frame 0
    moved, _ = summary(rolled, [((s - 5) % 12, n) for s, n in windows])
    assert moved["largest_step_ratio"] == pytest.approx(circle["largest_step_ratio"])
    assert moved["loop_closure_ratio"] == pytest.approx(1.0) and circle["loop_closure_ratio"] == pytest.approx(11.0)
