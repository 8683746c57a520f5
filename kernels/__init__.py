"""Pure tensor kernels: window plans, overlap-add, noise, motion, resampling, metrics."""

from kernels.metrics import frame_steps, loop_closure_ratio, quietest_start
from kernels.motion import MotionTexture, animate, displacement, motion_texture
from kernels.noise import derive_seed, frame_noise
from kernels.overlap import overlap_add, overlap_add_tiles, plan_tiles, tile_weights
from kernels.resample import METHODS, resize
from kernels.windows import (
    WEIGHTINGS,
    Window,
    coverage,
    emission_order,
    plan_windows,
    redundancy,
    window_indices,
    window_weights,
)

__all__ = [
    "METHODS", "WEIGHTINGS", "MotionTexture", "Window", "animate", "coverage",
    "derive_seed", "displacement", "emission_order", "frame_noise", "frame_steps", "loop_closure_ratio",
    "motion_texture", "overlap_add", "overlap_add_tiles", "plan_tiles", "plan_windows", "quietest_start",
    "redundancy", "resize", "tile_weights", "window_indices", "window_weights",
]
