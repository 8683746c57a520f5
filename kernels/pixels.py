"""Conversions between float frames and 8-bit pixels."""

from __future__ import annotations

import torch


def to_uint8(frames: torch.Tensor) -> torch.Tensor:
    """Float frames (..., C, H, W) in [0, 1] -> uint8 pixels (..., H, W, C), rounded to nearest.

    >>> to_uint8(torch.tensor([[[[0.0, 0.5, 1.0]]]])).flatten().tolist()
    [0, 128, 255]
    """
    return frames.clamp(0, 1).mul(255).round().to(torch.uint8).movedim(-3, -1).contiguous()


def from_uint8(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 pixels (..., H, W, C) -> float32 frames (..., C, H, W) in [0, 1].

    >>> from_uint8(torch.tensor([[[[0, 255]]]], dtype=torch.uint8)).shape
    torch.Size([1, 2, 1, 1])
    """
    return pixels.movedim(-1, -3).to(torch.float32) / 255.0
