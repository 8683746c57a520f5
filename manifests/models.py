"""The manifest schema, and the resolved item every other part of framefold works with.

Two families of models live here, sharing one set of constrained types:

* **Manifest models** describe the YAML file as written: ``Manifest`` (top level),
  ``ItemFields`` (``defaults``; every field optional), ``ItemEntry`` (an item: ``ItemFields``
  plus a required ``id``), the partial sections ``WindowPatch``, ``UpscalePatch``,
  ``MotionPatch``, and ``CatalogSpec``. ``manifest_json_schema()`` exports them.
* **Resolved models** describe one item after ``defaults`` are merged in: ``ItemSpec``
  with ``WindowSpec``, ``UpscaleSpec``, ``MotionSpec``. Every field is present (the defaults
  below are framefold's defaults), paths are absolute. Settings-dependent limits
  (``max_side``, ``max_frames``, ``max_output_side``) come from the validation context
  ``{"settings": Settings}``, else from ``Settings()``.

Every model forbids unknown keys. Cross-field rules live in ``model_validator(mode="after")``
and report through ``_raise_rule_problems`` so that one validator can name several fields
(``manifests.load`` turns them into one ``Problem`` each). Nothing is ever rounded or fixed.

>>> spec = ItemSpec(id="mug", source="items[0]", image=Path("/data/mug.png"), frames=96, upscale={"factor": 2})
>>> spec.duration, spec.output_size
(4.0, (512, 512))
>>> frames_from_duration(4.0, 24.0)
96
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    WrapValidator,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from manifests.families import FAMILIES

from .catalog_filter import MAX_FILTER_CHARS, FilterError
from .catalog_filter import parse as parse_filter
from .settings import Settings

__all__ = [
    "BACKENDS",
    "CATALOG_FIELDS",
    "RULE_ERROR",
    "BackendInfo",
    "CatalogSpec",
    "ItemEntry",
    "ItemFields",
    "ItemSpec",
    "Manifest",
    "MotionPatch",
    "MotionSpec",
    "UpscalePatch",
    "UpscaleSpec",
    "WindowPatch",
    "WindowSpec",
    "did_you_mean",
    "frames_from_duration",
    "is_safe_name",
    "manifest_json_schema",
]


# --- Backends ----------------------------------------------------------------------------
@dataclass(frozen=True)
class BackendInfo:
    """What the manifest layer needs to know about a backend to validate an item for it."""

    window_modes: tuple[str, ...]  # window.mode values the backend can run
    needs_image: bool  # True: the item must set `image`


# Adding a backend is adding one line here (and its module under tasks/backends/).
BACKENDS: dict[str, BackendInfo] = {
    "motion": BackendInfo(window_modes=("independent",), needs_image=True),  # spectral motion texture, no weights
    "diffusers": BackendInfo(window_modes=("independent", "codenoise", "outpaint"), needs_image=False),  # local weights
}
Backend = Literal[tuple(BACKENDS)]  # type: ignore[valid-type]  # Literal["motion", ...] built from BACKENDS


# --- Rule errors -------------------------------------------------------------------------
RULE_ERROR = "framefold_rule"  # error type of cross-field rules; ctx["problems"] = ((field path, message), ...)
_VALUE_ERROR = "framefold_value"  # error type of single-value checks whose message already says what came
FieldPath = str | tuple[str, ...]  # "window.overlap", or ("columns", key) when a key may hold a dot


def _raise_rule_problems(problems: list[tuple[FieldPath, str]]) -> None:
    """Raise one pydantic error carrying every (field path, message) rule violation."""
    if problems:
        summary = "; ".join(f"{at if isinstance(at, str) else '.'.join(at)}: {message}" for at, message in problems)
        raise PydanticCustomError(RULE_ERROR, "{summary}", {"summary": summary, "problems": tuple(problems)})


def did_you_mean(word: str, choices: tuple[str, ...] | list[str]) -> str:
    """'; did you mean 'x'?' for the closest choice, or ''."""
    close = difflib.get_close_matches(word, choices, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _value_error(message: str) -> PydanticCustomError:
    return PydanticCustomError(_VALUE_ERROR, "{message}", {"message": message})


# --- Constrained types, shared by manifest and resolved models ---------------------------
SAFE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
_SAFE_NAME = re.compile(SAFE_NAME_PATTERN)
_WINDOWS_DEVICE_NAMES = re.compile(r"^(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?$", re.IGNORECASE)


def _safe_name_problem(value: str) -> str | None:
    """Why `value` is not a safe file name, or None if it is."""
    if not _SAFE_NAME.fullmatch(value):
        return (
            "must be a safe file name: 1-128 characters from letters, digits, '.', '_', '-', "
            f"starting with a letter or digit (no '/', '\\', ':' or spaces), got {value!r}"
        )
    if ".." in value:
        return f"must not contain '..', got {value!r}"
    if value.endswith("."):
        return f"must not end with '.', got {value!r}"
    if _WINDOWS_DEVICE_NAMES.fullmatch(value):
        return f"must not be a reserved device name (CON, NUL, COM1, ...), got {value!r}"
    return None


def is_safe_name(value: object) -> bool:
    """True if `value` is usable as an item id / job name (a safe file name on every OS)."""
    return isinstance(value, str) and _safe_name_problem(value) is None


def _check_safe_name(value: str) -> str:
    problem = _safe_name_problem(value)
    if problem is not None:
        raise _value_error(problem)
    return value


def _check_no_nul(value: str) -> str:
    if "\x00" in value:
        raise _value_error(f"must not contain a NUL byte, got {value!r}")
    return value


def _check_unique(values: list[str]) -> list[str]:
    repeated = sorted({v for v in values if values.count(v) > 1})
    if repeated:
        raise _value_error(f"must list each format once, got {values!r} ({', '.join(repeated)} repeated)")
    return values


def _auto_or_gpu_count(value: Any, handler: Any) -> Any:
    """gpus is 'auto' or a number 0..8; one clear error instead of one per union branch."""
    try:
        return handler(value)
    except ValidationError:
        raise _value_error(f"must be 'auto' or a number of GPUs from 0 to 8, got {value!r}") from None


SafeName = Annotated[
    str,
    AfterValidator(_check_safe_name),
    WithJsonSchema({"type": "string", "pattern": SAFE_NAME_PATTERN, "not": {"pattern": r"\.\.|\.$"}}),
]
RelPath = Annotated[str, Field(min_length=1, max_length=4096), AfterValidator(_check_no_nul)]
Prompt = Annotated[str, Field(max_length=2000)]
Seed = Annotated[int, Field(ge=0, le=2**63 - 1)]
Fps = Annotated[float, Field(gt=0, le=120)]
FrameCount = Annotated[int, Field(ge=1)]
Seconds = Annotated[float, Field(gt=0)]
Side = Annotated[int, Field(ge=16, multiple_of=2)]
HexColour = Annotated[str, Field(pattern=r"^#[0-9a-fA-F]{6}$")]
Fit = Literal["cover", "contain", "stretch"]
Format = Literal["mp4", "webm", "gif", "poster"]
Formats = Annotated[list[Format], Field(min_length=1), AfterValidator(_check_unique)]
ASPECT_PATTERN = r"^(native|[1-9][0-9]?:[1-9][0-9]?)$"


def _check_aspect(value: str) -> str:
    if not re.fullmatch(ASPECT_PATTERN, value):
        raise _value_error(f"must be 'native' or 'W:H' with whole numbers 1 to 99 (e.g. '9:16', '1:1'), got {value!r}")
    return value


Aspect = Annotated[
    str,
    AfterValidator(_check_aspect),
    WithJsonSchema({"type": "string", "pattern": ASPECT_PATTERN,
                    "description": "'native' (the whole frame) or 'W:H' with W and H from 1 to 99, e.g. '9:16'."}),
]
Aspects = Annotated[list[Aspect], Field(min_length=1, max_length=8), AfterValidator(_check_unique)]
GpuRequest = Annotated[
    Annotated[float, Field(ge=0, le=8)] | Literal["auto"],
    WrapValidator(_auto_or_gpu_count),
]
WindowLength = Annotated[int, Field(ge=1, le=1024)]
Overlap = Annotated[int, Field(ge=0, le=1023)]
Weighting = Literal["flat", "linear", "cosine", "gaussian"]
WindowMode = Literal["independent", "codenoise", "outpaint"]
UpscaleFactor = Annotated[float, Field(ge=1, le=8)]
Resample = Literal["lanczos", "bicubic", "bilinear", "nearest"]
UpscaleMethod = Literal["lanczos", "bicubic", "bilinear", "nearest", "model"]
TileSide = Annotated[int, Field(ge=0, le=4096)]
TileOverlap = Annotated[int, Field(ge=0, le=1024)]
Amplitude = Annotated[float, Field(ge=0, le=0.2)]
ModeCount = Annotated[int, Field(ge=1, le=16)]
MaxHz = Annotated[float, Field(gt=0, le=12)]
Shift = Annotated[float, Field(ge=-0.5, le=0.5)]
FamilyName = Literal[tuple(FAMILIES)]  # type: ignore[valid-type]
Dtype = Literal["float32", "float16", "bfloat16"]
SchedulerName = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9]*Scheduler$", max_length=64)]
Steps = Annotated[int, Field(ge=1, le=1000)]
Guidance = Annotated[float, Field(ge=0, le=50)]


class _Strict(BaseModel):
    """Base of every model here: unknown keys are errors, NaN and infinity are not numbers."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class _Resolved(_Strict):
    """Base of resolved models: immutable (and hashable)."""

    model_config = ConfigDict(frozen=True)


class _Patch(_Strict):
    """Base of the partial models of a manifest: a key may be left out, but not set to null.

    Leaving a key out means "inherit"; an explicit null would be ambiguous, so it is an
    error (except for fields listed in `_nullable`, where null means "none").
    """

    _nullable: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="after")
    def _no_nulls(self) -> _Patch:
        if all(getattr(self, name) is not None for name in self.model_fields_set):  # the common case, fast
            return self
        _raise_rule_problems(
            [
                (name, "must not be null; leave the key out to use the default")
                for name in type(self).model_fields  # in declaration order
                if name in self.model_fields_set and getattr(self, name) is None and name not in self._nullable
            ]
        )
        return self


def _overlap_problems(length: int, overlap: int) -> list[tuple[str, str]]:
    if overlap >= length:
        return [("overlap", f"overlap must be < length ({length}), got {overlap}")]
    return []


# --- Resolved sections -------------------------------------------------------------------
class WindowSpec(_Resolved):
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
        _raise_rule_problems(_overlap_problems(self.length, self.overlap))
        return self


class UpscaleSpec(_Resolved):
    """Spatial upscaling applied after stitching."""

    factor: UpscaleFactor = Field(1.0, description="Output size = size × factor; 1 = no upscaling.")
    method: UpscaleMethod = Field("lanczos", description="Resampling filter, or 'model' for a super-resolution model.")
    path: Path | None = Field(None, description="Absolute path of the super-resolution weights (method: model).")
    tile: TileSide = Field(256, description="Tile side in input pixels for method: model; 0 = whole frames.")
    tile_overlap: TileOverlap = Field(16, description="Pixels shared by neighbouring tiles; must be < tile.")

    @model_validator(mode="after")
    def _model_needs_path(self) -> UpscaleSpec:
        _raise_rule_problems(_upscaler_problems(self.method, self.path, self.tile, self.tile_overlap))
        return self


class MotionSpec(_Resolved):
    """Parameters of the `motion` backend: a spectral motion texture plus a slow camera move."""

    amplitude: Amplitude = Field(0.015, description="Largest displacement, as a fraction of the image side.")
    modes: ModeCount = Field(4, description="Number of oscillation modes in the motion texture.")
    max_hz: MaxHz = Field(3.0, description="Highest oscillation frequency in Hz.")
    zoom: Shift = Field(0.0, description="Camera zoom over the clip, as a fraction (negative = zoom out).")
    pan: tuple[Shift, Shift] = Field((0.0, 0.0), description="Camera pan [x, y] over the clip, as a fraction of the side.")


class ModelSpec(_Resolved):
    """A diffusers video model: a local directory in diffusers layout (safetensors weights)."""

    family: FamilyName = Field(description=f"Model family: {', '.join(FAMILIES)}.")
    path: Path = Field(description="Absolute path of the model directory (holds model_index.json).")
    dtype: Dtype = Field("float32", description="Compute dtype: float32 | float16 | bfloat16.")
    scheduler: SchedulerName | None = Field(
        None, description="diffusers scheduler class to use instead of the model's own (its config is kept)."
    )


# --- Partial sections, as written in a manifest ------------------------------------------
class ModelPatch(_Patch):
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


class WindowPatch(_Patch):
    """`window:` in defaults or an item; keys left out come from defaults, then from WindowSpec."""

    length: WindowLength | None = Field(None, description="Frames per window (1..1024). Default 16.")
    overlap: Overlap | None = Field(None, description="Frames shared by neighbouring windows; < length. Default 4.")
    weighting: Weighting | None = Field(None, description="Overlap blend weight. Default cosine.")
    mode: WindowMode | None = Field(None, description="independent | codenoise | outpaint. Default independent.")

    @model_validator(mode="after")
    def _overlap_below_length(self) -> WindowPatch:
        if self.length is not None and self.overlap is not None:
            _raise_rule_problems(_overlap_problems(self.length, self.overlap))
        return self


class UpscalePatch(_Patch):
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
            _raise_rule_problems([("tile_overlap", f"tile_overlap ({self.tile_overlap}) must be < tile ({self.tile})")])
        return self


class MotionPatch(_Patch):
    """`motion:` in defaults or an item; keys left out come from defaults, then from MotionSpec."""

    amplitude: Amplitude | None = Field(None, description="Largest displacement, fraction of the side (0..0.2). Default 0.015.")
    modes: ModeCount | None = Field(None, description="Oscillation modes (1..16). Default 4.")
    max_hz: MaxHz | None = Field(None, description="Highest oscillation frequency in Hz (0..12]. Default 3.")
    zoom: Shift | None = Field(None, description="Camera zoom over the clip (-0.5..0.5). Default 0.")
    pan: Annotated[list[Shift], Field(min_length=2, max_length=2)] | None = Field(
        None, description="Camera pan [x, y] over the clip, each -0.5..0.5. Default [0, 0]."
    )


# --- Items as written --------------------------------------------------------------------
class ItemFields(_Patch):
    """Every item field, all optional: the `defaults:` section, and the base of an item.

    `image: null` / `mask: null` in an item mean "no image / no mask" (overriding defaults).
    """

    _nullable: ClassVar[frozenset[str]] = frozenset({"image", "mask"})

    image: RelPath | None = Field(None, description="Still image to animate, relative to the manifest folder.")
    mask: RelPath | None = Field(
        None, description="Grayscale mask, relative to the manifest folder: motion is confined where it is bright."
    )
    prompt: Prompt | None = Field(None, description="Text prompt (at most 2000 characters). Default ''.")
    negative_prompt: Prompt | None = Field(None, description="Negative prompt (at most 2000 characters). Default ''.")
    backend: Backend | None = Field(None, description=f"Generator backend: {', '.join(BACKENDS)}. Default motion.")
    seed: Seed | None = Field(None, description="Random seed, 0..2^63-1. Default 0.")
    fps: Fps | None = Field(None, description="Frames per second, (0, 120]. Default 24.")
    frames: FrameCount | None = Field(
        None, description="Length in frames. Set frames or duration, not both. Default 48 if neither is set anywhere."
    )
    duration: Seconds | None = Field(
        None, description="Length in seconds; duration × fps must be a whole number of frames. Set frames or duration, not both."
    )
    size: Annotated[list[Side], Field(min_length=2, max_length=2)] | None = Field(
        None, description="Generation size [width, height] in pixels, each even and >= 16. Default [256, 256]."
    )
    loop: bool | None = Field(None, description="Make a seamless loop (the last frame flows into the first). Default false.")
    window: WindowPatch | None = Field(None, description="Temporal windows; merged key by key with defaults.")
    upscale: UpscalePatch | None = Field(None, description="Upscaling; merged key by key with defaults.")
    formats: Formats | None = Field(
        None, description="Output formats, each once: mp4, webm, gif, poster (middle frame, JPEG). Default [mp4]."
    )
    aspects: Aspects | None = Field(
        None, description="Aspect ratios, each once: 'native' or 'W:H' (a centred crop of the one generation). "
        "Default [native]."
    )
    motion: MotionPatch | None = Field(None, description="motion-backend parameters; merged key by key with defaults.")
    model: ModelPatch | None = Field(None, description="diffusers model (backend: diffusers); merged key by key.")
    steps: Steps | None = Field(None, description="Denoising steps per window (diffusers). Default 25.")
    guidance: Guidance | None = Field(None, description="Classifier-free guidance scale (diffusers). Default 6.")
    gpus: GpuRequest | None = Field(
        None, description="GPUs per window task (0..8), or 'auto': 1 if the cluster has GPUs, else 0. Default auto."
    )
    fit: Fit | None = Field(None, description="How the image is fitted to size: cover | contain | stretch. Default cover.")
    background: HexColour | None = Field(
        None, description="'#rrggbb' composited under transparent images and used for contain padding. Default #ffffff."
    )

    @model_validator(mode="after")
    def _frames_or_duration(self) -> ItemFields:
        if "frames" in self.model_fields_set and "duration" in self.model_fields_set:
            _raise_rule_problems(
                [("duration", f"set frames or duration, not both (got frames: {self.frames}, duration: {self.duration})")]
            )
        return self


class ItemEntry(ItemFields):
    """One item of `items:` (or one catalog row): its own id plus any item field."""

    id: SafeName = Field(description="Item id: a safe file name, unique (also ignoring case) within the job.")


NESTED_FIELDS = ("window", "upscale", "motion", "model")  # merged key by key with defaults
_SECTION_MODELS: dict[str, type[_Patch]] = {
    "window": WindowPatch, "upscale": UpscalePatch, "motion": MotionPatch, "model": ModelPatch,
}
CATALOG_FIELDS = (  # what a catalog column may fill: scalar item fields, size, and nested keys as section.key
    *(name for name in ItemEntry.model_fields if name not in (*NESTED_FIELDS, "formats", "aspects")),
    *(f"{section}.{key}" for section, model in _SECTION_MODELS.items() for key in model.model_fields),
)


# --- The resolved item -------------------------------------------------------------------
def frames_from_duration(duration: float, fps: float) -> int:
    """Frames of a clip `duration` seconds long at `fps`; raises ValueError unless that is whole.

    >>> frames_from_duration(1.01, 24.0)
    Traceback (most recent call last):
    ValueError: duration × fps must be a whole number of frames (got 24.24); set frames: N instead
    """
    exact = duration * fps
    if not math.isfinite(exact) or abs(exact - round(exact)) >= 1e-6:
        raise ValueError(
            f"duration × fps must be a whole number of frames (got {round(exact, 6)!r}); set frames: N instead"
        )
    if round(exact) < 1:
        raise ValueError(f"duration × fps must be at least 1 frame (got {round(exact, 6)!r})")
    return round(exact)


def _settings(info: ValidationInfo) -> Settings:
    context = info.context if isinstance(info.context, dict) else {}
    settings = context.get("settings")
    return settings if isinstance(settings, Settings) else Settings()


class ItemSpec(_Resolved):
    """One fully resolved item: defaults applied, frames known, paths absolute.

    Built by ``load_manifest``; validate with ``context={"settings": settings}`` to apply
    that run's limits.
    """

    id: SafeName = Field(description="Item id; a safe file name, unique within the job.")
    source: str = Field(min_length=1, description="Where the item was defined: 'items[3]' or 'catalog row 12'.")
    image: Path | None = Field(None, description="Absolute path of the still image, or None.")
    mask: Path | None = Field(None, description="Absolute path of the grayscale motion mask, or None.")
    prompt: Prompt = Field("", description="Text prompt.")
    negative_prompt: Prompt = Field("", description="Negative prompt.")
    backend: Backend = Field("motion", description="Generator backend.")
    seed: Seed = Field(0, description="Random seed.")
    fps: Fps = Field(24.0, description="Frames per second.")
    frames: FrameCount = Field(48, description="Length in frames.")
    size: tuple[Side, Side] = Field((256, 256), description="Generation size (width, height) in pixels.")
    loop: bool = Field(False, description="Seamless loop.")
    window: WindowSpec = Field(default_factory=WindowSpec, description="Temporal windows.")
    upscale: UpscaleSpec = Field(default_factory=UpscaleSpec, description="Upscaling.")
    formats: Annotated[tuple[Format, ...], Field(min_length=1), AfterValidator(_check_unique)] = Field(
        ("mp4",), description="Output formats."
    )
    aspects: Annotated[tuple[Aspect, ...], Field(min_length=1, max_length=8), AfterValidator(_check_unique)] = Field(
        ("native",), description="Aspect ratios of the renditions."
    )
    motion: MotionSpec = Field(default_factory=MotionSpec, description="motion-backend parameters.")
    model: ModelSpec | None = Field(None, description="diffusers model, for backend: diffusers.")
    steps: Steps = Field(25, description="Denoising steps per window (diffusers).")
    guidance: Guidance = Field(6.0, description="Classifier-free guidance scale (diffusers).")
    gpus: GpuRequest = Field("auto", description="GPUs per window task, or 'auto'.")
    fit: Fit = Field("cover", description="How the image is fitted to size.")
    background: HexColour = Field("#ffffff", description="Background colour '#rrggbb'.")

    @property
    def duration(self) -> float:
        """Length in seconds (frames / fps)."""
        return self.frames / self.fps

    @property
    def output_size(self) -> tuple[int, int]:
        """(width, height) after upscaling."""
        width, height = self.size
        return round(width * self.upscale.factor), round(height * self.upscale.factor)

    @property
    def task(self) -> str:
        """``i2v`` when the item has an image, else ``t2v``."""
        return "i2v" if self.image is not None else "t2v"

    def params(self) -> dict[str, Any]:
        """Every generation parameter, JSON-serialisable. Left out: id and source, the input
        paths (their bytes' digests stand for them, so moving a folder changes nothing) and
        the parameters of a backend the item does not use (they cannot change its pixels)."""
        exclude: dict[str, Any] = {name: True for name in ("id", "source", "image", "mask")}
        exclude |= dict.fromkeys(("model", "steps", "guidance") if self.backend == "motion" else ("motion",), True)
        exclude["upscale"] = {"path"}  # the upscaler's weights digest stands for it (in the backend identity)
        if self.upscale.method != "model":
            exclude["upscale"] |= {"tile", "tile_overlap"}  # unused by resampling: no effect on the pixels
        return self.model_dump(mode="json", exclude=exclude)

    @model_validator(mode="after")
    def _cross_field_rules(self, info: ValidationInfo) -> ItemSpec:
        settings = _settings(info)
        backend = BACKENDS[self.backend]
        problems: list[tuple[str, str]] = []

        for name in ("image", "mask"):
            path = getattr(self, name)
            if path is not None and not path.is_absolute():
                problems.append((name, f"must be an absolute path in a resolved item, got {str(path)!r}"))
        if backend.needs_image and self.image is None:
            problems.append(("image", f"backend {self.backend!r} animates a still image; set image: PATH"))
        if self.window.mode not in backend.window_modes:
            problems.append(
                (
                    "window.mode",
                    f"window.mode {self.window.mode!r} needs a model backend; "
                    f"backend {self.backend!r} supports: {', '.join(backend.window_modes)}",
                )
            )
        if max(self.size) > settings.max_side:
            problems.append(
                ("size", f"each side must be <= max_side ({settings.max_side}, FRAMEFOLD_MAX_SIDE), got {list(self.size)}")
            )
        if self.frames > settings.max_frames:
            problems.append(
                ("frames", f"frames must be <= max_frames ({settings.max_frames}, FRAMEFOLD_MAX_FRAMES), got {self.frames}")
            )
        if self.backend == "diffusers":
            problems += _diffusers_problems(self)
        elif self.loop and self.motion.max_hz < 1 / self.duration:
            problems.append(
                (
                    "motion.max_hz",
                    f"with loop: true, motion.max_hz must be >= 1/duration = {1 / self.duration:.6g} Hz "
                    f"(one whole cycle in {self.duration:.6g} s = {self.frames} frames at {self.fps:g} fps), "
                    f"got {self.motion.max_hz:g}",
                )
            )
        elif self.loop and self.motion.modes > math.floor(self.motion.max_hz * self.duration + 1e-9):
            available = math.floor(self.motion.max_hz * self.duration + 1e-9)
            problems.append(
                (
                    "motion.modes",
                    f"with loop: true, a {self.duration:.6g} s clip has {available} looping frequencies "
                    f"<= max_hz ({self.motion.max_hz:g} Hz), so modes must be <= {available}, got {self.motion.modes}; "
                    "lower modes, raise max_hz or make the clip longer",
                )
            )
        problems += _upscale_problems(self.size, self.upscale.factor, settings.max_output_side)
        problems += _aspect_problems(self)
        _raise_rule_problems(problems)
        return self


MIN_RENDITION_SIDE = 16


def crop_box(size: tuple[int, int], aspect: str) -> tuple[int, int, int, int]:
    """The largest centred box of ``aspect`` ("W:H", or "native": the whole frame) inside
    ``size`` (width, height), with even sides (yuv420p): ``(x, y, width, height)``.

    >>> crop_box((1280, 720), "9:16"), crop_box((1280, 720), "1:1"), crop_box((512, 512), "16:9")
    ((438, 0, 404, 720), (280, 0, 720, 720), (0, 112, 512, 288))
    """
    width, height = size
    if aspect == "native":
        return 0, 0, width, height
    a, b = (int(v) for v in aspect.split(":"))
    if width * b > height * a:  # frame wider than the aspect: keep the height
        w, h = height * a / b, height
    else:
        w, h = width, width * b / a
    w, h = max(2, int(w) // 2 * 2), max(2, int(h) // 2 * 2)
    return (width - w) // 2, (height - h) // 2, w, h



def _aspect_problems(item: ItemSpec) -> list[tuple[str, str]]:
    """Every aspect's crop of the output frames must keep both sides >= 16 pixels."""
    problems = []
    for n, aspect in enumerate(item.aspects):
        _, _, w, h = crop_box(item.output_size, aspect)
        if min(w, h) < MIN_RENDITION_SIDE:
            problems.append(("aspects", f"aspects[{n}]: {aspect} cut from the {item.output_size[0]}x{item.output_size[1]} "
                             f"output is {w}x{h}; each side must be >= {MIN_RENDITION_SIDE}: use a less extreme ratio "
                             "or a larger size"))
    return problems


def _diffusers_problems(item: ItemSpec) -> list[tuple[str, str]]:
    """An item for a diffusers family: every window must be a frame count and size the family accepts."""
    if item.model is None:
        return [("model", "backend 'diffusers' needs model: {family, path}")]
    family = FAMILIES[item.model.family]
    problems: list[tuple[str, str]] = []
    if item.task not in family.tasks:
        need = "set image: PATH (image-to-video)" if "i2v" in family.tasks else "remove image (text-to-video)"
        problems.append(("image", f"model family {family.name!r} does {', '.join(family.tasks)} only; {need}"))
    bad = [s for s in item.size if s % family.size_multiple or s < family.min_side]
    if bad:
        problems.append(
            ("size", f"family {family.name!r} needs width and height multiples of {family.size_multiple} "
                     f"(>= {family.min_side}), got {list(item.size)}")
        )
    if item.window.mode not in family.modes:
        problems.append(("window.mode", f"family {family.name!r} supports window.mode {', '.join(family.modes)}, "
                                        f"got {item.window.mode!r}"))
    length, overlap = item.window.length, item.window.overlap
    single = item.frames <= length  # one window of all the frames
    window_frames = item.frames if single else length
    if not family.window_frames_ok(window_frames):
        where = "frames" if single else "window.length"
        problems.append(
            (where, f"family {family.name!r} generates windows of {family.frame_rule()}, got {window_frames}")
        )
    if not single and family.temporal > 1:
        if (length - overlap) % family.temporal:
            problems.append(
                ("window.overlap", f"family {family.name!r} compresses time {family.temporal}×: window.length - "
                                   f"window.overlap must be a multiple of {family.temporal}, got {length - overlap}")
            )
        if (item.frames - length) % family.temporal:
            problems.append(
                ("frames", f"family {family.name!r} compresses time {family.temporal}×: frames - window.length "
                           f"must be a multiple of {family.temporal} so the last window starts on a latent frame, "
                           f"got {item.frames} - {length}")
            )
    if item.window.mode == "codenoise" and item.frames > length and (item.frames - 1) % family.temporal:
        problems.append(("frames", f"codenoise with family {family.name!r} needs frames = {family.temporal}k+1 "
                                   f"(one latent of the whole clip), got {item.frames}"))
    if item.window.mode == "outpaint" and item.task != "i2v":
        problems.append(("window.mode", "outpaint conditions each window on the previous window's frames through the "
                                        "image input: set image: PATH (an image-to-video item)"))
    if item.window.mode == "outpaint" and item.loop:
        problems.append(("loop", "outpaint generates windows one after another from the first; it cannot close a "
                                 "loop: set loop: false, or use window.mode: codenoise (animatediff, wan)"))
    if item.loop and family.temporal > 1:
        problems.append(("loop", f"loop: true needs a family without temporal compression (animatediff, svd), "
                                 f"not {family.name!r}"))
    return problems


def _upscaler_problems(method: str, path: object, tile: int, overlap: int) -> list[tuple[str, str]]:
    problems = []
    if method == "model" and path is None:
        problems.append(("path", "method: model needs path: the super-resolution weights (.safetensors)"))
    if tile and overlap >= tile:
        problems.append(("tile_overlap", f"tile_overlap ({overlap}) must be < tile ({tile})"))
    return problems


def _upscale_problems(size: tuple[int, int], factor: float, max_output_side: int) -> list[tuple[str, str]]:
    for side_name, side in zip(("width", "height"), size):
        exact = side * factor
        out = round(exact)
        if abs(exact - out) >= 1e-6:
            return [("upscale.factor", f"{side_name} {side} × factor {factor:g} = {exact:.6g} is not a whole number of pixels")]
        if out % 2:
            return [("upscale.factor", f"{side_name} {side} × factor {factor:g} = {out} is odd; output sides must be even")]
        if out > max_output_side:
            return [
                (
                    "upscale.factor",
                    f"output {side_name} {side} × factor {factor:g} = {out} exceeds max_output_side "
                    f"({max_output_side}, FRAMEFOLD_MAX_OUTPUT_SIDE)",
                )
            ]
    return []


# --- The manifest file -------------------------------------------------------------------
class CatalogSpec(_Strict):
    """`catalog:` — more items from a Parquet or CSV table, one row per (matching) row."""

    path: RelPath = Field(description="Table file (.parquet or .csv), relative to the manifest folder.")
    columns: dict[str, Annotated[str, Field(min_length=1)]] = Field(
        description="Item field -> column name; a null cell means 'not set' (defaults apply). id is required "
        "(a text column); nested keys use dotted names (window.length, motion.amplitude); size takes "
        f"'WxH' text or a [w, h] list. Mappable: {', '.join(CATALOG_FIELDS)}.",
    )
    filter: Annotated[str, Field(min_length=1, max_length=MAX_FILTER_CHARS)] | None = Field(
        None,
        description="Keep only the rows matching this expression over catalog columns, e.g. "
        "\"category == 'mugs' and updated_at > '2026-11-01'\": ==, !=, <, <=, >, >= between a column and a "
        "value ('text', number, true/false, ISO date/time), name in ['a', 'b'], name is null, and/or/not, "
        "parentheses. Applied by pyarrow before rows are read.",
    )

    @field_validator("path")
    @classmethod
    def _parquet_or_csv(cls, value: str) -> str:
        if Path(value).suffix.lower() not in (".parquet", ".csv"):
            raise _value_error(f"must name a .parquet or .csv file, got {value!r}")
        return value

    @field_validator("filter")
    @classmethod
    def _filter_parses(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_filter(value)
            except FilterError as error:
                raise _value_error(str(error)) from None
        return value

    @model_validator(mode="after")
    def _columns_name_item_fields(self) -> CatalogSpec:
        problems: list[tuple[FieldPath, str]] = []
        if "id" not in self.columns:
            problems.append(("columns.id", "required: map id to the column holding item ids, e.g. columns: {id: sku}"))
        for field in self.columns:
            if field in CATALOG_FIELDS:
                continue
            if field in _SECTION_MODELS:
                example = next(iter(_SECTION_MODELS[field].model_fields))
                message = f"{field!r} is a section: map each of its keys with a dotted name, e.g. '{field}.{example}'"
            elif field in ItemEntry.model_fields:
                message = f"{field!r} is not a per-row field; set it in defaults or items"
            elif field.split(".", 1)[0] in _SECTION_MODELS:
                section = field.split(".", 1)[0]
                keys = [name for name in CATALOG_FIELDS if name.startswith(f"{section}.")]
                message = f"not a key of {section}" + did_you_mean(field, keys)
            else:
                message = "not an item field" + did_you_mean(field, CATALOG_FIELDS)
            problems.append((("columns", field), message))
        _raise_rule_problems(problems)
        return self


SigningAlg = Literal["es256", "es384", "es512", "ps256", "ps384", "ps512", "ed25519"]


class C2paSpec(_Strict):
    """A C2PA signer: certificate chain and private key files (PEM), inside the manifest folder."""

    cert: RelPath = Field(
        description="PEM file: the end-entity signing certificate followed by its intermediate(s), relative to the manifest folder."
    )
    key: RelPath = Field(description="PEM file: the certificate's private key, relative to the manifest folder.")
    alg: SigningAlg = Field("es256", description="Signature algorithm matching the key: es256 | es384 | es512 | ps256 | ps384 | ps512 | ed25519.")
    tsa_url: Annotated[str, Field(pattern=r"^https?://\S+$", max_length=2048)] | None = Field(
        None, description="RFC 3161 time-stamp authority URL contacted while signing; none: no time-stamp."
    )


class ProvenanceSpec(_Strict):
    """How outputs prove where they came from, beyond the sidecar and ledger."""

    c2pa: C2paSpec | None = Field(
        None, description="Sign mp4, gif and poster outputs with C2PA content credentials (else: FRAMEFOLD_C2PA_* settings)."
    )


class Manifest(_Strict):
    """A framefold manifest: one job, many items."""

    model_config = ConfigDict(title="framefold manifest")

    version: Literal[1] = Field(description="Manifest format version; must be 1.")
    name: SafeName = Field(description="Job name: a safe file name.")
    output: RelPath = Field(description="Output root, relative to the manifest folder (and inside it).")
    defaults: ItemFields = Field(
        default_factory=ItemFields, description="Item fields applied to every item; items override (nested sections key by key)."
    )
    items: list[ItemEntry] = Field(default_factory=list, description="Items, each with its own id.")
    catalog: CatalogSpec | None = Field(None, description="More items from a Parquet or CSV table.")
    provenance: ProvenanceSpec | None = Field(None, description="Content credentials (C2PA signing).")

    @field_validator("version", mode="before")
    @classmethod
    def _exactly_one(cls, value: object) -> object:
        if type(value) is not int or value != 1:
            raise _value_error(f"must be 1 (the manifest version this framefold reads), got {value!r}")
        return value


def manifest_json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of a manifest file."""
    schema = Manifest.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
