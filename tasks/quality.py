"""Quality metrics of a delivered video file, measured on the frames decoded from it
(codec noise included), for provenance.

* ``median_step``: median mean-absolute change between consecutive frames (0..1 scale).
* ``flicker``: mean frame-to-frame change (0..1).
* ``seam_ratio``: median step across window boundaries ÷ median step elsewhere (1: seams
  invisible in the motion statistics).
* ``loop_closure_ratio`` (loops): step from the last frame back to the first ÷ median
  step (1: the wrap looks like any other step); ``largest_step_ratio`` (loops): the
  largest step around the loop, the wrap included, ÷ median step — how uneven the motion
  is, wherever the file starts (``loop_start``).
* ``brightness_drift``: mean luma (Rec. 601) of the last tenth of the clip minus the
  first tenth (0..1); ``brightness_range``: max − min of the per-window mean luma;
  ``colour_drift``: the largest spread of a per-window channel mean.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from kernels.metrics import StreamingClipStats
from tasks.encode import decode

LUMA = torch.tensor([0.299, 0.587, 0.114])


def measure_frames(frames, *, windows: Sequence[tuple[int, int]] = (), loop: bool = False) -> dict:
    """The metrics of uint8 frames (an iterable of (H, W, 3) or (k, H, W, 3) arrays)."""
    stats = StreamingClipStats()
    for chunk in frames:
        chunk = torch.from_numpy(np.array(chunk))  # a copy: decoded frames are read-only buffers
        stats.update(chunk[None] if chunk.ndim == 3 else chunk)
    summary = stats.summary(windows if len(windows) > 1 else (), loop=loop)
    if summary["median_step"] is None:
        return {"frames": stats.frames}
    out: dict = {"frames": stats.frames, "median_step": round(summary["median_step"] / 255, 6),
                 "flicker": round(stats.mean_step() / 255, 6)}  # fmt: skip
    if loop:
        out["loop_closure_ratio"] = round(summary["loop_closure_ratio"], 4)
        out["largest_step_ratio"] = round(summary["largest_step_ratio"], 4)
    if summary.get("seam_ratio") is not None:
        out["seam_ratio"] = round(summary["seam_ratio"], 4)
    luma = torch.cat(stats.channel_mean) @ LUMA / 255  # (T,)
    tenth = max(1, len(luma) // 10)
    out["brightness_drift"] = round(float(luma[-tenth:].mean() - luma[:tenth].mean()), 6)
    if "colour_drift" in summary:
        window_luma = [float(luma[torch.arange(s, s + n) % len(luma)].mean()) for s, n in windows]
        out["brightness_range"] = round(max(window_luma) - min(window_luma), 6)
        out["colour_drift"] = round(summary["colour_drift"]["max_mean_spread"] / 255, 6)
    return out


def measure_file(path: Path, *, width: int, height: int, windows: Sequence[tuple[int, int]] = (),
                 loop: bool = False) -> dict:  # fmt: skip
    """:func:`measure_frames` of the frames decoded from the video at ``path``."""
    return measure_frames(decode(path, width=width, height=height), windows=windows, loop=loop)
