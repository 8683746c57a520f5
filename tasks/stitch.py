"""Stitch: overlapping windows become one stream of frames, averaged with the window weighting.

Frames leave as soon as no pending window covers them, so only the frames of the
windows in flight are ever held.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import torch

from kernels.overlap import StreamingOverlapAdd
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
    The weighted average is taken in float32 and rounded to the nearest level once."""
    indices = [window_indices(w, num_frames) for w in plan]
    weights = [window_weights(w.length, weighting) for w in plan]
    acc = StreamingOverlapAdd(indices, weights)
    for index, pixels in windows:
        if isinstance(pixels, np.ndarray) and not pixels.flags.writeable:
            pixels = pixels.copy()  # Ray hands out read-only views of the object store
        ready = acc.add(index, torch.as_tensor(pixels))
        if len(ready):
            yield ready.round_().clamp_(0, 255).to(torch.uint8)
    if not acc.done:
        raise RuntimeError(f"stitching ended at frame {acc.next_frame} of {num_frames}: windows missing")
