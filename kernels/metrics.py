"""Clip metrics: how much consecutive frames change, and whether a loop closes."""

from __future__ import annotations

import math
from collections.abc import Sequence

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


def quietest_start(steps: Tensor) -> int:
    """Where a circular clip's file should start so that its wrap is its smallest step.

    ``steps`` (T,): the clip's steps around the circle, ``steps[k]`` from frame k to frame
    (k + 1) mod T. Returns ``(argmin + 1) mod T`` (the first of equal minima), the frame
    after the quietest step.

    >>> quietest_start(torch.tensor([3.0, 1.0, 2.0, 1.0]))
    2
    >>> quietest_start(torch.tensor([2.0, 2.0, 0.5]))
    0
    """
    if steps.ndim != 1 or len(steps) < 1:
        raise ValueError(f"steps must be (T,) with T >= 1, got shape {tuple(steps.shape)}")
    return (int(torch.argmin(steps)) + 1) % len(steps)


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


def seam_ratio(steps: Tensor, boundaries: Sequence[int]) -> float | None:
    """Median frame step across window boundaries ÷ median step elsewhere.

    ``steps`` (T-1,) from :func:`frame_steps`; ``boundaries``: frames f where a window
    starts or ends, so step f-1 → f crosses a seam. 1.0: seams are invisible in the
    motion statistics; much more: visible jumps. None when either set is empty.

    >>> seam_ratio(torch.tensor([1.0, 1.0, 3.0, 1.0, 1.0]), [3])
    3.0
    """
    at = sorted({b - 1 for b in boundaries if 1 <= b <= len(steps)})
    if not at or len(at) == len(steps):
        return None
    mask = torch.zeros(len(steps), dtype=torch.bool)
    mask[at] = True
    typical = float(steps[~mask].median())
    seams = float(steps[mask].median())
    if typical == 0:
        return 1.0 if seams == 0 else math.inf
    return seams / typical


class StreamingClipStats:
    """Clip metrics over frames fed in chunks (k, H, W, C) (or (k, ...)), holding only the
    first and the latest frame plus a few numbers per frame: frame steps, the
    loop-closure ratio, and per-frame channel means and standard deviations (for colour
    drift per window).

    >>> s = StreamingClipStats()
    >>> s.update(torch.tensor([[0.0], [1.0]])); s.update(torch.tensor([[2.0], [1.0]]))
    >>> s.summary()["median_step"], s.summary()["loop_closure_ratio"]
    (1.0, 1.0)
    """

    def __init__(self) -> None:
        self.first: Tensor | None = None
        self.last: Tensor | None = None
        self.steps: list[Tensor] = []
        self.channel_mean: list[Tensor] = []
        self.channel_std: list[Tensor] = []
        self.frames = 0

    def update(self, chunk: Tensor) -> None:
        if len(chunk) == 0:
            return
        if self.first is None:
            self.first = chunk[0].clone()
        joined = chunk if self.last is None else torch.cat([self.last[None], chunk])
        if len(joined) > 1:
            self.steps.append(frame_steps(joined))
        pixels = chunk.to(torch.float32).reshape(len(chunk), -1, chunk.shape[-1])  # (k, pixels, channels)
        self.channel_mean.append(pixels.mean(dim=1))
        self.channel_std.append(pixels.std(dim=1, correction=0))
        self.last = chunk[-1].clone()
        self.frames += len(chunk)

    def mean_step(self) -> float | None:
        """Mean frame-to-frame change (flicker), or None for fewer than two frames."""
        return float(torch.cat(self.steps).mean()) if self.steps else None

    def summary(self, windows: Sequence[tuple[int, int]] = (), *, loop: bool = False) -> dict:
        """Metrics; with ``windows`` [(start, length)], also the seam ratio and each
        window's channel mean/std (colour drift: how far windows wander apart). With
        ``loop`` the clip is a circle: the wrap (last frame → first) is a step like the
        others for the seam ratio, and ``largest_step_ratio`` is its largest step around
        the circle ÷ the median step — the same wherever the file starts."""
        if self.frames < 2:
            return {"frames": self.frames, "median_step": None, "loop_closure_ratio": None}
        steps = torch.cat(self.steps)
        typical = float(steps.median())
        wrap = float(frame_steps(torch.stack([self.last, self.first]))[0])
        out: dict = {"frames": self.frames, "median_step": typical, "loop_closure_ratio": _over(wrap, typical)}
        if loop:
            steps = torch.cat([steps, torch.tensor([wrap])])  # step T-1 → 0 last: a boundary at frame 0 is T
            out["largest_step_ratio"] = _over(float(steps.max()), typical)
        if windows:
            edges = {f % self.frames for start, length in windows for f in (start, start + length)}
            out["seam_ratio"] = seam_ratio(steps, sorted(e or self.frames for e in edges) if loop else sorted(edges))
            mean, std = torch.cat(self.channel_mean), torch.cat(self.channel_std)
            per_window = []
            for start, length in windows:
                idx = torch.arange(start, start + length) % self.frames
                per_window.append({"start": start, "mean": mean[idx].mean(0).tolist(), "std": std[idx].mean(0).tolist()})
            means = torch.tensor([w["mean"] for w in per_window])
            out["colour_drift"] = {"windows": per_window, "max_mean_spread": float((means.max(0).values - means.min(0).values).max())}
        return out


def _over(step: float, typical: float) -> float:
    """``step / typical``; for a static clip (``typical`` 0): 1.0 if ``step`` is 0 too, else inf."""
    return (1.0 if step == 0 else math.inf) if typical == 0 else step / typical


def lag_correlation(series: Tensor, lag: int) -> Tensor:
    """Correlation of frame t with frame t+``lag``, for every t, pooled over the other axes.

    ``series`` (T, N): N samples (pixels, channels, seeds) of a zero-mean process over
    T frames. Returns (T - lag,) float64: Σ x_t x_{t+lag} / √(Σ x_t² · Σ x_{t+lag}²).
    For a stationary process this does not depend on t; a seam shows as the t where
    it does.

    >>> lag_correlation(torch.tensor([[1.0, 1.0], [1.0, -1.0], [1.0, -1.0]]), 1)
    tensor([0., 1.], dtype=torch.float64)
    """
    if lag < 1 or series.ndim != 2 or len(series) <= lag:
        raise ValueError(f"series must be (T, N) with T > lag >= 1, got {tuple(series.shape)} and lag {lag}")
    x = series.to(torch.float64)
    a, b = x[:-lag], x[lag:]
    return (a * b).sum(1) / ((a * a).sum(1) * (b * b).sum(1)).sqrt()


def crossing(boundaries: Sequence[int], frames: int, lag: int, *, circular: bool = False) -> Tensor:
    """(T - lag,) bool (T with ``circular``): whether the pair (t, t+lag) straddles a
    boundary b (t < b <= t + lag, modulo T when circular).

    >>> crossing([4], 8, 2).nonzero().flatten().tolist()
    [2, 3]
    """
    n = frames if circular else frames - lag
    t = torch.arange(n)
    out = torch.zeros(n, dtype=torch.bool)
    for b in boundaries:
        for shift in ((0, frames) if circular else (0,)):
            out |= (t < b + shift) & (b + shift <= t + lag)
    return out
