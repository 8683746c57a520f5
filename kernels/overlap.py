"""Overlap-add averaging: plan, then accumulate ``value += w * x; weight += w`` into
fresh float32 buffers, then divide once.

One core (``_accumulate`` + ``_normalize``) serves time windows (``overlap_add``) and
image tiles (``overlap_add_tiles``, which flattens each tile to pixel indices). The
streaming stitcher (``kernels.blend.StreamingBlend``) is tested against ``overlap_add``.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor

from kernels.check import check_int, check_plan, check_values
from kernels.windows import plan_windows, window_weights


def _weighted(x: Tensor, w: Tensor) -> Tensor:
    """``w * x`` in float32, ``w`` (L,) broadcast over the trailing axes of ``x`` (L, *S)."""
    w = w.to(device=x.device, dtype=torch.float32)
    return w.view(-1, *([1] * (x.ndim - 1))) * x.to(torch.float32)


def _accumulate(values: Sequence[Tensor], indices: Sequence[Tensor], weights: Sequence[Tensor], size: int):
    """Fresh float32 buffers (size, *S) and (size,): sum of w*x and sum of w per position."""
    x0 = values[0]
    acc = torch.zeros((size, *x0.shape[1:]), dtype=torch.float32, device=x0.device)
    wsum = torch.zeros(size, dtype=torch.float32, device=x0.device)
    for x, idx, w in zip(values, indices, weights):
        idx = idx.to(device=x0.device, dtype=torch.int64)
        acc.index_add_(0, idx, _weighted(x, w))
        wsum.index_add_(0, idx, w.to(device=x0.device, dtype=torch.float32))
    return acc, wsum


def _normalize(acc: Tensor, wsum: Tensor, where: Callable[[int], str]) -> Tensor:
    """The one division ``acc / wsum``; raises naming the first position without weight."""
    empty = (wsum <= 0).nonzero()
    if len(empty):
        raise ValueError(f"every output position must get weight > 0, got none at {where(int(empty[0, 0]))}")
    return acc / wsum.view(-1, *([1] * (acc.ndim - 1)))


def overlap_add(values: Sequence[Tensor], indices: Sequence[Tensor], weights: Sequence[Tensor], size: int) -> Tensor:
    """Weighted average of overlapping windows: float32 (size, *S).

    ``values[i]`` (L_i, *S) float or uint8, ``indices[i]`` (L_i,) positions in
    [0, size), ``weights[i]`` (L_i,) >= 0. ``out[f] = sum_i w_i(f) x_i(f) / sum_i w_i(f)``.
    Every position must be covered with positive weight.

    >>> overlap_add([torch.full((2, 1), 1.0), torch.full((2, 1), 3.0)],
    ...             [torch.tensor([0, 1]), torch.tensor([1, 2])], [torch.ones(2)] * 2, 3)
    tensor([[1.],
            [2.],
            [3.]])
    """
    check_int("size", size, 1)
    check_plan(indices, weights)
    check_values(values, indices)
    for i, idx in enumerate(indices):
        if len(idx) and int(idx.max()) >= size:
            raise ValueError(f"indices[{i}] must be < size ({size}), got {int(idx.max())}")
    return _normalize(*_accumulate(values, indices, weights, size), lambda f: f"frame {f}")


def plan_tiles(height: int, width: int, *, tile: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """Overlapping tiles ``(y, x, h, w)`` in pixels, row-major: a linear window plan per axis.

    Tiles are ``tile`` square (clipped to the image when it is smaller); the last row
    and column are aligned to the bottom and right edges.

    >>> plan_tiles(6, 4, tile=4, overlap=2)
    [(0, 0, 4, 4), (2, 0, 4, 4)]
    """
    rows = plan_windows(height, length=tile, overlap=overlap)
    cols = plan_windows(width, length=tile, overlap=overlap)
    return [(r.start, c.start, r.length, c.length) for r in rows for c in cols]


def tile_weights(h: int, w: int, kind: str = "cosine", *, dtype=torch.float32, device=None) -> Tensor:
    """Tile blending weights (h, w): outer product of ``window_weights`` along y and x.

    >>> tile_weights(2, 3, "linear")
    tensor([[0.5000, 1.0000, 0.5000],
            [0.5000, 1.0000, 0.5000]])
    """
    wy = window_weights(h, kind, dtype=dtype, device=device)
    return wy[:, None] * window_weights(w, kind, dtype=dtype, device=device)[None, :]


def overlap_add_tiles(
    values: Sequence[Tensor],
    boxes: Sequence[tuple[int, int, int, int]],
    weights: Sequence[Tensor],
    size: tuple[int, int],
) -> Tensor:
    """Weighted average of overlapping tiles: float32 (*B, H, W).

    ``values[i]`` (*B, h_i, w_i) with shared leading axes B (e.g. (T, C)); ``boxes[i]``
    = (y, x, h, w) in output pixels; ``weights[i]`` (h_i, w_i); ``size`` = (H, W). Each
    tile becomes a window over flattened pixel indices y * W + x, averaged by the same
    core as ``overlap_add``.

    >>> img = torch.arange(12.0).view(1, 3, 4)
    >>> boxes = plan_tiles(3, 4, tile=3, overlap=2)
    >>> tiles = [img[:, y:y + h, x:x + w] for y, x, h, w in boxes]
    >>> torch.equal(overlap_add_tiles(tiles, boxes, [tile_weights(3, 3)] * 2, (3, 4)), img)
    True
    """
    if len(size) != 2:
        raise ValueError(f"size must be (H, W), got {size!r}")
    height, width = size
    check_int("size[0]", height, 1)
    check_int("size[1]", width, 1)
    if len(boxes) != len(values) or len(weights) != len(values):
        raise ValueError(
            f"boxes and weights must hold one entry per tile ({len(values)}), got {len(boxes)} and {len(weights)}"
        )
    if len(values) == 0:
        raise ValueError("values must hold at least one tile, got 0")
    lead = values[0].shape[:-2]
    flat_values, flat_indices, flat_weights = [], [], []
    for i, ((y, x, h, w), v, wt) in enumerate(zip(boxes, values, weights)):
        ints = all(isinstance(n, int) for n in (y, x, h, w))
        if not (ints and 0 <= y and 0 <= x and 1 <= h and 1 <= w and y + h <= height and x + w <= width):
            raise ValueError(
                f"boxes[{i}] must be ints (y, x, h, w) inside the output {height}x{width}, got {(y, x, h, w)}"
            )
        if v.ndim < 2 or v.shape[-2:] != (h, w) or v.shape[:-2] != lead:
            raise ValueError(f"values[{i}] must have shape {(*lead, h, w)}, got {tuple(v.shape)}")
        if wt.shape != (h, w):
            raise ValueError(f"weights[{i}] must have shape {(h, w)}, got {tuple(wt.shape)}")
        rows = torch.arange(y, y + h, device=v.device)
        cols = torch.arange(x, x + w, device=v.device)
        flat_indices.append((rows[:, None] * width + cols[None, :]).reshape(-1))
        flat_values.append(v.reshape(*lead, h * w).movedim(-1, 0))
        flat_weights.append(wt.reshape(-1))
    check_plan(flat_indices, flat_weights)
    acc, wsum = _accumulate(flat_values, flat_indices, flat_weights, height * width)
    out = _normalize(acc, wsum, lambda p: f"pixel (y={p // width}, x={p % width})")
    return out.movedim(0, -1).reshape(*lead, height, width).contiguous()
