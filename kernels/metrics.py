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


class StreamingClipStats:
    """:func:`frame_steps` and :func:`loop_closure_ratio` over a clip fed in chunks
    (k, ...), holding only the first and the latest frame.

    >>> s = StreamingClipStats()
    >>> s.update(torch.tensor([0.0, 1.0])); s.update(torch.tensor([2.0, 1.0]))
    >>> s.summary()
    {'frames': 4, 'median_step': 1.0, 'loop_closure_ratio': 1.0}
    """

    def __init__(self) -> None:
        self.first: Tensor | None = None
        self.last: Tensor | None = None
        self.steps: list[Tensor] = []
        self.frames = 0

    def update(self, chunk: Tensor) -> None:
        if len(chunk) == 0:
            return
        if self.first is None:
            self.first = chunk[0].clone()
        joined = chunk if self.last is None else torch.cat([self.last[None], chunk])
        if len(joined) > 1:
            self.steps.append(frame_steps(joined))
        self.last = chunk[-1].clone()
        self.frames += len(chunk)

    def summary(self) -> dict[str, float | int | None]:
        if self.frames < 2:
            return {"frames": self.frames, "median_step": None, "loop_closure_ratio": None}
        steps = torch.cat(self.steps)
        typical = float(steps.median())
        wrap = float(frame_steps(torch.stack([self.last, self.first]))[0])
        ratio = (1.0 if wrap == 0 else math.inf) if typical == 0 else wrap / typical
        return {"frames": self.frames, "median_step": typical, "loop_closure_ratio": ratio}
