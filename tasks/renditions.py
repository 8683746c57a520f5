"""Renditions: every (aspect, format) output of an item, made from one generation.

An aspect other than ``native`` is the largest centred crop of the generated (and
upscaled) frames with that width:height ratio, so every aspect shows the same motion for
the cost of one generation. Formats: ``mp4`` (H.264, yuv420p, faststart), ``webm`` (VP9,
constant quality), ``gif`` (per-clip palette, loops forever) and ``poster`` (the middle
frame as a JPEG). File names are stable:

>>> [r.name("sku-1") for r in plan_renditions((640, 360), ("native", "9:16"), ("mp4", "poster"))]
['sku-1.mp4', 'sku-1.poster.jpg', 'sku-1.9x16.mp4', 'sku-1.9x16.poster.jpg']
"""

from __future__ import annotations

import contextlib
import io
import logging
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from manifests import crop_box
from tasks import store
from tasks.encode import TAG, VideoEncoder, remux

EXTENSIONS = {"mp4": "mp4", "webm": "webm", "gif": "gif", "poster": "jpg"}
VIDEO_FORMATS = ("mp4", "webm", "gif")
TAGGED_FORMATS = ("mp4", "webm")  # containers that carry the embedded provenance record


@dataclass(frozen=True)
class Rendition:
    aspect: str  # "native" or "W:H"
    format: str  # mp4 | webm | gif | poster
    x: int  # crop box in the output frames
    y: int
    width: int
    height: int

    def name(self, item_id: str) -> str:
        infix = "" if self.aspect == "native" else "." + self.aspect.replace(":", "x")
        kind = ".poster" if self.format == "poster" else ""
        return f"{item_id}{infix}{kind}.{EXTENSIONS[self.format]}"

    def crop(self, frames: np.ndarray) -> np.ndarray:
        """``frames`` (k, H, W, 3) cut to this rendition's box (a view when it is the whole frame)."""
        return frames[:, self.y : self.y + self.height, self.x : self.x + self.width]

    def as_dict(self) -> dict:
        return {"aspect": self.aspect, "format": self.format, "width": self.width, "height": self.height,
                "crop": [self.x, self.y, self.width, self.height]}


def plan_renditions(size: tuple[int, int], aspects, formats) -> list[Rendition]:
    """Every (aspect, format) pair, aspects in the order given, formats within each."""
    out = []
    for aspect in aspects:
        x, y, w, h = crop_box(size, aspect)
        out += [Rendition(aspect, fmt, x, y, w, h) for fmt in formats]
    return out


def sample_indices(frames: int) -> list[int]:
    """The frames a clip is shown by: first, middle and last (the middle one is the poster)."""
    return sorted({0, frames // 2, frames - 1})


def _jpeg(image, *, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality, optimize=True)
    return buffer.getvalue()


def poster_jpeg(frame: np.ndarray, *, quality: int = 90) -> bytes:
    """One (H, W, 3) uint8 frame as JPEG bytes."""
    from PIL import Image

    return _jpeg(Image.fromarray(np.ascontiguousarray(frame), "RGB"), quality=quality)


THUMB_HEIGHT = 96


def thumb_path(output: store.Location, item_id: str) -> store.Location:
    """Where an item's contact-sheet strip (first, middle, last frame) is kept (in the output's store)."""
    return store.join(output, ".framefold-cache", "thumbs", f"{item_id}.jpg")


def thumb_strip(frames: list[np.ndarray], *, height: int = THUMB_HEIGHT) -> bytes:
    """Frames side by side, scaled to ``height``, as JPEG bytes (a contact sheet row)."""
    from PIL import Image

    tiles = [Image.fromarray(np.ascontiguousarray(f)).resize((max(1, round(f.shape[1] * height / f.shape[0])), height))
             for f in frames]
    strip = Image.new("RGB", (sum(t.width for t in tiles) + 4 * (len(tiles) - 1), height), (24, 24, 24))
    left = 0
    for t in tiles:
        strip.paste(t, (left, 0))
        left += t.width + 4
    return _jpeg(strip, quality=85)


def ensure_thumb(output: store.Location, item_id: str) -> store.Location | None:
    """The item's contact-sheet strip; rebuilt from its local video if the cache was deleted
    (None if neither exists; in an object store a strip is never rebuilt: that would download the video)."""
    from tasks import provenance
    from tasks.encode import decode

    path = thumb_path(output, item_id)
    if store.exists(path):
        return path
    output = store.local_or_url(output)
    if not isinstance(output, Path):
        return None
    record = provenance.read_sidecar(output / f"{item_id}.json")
    videos = [o for o in provenance.outputs_of(record) if o.get("format") in VIDEO_FORMATS]
    if not videos:
        return None
    video = videos[0]
    wanted, picked = sample_indices(record.get("video", {}).get("frames") or 1), []
    for n, frame in enumerate(decode(output / Path(video["path"]).name, width=video["width"], height=video["height"])):
        if n in wanted:
            picked.append(frame.copy())
        if n >= wanted[-1]:
            break  # no need to decode the rest
    if not picked:
        return None
    store.write_bytes(path, thumb_strip(picked), durable=False)
    return path


PREVIEWS = "previews"  # the batch report's animated previews, in the output
PREVIEW_WIDTH = 192
PREVIEW_FPS = 12
STALE_PREVIEW_PART_S = 3600  # a preview's temporary file this old was left by a killed task

log = logging.getLogger("framefold")


def preview_name(item_id: str, key: str | None) -> str:
    """``previews/<id>-<first 12 of the content key>.webm``, relative to the output."""
    return f"{PREVIEWS}/{item_id}-{(key or 'x')[:12]}.webm"


def make_preview(output: store.Location, item_id: str, key: str | None, source: Path) -> str | None:
    """Encode the batch report's small webm preview of ``source`` (the item's local video)
    into ``OUTPUT/previews/``. Returns its relative path, or None (logged) when it could not
    be made: a preview never fails an item. The finishing task calls this on the worker
    that made the video; the report only for outputs made without one."""
    name = preview_name(item_id, key)
    part = store.part_path(store.staging(output) / name)
    try:
        part.parent.mkdir(parents=True, exist_ok=True)
        encode_preview(source, part)
        store.put_file(part, store.join(output, name))
    except (OSError, subprocess.SubprocessError, store.StoreError) as e:
        log.warning("no preview for %s (%s)", item_id, e)
        return None
    finally:
        part.unlink(missing_ok=True)
    return name


def encode_preview(src: Path, dst: Path) -> None:
    import imageio_ffmpeg

    subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-nostdin", "-y", "-i", str(src),
         "-vf", f"fps={PREVIEW_FPS},scale={PREVIEW_WIDTH}:-2", "-an",
         "-c:v", "libvpx-vp9", "-b:v", "0", "-crf", "45", "-deadline", "realtime", "-cpu-used", "8",
         "-row-mt", "1", "-threads", "1", "-f", "webm", str(dst)],
        check=True, capture_output=True, timeout=300,
    )


SHEET_ROWS = 200  # items drawn on a contact sheet


def contact_sheet(rows: list[tuple[str, str, store.Location | None]], path: store.Location, *, total: int | None = None) -> int:
    """Write a JPEG contact sheet to ``path``: one row per item (id and status, then its
    first, middle and last frames from the strip at the given path), at most ``SHEET_ROWS``
    rows, and a line for the rest of ``total`` items; an item without a strip (failed) gets a
    dark red tile. Returns the number of rows drawn."""
    from PIL import Image, ImageDraw

    shown, label_width, gap, h = rows[:SHEET_ROWS], 200, 4, THUMB_HEIGHT
    strips = []
    for _, _, strip in shown:
        try:
            strips.append(Image.open(io.BytesIO(store.read_bytes(strip))).convert("RGB") if strip is not None else None)
        except (OSError, store.StoreError):
            strips.append(None)
    width = label_width + max([s.width for s in strips if s is not None] or [h])
    extra = (len(rows) if total is None else total) - len(shown)
    sheet = Image.new("RGB", (width, max(1, len(shown) * (h + gap)) + (24 if extra else 0)), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    for n, ((label, status, _), strip) in enumerate(zip(shown, strips)):
        top = n * (h + gap)
        draw.text((6, top + h // 2 - 12), label[:28], fill=(235, 235, 235))
        draw.text((6, top + h // 2 + 2), status, fill={"failed": (255, 110, 110)}.get(status, (150, 200, 150)))
        if strip is None:
            sheet.paste((120, 20, 20), (label_width, top, label_width + h, top + h))
        else:
            sheet.paste(strip, (label_width, top))
    if extra:
        draw.text((6, sheet.height - 18), f"... and {extra} more item(s)", fill=(235, 235, 235))
    store.write_bytes(path, _jpeg(sheet, quality=85))
    return len(shown)


class RenditionWriter:
    """Write every rendition of one item from one stream of frames.

    ``with RenditionWriter(...) as w: w.write(chunk)…`` encodes each video rendition into a
    temporary file beside its final name and keeps the first, middle and last frame;
    ``w.finish(tag)`` then embeds the provenance ``tag`` (mp4, webm), writes the posters and
    returns each output's description; ``w.commit()`` renames them into place. Temporary
    files are removed by ``close()`` whatever happened.
    """

    def __init__(self, output: Path, item_id: str, *, size: tuple[int, int], fps: float, frames: int,
                 aspects, formats, loop: bool = False) -> None:
        self.output, self.item_id, self.fps, self.expected, self.loop = output, item_id, fps, frames, loop
        self.renditions = plan_renditions(size, aspects, formats)
        self.finals = {r: output / r.name(item_id) for r in self.renditions}
        self.parts: dict[Rendition, list[Path]] = {r: [] for r in self.renditions}
        self.sample_at = sample_indices(frames)
        self.samples: dict[int, np.ndarray] = {}
        self.frames = 0
        self._encoders: dict[Rendition, VideoEncoder] = {}
        self._stack = contextlib.ExitStack()

    def _part(self, r: Rendition) -> Path:
        path = store.part_path(self.finals[r])
        self.parts[r].append(path)
        return path

    def __enter__(self) -> RenditionWriter:
        self.output.mkdir(parents=True, exist_ok=True)
        for r in self.renditions:
            if r.format in VIDEO_FORMATS:
                self._encoders[r] = self._stack.enter_context(
                    VideoEncoder(self._part(r), width=r.width, height=r.height, fps=self.fps, format=r.format,
                                 loop_frames=self.expected if self.loop else None))
        return self

    def __exit__(self, *exc) -> None:
        self._stack.__exit__(*exc)  # waits for every ffmpeg (raising if one failed), or kills them

    def write(self, pixels: np.ndarray) -> None:
        """Append uint8 frames (k, H, W, 3) at the full output size."""
        for r, encoder in self._encoders.items():
            encoder.write(r.crop(pixels))
        for index in self.sample_at:
            if self.frames <= index < self.frames + len(pixels):
                self.samples[index] = pixels[index - self.frames].copy()
        self.frames += len(pixels)

    def encoded(self) -> tuple[Path, int, int] | None:
        """(path, width, height) of the full-frame video encoded so far that the delivered
        file's metrics are measured on: the mp4, else the webm."""
        for format in ("mp4", "webm"):
            for r in self.renditions:
                if r.format == format and self.parts[r] and r.aspect == "native":
                    return self.parts[r][-1], r.width, r.height
        return None

    def preview_source(self) -> Path | None:
        """The encoded video a preview is made from: the native mp4 or webm, else any aspect's."""
        videos = [r for r in self.renditions if r.format in ("mp4", "webm") and self.parts[r]]
        videos.sort(key=lambda r: (r.aspect != "native", r.format != "mp4"))
        return self.parts[videos[0]][-1] if videos else None

    @property
    def sample_frames(self) -> list[np.ndarray]:
        return [self.samples[i] for i in self.sample_at if i in self.samples]

    def finish(self, tag: str | None, sign: Callable[[Path, str], str] | None = None) -> list[dict]:
        """After the stream: check frame counts, embed ``tag``, write posters, then (last)
        ``sign(part, name)`` each output (``name``: its final file name), which returns its credentials state (``signed``,
        or ``unsupported`` for a format C2PA cannot carry); describe each output."""
        for r, encoder in self._encoders.items():
            if encoder.frames != self.expected:
                raise RuntimeError(f"{r.name(self.item_id)}: encoded {encoder.frames} frames, expected {self.expected}")
        outputs = []
        for r in self.renditions:
            if r.format == "poster":
                middle = self.samples[self.expected // 2]  # the poster is the middle frame
                self._part(r).write_bytes(poster_jpeg(r.crop(middle[None])[0]))
            elif r.format in TAGGED_FORMATS and tag is not None:
                remux(self.parts[r][-1], self._part(r), tags={TAG: tag}, format=r.format)
            final = self.parts[r][-1]
            credentials = {} if sign is None else {"c2pa": sign(final, self.finals[r].name)}
            outputs.append({"path": self.finals[r].name, **r.as_dict(),
                            "frames": 1 if r.format == "poster" else self.expected,
                            "sha256": store.sha256_file(final), "bytes": final.stat().st_size, **credentials})
        return outputs

    def commit(self) -> None:
        for r in self.renditions:
            store.commit(self.parts[r][-1], self.finals[r])

    def close(self) -> None:
        for paths in self.parts.values():
            for p in paths:
                p.unlink(missing_ok=True)
