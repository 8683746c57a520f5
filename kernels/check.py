"""Guards shared by the kernels: each raises ``ValueError`` naming the argument, what was
expected and what came (``"overlap must be >= 0, got -1"``). Public, so every kernel module
validates its inputs the same way (as kornia's ``core/check.py``).

>>> check_int("length", 16, 1)
>>> check_int("length", 0, 1)
Traceback (most recent call last):
ValueError: length must be >= 1, got 0
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

__all__ = ["check_int", "check_plan", "check_values"]


def check_int(name: str, value: object, minimum: int) -> None:
    """`value` is an int (not a bool) and >= `minimum`."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def check_plan(indices: Sequence[Tensor], weights: Sequence[Tensor]) -> None:
    """An overlap-add plan: one 1-D integer index tensor >= 0 per window, and weights >= 0 of its shape."""
    if len(indices) == 0:
        raise ValueError("indices must hold at least one window, got 0")
    if len(weights) != len(indices):
        raise ValueError(f"weights must hold one entry per window ({len(indices)}), got {len(weights)}")
    for i, (idx, w) in enumerate(zip(indices, weights)):
        if idx.ndim != 1 or idx.dtype.is_floating_point or idx.dtype.is_complex or idx.dtype == torch.bool:
            raise ValueError(f"indices[{i}] must be a 1-D integer tensor, got {idx.dtype} {tuple(idx.shape)}")
        if w.shape != idx.shape:
            raise ValueError(f"weights[{i}] must have shape {tuple(idx.shape)}, got {tuple(w.shape)}")
        if len(idx) and int(idx.min()) < 0:
            raise ValueError(f"indices[{i}] must be >= 0, got {int(idx.min())}")
        if len(w) and not bool((w >= 0).all()):
            raise ValueError(f"weights[{i}] must be >= 0, got min {float(w.min())}")


def check_values(values: Sequence[Tensor], indices: Sequence[Tensor]) -> None:
    """One value tensor (L_i, *S) per window of the plan, all with the same trailing shape *S."""
    if len(values) != len(indices):
        raise ValueError(f"values must hold one entry per window ({len(indices)}), got {len(values)}")
    for i, (x, idx) in enumerate(zip(values, indices)):
        if x.ndim < 1 or x.shape[0] != len(idx):
            raise ValueError(f"values[{i}] must have {len(idx)} rows (len(indices[{i}])), got shape {tuple(x.shape)}")
        if x.shape[1:] != values[0].shape[1:]:
            raise ValueError(
                f"values[{i}] must have trailing shape {tuple(values[0].shape[1:])} like values[0], "
                f"got {tuple(x.shape[1:])}"
            )
