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

from kernels.pixels import to_uint8


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

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) of the frames to generate."""
        width, height = self.params["size"]
        return height, width

    def pil_image(self):
        """The conditioning image as an RGB PIL image (for image-to-video pipelines)."""
        from PIL import Image

        if self.image is None:
            raise ValueError("this item has no image")
        array = to_uint8(self.image).numpy()
        return Image.fromarray(array, "RGB")


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


def spec_of(item) -> dict[str, Any]:
    """The backend spec of a resolved item (``manifests.ItemSpec``): what to load, not
    what to generate; items with equal specs share loaded models."""
    if item.backend == "diffusers":
        from manifests import Settings

        m = item.model
        return {
            "backend": "diffusers", "family": m.family, "path": str(m.path), "dtype": m.dtype,
            "scheduler": m.scheduler, "task": item.task, "allow_pickle": Settings().allow_pickle,
            **({"variant": m.variant} if m.variant else {}),
        }
    return {"backend": item.backend}


def identify(spec: dict[str, Any]) -> dict[str, Any]:
    """The backend's identity (name, pixel version, weights digest) without loading it."""
    if spec.get("backend") == "motion":
        from tasks.backends.motion import VERSION

        return {"backend": "motion", "version": VERSION, "weights_digest": None}
    if spec.get("backend") == "diffusers":
        from tasks.backends.diffusers_backend import identify as identify_diffusers

        return identify_diffusers(spec)
    raise ValueError(f"unknown backend {spec.get('backend')!r}; known: {', '.join(sorted(_LOADERS))}")


def _load_motion(spec: dict[str, Any], device: str) -> Backend:
    from tasks.backends.motion import MotionBackend

    return MotionBackend(device=device)


def _load_diffusers(spec: dict[str, Any], device: str) -> Backend:
    from tasks.backends.diffusers_backend import DiffusersBackend

    return DiffusersBackend(spec, device)


_LOADERS = {"motion": _load_motion, "diffusers": _load_diffusers}
