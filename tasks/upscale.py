"""Upscale: resample stitched frames to the output size (antialiased Lanczos by default),
or run them through a super-resolution model on the actor pool (``method: model``).

Frames are resampled one at a time (so a frame's result never depends on how frames
were chunked) and, when tall, in horizontal bands to bound memory; banded and
whole-frame results are equal.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import ray
import torch

from kernels.pixels import from_uint8, to_uint8
from kernels.resample import resize
from tasks.generate import Rendered

# Largest float32 output one super-resolution request may make (frames are split to fit).
REQUEST_BYTES = 512 << 20
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


def model_upscale(
    submit: Callable[[np.ndarray], ray.ObjectRef],
    chunks: Iterable[torch.Tensor],
    *,
    size: tuple[int, int],
    scale: int,
    in_flight: int = 2,
    seen: Callable[[Rendered], None] | None = None,
) -> Iterator[torch.Tensor]:
    """Upscale uint8 chunks (k, H, W, C) with a ×``scale`` super-resolution model on the actor pool
    (``submit(frames)`` → a Ray ref of a :class:`~tasks.generate.Rendered`, each handed to
    ``seen``), in order, with up to ``in_flight`` chunks outstanding; then resample to ``size`` = (width, height) when the
    model's scale does not land there (a ×4 model for a ×2 output is downsampled with Lanczos)."""
    pending: deque[ray.ObjectRef] = deque()

    def collect() -> torch.Tensor:
        rendered: Rendered = ray.get(pending.popleft())
        if seen is not None:
            seen(rendered)
        return torch.from_numpy(np.require(rendered.pixels, requirements="W"))  # Ray hands out read-only arrays

    def per_request(chunk: torch.Tensor) -> int:  # frames whose float32 model output (×3: tiles, sum, copy) fits
        h, w = chunk.shape[1:3]
        return max(1, REQUEST_BYTES // (h * scale * w * scale * 3 * 4 * 3))

    def ready() -> Iterator[torch.Tensor]:
        for chunk in chunks:
            step = per_request(chunk)
            for start in range(0, len(chunk), step):
                pending.append(submit(chunk[start:start + step].numpy()))
                if len(pending) >= in_flight:
                    yield collect()
        while pending:
            yield collect()

    try:
        yield from upscale(ready(), size=size, method="lanczos")
    finally:
        for ref in pending:  # the consumer stopped early
            ray.cancel(ref)
