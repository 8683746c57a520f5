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

__all__ = ["check_image", "checker", "image_errors", "refuse_oversized", "to_8bit", "wide_scale"]

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


def wide_scale(im: Image.Image, name: str) -> float | None:
    """The value that is white in a one-channel image wider than 8 bits (None for other
    images), read off its values without copying them: 16-bit by 65535; 32-bit integer by
    255 when its values fit 0–255, else 65535; floating point by 1 when its values fit 0–1,
    else 255. Values outside that range (negative, larger, NaN) are no brightness: refused
    with an :class:`ItemError` naming ``name`` and what to do."""
    if im.mode not in WIDE:
        return None
    arr = np.asarray(im)
    if arr.size == 0:
        return 255.0
    lo, hi = arr.min(), arr.max()
    if im.mode == "F":
        kind, rule = "floating-point", "0–1 or 0–255"
        top = 1.0 if hi <= 1 else 255.0
        bad = not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0 or hi > 255
    else:
        kind, rule = ("16-bit" if im.mode.startswith("I;16") else "32-bit integer"), "0–255 or 0–65535"
        top = 65535.0 if hi > 255 or im.mode.startswith("I;16") else 255.0
        bad = lo < 0 or hi > 65535
    if bad:
        seen = "NaN or infinite values" if not (np.isfinite(lo) and np.isfinite(hi)) else f"values from {lo:.10g} to {hi:.10g}"
        raise ItemError(f"{name}: a {kind} image with {seen}, outside {rule}; "
                        f"save it as an 8- or 16-bit image (or scale its values into that range)")
    return top


def to_8bit(im: Image.Image, name: str) -> Image.Image:
    """A one-channel image wider than 8 bits as 8-bit ``L``, scaled by :func:`wide_scale`
    (not clipped); other images as they are."""
    top = wide_scale(im, name)
    if top is None:
        return im
    scaled = np.asarray(im).astype(np.float32) * np.float32(255.0 / top) + np.float32(0.5)
    return Image.fromarray(np.clip(scaled, 0, 255).astype(np.uint8), "L")


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
                wide_scale(im, name)  # a float or 32-bit image whose values are no brightness
    except ItemError as e:
        return str(e)
    except (OSError, store.StoreError) as e:  # unreadable file or object
        return f"{name}: cannot read ({e})"
    return None


def checker(max_pixels: int) -> Callable[[store.Location], str | None]:
    """``check_input`` for ``manifests.load_manifest``: :func:`check_image` with the pixel cap."""
    return lambda location: check_image(location, max_pixels=max_pixels)
