"""Temporal window plans and window weightings (geometry only, no frames).

A plan is a list of ``Window(start, length)`` over ``num_frames`` frames (T). Linear
plans put the last window flush with the end, so no tail frame is left uncovered;
circular plans (loops) let windows wrap: the frame indices of a window are
``(start + arange(length)) % num_frames``.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import torch

from kernels.check import check_int

WEIGHTINGS = ("flat", "linear", "cosine", "gaussian")


class Window(NamedTuple):
    """A run of ``length`` frames starting at absolute frame ``start`` (wraps in circular plans)."""

    start: int
    length: int


def plan_windows(num_frames: int, *, length: int, overlap: int, circular: bool = False) -> list[Window]:
    """Plan full-length windows of ``length`` frames covering ``num_frames`` frames.

    Consecutive windows share at least ``overlap`` frames. Linear: strides of
    ``length - overlap``, the last window aligned to the end. Circular: ``n =
    ceil(T / (length - overlap))`` evenly spread starts ``i * T // n``, all moved by the
    shift (less than one spacing) that puts the wrap — the step from the last frame to
    the first, which a loop repeats every time it plays — farthest from any window edge,
    so it is made inside windows like any other step; each window wraps modulo T, and
    the last overlaps the first. A clip no longer than one window is a single window
    ``Window(0, num_frames)``.

    >>> plan_windows(10, length=4, overlap=1)
    [Window(start=0, length=4), Window(start=3, length=4), Window(start=6, length=4)]
    >>> plan_windows(10, length=4, overlap=1, circular=True)
    [Window(start=0, length=4), Window(start=2, length=4), Window(start=5, length=4), Window(start=7, length=4)]
    >>> [w.start for w in plan_windows(64, length=8, overlap=4, circular=True)][:3]  # the wrap 2 frames from an edge
    [2, 6, 10]
    """
    check_int("num_frames", num_frames, 1)
    check_int("length", length, 1)
    check_int("overlap", overlap, 0)
    if overlap >= length:
        raise ValueError(f"overlap must be < length ({length}), got {overlap}")
    if num_frames <= length:
        return [Window(0, num_frames)]
    stride = length - overlap
    if circular:
        n = math.ceil(num_frames / stride)
        starts = [i * num_frames // n for i in range(n)]
        shift = max(range(max(1, num_frames // n)), key=lambda k: _wrap_clearance(starts, k, length, num_frames))
        return [Window(start + shift, length) for start in starts]
    starts = list(range(0, num_frames - length, stride))
    if starts[-1] != num_frames - length:
        starts.append(num_frames - length)
    return [Window(s, length) for s in starts]


def _wrap_clearance(starts: Sequence[int], shift: int, length: int, num_frames: int) -> int:
    """How far the wrap (the step from frame T-1 to frame 0) lies from the nearest window
    edge when every start moves by ``shift``: an edge at e is the step from e-1 to e."""
    edges = {(s + shift) % num_frames for s in starts} | {(s + shift + length) % num_frames for s in starts}
    return min(min(e, num_frames - e) for e in edges)


def window_indices(window: Window, num_frames: int) -> torch.Tensor:
    """Absolute frame indices (L,) int64 of ``window``: ``(start + arange(L)) % num_frames``.

    >>> window_indices(Window(7, 4), 10)
    tensor([7, 8, 9, 0])
    """
    check_int("num_frames", num_frames, 1)
    check_int("window.start", window.start, 0)
    check_int("window.length", window.length, 1)
    if window.length > num_frames:
        raise ValueError(f"window.length must be <= num_frames ({num_frames}), got {window.length}")
    return (window.start + torch.arange(window.length)) % num_frames


def window_weights(length: int, kind: str = "cosine", *, dtype=torch.float32, device=None) -> torch.Tensor:
    """Per-frame blending weights (L,) of a window, symmetric and strictly positive.

    With j = 0..L-1: ``flat`` 1; ``linear`` the pyramid min(j+1, L-j) scaled to max 1;
    ``cosine`` sin(pi (j+0.5) / L)^2; ``gaussian`` exp(-((j - (L-1)/2) / (L/6))^2 / 2).

    >>> window_weights(4, "linear")
    tensor([0.5000, 1.0000, 1.0000, 0.5000])
    >>> window_weights(2, "cosine")
    tensor([0.5000, 0.5000])
    """
    check_int("length", length, 1)
    j = torch.arange(length, dtype=torch.float64)
    if kind == "flat":
        w = torch.ones_like(j)
    elif kind == "linear":
        w = torch.minimum(j + 1, length - j)
        w = w / w.max()
    elif kind == "cosine":
        w = torch.sin(math.pi * (j + 0.5) / length) ** 2
    elif kind == "gaussian":
        w = torch.exp(-0.5 * ((j - (length - 1) / 2) / (length / 6)) ** 2)
    else:
        raise ValueError(f"kind must be one of {WEIGHTINGS}, got {kind!r}")
    return w.to(device=device, dtype=dtype)


def coverage(plan: Sequence[Window], num_frames: int) -> torch.Tensor:
    """How many windows of ``plan`` cover each frame: (T,) int64.

    >>> coverage(plan_windows(10, length=4, overlap=1), 10)
    tensor([1, 1, 1, 2, 1, 1, 2, 1, 1, 1])
    """
    check_int("num_frames", num_frames, 1)
    counts = torch.zeros(num_frames, dtype=torch.int64)
    for w in plan:
        counts[window_indices(w, num_frames)] += 1
    return counts


def redundancy(plan: Sequence[Window], num_frames: int) -> float:
    """Frames generated per output frame: sum of window lengths / ``num_frames``.

    >>> redundancy(plan_windows(10, length=4, overlap=1), 10)
    1.2
    """
    check_int("num_frames", num_frames, 1)
    return sum(w.length for w in plan) / num_frames


def emission_order(plan: Sequence[Window], num_frames: int) -> list[int]:
    """Window indices sorted (stably) by the smallest frame each covers.

    Adding windows in this order lets a streaming stitcher emit frames early; in a
    circular plan the wrapping window covers frame 0 and comes second.

    >>> emission_order(plan_windows(10, length=4, overlap=1, circular=True), 10)
    [0, 3, 1, 2]
    """
    first = [int(window_indices(w, num_frames).min()) for w in plan]
    return sorted(range(len(plan)), key=first.__getitem__)
