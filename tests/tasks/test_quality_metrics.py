"""Metrics of delivered files: measured on the frames decoded from the mp4."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from tasks.encode import VideoEncoder
from tests.conftest import bar_loop, encode_clip
from tasks.quality import measure_file, measure_frames

EXAMPLES = Path(__file__).resolve().parents[2] / "manifests" / "examples"


def test_loop_closure_seams_and_drift_on_the_decoded_file(tmp_path):
    frames = bar_loop()
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


def _slow_loop(frames=72, size=128):
    """An example still in slow periodic motion (the motion backend's kernels), moving well
    under one level per frame: the case where codec noise decides whether the wrap shows."""
    import torch

    from kernels.motion import animate, motion_texture
    from kernels.pixels import to_uint8
    from tasks.media import load_image

    image, _ = load_image(EXAMPLES / "images" / "coffee.jpg", size=(size, size), max_pixels=10**8)
    period = frames / 24
    texture = motion_texture(size, size, modes=4, amplitude=0.012, max_hz=1.5, period=period,
                             generator=torch.Generator().manual_seed(11))  # fmt: skip
    return to_uint8(animate(image, texture, torch.arange(frames) / 24, period=period)).numpy()


def open_files(folder) -> list[str]:
    """Files in ``folder`` that this process holds open (an encoder's spool is an unlinked
    file there: ``FOLDER/#INODE (deleted)``)."""
    names = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            names.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:  # the descriptor listdir itself used
            pass
    return [n for n in names if n.startswith(f"{folder}/")]


def test_a_loop_closes_in_the_decoded_mp4(tmp_path):
    """An mp4 restarts its prediction chain at frame 0, so a plain encoding of a slow loop
    shows its wrap; encoded as a loop (its last frame hidden before the start, both copies
    near-lossless) the wrap is an ordinary step."""
    frames = _slow_loop()
    source = measure_frames([frames], loop=True)
    assert source["median_step"] * 255 < 1.0 and source["loop_closure_ratio"] < 1.15
    ratios = {}
    for name, loop in (("plain", False), ("loop", True)):
        got = measure_file(encode_clip(tmp_path / f"{name}.mp4", frames, loop=loop), width=128, height=128, loop=True)
        assert got["frames"] == len(frames)
        ratios[name] = got["loop_closure_ratio"]
    assert ratios["plain"] > 2.0, ratios  # the problem is real on this clip
    assert ratios["loop"] <= 1.2, ratios
    assert not open_files(tmp_path)  # the spool (an unlinked file) is closed


def test_a_loop_file_plays_its_frames_from_frame_0():
    """The hidden frame is never shown: N frames, frame 0 first, N/fps seconds from 0."""
    import subprocess
    import tempfile

    from tasks.encode import decode, ffmpeg_exe

    frames = np.repeat(np.repeat(bar_loop(48), 2, axis=1), 2, axis=2)  # 64x64, a bar moving 1.3 px per frame
    with tempfile.TemporaryDirectory() as tmp:
        path = encode_clip(Path(tmp) / "loop.mp4", frames, loop=True)
        decoded = np.stack(list(decode(path, width=64, height=64))).astype(int)
        report = subprocess.run([ffmpeg_exe(), "-i", str(path)], capture_output=True, text=True).stderr
    assert len(decoded) == 48
    error = {shift: np.abs(decoded - np.roll(frames, shift, axis=0)).mean() for shift in (-1, 0, 1)}
    assert min(error, key=error.get) == 0 and error[0] < 2.0, error
    assert "Duration: 00:00:02.00, start: 0.000000" in report


def test_a_loop_given_other_frames_than_announced_fails_and_leaves_nothing(tmp_path):
    """The loop's zones name its last frame: a writer that stops early is an error, not a
    file coded around the wrong frame, and no ffmpeg or spool is left behind."""
    import pytest

    from tasks.encode import EncodeError

    with pytest.raises(EncodeError, match="a loop of 48 frames got 40"):
        with VideoEncoder(tmp_path / "short.mp4", width=32, height=32, fps=24, loop_frames=48) as enc:
            enc.write(bar_loop(48)[:40])
    assert not (tmp_path / "short.mp4").exists()
    assert not open_files(tmp_path)
