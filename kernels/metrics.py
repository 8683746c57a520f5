"""Clip metrics: how much consecutive frames change, and whether a loop closes."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def frame_steps(frames: Tensor) -> Tensor:
    """Mean absolute difference between consecutive frames of ``frames`` (T, ...): (T-1,) float32.

    >>> frame_steps(torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]]))
    tensor([0.5000, 0.5000])
    """
    if frames.ndim < 1 or len(frames) < 1:
        raise ValueError(f"frames must be (T, ...) with T >= 1, got shape {tuple(frames.shape)}")
    x = frames.to(torch.float32).reshape(len(frames), -1)
    return (x[1:] - x[:-1]).abs().mean(dim=1)


def loop_closure_ratio(frames: Tensor) -> float:
    """How the wrap step of a looping clip (T, ...) compares with its ordinary steps:
    ``mean|frames[0] - frames[-1]| / median(frame_steps(frames))`` (lower median for an
    even count). 1.0: the wrap looks like any other step; much more: a visible jump.
    A static clip (median step 0) gives 1.0 if it also closes exactly, else inf.

    >>> loop_closure_ratio(torch.tensor([0.0, 1.0, 2.0, 1.0]))
    1.0
    >>> loop_closure_ratio(torch.tensor([0.0, 1.0, 2.0, 3.0]))
    3.0
    """
    if frames.ndim < 1 or len(frames) < 2:
        raise ValueError(f"frames must be (T, ...) with T >= 2, got shape {tuple(frames.shape)}")
    wrap = float(frame_steps(frames[[-1, 0]])[0])
    typical = float(frame_steps(frames).median())
    if typical == 0:
        return 1.0 if wrap == 0 else math.inf
    return wrap / typical
