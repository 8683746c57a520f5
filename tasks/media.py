"""Reading input stills: any format Pillow decodes, fitted to the generation size.

EXIF orientation is applied; transparency is composited over the item's background
colour; 16-bit, 32-bit, float, grayscale, palette and CMYK images become 8-bit RGB (wide
ones scaled by their range: ``tasks.inputs.to_8bit``); of an animated
GIF or multi-page TIFF the first frame is used (and said so in provenance).
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from kernels.pixels import from_uint8
from tasks.inputs import image_errors, refuse_oversized, to_8bit


@dataclass(frozen=True)
class ImageInfo:
    """What was read, for provenance."""

    format: str | None
    mode: str
    width: int
    height: int
    frames: int
    first_frame_only: bool
    exif_rotated: bool

    def as_dict(self) -> dict:
        return asdict(self)


def load_image(
    path: Path | str,
    *,
    size: tuple[int, int],
    fit: str = "cover",
    background: str = "#ffffff",
    max_pixels: int,
    grayscale: bool = False,
    data: bytes | None = None,
) -> tuple[torch.Tensor, ImageInfo]:
    """Decode ``path`` and fit it to ``size`` = (width, height).

    Returns a float32 tensor in [0, 1], (3, H, W) (or (1, H, W) with ``grayscale``),
    and an :class:`ImageInfo`. ``fit``: ``cover`` scales to fill and centre-crops,
    ``contain`` scales to fit and pads with ``background``, ``stretch`` ignores aspect.
    ``path`` is a local path or a store URL; ``data``: its bytes, already read (then the
    file is not opened again). Raises :class:`ItemError` for unreadable, truncated or oversized images.
    """
    width, height = size
    name = path.name if isinstance(path, Path) else str(path).rstrip("/").rsplit("/", 1)[-1]
    with image_errors(name):
        with Image.open(io.BytesIO(data) if data is not None else path) as im:
            refuse_oversized(im, name, max_pixels)
            n_frames = getattr(im, "n_frames", 1)
            im.seek(0)
            exif_rotated = im.getexif().get(0x0112, 1) not in (1, None)
            frame = ImageOps.exif_transpose(im)
            frame = to_8bit(frame, name)  # 16/32-bit and float: scaled by their range, or refused
            rgb = _to_rgb(frame, background) if not grayscale else _to_gray(frame)
            info = ImageInfo(
                format=im.format,
                mode=im.mode,
                width=im.width,
                height=im.height,
                frames=n_frames,
                first_frame_only=n_frames > 1,
                exif_rotated=exif_rotated,
            )
    fitted = _fit(rgb, (width, height), fit, background)
    array = np.asarray(fitted, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    tensor = from_uint8(torch.from_numpy(array.copy()))
    return tensor, info


def _to_rgb(im: Image.Image, background: str) -> Image.Image:
    if im.mode == "P":
        im = im.convert("RGBA")
    if im.mode in ("LA", "La", "PA", "RGBa"):
        im = im.convert("RGBA")
    if im.mode == "RGBA":
        base = Image.new("RGBA", im.size, background)
        return Image.alpha_composite(base, im).convert("RGB")
    return im.convert("RGB")


def _to_gray(im: Image.Image) -> Image.Image:
    if im.mode in ("RGBA", "LA", "P", "PA"):
        im = im.convert("RGBA")
        base = Image.new("RGBA", im.size, "#000000")
        im = Image.alpha_composite(base, im)
    return im.convert("L")


def _fit(im: Image.Image, size: tuple[int, int], fit: str, background: str) -> Image.Image:
    if fit == "stretch":
        return im.resize(size, Image.Resampling.LANCZOS)
    if fit == "cover":
        return ImageOps.fit(im, size, Image.Resampling.LANCZOS)
    if fit == "contain":
        fill = background if im.mode == "RGB" else 0
        return ImageOps.pad(im, size, Image.Resampling.LANCZOS, color=fill)
    raise ValueError(f"fit must be one of cover, contain, stretch, got {fit!r}")
