"""Encode: frames are piped to ffmpeg as raw RGB, never held whole in memory.

The ffmpeg binary comes from the ``imageio-ffmpeg`` wheel (or ``FRAMEFOLD_FFMPEG``), so
no system package is needed. That build has no ffprobe: metadata is read back with
``ffmpeg -f ffmetadata`` and stream facts from ffmpeg's own report.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import ffmpeg
import numpy as np

from tasks.errors import EncodeError

# Tag under which the provenance record is embedded in the container.
TAG = "framefold"


def ffmpeg_exe() -> str:
    exe = os.environ.get("FRAMEFOLD_FFMPEG")
    if not exe:
        try:
            import imageio_ffmpeg

            exe = imageio_ffmpeg.get_ffmpeg_exe()
        except (ImportError, RuntimeError) as e:
            raise EncodeError(f"no ffmpeg binary: {e}; reinstall imageio-ffmpeg or set FRAMEFOLD_FFMPEG") from None
    if not Path(exe).is_file() or not os.access(exe, os.X_OK):
        raise EncodeError(f"ffmpeg not found or not executable at {exe}; check FRAMEFOLD_FFMPEG")
    return exe


def rate(fps: float) -> str:
    """ffmpeg frame rate as a fraction with a denominator of at most 1001 (24 -> 24/1,
    29.97 -> 2997/100, 30000/1001 -> 30000/1001)."""
    f = Fraction(fps).limit_denominator(1001)
    return f"{f.numerator}/{f.denominator}"


class VideoEncoder:
    """Pipe uint8 frames (k, H, W, 3) into a video at ``path``: ``mp4`` (H.264, yuv420p),
    ``webm`` (VP9, yuv420p, constant quality: ``-crf`` with ``-b:v 0``) or ``gif`` (a palette
    made for the clip, looping forever).

    ``with VideoEncoder(path, width=…, height=…, fps=…) as enc: enc.write(frames)``;
    leaving the block waits for ffmpeg and raises :class:`EncodeError` if it failed.
    ``loop_frames``: the clip is a loop of that many frames (mp4: see :func:`loop_coding`;
    its frames are spooled beside ``path`` and encoded when the block ends; a loop of
    fewer than 3 frames is encoded plainly).
    """

    def __init__(self, path: Path, *, width: int, height: int, fps: float, format: str = "mp4",
                 crf: int | None = None, loop_frames: int | None = None) -> None:
        if format in ("mp4", "webm") and (width % 2 or height % 2):
            raise ValueError(f"yuv420p needs even dimensions, got {width}x{height}")
        self.path, self.width, self.height, self.format = path, width, height, format
        self.frames = 0
        # a loop in an mp4 starts with its own last frame, hidden (see loop_coding): the frames
        # are spooled raw beside the output until that frame has arrived
        self._loop = format == "mp4" and loop_frames is not None and loop_frames >= 3
        self._loop_frames = loop_frames
        stream = ffmpeg.input("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{width}x{height}", framerate=rate(fps))
        if format == "mp4":
            coding = loop_coding(loop_frames, fps) if self._loop else {}
            out = stream.output(str(path), format="mp4", vcodec="libx264", pix_fmt="yuv420p",
                                crf=18 if crf is None else crf, preset="medium", **coding)
        elif format == "webm":
            out = stream.output(str(path), format="webm", vcodec="libvpx-vp9", pix_fmt="yuv420p",
                                crf=32 if crf is None else crf, **{"b:v": 0, "row-mt": 1, "deadline": "good",
                                                                    "cpu-used": 4})
        elif format == "gif":
            split = stream.video.filter_multi_output("split")
            palette = split[0].filter("palettegen", stats_mode="full")
            out = ffmpeg.filter([split[1], palette], "paletteuse", dither="sierra2_4a").output(
                str(path), format="gif", loop=0)
        else:
            raise ValueError(f"unknown video format {format!r}")
        self._args = out.global_args("-nostdin", "-hide_banner", "-loglevel", "error", "-y").compile(cmd=ffmpeg_exe())
        self._stderr = tempfile.TemporaryFile()
        self._proc = None
        self._spool = tempfile.TemporaryFile(dir=Path(path).parent, prefix=".spool-") if self._loop else None
        if not self._loop:
            self._start()

    def _start(self) -> None:
        try:
            self._proc = subprocess.Popen(self._args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                          stderr=self._stderr)  # fmt: skip
        except OSError as e:
            self._close_files()
            raise EncodeError(f"could not start ffmpeg: {e}") from None

    def write(self, frames: np.ndarray) -> None:
        if frames.shape[1:] != (self.height, self.width, 3) or frames.dtype != np.uint8:
            raise ValueError(f"frames must be uint8 (k, {self.height}, {self.width}, 3), got {frames.dtype} {frames.shape}")
        if self._spool is not None:
            try:
                self._spool.write(frames.tobytes())
            except OSError as e:  # a full disk, or the file size limit (ulimit -f)
                raise EncodeError(f"{Path(self.path).name}: cannot hold the loop's frames until its last one "
                                  f"({self._spool.tell() + frames.nbytes} bytes so far): {e.strerror or e}; free "
                                  f"space or raise the file size limit") from None
            self.frames += len(frames)
            return
        try:
            self._proc.stdin.write(frames.tobytes())
        except BrokenPipeError:
            self._finish()  # raises with ffmpeg's message
        self.frames += len(frames)

    def _feed_loop(self) -> None:
        """The spooled loop to ffmpeg: its last frame, then every frame in order."""
        frame_bytes = self.width * self.height * 3
        self._start()
        try:
            if self.frames:
                self._spool.seek((self.frames - 1) * frame_bytes)
                self._proc.stdin.write(self._spool.read(frame_bytes))
            self._spool.seek(0)
            while block := self._spool.read(frame_bytes * 16):
                self._proc.stdin.write(block)
        except BrokenPipeError:
            pass  # ffmpeg's own message follows
        finally:
            self._spool.close()
            self._spool = None

    def _close_files(self) -> None:
        self._stderr.close()
        if self._spool is not None:
            self._spool.close()
            self._spool = None

    def _finish(self) -> None:
        if self._spool is not None:
            if self.frames != self._loop_frames:  # the zones name the last frame: it must be the one written
                self._close_files()
                raise EncodeError(f"{Path(self.path).name}: a loop of {self._loop_frames} frames got {self.frames}")
            try:
                self._feed_loop()
            except BaseException:  # a full disk, a cancelled task: no ffmpeg left waiting on its input
                if self._proc is not None:
                    self._proc.kill()
                    self._proc.wait()
                self._close_files()
                raise
        try:
            self._proc.stdin.close()
        except BrokenPipeError:
            pass
        code = self._proc.wait()
        self._stderr.seek(0)
        err = self._stderr.read().decode(errors="replace").strip()
        self._stderr.close()
        if code != 0:
            raise EncodeError(_failure(code, err))

    def __enter__(self) -> VideoEncoder:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self._finish()
        elif self._proc is None:
            self._close_files()
        else:
            self._proc.kill()
            self._proc.wait()
            self._close_files()


def loop_coding(frames: int, fps: float) -> dict[str, str]:
    """ffmpeg output options for a loop of ``frames`` frames in an mp4, whose wrap (last
    frame → first) must look like any other step in the decoded file.

    A file starts a new prediction chain, so its first frame's codec error is independent
    of its last frame's, while consecutive frames share theirs; on slow loops (well under
    one level of change per frame) that made the decoded wrap 3.6–4.9× the median step.
    The loop is therefore encoded as its last frame, hidden before the start by the mp4
    edit list (``output_ts_offset`` of minus one frame; players and ffmpeg start at frame
    0), then every frame: frame 0 is predicted from the loop's own end, as every other
    frame from its predecessor. Both copies of the last frame are coded near-losslessly
    (x264 ``zones`` at q=0), so the hidden one equals what the loop ends on. Measured on
    the example loops: wrap ÷ median 3.6–4.9 → 0.26–1.03, files 1.4–1.7× larger
    (docs/quality.md). The caller feeds the last frame first (:class:`VideoEncoder`)."""
    return {"x264-params": f"zones=0,0,q=0/{frames},{frames},q=0", "output_ts_offset": repr(-1 / fps)}


def remux(src: Path, dst: Path, *, tags: dict[str, str], format: str = "mp4") -> None:
    """Copy the streams of ``src`` into ``dst`` (an ``mp4`` or ``webm``) with ``tags`` as
    container metadata; an mp4's index is moved to the front (faststart). No re-encoding."""
    metadata = {f"metadata:g:{i}": f"{k}={v}" for i, (k, v) in enumerate(tags.items())}
    if format == "mp4":
        metadata["movflags"] = "+faststart+use_metadata_tags"
    args = (
        ffmpeg.input(str(src))
        .output(str(dst), format=format, c="copy", map_metadata="-1", **metadata)
        .global_args("-nostdin", "-hide_banner", "-loglevel", "error", "-y")
        .compile(cmd=ffmpeg_exe())
    )
    _run(args)


def read_tags(path: Path) -> dict[str, str]:
    """Container metadata of ``path`` as a dict (read with ``-f ffmetadata``)."""
    out = _run([ffmpeg_exe(), "-nostdin", "-v", "error", "-i", str(path), "-f", "ffmetadata", "-"])
    tags: dict[str, str] = {}
    for line in out.decode("utf-8", errors="replace").splitlines():
        if not line or line.startswith((";", "#", "[")):
            continue
        key, sep, value = re.split(r"(?<!\\)(=)", line, maxsplit=1) if "=" in line else (line, "", "")
        if sep:
            tags[_unescape(key)] = _unescape(value)
    return tags


@dataclass(frozen=True)
class VideoInfo:
    codec: str
    width: int
    height: int
    fps: float
    frames: int
    pix_fmt: str


def probe(path: Path) -> VideoInfo:
    """Stream facts from ffmpeg's report, and the exact count of the frames shown (decoded,
    after the container's edit list: a loop's mp4 codes one frame more, hidden before its start)."""
    proc = subprocess.run(
        [ffmpeg_exe(), "-nostdin", "-hide_banner", "-i", str(path), "-map", "0:v:0", "-f", "null", "-"],
        capture_output=True,
    )
    report = proc.stderr.decode(errors="replace")
    stream = re.search(r"Stream #\S+.*?: Video: (\w+)[^,]*, (\w+)[^,]*(?:\([^)]*\))?, (\d+)x(\d+)", report)
    fps = re.search(r"([\d.]+) fps", report)
    counts = re.findall(r"frame=\s*(\d+)", report)
    if proc.returncode != 0 or not stream or not fps or not counts:
        raise EncodeError(f"cannot read video stream of {path}: {report.strip().splitlines()[-1:]}")
    return VideoInfo(
        codec=stream.group(1),
        pix_fmt=stream.group(2),
        width=int(stream.group(3)),
        height=int(stream.group(4)),
        fps=float(fps.group(1)),
        frames=int(counts[-1]),
    )


def decode(path: Path, *, width: int, height: int) -> Iterator[np.ndarray]:
    """Yield decoded frames (H, W, 3) uint8 one at a time."""
    args = [ffmpeg_exe(), "-nostdin", "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    frame_bytes = width * height * 3
    with subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as proc:
        while chunk := proc.stdout.read(frame_bytes):
            if len(chunk) < frame_bytes:
                raise EncodeError(f"{path}: truncated frame while decoding")
            yield np.frombuffer(chunk, np.uint8).reshape(height, width, 3)


def _run(args: list[str]) -> bytes:
    proc = subprocess.run(args, capture_output=True)
    if proc.returncode != 0:
        raise EncodeError(_failure(proc.returncode, proc.stderr.decode(errors="replace").strip()))
    return proc.stdout


# What a signal that ends ffmpeg means for the user (a negative return code is a signal).
_SIGNALS = {
    "SIGXFSZ": "the file size limit (ulimit -f) was reached while writing; raise it or free space",
    "SIGKILL": "killed from outside (out of memory?)",
    "SIGSEGV": "ffmpeg crashed",
}


def _failure(code: int, stderr: str) -> str:
    """ffmpeg's exit (or the signal that ended it) and the last lines it printed."""
    tail = " | ".join(stderr.splitlines()[-3:]) or "no message"
    if code >= 0:
        return f"ffmpeg exited with code {code}: {tail}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    what = f"ffmpeg was killed by {name}" + (f": {_SIGNALS[name]}" if name in _SIGNALS else "")
    return f"{what}; it said: {tail}" if stderr.strip() else what


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text, flags=re.S)
