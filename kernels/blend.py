"""The stitch kernel: overlapping windows of finished frames in, finished frames out.

``StreamingBlend`` is ``overlap_add`` one window at a time, any order, for frames that are
already pixels (uint8) or float32 values, returned in the same dtype as soon as final. A frame covered by one window is that
window's frame (``w·x / w`` is ``x``): it is handed out as a view, never copied or
converted. A frame covered by several windows is averaged in one pass: a compiled loop
reads each window's bytes once, weights and sums them in float32, divides by the weight
sum once and (for uint8) rounds to the nearest level — the arithmetic of
``overlap_add`` followed by rounding, without a float32 frame ever being written to
memory. Window arrays are held only until their last shared frame is out.

The loops are compiled by numba on first use in each process (about half a second; no
cache is written, so the kernel stays free of files).
"""

from __future__ import annotations

from collections.abc import Sequence

import numba
import numpy as np
import torch
from torch import Tensor

from kernels.check import check_plan


@numba.njit(nogil=True, inline="always")
def _level(v):  # pragma: no cover - compiled
    """A float32 value rounded (half to even) to the nearest 8-bit level."""
    return np.uint8(min(max(np.rint(v), np.float32(0.0)), np.float32(255.0)))


@numba.njit(nogil=True)
def _blend2_u8(a, wa, b, wb, out):  # pragma: no cover - compiled
    """out[k] = round((wa[k]·a[k] + wb[k]·b[k]) / (wa[k] + wb[k])), rows of (K, N), float32 arithmetic."""
    for k in range(out.shape[0]):
        total = wa[k] + wb[k]
        for i in range(out.shape[1]):
            out[k, i] = _level((wa[k] * np.float32(a[k, i]) + wb[k] * np.float32(b[k, i])) / total)


@numba.njit(nogil=True)
def _blend2_f32(a, wa, b, wb, out):  # pragma: no cover - compiled
    """out[k] = (wa[k]·a[k] + wb[k]·b[k]) / (wa[k] + wb[k]), rows of (K, N), float32."""
    for k in range(out.shape[0]):
        total = wa[k] + wb[k]
        for i in range(out.shape[1]):
            out[k, i] = (wa[k] * a[k, i] + wb[k] * b[k, i]) / total


@numba.njit(nogil=True)
def _accumulate(acc, x, w, first):  # pragma: no cover - compiled
    """acc = w·x (first) or acc += w·x, float32, 1-D."""
    if first:
        for i in range(acc.size):
            acc[i] = w * np.float32(x[i])
    else:
        for i in range(acc.size):
            acc[i] += w * np.float32(x[i])


@numba.njit(nogil=True)
def _finish_u8(acc, total, out):  # pragma: no cover - compiled
    for i in range(out.size):
        out[i] = _level(acc[i] / total)


@numba.njit(nogil=True)
def _finish_f32(acc, total, out):  # pragma: no cover - compiled
    for i in range(out.size):
        out[i] = acc[i] / total


def blend_pair(a: np.ndarray, wa: np.ndarray, b: np.ndarray, wb: np.ndarray, out: np.ndarray) -> None:
    """``out[k] = (wa[k]·a[k] + wb[k]·b[k]) / (wa[k] + wb[k])`` for frames ``a``, ``b``, ``out``
    (K, ...) uint8 or float32 (C-contiguous) and weights (K,): the frames two windows share,
    in one pass (uint8: rounded to the nearest level)."""
    rows = len(out)
    kernel = _blend2_u8 if out.dtype == np.uint8 else _blend2_f32
    kernel(a.reshape(rows, -1), wa.astype(np.float32), b.reshape(rows, -1), wb.astype(np.float32), out.reshape(rows, -1))


def blend_frame(parts: Sequence[tuple[np.ndarray, float]], out: np.ndarray) -> None:
    """Write the weighted average of ``parts`` [(frame, weight)] (same shape, uint8 or float32,
    C-contiguous) into ``out`` (that shape; uint8: rounded to the nearest level)."""
    if len(parts) == 2:
        (a, wa), (b, wb) = parts
        blend_pair(a[None], np.array([wa]), b[None], np.array([wb]), out[None])
        return
    total = np.float32(0.0)
    for _, w in parts:
        total = np.float32(total + np.float32(w))
    flat = out.reshape(-1)
    acc = np.empty(flat.shape, np.float32)
    for k, (x, w) in enumerate(parts):
        _accumulate(acc, x.reshape(-1), np.float32(w), k == 0)
    (_finish_u8 if out.dtype == np.uint8 else _finish_f32)(acc, total, flat)


class StreamingBlend:
    """Windows in any order, final frames out in order, in the windows' dtype.

    The plan of ``overlap_add``: ``indices[i]`` (L_i,) frame positions of window
    ``i``, ``weights[i]`` (L_i,) >= 0. ``add(i, values)`` takes window ``i`` (values
    (L_i, *S), uint8 or float32) and returns the frames that became final, in order, as a
    list of chunks (k, *S): runs of frames seen by one window only are views of
    ``values``; averaged frames are new arrays.

    >>> s = StreamingBlend([torch.tensor([0, 1]), torch.tensor([1, 2])], [torch.ones(2)] * 2)
    >>> s.add(1, torch.tensor([[30], [50]], dtype=torch.uint8)), s.next_frame
    ([], 0)
    >>> [c.flatten().tolist() for c in s.add(0, torch.tensor([[10], [20]], dtype=torch.uint8))], s.done
    ([[10], [25], [50]], True)
    """

    def __init__(self, indices: Sequence[Tensor], weights: Sequence[Tensor]):
        check_plan(indices, weights)
        self._indices = [idx.tolist() for idx in indices]
        self._weights = [w.to(torch.float32).tolist() for w in weights]
        size = 1 + max((max(idx) for idx in self._indices if idx), default=-1)
        self._cover = [0] * size  # windows covering each frame
        for idx in self._indices:
            for f in idx:
                self._cover[f] += 1
        if 0 in self._cover:
            raise ValueError(f"every frame must be covered by a window, got none at frame {self._cover.index(0)}")
        total = [0.0] * size
        for idx, w in zip(self._indices, self._weights):
            for f, wf in zip(idx, w):
                total[f] += wf
        if min(total, default=1.0) <= 0:
            raise ValueError(f"every frame must get weight > 0, got none at frame {min(range(size), key=total.__getitem__)}")
        self._pending = list(self._cover)
        self._parts: dict[int, list[tuple[int, int]]] = {}  # frame -> [(window, row)] added so far
        self._values: dict[int, np.ndarray] = {}  # window -> its pixels, while a frame still needs them
        self._uses: dict[int, int] = {}  # window -> frames not yet emitted that read it
        self._trailing: tuple[int, ...] | None = None
        self._dtype: np.dtype | None = None
        self.next_frame = 0
        self.done = size == 0

    @property
    def buffered(self) -> int:
        """Frames touched and not yet emitted."""
        return len(self._parts)

    @property
    def held(self) -> list[int]:
        """The windows whose arrays are still held (a frame not yet out reads them), in order."""
        return sorted(self._values)

    def add(self, window: int, values: Tensor | np.ndarray) -> list[Tensor]:
        if not isinstance(window, int) or not 0 <= window < len(self._indices):
            raise ValueError(f"window must be an int in [0, {len(self._indices)}), got {window!r}")
        if window in self._uses or window in self._values:
            raise ValueError(f"window must be added once, got window {window} a second time")
        x = np.ascontiguousarray(values.numpy() if isinstance(values, Tensor) else values)
        idx = self._indices[window]
        if x.ndim < 1 or x.shape[0] != len(idx):
            raise ValueError(f"values must have {len(idx)} rows for window {window}, got shape {tuple(x.shape)}")
        if x.dtype not in (np.uint8, np.float32):
            raise ValueError(f"values must be uint8 or float32, got {x.dtype}")
        if self._trailing is None:
            self._trailing, self._dtype = tuple(x.shape[1:]), x.dtype
        elif tuple(x.shape[1:]) != self._trailing or x.dtype != self._dtype:
            raise ValueError(
                f"values must be {self._dtype} with trailing shape {self._trailing}, got {x.dtype} {tuple(x.shape[1:])}"
            )
        self._values[window] = x
        self._uses[window] = len(idx)
        for j, f in enumerate(idx):
            self._parts.setdefault(f, []).append((window, j))
            self._pending[f] -= 1
        chunks: list[Tensor] = []
        run: list[tuple[int, int]] = []  # consecutive single-window frames: (window, row)
        blended: list[list[tuple[int, int]]] = []  # consecutive averaged frames
        while self.next_frame < len(self._pending) and self._pending[self.next_frame] == 0:
            parts = self._parts.pop(self.next_frame)
            if len(parts) == 1 and (not run or run[-1] == (parts[0][0], parts[0][1] - 1)):
                self._flush_blended(blended, chunks)
                run.append(parts[0])
            elif len(parts) == 1:
                self._flush_run(run, chunks)
                run.append(parts[0])
            else:
                self._flush_run(run, chunks)
                blended.append(parts)
            self.next_frame += 1
        self._flush_run(run, chunks)
        self._flush_blended(blended, chunks)
        self.done = self.next_frame == len(self._pending)
        return chunks

    def _flush_run(self, run: list[tuple[int, int]], chunks: list[Tensor]) -> None:
        if run:
            window, first = run[0]
            chunks.append(torch.from_numpy(self._values[window][first:first + len(run)]))
            self._release(window, len(run))
            run.clear()

    def _flush_blended(self, blended: list[list[tuple[int, int]]], chunks: list[Tensor]) -> None:
        if not blended:
            return
        out = np.empty((len(blended), *self._trailing), self._dtype)
        k = 0
        while k < len(blended):
            parts = blended[k]
            if len(parts) == 2:  # the usual case: a run of frames two windows share, in one call
                (a, ja), (b, jb) = sorted(parts)
                n = 1
                while k + n < len(blended) and sorted(blended[k + n]) == [(a, ja + n), (b, jb + n)]:
                    n += 1
                wa, wb = self._weights[a], self._weights[b]
                blend_pair(self._values[a][ja:ja + n], np.asarray(wa[ja:ja + n]), self._values[b][jb:jb + n],
                           np.asarray(wb[jb:jb + n]), out[k:k + n])
            else:
                n = 1
                blend_frame([(self._values[w][j], self._weights[w][j]) for w, j in parts], out[k])
            for frame in blended[k:k + n]:
                for w, _ in frame:
                    self._release(w, 1)
            k += n
        chunks.append(torch.from_numpy(out))
        blended.clear()

    def _release(self, window: int, frames: int) -> None:
        self._uses[window] -= frames
        if self._uses[window] == 0:
            del self._values[window]  # emitted views keep their own reference
