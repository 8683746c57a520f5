"""Plan: which windows an item is generated in, and in what order they are sent.

Pure geometry from the item's parameters (kernels.windows); no frames are touched.
"""

from __future__ import annotations

from dataclasses import dataclass

from kernels.windows import Window, emission_order, plan_windows, redundancy
from manifests import ItemSpec
from tasks.backends import WindowRequest


@dataclass(frozen=True)
class ItemPlan:
    num_frames: int
    windows: tuple[Window, ...]
    order: tuple[int, ...]  # submission order: lets the stitcher release frames early
    circular: bool
    weighting: str
    redundancy: float  # frames generated / frames delivered
    free_noise: dict | None = None  # freenoise: diffusers' enable_free_noise arguments

    def requests(self, fps: float) -> list[WindowRequest]:
        return [
            WindowRequest(index=i, frames=tuple((w.start + j) % self.num_frames for j in range(w.length)), fps=fps)
            for i, w in enumerate(self.windows)
        ]

    def as_dict(self) -> dict:
        return {
            "frames": self.num_frames,
            "windows": [[w.start, w.length] for w in self.windows],
            "circular": self.circular,
            "weighting": self.weighting,
            "redundancy": round(self.redundancy, 4),
            **({"freenoise": self.free_noise} if self.free_noise else {}),
        }


def plan_item(item: ItemSpec) -> ItemPlan:
    """Window plan of one item: circular (indices wrap) when the item loops; freenoise
    items are one window of the whole clip (FreeNoise slides its windows inside the model)."""
    free_noise = None
    if item.window.mode == "freenoise":
        from tasks.backends.animatediff import free_noise_settings

        windows = [Window(0, item.frames)]
        free_noise = free_noise_settings(item.params(), item.frames)
    else:
        windows = plan_windows(item.frames, length=item.window.length, overlap=item.window.overlap, circular=item.loop)
    return ItemPlan(
        num_frames=item.frames,
        windows=tuple(windows),
        order=tuple(emission_order(windows, item.frames)),
        circular=item.loop,
        weighting=item.window.weighting,
        redundancy=redundancy(windows, item.frames),
        free_noise=free_noise,
    )
