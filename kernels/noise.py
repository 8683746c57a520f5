"""Deterministic per-frame noise: the noise of absolute frame f of an item is a pure
function of (seed, item id, f), whichever window, worker or process asks for it."""

from __future__ import annotations

import hashlib
from typing import Sequence

import torch
from torch import Tensor


def _encode(part: object, name: str) -> bytes:
    if isinstance(part, bool) or not isinstance(part, (int, str)):
        raise ValueError(f"{name} must be an int or str, got {type(part).__name__} {part!r}")
    tag, data = (b"i", str(part).encode()) if isinstance(part, int) else (b"s", part.encode("utf-8"))
    return tag + len(data).to_bytes(8, "big") + data


def derive_seed(seed: int, *parts: str | int) -> int:
    """A 63-bit seed derived from ``(seed, *parts)`` with blake2b.

    Each part is encoded with its type and length, so ``("a", 1)`` and ``("a1",)`` or
    ``(1,)`` and ``("1",)`` differ; the result does not depend on the process,
    platform or PYTHONHASHSEED.

    >>> derive_seed(0, "item", 3) == derive_seed(0, "item", 3) != derive_seed(0, "item", 4)
    True
    >>> 0 <= derive_seed(7) < 2**63
    True
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {type(seed).__name__} {seed!r}")
    data = b"".join([_encode(seed, "seed")] + [_encode(p, f"parts[{i}]") for i, p in enumerate(parts)])
    digest = hashlib.blake2b(data, digest_size=8, person=b"framefold.seed").digest()
    return int.from_bytes(digest, "big") >> 1


def frame_noise(
    seed: int,
    item_id: str,
    frames: Sequence[int] | Tensor,
    shape: Sequence[int],
    *,
    dtype=torch.float32,
    device=None,
) -> Tensor:
    """Standard normal noise (F, *shape) for the absolute frame indices ``frames`` (F,).

    Row k is drawn in float32 on the CPU from
    ``torch.Generator().manual_seed(derive_seed(seed, item_id, frames[k]))``, then moved
    to ``device`` and cast to ``dtype``.

    >>> a = frame_noise(0, "item", [3, 4], (2, 2))
    >>> a.shape, torch.equal(a[1], frame_noise(0, "item", [4], (2, 2))[0])
    (torch.Size([2, 2, 2]), True)
    """
    if not isinstance(item_id, str):
        raise ValueError(f"item_id must be a str, got {type(item_id).__name__} {item_id!r}")
    if isinstance(frames, Tensor):
        if frames.ndim != 1 or frames.dtype.is_floating_point or frames.dtype.is_complex:
            raise ValueError(f"frames must be a 1-D integer tensor, got {frames.dtype} {tuple(frames.shape)}")
        frames = frames.tolist()
    frames = list(frames)
    for k, f in enumerate(frames):
        if isinstance(f, bool) or not isinstance(f, int) or f < 0:
            raise ValueError(f"frames[{k}] must be an int >= 0, got {f!r}")
    shape = tuple(shape)
    if not all(isinstance(n, int) and n >= 0 for n in shape):
        raise ValueError(f"shape must hold ints >= 0, got {shape}")
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating point dtype, got {dtype}")
    rows = [
        torch.randn(shape, generator=torch.Generator(device="cpu").manual_seed(derive_seed(seed, item_id, f)))
        for f in frames
    ]
    out = torch.stack(rows) if rows else torch.empty((0, *shape))
    return out.to(device=device, dtype=dtype)
