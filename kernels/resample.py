"""Separable resampling of frames, optionally in horizontal bands of output rows.

Each axis is resampled by a sparse (out, K) table of source indices and weights (rows
sum to 1): ``out[i] = sum_k w[i, k] * x[idx[i, k]]``, applied as small dense matmuls
over blocks of outputs (each reads only the inputs its block touches). Lanczos-3 tables are built here
with PIL's pixel-centre convention (output pixel i samples source position
``(i + 0.5) * in / out``; the kernel is widened by the scale when downscaling with
antialias). Bicubic, bilinear and nearest tables are PyTorch's own, read off
``F.interpolate`` by probing it with impulse combs, so results equal
``F.interpolate`` up to float rounding while sharing the banded path.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor

from kernels.check import check_int

METHODS = ("lanczos", "bicubic", "bilinear", "nearest")
_BLOCK = 128  # outputs per dense matmul piece: larger = fewer calls, more multiplications by zero


@functools.lru_cache(maxsize=64)  # tables depend only on sizes: build once per size pair
def _lanczos_taps(n_in: int, n_out: int, antialias: bool) -> tuple[Tensor, Tensor]:
    scale = n_in / n_out
    stretch = max(scale, 1.0) if antialias else 1.0
    support = 3.0 * stretch
    centre = (torch.arange(n_out, dtype=torch.float64) + 0.5) * scale
    first = torch.floor(centre - support).to(torch.int64)
    idx = first[:, None] + torch.arange(int(2 * support) + 3)[None, :]
    t = (idx + 0.5 - centre[:, None]) / stretch
    w = torch.where((t.abs() < 3) & (idx >= 0) & (idx < n_in), torch.sinc(t) * torch.sinc(t / 3), 0.0)
    return idx.clamp(0, n_in - 1), w / w.sum(dim=1, keepdim=True)


@functools.lru_cache(maxsize=64)
def _interpolate_taps(n_in: int, n_out: int, method: str, antialias: bool) -> tuple[Tensor, Tensor]:
    # Probe F.interpolate (a linear map along H) with P periodic combs: comb r lights every
    # input j with j % P == r. Each output's support is narrower than P, so it sees at most
    # one lit input per comb and its response to comb r is that input's weight. Memory is
    # O(P * (n_in + n_out)), never a dense (n_out, n_in) matrix.
    scale = n_in / n_out
    half = math.ceil(2 * max(scale, 1.0)) + 3  # > support radius of every method (bicubic aa: 2 * scale)
    period = 2 * half
    combs = (torch.arange(n_in)[None, :] % period == torch.arange(period)[:, None]).to(torch.float64)
    combs = combs.view(period, 1, n_in, 1).expand(-1, -1, -1, 2)  # width 2: torch 2.13's aa kernels mishandle width 1
    if method == "nearest":
        response = F.interpolate(combs, size=(n_out, 2), mode="nearest-exact")
    else:
        response = F.interpolate(combs, size=(n_out, 2), mode=method, align_corners=False, antialias=antialias)
    response = response[:, 0, :, 0].T  # (n_out, P)
    centre = torch.floor((torch.arange(n_out, dtype=torch.float64) + 0.5) * scale).to(torch.int64)
    idx = centre[:, None] - half + torch.arange(period)[None, :]  # (n_out, P): each residue once
    w = torch.where((idx >= 0) & (idx < n_in), response.gather(1, idx % period), 0.0)
    used = w.ne(0).any(dim=0).nonzero()[:, 0]  # drop tap columns that are zero in every row
    keep = slice(int(used.min()), int(used.max()) + 1)
    return idx[:, keep].clamp(0, n_in - 1), w[:, keep]


def _taps(n_in: int, n_out: int, method: str, antialias: bool, like: Tensor) -> tuple[Tensor, Tensor]:
    """Source indices (out, K) int64 and weights (out, K) (dtype/device of ``like``) along one axis."""
    idx, w = _lanczos_taps(n_in, n_out, antialias) if method == "lanczos" else _interpolate_taps(
        n_in, n_out, method, antialias
    )
    return idx.to(like.device), w.to(device=like.device, dtype=like.dtype)


def _blocks(idx: Tensor, w: Tensor, block: int) -> list[tuple[int, int, Tensor]]:
    """Cut taps (out, K) into dense pieces, in output order: ``block`` outputs read inputs
    [i0, i1) through a matrix M (block, i1 - i0)."""
    pieces = []
    for o0 in range(0, len(idx), block):
        bidx, bw = idx[o0 : o0 + block], w[o0 : o0 + block]
        i0, i1 = int(bidx.min()), int(bidx.max()) + 1
        m = torch.zeros((len(bidx), i1 - i0), dtype=w.dtype, device=w.device).scatter_add_(1, bidx - i0, bw)
        pieces.append((i0, i1, m))
    return pieces


def _apply(x: Tensor, pieces: list[tuple[int, int, Tensor]], dim: int) -> Tensor:
    """Resample ``x`` along ``dim`` (-1: columns, -2: rows), one small dense matmul per piece."""
    if dim == -1:
        return torch.cat([x[..., i0:i1] @ m.T for i0, i1, m in pieces], dim=-1)
    return torch.cat([m @ x[..., i0:i1, :] for i0, i1, m in pieces], dim=-2)


def resize(
    frames: Tensor,
    size: tuple[int, int],
    *,
    method: str = "lanczos",
    antialias: bool = True,
    tile_rows: int | None = None,
) -> Tensor:
    """Resize frames (..., C, H, W) (float) to ``size`` = (height, width): (..., C, h, w).

    ``method``: ``lanczos`` (separable Lanczos-3, PIL convention), ``bicubic``,
    ``bilinear`` (``align_corners=False``, ``antialias`` as in ``F.interpolate``) or
    ``nearest`` (``nearest-exact``). With ``tile_rows``, output rows are computed in
    bands of at most ``tile_rows`` rows, each from only the input rows its weights
    touch; the result equals the untiled one. Always returns a new tensor.

    >>> frames = torch.rand(2, 3, 8, 8)
    >>> resize(frames, (16, 12)).shape
    torch.Size([2, 3, 16, 12])
    >>> torch.allclose(resize(torch.full((1, 5, 7), 0.25), (9, 3)), torch.full((1, 9, 3), 0.25))
    True
    """
    if frames.ndim < 3 or not frames.dtype.is_floating_point:
        raise ValueError(f"frames must be a float (..., C, H, W) tensor, got {frames.dtype} {tuple(frames.shape)}")
    if len(size) != 2:
        raise ValueError(f"size must be (height, width), got {size!r}")
    check_int("size[0]", size[0], 1)
    check_int("size[1]", size[1], 1)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if tile_rows is not None:
        check_int("tile_rows", tile_rows, 1)
    height, width = size
    rows_idx, rows_w = _taps(frames.shape[-2], height, method, antialias, frames)
    cols = _blocks(*_taps(frames.shape[-1], width, method, antialias, frames), _BLOCK)
    band_rows = tile_rows or height
    bands = []
    for r0 in range(0, height, band_rows):
        idx, w = rows_idx[r0 : r0 + band_rows], rows_w[r0 : r0 + band_rows]
        lo, hi = int(idx.min()), int(idx.max()) + 1  # the input rows this band touches
        band = _apply(frames[..., lo:hi, :], cols, dim=-1)
        bands.append(_apply(band, _blocks(idx - lo, w, _BLOCK), dim=-2))
    return bands[0] if len(bands) == 1 else torch.cat(bands, dim=-2)
