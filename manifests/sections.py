"""The sections of an item — window, upscale, motion, model — resolved and as written.

A ``*Spec`` is a section after defaults are merged in: every field present, with
framefold's default. A ``*Patch`` is the same section as written in ``defaults:`` or an
item: every key optional, merged key by key with the defaults.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, ClassVar

from pydantic import Field, model_validator

from .families import FAMILIES
from .fields import (
    Amplitude,
    Dtype,
    FamilyName,
    MaxHz,
    ModeCount,
    Overlap,
    Patch,
    RelPath,
    Resolved,
    SchedulerName,
    Shift,
    TileOverlap,
    TileSide,
    UpscaleFactor,
    UpscaleMethod,
    Weighting,
    WindowLength,
    WindowMode,
    raise_rule_problems,
)


def overlap_problems(length: int, overlap: int) -> list[tuple[str, str]]:
    if overlap >= length:
        return [("overlap", f"overlap must be < length ({length}), got {overlap}")]
    return []


def upscaler_problems(method: str, path: object, tile: int, overlap: int) -> list[tuple[str, str]]:
    problems = []
    if method == "model" and path is None:
        problems.append(("path", "method: model needs path: the super-resolution weights (.safetensors)"))
    if tile and overlap >= tile:
        problems.append(("tile_overlap", f"tile_overlap ({overlap}) must be < tile ({tile})"))
    return problems


# --- Resolved sections -------------------------------------------------------------------
class WindowSpec(Resolved):
    """How an item's frames are split into overlapping temporal windows and blended back."""

    length: WindowLength = Field(16, description="Frames per window.")
    overlap: Overlap = Field(4, description="Frames shared by neighbouring windows; must be < length.")
    weighting: Weighting = Field("cosine", description="Blend weight across a window when overlaps are averaged.")
    mode: WindowMode = Field(
        "independent",
        description="independent: windows generated apart, averaged in pixels; codenoise: co-denoised in "
        "latent space each step; outpaint: each window conditioned on the previous one.",
    )

    @model_validator(mode="after")
    def _overlap_below_length(self) -> WindowSpec:
        raise_rule_problems(overlap_problems(self.length, self.overlap))
        return self


class UpscaleSpec(Resolved):
    """Spatial upscaling applied after stitching."""

    factor: UpscaleFactor = Field(1.0, description="Output size = size × factor; 1 = no upscaling.")
    method: UpscaleMethod = Field("lanczos", description="Resampling filter, or 'model' for a super-resolution model.")
    path: Path | None = Field(None, description="Absolute path of the super-resolution weights (method: model).")
    tile: TileSide = Field(256, description="Tile side in input pixels for method: model; 0 = whole frames.")
    tile_overlap: TileOverlap = Field(16, description="Pixels shared by neighbouring tiles; must be < tile.")

    @model_validator(mode="after")
    def _model_needs_path(self) -> UpscaleSpec:
        raise_rule_problems(upscaler_problems(self.method, self.path, self.tile, self.tile_overlap))
        return self


class MotionSpec(Resolved):
    """Parameters of the `motion` backend: a spectral motion texture plus a slow camera move."""

    amplitude: Amplitude = Field(0.015, description="Largest displacement, as a fraction of the image side.")
    modes: ModeCount = Field(4, description="Number of oscillation modes in the motion texture.")
    max_hz: MaxHz = Field(3.0, description="Highest oscillation frequency in Hz.")
    zoom: Shift = Field(0.0, description="Camera zoom over the clip, as a fraction (negative = zoom out).")
    pan: tuple[Shift, Shift] = Field((0.0, 0.0), description="Camera pan [x, y] over the clip, as a fraction of the side.")


class ModelSpec(Resolved):
    """A diffusers video model: a local directory in diffusers layout (safetensors weights)."""

    family: FamilyName = Field(description=f"Model family: {', '.join(FAMILIES)}.")
    path: Path = Field(description="Absolute path of the model directory (holds model_index.json).")
    dtype: Dtype = Field("float32", description="Compute dtype: float32 | float16 | bfloat16.")
    scheduler: SchedulerName | None = Field(
        None, description="diffusers scheduler class to use instead of the model's own (its config is kept)."
    )


# --- Partial sections, as written in a manifest ------------------------------------------
class ModelPatch(Patch):
    """`model:` in defaults or an item (backend: diffusers); merged key by key with defaults."""

    _nullable: ClassVar[frozenset[str]] = frozenset({"scheduler"})

    family: FamilyName | None = Field(None, description=f"Model family: {', '.join(FAMILIES)}.")
    path: RelPath | None = Field(
        None,
        description="Model directory in diffusers layout, relative to FRAMEFOLD_MODEL_ROOT if set, else to the "
        "manifest folder; it must stay inside that root.",
    )
    dtype: Dtype | None = Field(None, description="float32 | float16 | bfloat16. Default float32.")
    scheduler: SchedulerName | None = Field(
        None, description="diffusers scheduler class (e.g. DDIMScheduler) replacing the model's own. Default: the model's."
    )


class WindowPatch(Patch):
    """`window:` in defaults or an item; keys left out come from defaults, then from WindowSpec."""

    length: WindowLength | None = Field(None, description="Frames per window (1..1024). Default 16.")
    overlap: Overlap | None = Field(None, description="Frames shared by neighbouring windows; < length. Default 4.")
    weighting: Weighting | None = Field(None, description="Overlap blend weight. Default cosine.")
    mode: WindowMode | None = Field(None, description="independent | codenoise | outpaint. Default independent.")

    @model_validator(mode="after")
    def _overlap_below_length(self) -> WindowPatch:
        if self.length is not None and self.overlap is not None:
            raise_rule_problems(overlap_problems(self.length, self.overlap))
        return self


class UpscalePatch(Patch):
    """`upscale:` in defaults or an item; keys left out come from defaults, then from UpscaleSpec."""

    factor: UpscaleFactor | None = Field(None, description="Output size = size × factor (1..8). Default 1.")
    method: UpscaleMethod | None = Field(
        None, description="lanczos | bicubic | bilinear | nearest, or model (a super-resolution model). Default lanczos."
    )
    path: RelPath | None = Field(
        None,
        description="method: model — super-resolution weights (.safetensors, any architecture spandrel reads), "
        "relative to FRAMEFOLD_MODEL_ROOT if set, else to the manifest folder; it must stay inside that root.",
    )
    tile: TileSide | None = Field(None, description="method: model — tile side in input pixels (0 = whole frames). Default 256.")
    tile_overlap: TileOverlap | None = Field(None, description="method: model — pixels shared by neighbouring tiles (< tile). Default 16.")

    @model_validator(mode="after")
    def _overlap_below_tile(self) -> UpscalePatch:
        if self.tile and self.tile_overlap is not None and self.tile_overlap >= self.tile:
            raise_rule_problems([("tile_overlap", f"tile_overlap ({self.tile_overlap}) must be < tile ({self.tile})")])
        return self


class MotionPatch(Patch):
    """`motion:` in defaults or an item; keys left out come from defaults, then from MotionSpec."""

    amplitude: Amplitude | None = Field(None, description="Largest displacement, fraction of the side (0..0.2). Default 0.015.")
    modes: ModeCount | None = Field(None, description="Oscillation modes (1..16). Default 4.")
    max_hz: MaxHz | None = Field(None, description="Highest oscillation frequency in Hz (0..12]. Default 3.")
    zoom: Shift | None = Field(None, description="Camera zoom over the clip (-0.5..0.5). Default 0.")
    pan: Annotated[list[Shift], Field(min_length=2, max_length=2)] | None = Field(
        None, description="Camera pan [x, y] over the clip, each -0.5..0.5. Default [0, 0]."
    )

