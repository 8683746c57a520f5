"""Is an input still readable? Opened and decoded before any work, without torch.

:func:`check_image` reads the header (format, size), refuses more pixels than
``FRAMEFOLD_MAX_IMAGE_PIXELS``, and decodes the first frame — a JPEG at 1/8 scale (its
entropy-coded data is still read whole, so truncation shows), so a check stays cheap on
large catalogs. ``manifests.load_manifest`` calls it (as its ``check_input``) once per
distinct input file, so a text file named ``broken.png`` is a manifest problem at the place
it is written, not an item failing at run time. :func:`image_errors` gives reading at run
time (``tasks.media``) the same messages.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from tasks import store
from tasks.errors import ItemError

__all__ = ["check_image", "checker", "image_errors", "refuse_oversized", "to_8bit"]

WIDE = ("I;16", "I;16B", "I;16L", "I", "F")  # one channel wider than 8 bits: integer or float


@contextlib.contextmanager
def image_errors(name: str) -> Iterator[None]:
    """Turn what Pillow raises on a bad file into an :class:`ItemError` naming ``name``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except ItemError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ItemError(f"{name}: not a readable image ({e}); replace the file") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ItemError(f"{name}: the image is corrupt or truncated ({e}); replace the file") from None


def refuse_oversized(im: Image.Image, name: str, max_pixels: int) -> None:
    if im.width * im.height > max_pixels:
        raise ItemError(
            f"{name}: {im.width}×{im.height} = {im.width * im.height:,} pixels is over the limit of "
            f"{max_pixels:,} (FRAMEFOLD_MAX_IMAGE_PIXELS); use a smaller image or raise the limit"
        )


def to_8bit(im: Image.Image, name: str) -> Image.Image:
    """A one-channel image wider than 8 bits (16- or 32-bit integer, 32-bit float) as 8-bit
    ``L``, scaled by its format's range, not clipped: integers by 0–65535 (a 32-bit one whose
    values fit 0–255 by 0–255), floats by 0–1. Values outside that range (or NaN) have no
    meaning as brightness: refused with an :class:`ItemError` naming ``name``. Other images
    are returned as they are."""
    if im.mode not in WIDE:
        return im
    arr = np.asarray(im, dtype=np.float64)
    finite = bool(np.isfinite(arr).all())
    lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    if im.mode == "F":
        top, rule = 1.0, "a floating-point image is read as 0 (black) to 1 (white)"
    else:
        top = 65535.0 if hi > 255 or im.mode.startswith("I;16") else 255.0
        rule = "an integer image is read as 8-bit (0–255) or 16-bit (0–65535)"
    if not finite or lo < 0 or hi > top:
        seen = "NaN or infinite values" if not finite else f"values from {lo:g} to {hi:g}"
        raise ItemError(f"{name}: a {im.mode} image with {seen}, and {rule}; "
                        f"save it as an 8- or 16-bit image (or scale it into that range)")
    return Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")


def check_image(location: store.Location, *, max_pixels: int) -> str | None:
    """Why the still at ``location`` cannot be used, or None when it opens and decodes."""
    local = store.local_or_url(location)
    name = Path(str(location)).name
    try:
        with image_errors(name):
            source = local if isinstance(local, Path) else io.BytesIO(store.read_bytes(local))
            with Image.open(source) as im:
                refuse_oversized(im, name, max_pixels)
                im.seek(0)
                if im.format == "JPEG":
                    im.draft(im.mode, (max(1, im.width // 8), max(1, im.height // 8)))
                im.load()
                to_8bit(im, name)  # a float or 32-bit image whose values are no brightness
    except ItemError as e:
        return str(e)
    except (OSError, store.StoreError) as e:  # unreadable file or object
        return f"{name}: cannot read ({e})"
    return None


def checker(max_pixels: int) -> Callable[[store.Location], str | None]:
    """``check_input`` for ``manifests.load_manifest``: :func:`check_image` with the pixel cap."""
    return lambda location: check_image(location, max_pixels=max_pixels)
