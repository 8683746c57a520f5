"""The weight-free animator: a spectral motion texture warps one still image.

As in "Generative Image Dynamics" (Li et al., 2024), motion is a few low-frequency
oscillation modes of a smooth random displacement field; frame t is the still
backward-warped by the displacement at time t, combined with a slow camera move.
Frame t is a pure function of (t, texture, camera parameters): rendering a window of
times gives bitwise the same frames as rendering the whole clip.

Coordinates are normalized, ``align_corners=False``: x and y span [-1, 1] across the
image edges, pixel centres at ``(2 i + 1) / W - 1``; displacements are (dx, dy).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from kernels.check import check_int

_GRID = 6  # low-res noise cells per side before bicubic upsampling: larger = finer motion
_MIN_HZ = 0.1  # lowest frequency of non-looping textures
_CAMERA_SECONDS = 10.0  # non-looping camera: c(t) rises 0 -> 1 over this many seconds (then eases back)
_CHUNK = 16  # frames warped per grid_sample call (results do not depend on it)


class MotionTexture(NamedTuple):
    """``freqs`` (K,) in Hz; ``coeffs`` (K, 2, 2, H, W) = [mode, (cos, sin), (dx, dy), y, x]
    in normalized grid units."""

    freqs: Tensor
    coeffs: Tensor


def motion_texture(
    height: int,
    width: int,
    *,
    modes: int = 4,
    amplitude: float = 0.015,
    max_hz: float = 3.0,
    period: float | None = None,
    generator: torch.Generator,
) -> MotionTexture:
    """Draw a random spectral motion texture for an (H, W) image from ``generator``.

    Each mode's cos and sin fields are gaussian noise on a coarse grid, upsampled
    bicubically (smooth) and scaled 1/(k+1) (k-th lowest frequency strongest); the
    whole texture is scaled so that the bound ``max_p sum_k |(c_k(p), s_k(p))|`` on the
    displacement over time is ``amplitude * min(H, W)`` pixels. Frequencies: with
    ``period`` (a loop), ``n_k / period`` for distinct integers ``n_k >= 1`` with
    ``n_k / period <= max_hz``, drawn with probability ~ 1/n^2 (low preferred); without,
    log-uniform in (0.1, max_hz]. Frequencies are sorted ascending; tensors live on
    ``generator.device``.

    >>> tex = motion_texture(24, 32, modes=3, period=2.0, generator=torch.Generator().manual_seed(0))
    >>> tex.freqs.shape, tex.coeffs.shape
    (torch.Size([3]), torch.Size([3, 2, 2, 24, 32]))
    >>> bool(((tex.freqs * 2.0) == (tex.freqs * 2.0).round()).all())
    True
    """
    check_int("height", height, 1)
    check_int("width", width, 1)
    check_int("modes", modes, 1)
    if not amplitude >= 0:
        raise ValueError(f"amplitude must be >= 0, got {amplitude}")
    if not max_hz > 0:
        raise ValueError(f"max_hz must be > 0, got {max_hz}")
    device = generator.device
    if period is not None:
        if not period > 0:
            raise ValueError(f"period must be > 0 seconds, got {period}")
        n_max = math.floor(max_hz * period + 1e-9)
        if n_max < 1:
            raise ValueError(
                f"period ({period} s) is too short for max_hz ({max_hz}): the slowest looping mode, "
                f"1/period = {1 / period:g} Hz, exceeds max_hz"
            )
        if n_max < modes:
            raise ValueError(
                f"modes must be <= {n_max} (the distinct multiples of 1/period for period {period} s "
                f"up to max_hz {max_hz}), got {modes}"
            )
        prob = torch.arange(1, n_max + 1, dtype=torch.float32, device=device) ** -2.0
        n = torch.multinomial(prob, modes, replacement=False, generator=generator).cpu().sort().values + 1
        freqs = (n.to(torch.float64) / period).to(device=device, dtype=torch.float32)
    else:
        if not max_hz > _MIN_HZ:
            raise ValueError(f"max_hz must be > {_MIN_HZ} when period is None, got {max_hz}")
        u = torch.rand(modes, generator=generator, device=device).cpu().to(torch.float64)
        freqs = torch.exp(math.log(max_hz) - u * math.log(max_hz / _MIN_HZ)).sort().values
        freqs = freqs.to(device=device, dtype=torch.float32)
    coarse = torch.randn((modes * 4, 1, _GRID, _GRID), generator=generator, device=device)
    fields = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)
    fields = fields.view(modes, 2, 2, height, width)  # pixel units, isotropic
    fields = fields / torch.arange(1, modes + 1, device=device, dtype=fields.dtype).view(-1, 1, 1, 1, 1)
    bound = fields.square().sum(dim=(1, 2)).sqrt().sum(dim=0).max()
    fields = fields * (amplitude * min(height, width) / float(bound))
    to_normalized = torch.tensor([2.0 / width, 2.0 / height], device=device).view(1, 1, 2, 1, 1)
    return MotionTexture(freqs, fields * to_normalized)


def _check_times(times: Tensor) -> list[float]:
    if not isinstance(times, Tensor) or times.ndim != 1 or not times.dtype.is_floating_point:
        raise ValueError(f"times must be a 1-D float tensor of seconds, got {getattr(times, 'shape', times)!r}")
    return times.tolist()


def displacement(texture: MotionTexture, times: Tensor) -> Tensor:
    """Displacement (T, 2, H, W), (dx, dy) in normalized units, at ``times`` (T,) seconds:
    ``sum_k cos(2 pi f_k t) c_k + sin(2 pi f_k t) s_k``.

    Phases are computed per time in float64 and combined by elementwise ops only, so
    row t does not depend on the other times.

    >>> tex = motion_texture(8, 8, period=1.0, max_hz=4.0, generator=torch.Generator().manual_seed(0))
    >>> d = displacement(tex, torch.tensor([0.0, 0.5, 1.0]))
    >>> d.shape, torch.allclose(d[0], d[2], atol=1e-6)
    (torch.Size([3, 2, 8, 8]), True)
    """
    ts = _check_times(times)
    freqs, coeffs = texture
    if coeffs.ndim != 5 or coeffs.shape[:3] != (len(freqs), 2, 2):
        raise ValueError(f"texture.coeffs must be (K, 2, 2, H, W) with K = {len(freqs)}, got {tuple(coeffs.shape)}")
    fs = freqs.tolist()
    phase = [[2 * math.pi * f * t for f in fs] for t in ts]
    cos = torch.tensor([[math.cos(p) for p in row] for row in phase], dtype=coeffs.dtype, device=coeffs.device)
    sin = torch.tensor([[math.sin(p) for p in row] for row in phase], dtype=coeffs.dtype, device=coeffs.device)
    out = torch.zeros((len(ts), *coeffs.shape[2:]), dtype=coeffs.dtype, device=coeffs.device)
    for k in range(len(fs)):
        out = out + cos[:, k].view(-1, 1, 1, 1) * coeffs[k, 0] + sin[:, k].view(-1, 1, 1, 1) * coeffs[k, 1]
    return out


def animate(
    image: Tensor,
    texture: MotionTexture,
    times: Tensor,
    *,
    mask: Tensor | None = None,
    zoom: float = 0.0,
    pan: tuple[float, float] = (0.0, 0.0),
    period: float | None = None,
) -> Tensor:
    """Render frames (T, C, H, W) of ``image`` (C, H, W) in [0, 1] at ``times`` (T,) seconds.

    Backward warp, normalized coordinates: ``out(p) = image(src_from_dst(p))`` with
    ``src_from_dst(p) = p / (1 + zoom c(t)) + pan c(t) + mask(p) d(p, t)``, where ``d``
    is ``displacement(texture, t)`` and ``mask`` (H, W) in [0, 1] (default 1) confines
    motion (cinemagraph). ``zoom > 0`` zooms in; the view centre moves to ``pan`` =
    (x, y) as c goes 0 -> 1. The camera curve is ``c(t) = (1 - cos(2 pi t / P)) / 2`` with
    ``P = period`` (loops) or, when ``period`` is None, ``P = 20`` s (rises over 10 s).
    Sampling: bilinear, reflection padding, ``align_corners=False``. The result has the
    input dtype, clamped to [0, 1]; each frame is bitwise independent of the other times.

    >>> tex = motion_texture(16, 16, generator=torch.Generator().manual_seed(0))
    >>> image = torch.rand(3, 16, 16)
    >>> animate(image, tex, torch.tensor([0.0, 0.1])).shape
    torch.Size([2, 3, 16, 16])
    >>> still = animate(image, tex, torch.tensor([0.3]), mask=torch.zeros(16, 16))[0]
    >>> torch.allclose(still, image, atol=1e-5)
    True
    """
    if image.ndim != 3 or not image.dtype.is_floating_point:
        raise ValueError(f"image must be a float (C, H, W) tensor, got {image.dtype} {tuple(image.shape)}")
    _, height, width = image.shape
    if texture.coeffs.shape[-2:] != (height, width):
        raise ValueError(
            f"texture must match the image size {(height, width)}, got {tuple(texture.coeffs.shape[-2:])}"
        )
    ts = _check_times(times)
    if mask is not None:
        if mask.shape != (height, width):
            raise ValueError(f"mask must have shape {(height, width)}, got {tuple(mask.shape)}")
        if len(ts) and not bool(((mask >= 0) & (mask <= 1)).all()):
            raise ValueError(f"mask must lie in [0, 1], got [{float(mask.min())}, {float(mask.max())}]")
    if not zoom > -1:
        raise ValueError(f"zoom must be > -1 (scale 1 + zoom stays positive), got {zoom}")
    if len(pan) != 2:
        raise ValueError(f"pan must be (x, y), got {pan!r}")
    if period is not None and not period > 0:
        raise ValueError(f"period must be > 0 seconds, got {period}")
    work = torch.promote_types(image.dtype, torch.float32)
    img = image.to(work)
    texture = MotionTexture(texture.freqs, texture.coeffs.to(device=image.device, dtype=work))
    m = None if mask is None else mask.to(device=image.device, dtype=work)
    cycle = period if period is not None else 2 * _CAMERA_SECONDS
    cam = [(1 - math.cos(2 * math.pi * t / cycle)) / 2 for t in ts]
    per_frame = torch.tensor([[1 / (1 + zoom * c), pan[0] * c, pan[1] * c] for c in cam], dtype=work)
    per_frame = per_frame.to(image.device).view(-1, 3, 1, 1)
    xs = ((2 * torch.arange(width, dtype=torch.float64) + 1) / width - 1).to(device=image.device, dtype=work)
    ys = ((2 * torch.arange(height, dtype=torch.float64) + 1) / height - 1).to(device=image.device, dtype=work)
    frames = []
    for i in range(0, len(ts), _CHUNK):
        d = displacement(texture, times[i : i + _CHUNK])
        if m is not None:
            d = d * m
        inv_scale, shift_x, shift_y = per_frame[i : i + _CHUNK].unbind(1)
        gx = xs.view(1, 1, -1) * inv_scale + shift_x + d[:, 0]
        gy = ys.view(1, -1, 1) * inv_scale + shift_y + d[:, 1]
        src = img.expand(len(d), *img.shape)
        frames.append(
            F.grid_sample(
                src, torch.stack([gx, gy], dim=-1), mode="bilinear", padding_mode="reflection", align_corners=False
            )
        )
    if not frames:
        return torch.empty((0, *image.shape), dtype=image.dtype, device=image.device)
    return torch.cat(frames).clamp(0, 1).to(image.dtype)
