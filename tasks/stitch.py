"""Stitch: overlapping windows become one stream of frames, averaged with the window weighting.

Frames leave as soon as no pending window covers them, so only the frames of the
windows in flight are ever held.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import torch

from kernels.blend import StreamingBlend
from kernels.windows import Window, window_indices, window_weights


def stitch(
    windows: Iterable[tuple[int, np.ndarray | torch.Tensor]],
    plan: Sequence[Window],
    *,
    num_frames: int,
    weighting: str,
) -> Iterator[torch.Tensor]:
    """Consume ``(window index, pixels (L, H, W, C) uint8)`` in any order; yield uint8
    chunks (k, H, W, C) of final frames in temporal order, covering 0..num_frames-1.
    The weighted average is taken in float32 and rounded to the nearest level once; a
    frame only one window covers is that window's frame, handed on without a copy."""
    indices = [window_indices(w, num_frames) for w in plan]
    weights = [window_weights(w.length, weighting) for w in plan]
    blend = StreamingBlend(indices, weights)
    for index, pixels in windows:
        if isinstance(pixels, np.ndarray) and not pixels.flags.writeable:
            pixels = pixels.copy()  # Ray hands out read-only views of the object store
        yield from blend.add(index, pixels)
    if not blend.done:
        raise RuntimeError(f"stitching ended at frame {blend.next_frame} of {num_frames}: windows missing")
