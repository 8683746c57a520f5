"""Where a loop's file starts.

A loop made on a circular window plan has no first frame of its own: every step around
the circle, the wrap included, is generated inside windows in the same way, so any frame
can open the file. The file must start somewhere, and that is where a player joins the
end to the start — and where a player that restarts the file (a web page seeking back
to 0, a platform that re-encodes without the mp4's edit list) adds its own hiccup. With
``loop_start: smoothest`` (the default for an item without an image) the file starts
after the clip's smallest frame-to-frame change, so the wrap is the loop's quietest step;
``first`` keeps the generated order (the default for an item with an image, whose loop
starts at the still, and what a clip made in a single window gets: its wrap was never
generated inside a window).

The frames are spooled raw beside the outputs (T × H × W × 3 bytes at the generation
size) until the last one arrives, then read back from the chosen start in chunks.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from kernels.metrics import StreamingClipStats, frame_steps, quietest_start
from kernels.windows import Window


@dataclass
class LoopCut:
    """Where the loop's file starts, filled in by :func:`cut_loop` once the last frame is in."""

    rule: str  # "smoothest" or "first"
    start: int = 0  # the generated frame the file starts at
    generated_wrap_ratio: float | None = None  # the generated order's wrap step ÷ its median step
    reason: str | None = None  # why the rule differs from the item's

    @classmethod
    def of(cls, rule: str | None, windows: Sequence[Window], num_frames: int) -> LoopCut:
        """The cut for an item's ``loop_start`` rule and window plan. A file is turned round
        only where its wrap was generated like its other steps, inside a window: a clip made
        in one window is a line whose ends meet only in the file, so it keeps the generated
        order and ``loop_closure_ratio`` shows its wrap as it is.

        >>> LoopCut.of("smoothest", [Window(0, 16)], 16).as_dict()["reason"]
        'one window: its wrap is not generated inside a window'
        >>> LoopCut.of("smoothest", [Window(2, 8), Window(6, 8), Window(10, 8)], 12).rule
        'smoothest'
        """
        if rule == "smoothest" and not any(w.start % num_frames + w.length > num_frames for w in windows):
            return cls("first", reason="one window: its wrap is not generated inside a window")
        return cls(rule or "first")

    def as_dict(self) -> dict:
        out: dict = {"rule": self.rule, "start_frame": self.start}
        if self.generated_wrap_ratio is not None:
            out["generated_wrap_ratio"] = round(self.generated_wrap_ratio, 4)
        if self.reason:
            out["reason"] = self.reason
        return out


def cut_loop(chunks: Iterable[Tensor], directory: Path, cut: LoopCut, *, chunk_frames: int = 16) -> Iterator[Tensor]:
    """``chunks`` (k, H, W, C) of a circular clip, yielded again from ``cut.start`` round to
    the frame before it. ``rule == "first"`` passes them through; ``smoothest`` spools
    them to a temporary file in ``directory`` and starts after the smallest step."""
    if cut.rule == "first":
        yield from chunks
        return
    if cut.rule != "smoothest":
        raise ValueError(f"loop start rule must be 'smoothest' or 'first', got {cut.rule!r}")
    directory.mkdir(parents=True, exist_ok=True)
    stats = StreamingClipStats()
    with tempfile.TemporaryFile(dir=directory, prefix=".loop-") as spool:
        frame: tuple[tuple[int, ...], np.dtype] | None = None
        for chunk in chunks:
            array = np.ascontiguousarray(chunk.numpy())
            if frame is None:
                frame = (array.shape[1:], array.dtype)
            elif (array.shape[1:], array.dtype) != frame:
                raise ValueError(f"loop frames changed from {frame} to {(array.shape[1:], array.dtype)}")
            spool.write(memoryview(array).cast("B"))
            stats.update(chunk)
        if frame is None:
            return
        total = stats.frames
        if total >= 2:
            wrap = frame_steps(torch.stack([stats.last, stats.first]))
            cut.start = quietest_start(torch.cat([*stats.steps, wrap]))
            cut.generated_wrap_ratio = stats.summary()["loop_closure_ratio"]
        shape, dtype = frame
        frame_bytes = int(np.prod(shape)) * dtype.itemsize
        for begin, end in ((cut.start, total), (0, cut.start)):
            for first in range(begin, end, chunk_frames):
                count = min(chunk_frames, end - first)
                buffer = bytearray(count * frame_bytes)
                spool.seek(first * frame_bytes)
                if spool.readinto(buffer) != len(buffer):
                    raise OSError(f"the loop spool in {directory} ended early (frame {first} of {total})")
                yield torch.from_numpy(np.frombuffer(buffer, dtype=dtype).reshape(count, *shape))
