"""Upscale: resample stitched frames to the output size (antialiased Lanczos by default).

Frames are resampled one at a time (so a frame's result never depends on how frames
were chunked) and, when tall, in horizontal bands to bound memory; banded and
whole-frame results are equal.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch

from kernels.pixels import from_uint8, to_uint8
from kernels.resample import resize

# Output rows per band: 512 rows of an 8192-wide frame is 50 MB of float32 per channel-frame.
BAND_ROWS = 512


def upscale(chunks: Iterable[torch.Tensor], *, size: tuple[int, int], method: str) -> Iterator[torch.Tensor]:
    """Resize uint8 chunks (k, H, W, C) to ``size`` = (width, height); chunks that
    already have that size pass through untouched."""
    width, height = size
    tile_rows = BAND_ROWS if height > BAND_ROWS else None
    for chunk in chunks:
        if tuple(chunk.shape[1:3]) == (height, width):
            yield chunk
            continue
        yield torch.stack([
            to_uint8(resize(from_uint8(frame), (height, width), method=method, tile_rows=tile_rows))
            for frame in chunk
        ])
