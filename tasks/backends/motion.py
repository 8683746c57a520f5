"""The embedded, weight-free backend: a spectral motion texture warps the item's still.

Every frame is a pure function of its time and the item's seed, so windows can be
rendered anywhere, in any order, and stitched back exactly.
"""

from __future__ import annotations

from typing import Any

import torch

from kernels.motion import animate, motion_texture
from kernels.noise import derive_seed
from tasks.backends import Conditioning, WindowRequest

# Bump when a change alters the pixels this backend produces (part of content keys).
VERSION = "1"


class MotionBackend:
    def __init__(self, *, device: str = "cpu") -> None:
        self.device = torch.device(device)

    def identity(self) -> dict[str, Any]:
        return {"backend": "motion", "version": VERSION, "weights_digest": None}

    @torch.inference_mode()
    def generate(
        self, window: WindowRequest, conditioning: Conditioning, noise: torch.Tensor | None = None
    ) -> torch.Tensor:
        p = conditioning.params
        motion = p["motion"]
        image = conditioning.image
        if image is None:
            raise ValueError("the motion backend needs an image")
        _, height, width = image.shape
        period = p["frames"] / p["fps"] if p["loop"] else None
        generator = torch.Generator(device="cpu").manual_seed(
            derive_seed(conditioning.seed, conditioning.item_id, "motion")
        )
        texture = motion_texture(
            height,
            width,
            modes=motion["modes"],
            amplitude=motion["amplitude"],
            max_hz=motion["max_hz"],
            period=period,
            generator=generator,
        )
        texture = type(texture)(*(t.to(self.device) for t in texture))
        times = torch.tensor(window.frames, dtype=torch.float64) / window.fps
        frames = animate(
            image.to(self.device),
            texture,
            times.to(torch.float32).to(self.device),
            mask=None if conditioning.mask is None else conditioning.mask.to(self.device),
            zoom=motion["zoom"],
            pan=tuple(motion["pan"]),
            period=period,
        )
        return frames.to("cpu", torch.float32)
