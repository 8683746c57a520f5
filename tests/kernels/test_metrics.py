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
