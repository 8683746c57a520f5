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


class CalmestStart:
    """A loop's frames, started where its wrap is calmest.

    A loop made without a start image has no first frame of its own: its plan is
    circular, so frame 0 is only where the generator's indices begin, and the step from
    the last frame back to the first is as likely as any to be one of the clip's larger
    ones. :meth:`spool` writes the loop's frames (uint8 chunks in order) to a temporary
    file in ``folder`` while measuring every step (mean absolute difference, as
    :func:`kernels.metrics.frame_steps`), yielding each chunk's frame count as it goes;
    :meth:`frames` then yields the same cycle starting just after its smallest step
    (:func:`kernels.metrics.calmest_start`), in chunks of ``chunk`` frames. The player's
    restart and the codec's first frame then fall where the motion is calmest; the
    cycle, and every step in it, is unchanged. ``start``: the generated frame the output
    begins with, once spooled. Calling the object on chunks does both."""

    def __init__(self, folder, *, chunk: int = 16) -> None:
        self.folder, self.chunk = folder, chunk
        self.start: int | None = None
        self._spool = None
        self._count, self._shape = 0, ()

    def __call__(self, chunks: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
        for _ in self.spool(chunks):
            pass
        yield from self.frames()

    def spool(self, chunks: Iterable[torch.Tensor]) -> Iterator[int]:
        import tempfile

        from kernels.metrics import calmest_start, frame_steps

        self.close()
        self._spool = tempfile.TemporaryFile(dir=self.folder, prefix=".loop-")
        first = last = None
        steps: list[torch.Tensor] = []
        self._count = 0
        try:
            for chunk in chunks:
                if len(chunk) == 0:
                    continue
                joined = chunk if last is None else torch.cat([last[None], chunk])
                if len(joined) > 1:
                    steps.append(frame_steps(joined))
                if first is None:
                    first = chunk[0].clone()
                    self._shape = tuple(first.shape)
                last = chunk[-1].clone()
                self._spool.write(np.ascontiguousarray(chunk.numpy()).tobytes())
                self._count += len(chunk)
                yield len(chunk)
        except BaseException:
            self.close()
            raise
        if self._count < 3:  # no wrap worth moving
            self.start = 0
        else:
            cycle = torch.cat([*steps, frame_steps(torch.stack([last, first]))])
            self.start = calmest_start(cycle.tolist())

    def frames(self) -> Iterator[torch.Tensor]:
        if self._spool is None or self.start is None:
            raise RuntimeError("CalmestStart.frames() before spool() finished")
        count, spool = self._count, self._spool
        frame_bytes = int(np.prod(self._shape)) if count else 0
        try:
            for begin in range(0, count, self.chunk):
                n, at = min(self.chunk, count - begin), (self.start + begin) % count
                spool.seek(at * frame_bytes)
                data = bytearray(spool.read(min(n, count - at) * frame_bytes))
                if at + n > count:  # the chunk runs over the spool's end: on from its start
                    spool.seek(0)
                    data += spool.read((at + n - count) * frame_bytes)
                yield torch.from_numpy(np.frombuffer(data, dtype=np.uint8).reshape(n, *self._shape))
        finally:
            self.close()

    def close(self) -> None:
        """Remove the spool (also done when :meth:`frames` ends)."""
        if self._spool is not None:
            self._spool.close()
            self._spool = None
