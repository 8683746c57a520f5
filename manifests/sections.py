"""The sections of an item — window, upscale, motion, model — resolved and as written.

A ``*Spec`` is a section after defaults are merged in: every field present, with
framefold's default. A ``*Patch`` is the same section as written in ``defaults:`` or an
item: every key optional, merged key by key with the defaults.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from .families import FAMILIES
from .fields import (
    Amplitude,
    Dtype,
    FamilyName,
    MaxHz,
    ModeCount,
    Overlap,
    RelPath,
    Resolved,
    SchedulerName,
    Shift,
    TileOverlap,
    TileSide,
    UpscaleFactor,
    UpscaleMethod,
    Variant,
    Weighting,
    WindowLength,
    WindowMode,
    patch_of,
    raise_rule_problems,
)


def window_problems(window: Any) -> list[tuple[str, str]]:
    """overlap < length, for a spec or a patch (fields left out of a patch are None)."""
    if window.length is not None and window.overlap is not None and window.overlap >= window.length:
        return [("overlap", f"overlap must be < length ({window.length}), got {window.overlap}")]
    return []


def tile_problems(upscale: Any) -> list[tuple[str, str]]:
    """tile_overlap < tile unless tiling is off (tile 0), for a spec or a patch."""
    if upscale.tile and upscale.tile_overlap is not None and upscale.tile_overlap >= upscale.tile:
        return [("tile_overlap", f"tile_overlap ({upscale.tile_overlap}) must be < tile ({upscale.tile})")]
    return []


# --- Resolved sections -------------------------------------------------------------------
class WindowSpec(Resolved):
    """How an item's frames are split into overlapping temporal windows and blended back."""

    length: WindowLength = Field(16, description="Frames per window (1..1024).")
    overlap: Overlap = Field(4, description="Frames shared by neighbouring windows; must be < length.")
    weighting: Weighting = Field("cosine", description="Blend weight across a window when overlaps are averaged.")
    mode: WindowMode = Field(
        "independent",
        description="independent: windows generated apart, averaged in pixels; codenoise: co-denoised in "
        "latent space each step; outpaint: each window conditioned on the previous one; freenoise: the whole "
        "clip on one actor through diffusers' FreeNoise (animatediff; context window.length, stride length - overlap).",
    )

    @model_validator(mode="after")
    def _overlap_below_length(self) -> WindowSpec:
        raise_rule_problems(window_problems(self))
        return self


class UpscaleSpec(Resolved):
    """Spatial upscaling applied after stitching."""

    factor: UpscaleFactor = Field(
        1.0, description="Output size = size × factor (1..8); 1 = no upscaling; method: model: the model's scale."
    )
    method: UpscaleMethod = Field(
        "lanczos", description="Resampling filter (lanczos | bicubic | bilinear | nearest), or model (a super-resolution model)."
    )
    path: Path | None = Field(None, description="Absolute path of the super-resolution weights (method: model).")
    tile: TileSide = Field(256, description="method: model — tile side in input pixels (0 = whole frames).")
    tile_overlap: TileOverlap = Field(16, description="method: model — pixels shared by neighbouring tiles (< tile).")

    @model_validator(mode="after")
    def _model_needs_path(self) -> UpscaleSpec:
        problems = tile_problems(self)
        if self.method == "model" and self.path is None:
            problems.insert(0, ("path", "method: model needs path: the super-resolution weights (.safetensors)"))
        raise_rule_problems(problems)
        return self


class MotionSpec(Resolved):
    """Parameters of the `motion` backend: a spectral motion texture plus a slow camera move."""

    amplitude: Amplitude = Field(0.015, description="Largest displacement, as a fraction of the image side (0..0.2).")
    modes: ModeCount = Field(4, description="Number of oscillation modes in the motion texture (1..16).")
    max_hz: MaxHz = Field(3.0, description="Highest oscillation frequency in Hz (0..12].")
    zoom: Shift = Field(0.0, description="Camera zoom over the clip, as a fraction (-0.5..0.5; negative = zoom out).")
    pan: tuple[Shift, Shift] = Field(
        (0.0, 0.0), description="Camera pan [x, y] over the clip, each a fraction of the side (-0.5..0.5)."
    )


class ModelSpec(Resolved):
    """A diffusers video model: a local directory in diffusers layout (safetensors weights)."""

    family: FamilyName = Field(description=f"Model family: {', '.join(FAMILIES)}.")
    path: Path = Field(description="Absolute path of the model directory (holds model_index.json).")
    dtype: Dtype = Field("float32", description="Compute dtype: float32 | float16 | bfloat16.")
    scheduler: SchedulerName | None = Field(
        None, description="diffusers scheduler class (e.g. DDIMScheduler) replacing the model's own (its config is "
        "kept). Default: the model's."
    )
    variant: Variant | None = Field(
        None, description="Weights variant to load, e.g. fp16 for files named *.fp16.safetensors (saved with "
        "save_pretrained(variant=...)). Default: the plain files."
    )


# --- The same sections as written in a manifest: every key optional ---------------------
_FROM_MODEL_ROOT = "relative to FRAMEFOLD_MODEL_ROOT if set, else to the manifest folder; it must stay inside that root."

ModelPatch = patch_of(
    ModelSpec, "ModelPatch", "`model:` in defaults or an item (backend: diffusers); merged key by key with defaults.",
    written={"path": (RelPath | None, Field(None, description=f"Model directory in diffusers layout, {_FROM_MODEL_ROOT}"))},
    nullable=("scheduler", "variant"),
)
WindowPatch = patch_of(
    WindowSpec, "WindowPatch",
    "`window:` in defaults or an item; keys left out come from defaults, then from WindowSpec.",
    rule=window_problems,
)
UpscalePatch = patch_of(
    UpscaleSpec, "UpscalePatch",
    "`upscale:` in defaults or an item; keys left out come from defaults, then from UpscaleSpec.",
    written={"path": (RelPath | None, Field(None, description="method: model — super-resolution weights (.safetensors, "
                                                           f"any architecture spandrel reads), {_FROM_MODEL_ROOT}"))},
    rule=tile_problems,
)
MotionPatch = patch_of(
    MotionSpec, "MotionPatch", "`motion:` in defaults or an item; keys left out come from defaults, then from MotionSpec."
)
