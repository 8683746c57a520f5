"""Model backends: ``load(spec) -> backend``; ``backend.generate(window, conditioning, noise)``.

A backend turns one window of absolute frames into pixels, (L, 3, H, W) float32 in
[0, 1] on the CPU. Adding a model family is adding one module and one line in
``_LOADERS``. Loaded backends are cached per process, so a Ray worker loads a model
once and reuses it for every window and item it is handed.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch


@dataclass(frozen=True)
class WindowRequest:
    """One window: its index in the item's plan and the absolute frames it renders."""

    index: int
    frames: tuple[int, ...]
    fps: float


@dataclass(frozen=True)
class Conditioning:
    """Everything per item a backend needs besides the window: the image (3, H, W)
    float32 in [0, 1] fitted to the generation size, an optional mask (H, W), and the
    item's generation parameters (``ItemSpec.params()``)."""

    item_id: str
    seed: int
    image: torch.Tensor | None
    mask: torch.Tensor | None
    params: dict[str, Any] = field(default_factory=dict)


class Backend(Protocol):
    def generate(
        self, window: WindowRequest, conditioning: Conditioning, noise: torch.Tensor | None = None
    ) -> torch.Tensor: ...

    def identity(self) -> dict[str, Any]:
        """What produced the pixels, for provenance and content keys (name, digest …)."""
        ...


def load(spec: dict[str, Any], device: str = "cpu") -> Backend:
    """Load (or reuse) the backend described by ``spec`` (``{"backend": name, …}``)."""
    return _load_cached(json.dumps(spec, sort_keys=True), device)


@functools.lru_cache(maxsize=4)
def _load_cached(spec_json: str, device: str) -> Backend:
    spec = json.loads(spec_json)
    name = spec.get("backend")
    try:
        loader = _LOADERS[name]
    except KeyError:
        raise ValueError(f"unknown backend {name!r}; known: {', '.join(sorted(_LOADERS))}") from None
    return loader(spec, device)


def identify(spec: dict[str, Any]) -> dict[str, Any]:
    """The backend's identity (name, pixel version, weights digest) without loading it."""
    if spec.get("backend") == "motion":
        from tasks.backends.motion import VERSION

        return {"backend": "motion", "version": VERSION, "weights_digest": None}
    raise ValueError(f"unknown backend {spec.get('backend')!r}; known: {', '.join(sorted(_LOADERS))}")


def _load_motion(spec: dict[str, Any], device: str) -> Backend:
    from tasks.backends.motion import MotionBackend

    return MotionBackend(device=device)


_LOADERS = {"motion": _load_motion}
