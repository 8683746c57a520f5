"""Learned upscaling: a local super-resolution model, loaded with spandrel, run in tiles.

spandrel recognises the architecture and its hyper-parameters from the weights alone
(Real-ESRGAN/RRDBNet, SRVGGNetCompact, SwinIR, SPAN, HAT, …); framefold accepts
``.safetensors`` files only, so loading a model never unpickles code.

Frames are cut into a tile grid fixed by the frame size and the tile settings (so tiles
sit at the same place in every frame of an item), each tile is upscaled, and the tiles
are put back together by the overlap-add kernel that stitches windows in time, with
feathered (cosine) weights: overlapping tile edges are cross-faded, which hides the
border effects of tiles up to the tolerance measured in ``tests/tasks/test_superres.py``.
The model runs in float16 on a GPU when the architecture supports it, else float32.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kernels.overlap import overlap_add_tiles, plan_tiles, tile_weights
from kernels.pixels import from_uint8, to_uint8
from tasks.store import sha256_file

# Image-to-image architectures that make a larger image; others (denoisers, face
# restoration, inpainting) are refused.
_SR_PURPOSE = "SR"
LOADS = 0  # models this process has loaded for upscaling (one per actor and weights file)
FRAMES_PER_PASS = 4  # frames of one tile in one forward pass


class UpscalerError(ValueError):
    """A super-resolution model that cannot be used; the message says why and what to do."""


def import_spandrel():
    """``import spandrel``, also where torchvision is absent.

    spandrel's architecture registry imports torchvision in two modules framefold never
    runs (LaMa inpainting and RestoreFormer face restoration: one transform each). The
    torchvision wheel built for the CPU torch this project pins is not installable beside
    it, so when torchvision is missing those two imports are served by a module whose
    functions raise if called; the stand-in is removed from ``sys.modules`` right after,
    so nothing else ever sees a torchvision.
    """
    if "spandrel" in sys.modules:
        return sys.modules["spandrel"]
    if importlib.util.find_spec("torchvision") is not None:
        return importlib.import_module("spandrel")

    def unavailable(*_args, **_kwargs):
        raise RuntimeError("this spandrel architecture needs torchvision, which is not installed")

    names = ("torchvision", "torchvision.transforms", "torchvision.transforms.functional")
    stand_ins = {name: types.ModuleType(name) for name in names}
    functional = stand_ins["torchvision.transforms.functional"]
    functional.InterpolationMode = types.SimpleNamespace(BILINEAR="bilinear", NEAREST="nearest", BICUBIC="bicubic")
    functional.rotate = functional.normalize = unavailable
    stand_ins["torchvision"].transforms = stand_ins["torchvision.transforms"]
    stand_ins["torchvision.transforms"].functional = functional
    sys.modules.update(stand_ins)
    try:
        return importlib.import_module("spandrel")
    finally:
        for name in names:
            if sys.modules.get(name) is stand_ins[name]:
                del sys.modules[name]


@dataclass(frozen=True)
class ModelInfo:
    """What a weights file is, as spandrel reads it."""

    architecture: str
    scale: int
    supports_half: bool
    weights_digest: str

    def as_dict(self) -> dict[str, Any]:
        return {"architecture": self.architecture, "scale": self.scale, "weights_digest": self.weights_digest}


def _load(path: Path, device: str = "cpu"):
    """A spandrel ImageModelDescriptor for the super-resolution weights at ``path``."""
    if path.suffix.lower() != ".safetensors":
        raise UpscalerError(
            f"{path} is not a .safetensors file; framefold loads upscaler weights from safetensors only "
            "(convert a .pth with: safetensors.torch.save_file(torch.load(p, weights_only=True), 'model.safetensors'))"
        )
    if not path.is_file():
        raise UpscalerError(f"upscaler weights not found: {path}")
    try:
        spandrel = import_spandrel()
    except Exception as error:  # noqa: BLE001 - e.g. a torchvision built for another torch
        raise UpscalerError(
            f"cannot import spandrel to load {path}: {type(error).__name__}: {error}; install it with "
            "`pip install --no-deps spandrel==0.4.2 einops` (framefold's Makefile and Dockerfile do)"
        ) from None
    try:
        model = spandrel.ModelLoader(device=device).load_from_file(path)
    except spandrel.UnsupportedModelError:
        raise UpscalerError(
            f"{path}: spandrel does not recognise this architecture; use a super-resolution model such as "
            "Real-ESRGAN (RRDBNet), realesr-animevideov3 (SRVGGNetCompact), SwinIR or SPAN"
        ) from None
    except Exception as error:  # noqa: BLE001 - damaged headers, wrong tensor shapes, …
        raise UpscalerError(f"{path}: cannot load as an upscaler ({type(error).__name__}: {error})") from None
    if not isinstance(model, spandrel.ImageModelDescriptor) or model.purpose != _SR_PURPOSE or model.scale < 2:
        raise UpscalerError(
            f"{path} holds a {model.architecture.name} model for {model.purpose!r} at scale {model.scale}, "
            "not a super-resolution model (scale 2 or more)"
        )
    if model.input_channels != 3 or model.output_channels != 3:
        raise UpscalerError(f"{path}: the model maps {model.input_channels} to {model.output_channels} channels; RGB (3 to 3) is needed")
    return model.eval()


@functools.lru_cache(maxsize=32)
def _describe(path: str, size: int, mtime_ns: int) -> ModelInfo:
    model = _load(Path(path))
    return ModelInfo(model.architecture.name, int(model.scale), bool(model.supports_half), "sha256:" + sha256_file(Path(path)))


def describe(path: Path) -> ModelInfo:
    """Architecture, scale and digest of the weights at ``path`` (loaded once per file
    version per process); raises :class:`UpscalerError` when they cannot be used."""
    stat = path.stat() if path.is_file() else None
    if stat is None:
        raise UpscalerError(f"upscaler weights not found: {path}")
    return _describe(str(path), stat.st_size, stat.st_mtime_ns)


class TiledUpscaler:
    """A loaded model applied to uint8 frames (k, H, W, 3) in a fixed grid of square tiles.

    ``tile``: tile side in input pixels (0: whole frames); ``overlap``: pixels shared by
    neighbouring tiles.
    """

    def __init__(self, path: Path, *, tile: int, overlap: int, device: str = "cpu") -> None:
        self.model, self.dtype = _resident(str(path), device)
        self.device = device
        self.scale = int(self.model.scale)
        self.tile = tile
        self.overlap = overlap

    def grid(self, height: int, width: int) -> list[tuple[int, int, int, int]]:
        """Input-pixel tiles ``(y, x, h, w)``: one whole-frame tile when tiling is off or the frame fits."""
        if self.tile <= 0 or (height <= self.tile and width <= self.tile):
            return [(0, 0, height, width)]
        return plan_tiles(height, width, tile=self.tile, overlap=self.overlap)

    @torch.inference_mode()
    def __call__(self, frames: np.ndarray | torch.Tensor) -> np.ndarray:
        x = torch.as_tensor(frames)
        if x.ndim != 4 or x.shape[-1] != 3 or x.dtype != torch.uint8:
            raise ValueError(f"frames must be uint8 (k, H, W, 3), got {x.dtype} {tuple(x.shape)}")
        k, height, width, _ = x.shape
        images = from_uint8(x).to(self.device, self.dtype)  # (k, 3, H, W) in [0, 1]
        boxes = self.grid(height, width)
        s = self.scale
        tiles = [  # a few frames per forward pass: the tile size, not the request, bounds activations
            torch.cat([self.model(images[f:f + FRAMES_PER_PASS, :, y:y + h, x0:x0 + w]).float()
                       for f in range(0, k, FRAMES_PER_PASS)])
            for y, x0, h, w in boxes
        ]
        if len(boxes) == 1:
            out = tiles[0]
        else:
            out_boxes = [(y * s, x0 * s, h * s, w * s) for y, x0, h, w in boxes]
            weights = [tile_weights(h, w, device=tiles[0].device) for _, _, h, w in out_boxes]
            out = overlap_add_tiles(tiles, out_boxes, weights, (height * s, width * s))
        return to_uint8(out).cpu().numpy()


@functools.lru_cache(maxsize=2)
def _resident(path: str, device: str):
    """The model of a weights file on ``device``, loaded once per process (an actor's), with its dtype."""
    global LOADS
    model = _load(Path(path), device)
    LOADS += 1
    half = device.startswith("cuda") and model.supports_half
    return (model.half() if half else model), (torch.float16 if half else torch.float32)


def loaded(path: str, tile: int, overlap: int, device: str) -> TiledUpscaler:
    """A :class:`TiledUpscaler` for these settings over the process's resident model."""
    return TiledUpscaler(Path(path), tile=tile, overlap=overlap, device=device)
