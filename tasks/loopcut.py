"""Where a loop's file starts.

A loop made on a circular window plan has no first frame of its own: every step around
the circle, the wrap included, is generated inside windows in the same way, so any frame
can open the file. The file must start somewhere, and that is where a player joins the
end to the start — and where a player that restarts the file (a web page seeking back
to 0, a platform that re-encodes without the mp4's edit list) adds its own hiccup. With
``loop_start: smoothest`` (the default for an item without an image) the file starts
after the clip's smallest frame-to-frame change, so the wrap is the loop's quietest step;
``first`` keeps the generated order (the default for an item with an image, whose loop
starts at the still, and for a clip made in a single window, whose wrap was never
generated inside a window: ``ItemSpec.loop_start_rule``). The move changes where the
loop is cut, not how it moves: ``largest_step_ratio`` in the metrics is the same
wherever the file starts.

The frames are spooled raw beside the outputs (T × H × W × 3 bytes at the generation
size) until the last one arrives, then read back from the chosen start in chunks — the
same pattern as the mp4 encoder's own loop spool (``tasks.encode.VideoEncoder``, at the
output size), which holds the file's frames meanwhile too.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from kernels.metrics import StreamingClipStats, frame_steps, quietest_start
from tasks.errors import ItemError


@dataclass
class LoopCut:
    """Where a loop's file starts. :func:`cut_loop` fills in ``start`` and
    ``generated_wrap_ratio`` once the last frame is in (as ``tasks.finish._codenoise``
    fills in its stats), so read them after the frames are consumed."""

    rule: Literal["smoothest", "first"]
    start: int = 0  # the generated frame the file starts at
    generated_wrap_ratio: float | None = None  # the generated order's wrap step ÷ its median step

    def as_dict(self) -> dict:
        """The record's ``plan.loop_start``."""
        out: dict = {"rule": self.rule, "start_frame": self.start}
        if self.generated_wrap_ratio is not None:
            out["generated_wrap_ratio"] = round(self.generated_wrap_ratio, 4)
        return out


def cut_loop(chunks: Iterable[Tensor], directory: Path, cut: LoopCut, *, chunk_frames: int = 16) -> Iterator[Tensor]:
    """``chunks`` (k, H, W, C) of a circular clip, yielded again from ``cut.start`` round to
    the frame before it. ``rule == "first"`` passes them through; ``smoothest`` spools
    them to a temporary file in ``directory`` (gone however the stream ends) and starts
    after the smallest step."""
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
            if len(chunk) == 0:
                continue
            array = np.ascontiguousarray(chunk.numpy())
            if frame is None:
                frame = (array.shape[1:], array.dtype)
            elif (array.shape[1:], array.dtype) != frame:
                raise ValueError(f"loop frames changed from {frame} to {(array.shape[1:], array.dtype)}")
            try:
                spool.write(array.tobytes())
            except OSError as e:  # a full disk, or the file size limit (ulimit -f) of a finishing worker
                raise ItemError(f"cannot hold the loop's frames in {directory} to start its file at its smoothest "
                                f"step ({spool.tell() + array.nbytes} bytes so far): {e.strerror or e}; free space "
                                f"or raise the file size limit, or set loop_start: first") from None
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
                    raise ItemError(f"the loop's spooled frames in {directory} ended at frame {first} of {total}; "
                                    f"run again")
                yield torch.from_numpy(np.frombuffer(buffer, dtype=dtype).reshape(count, *shape))
