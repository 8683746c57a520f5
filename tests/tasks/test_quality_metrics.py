"""Metrics of delivered files: measured on the frames decoded from the mp4."""

from __future__ import annotations

import numpy as np

from tasks.encode import VideoEncoder
from tasks.quality import measure_file, measure_frames


def _loop(frames=48, size=32):
    """A bright bar circling the frame once per clip: every step alike, the wrap too."""
    t = np.arange(frames)[:, None, None]
    x = np.arange(size)[None, None, :]
    bar = (np.abs(((x - t * size / frames) + size / 2) % size - size / 2) < 4) * 200 + 30
    return np.repeat(np.broadcast_to(bar, (frames, size, size))[..., None], 3, axis=3).astype(np.uint8)


def test_loop_closure_seams_and_drift_on_the_decoded_file(tmp_path):
    frames = _loop()
    raw = measure_frames([frames], windows=[(0, 16), (12, 16), (24, 16), (32, 16)], loop=True)
    assert raw["loop_closure_ratio"] == 1.0 and raw["seam_ratio"] == 1.0 and abs(raw["brightness_drift"]) < 0.01
    path = tmp_path / "a.mp4"
    with VideoEncoder(path, width=32, height=32, fps=8) as enc:
        enc.write(frames)
    got = measure_file(path, width=32, height=32, windows=[(0, 16), (12, 16), (24, 16), (32, 16)], loop=True)
    assert got["frames"] == 48
    assert 0.8 < got["median_step"] / raw["median_step"] < 1.2  # codec noise is small next to this motion
    assert got["loop_closure_ratio"] <= 1.2 and abs(got["brightness_drift"]) < 0.01
    # a clip that brightens is measured as drifting
    ramp = np.clip(frames.astype(int) + np.arange(48)[:, None, None, None], 0, 255).astype(np.uint8)
    assert measure_frames([ramp])["brightness_drift"] > 0.03
