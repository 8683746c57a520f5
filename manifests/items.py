"""Items: as written (``ItemFields`` for ``defaults:``, ``ItemEntry`` for an item or a
catalog row) and resolved (``ItemSpec``, what every other part of framefold works with).

>>> spec = ItemSpec(id="mug", source="items[0]", image=Path("/data/mug.png"), frames=96, upscale={"factor": 2})
>>> spec.duration, spec.output_size
(4.0, (512, 512))
>>> frames_from_duration(4.0, 24.0)
96
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, ValidationInfo, model_validator

from .fields import (
    BACKENDS,
    MAX_HZ,
    Aspects,
    Backend,
    FrameCount,
    Fit,
    Formats,
    Fps,
    GpuRequest,
    Guidance,
    HexColour,
    LoopStart,
    Patch,
    Prompt,
    RelPath,
    Resolved,
    SafeName,
    Seconds,
    Seed,
    Side,
    Steps,
    patch_of,
    raise_rule_problems,
)
from .rules import aspect_problems, diffusers_problems, upscale_problems
from .sections import (
    ModelPatch,
    ModelSpec,
    MotionPatch,
    MotionSpec,
    UpscalePatch,
    UpscaleSpec,
    WindowPatch,
    WindowSpec,
)
from .settings import Settings


# --- The resolved item -------------------------------------------------------------------
def frames_from_duration(duration: float, fps: float) -> int:
    """Frames of a clip `duration` seconds long at `fps`; raises ValueError unless that is whole.

    >>> frames_from_duration(1.01, 24.0)
    Traceback (most recent call last):
    ValueError: duration × fps must be a whole number of frames (got 24.24); set frames: N instead
    """
    exact = duration * fps
    if not math.isfinite(exact):
        raise ValueError(f"duration × fps is not a number of frames (got {exact!r}); set a duration in seconds")
    if abs(exact - round(exact)) >= 1e-6:
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


def _path_or_url(value: Any) -> Any:
    """A store URL stays text (``s3://b/k`` is not a path); anything else becomes a Path."""
    if isinstance(value, str) and not value.startswith("file://") and "://" in value:
        return value
    return Path(value) if isinstance(value, str) else value


InputLocation = Annotated[Path | str, BeforeValidator(_path_or_url)]


class ItemSpec(Resolved):
    """One fully resolved item: defaults applied, frames known, paths absolute.

    Built by ``load_manifest``; validate with ``context={"settings": settings}`` to apply
    that run's limits. The descriptions (and defaults) are those of the manifest's fields.
    """

    id: SafeName = Field(description="Item id: a safe file name, unique (also ignoring case) within the job.")
    source: str = Field(min_length=1, description="Where the item was defined: 'items[3]' or 'catalog row 12'.")
    image: InputLocation | None = Field(None, description="Absolute path or store URL of the still image, or None.")
    mask: InputLocation | None = Field(None, description="Absolute path or store URL of the grayscale motion mask, or None.")
    prompt: Prompt = Field("", description="Text prompt (at most 2000 characters).")
    negative_prompt: Prompt = Field("", description="Negative prompt (at most 2000 characters).")
    backend: Backend = Field("motion", description=f"Generator backend: {', '.join(BACKENDS)}.")
    seed: Seed = Field(0, description="Random seed, 0..2^63-1.")
    fps: Fps = Field(24.0, description="Frames per second, (0, 120].")
    frames: FrameCount = Field(
        48, description="Length in frames. Set frames or duration, not both; the default applies if neither is set anywhere."
    )
    size: tuple[Side, Side] = Field((256, 256), description="Generation size [width, height] in pixels, each even and >= 16.")
    loop: bool = Field(False, description="Make a seamless loop (the last frame flows into the first).")
    loop_start: LoopStart = Field(
        "auto", description="Where a loop's file starts: 'smoothest' (after its smallest frame-to-frame change), "
        "'first' (the generated order), or 'auto': first for an item with an image, else smoothest."
    )
    window: WindowSpec = Field(default_factory=WindowSpec, description="Temporal windows; merged key by key with defaults.")
    upscale: UpscaleSpec = Field(default_factory=UpscaleSpec, description="Upscaling; merged key by key with defaults.")
    formats: Formats = Field(
        ("mp4",), description="Output formats, each once: mp4, webm, gif, poster (middle frame, JPEG)."
    )
    aspects: Aspects = Field(
        ("native",), description="Aspect ratios, each once: 'native' or 'W:H' (a centred crop of the one generation)."
    )
    motion: MotionSpec = Field(
        default_factory=MotionSpec, description="motion-backend parameters; merged key by key with defaults."
    )
    model: ModelSpec | None = Field(None, description="diffusers model (backend: diffusers); merged key by key.")
    steps: Steps = Field(25, description="Denoising steps per window (diffusers).")
    guidance: Guidance = Field(6.0, description="Classifier-free guidance scale (diffusers).")
    gpus: GpuRequest = Field(
        "auto", description="GPUs per window task (0..8), or 'auto': 1 if the cluster has GPUs, else 0."
    )
    fit: Fit = Field("cover", description="How the image is fitted to size: cover | contain | stretch.")
    background: HexColour = Field(
        "#ffffff", description="'#rrggbb' composited under transparent images and used for contain padding."
    )

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

    @property
    def loop_start_rule(self) -> str | None:
        """Where a loop's file starts, ``smoothest`` or ``first``; None for a clip that does not
        loop. ``auto`` is ``first`` for an item with an image (its loop starts at the still) and
        for a clip made in one window (its wrap was never generated inside a window), else
        ``smoothest``."""
        if not self.loop:
            return None
        if self.loop_start == "auto":
            return "first" if self.image is not None or self.frames <= self.window.length else "smoothest"
        return self.loop_start

    def params(self) -> dict[str, Any]:
        """Every generation parameter, JSON-serialisable. Left out: id and source, the input
        paths (their bytes' digests stand for them, so moving a folder changes nothing) and
        the parameters of a backend the item does not use (they cannot change its pixels)."""
        exclude: dict[str, Any] = {name: True for name in ("id", "source", "image", "mask")}
        exclude |= dict.fromkeys(("model", "steps", "guidance") if self.backend == "motion" else ("motion",), True)
        exclude["upscale"] = {"path"}  # the upscaler's weights digest stands for it (in the backend identity)
        if self.upscale.method != "model":
            exclude["upscale"] |= {"tile", "tile_overlap"}  # unused by resampling: no effect on the pixels
        # loop_start as resolved, and only for a loop turned round: the others keep the key they had
        exclude["loop_start"] = True
        params = self.model_dump(mode="json", exclude=exclude)
        if self.loop_start_rule == "smoothest":
            params["loop_start"] = "smoothest"
        return params

    @model_validator(mode="after")
    def _cross_field_rules(self, info: ValidationInfo) -> ItemSpec:
        settings = _settings(info)
        backend = BACKENDS[self.backend]
        problems: list[tuple[str, str]] = []

        for name in ("image", "mask"):
            path = getattr(self, name)
            if isinstance(path, Path) and not path.is_absolute():
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
            problems += diffusers_problems(self)
        elif self.loop and self.motion.modes > math.floor(self.motion.max_hz * self.duration + 1e-9):
            problems.append(self._loop_too_short(settings.max_frames))
        if self.loop and self.loop_start == "smoothest" and self.frames <= self.window.length:
            problems.append(("loop_start", f"smoothest starts a loop's file where its wrap was generated like its "
                             f"other steps, inside a window; these {self.frames} frames are one window "
                             f"(window.length {self.window.length}), so the wrap never was: set loop_start: first "
                             f"(or auto), or make frames longer than window.length"))
        problems += upscale_problems(self.size, self.upscale.factor, settings.max_output_side)
        problems += aspect_problems(self)
        raise_rule_problems(problems)
        return self

    def _loop_too_short(self, max_frames: int) -> tuple[str, str]:
        """A looping motion needs each of its ``modes`` at its own whole number of cycles in
        the clip: the problem, with every fix that works on its own (within the limits:
        ``max_hz`` up to 12 Hz and half the frame rate, ``max_frames``)."""
        modes, hz, seconds, fps = self.motion.modes, self.motion.max_hz, self.duration, self.fps
        available = math.floor(hz * seconds + 1e-9)
        fixes = [f"lower motion.modes to {available}"] if available >= 1 else []
        raise_to = _round(modes / seconds, up=True)
        if raise_to <= min(MAX_HZ, fps / 2):
            fixes.append(f"raise motion.max_hz to >= {raise_to:g}")
        frames = math.ceil(modes * fps / hz - 1e-9)
        if frames <= max_frames:
            fixes.append(f"make the clip at least {frames} frames long (frames: {frames}; a duration must be at "
                         f"least {modes / hz:.6g} s and a whole number of frames at {fps:g} fps)")
        slower = _round(self.frames * hz / modes, up=False)
        if slower > 0:
            fixes.append(f"with frames: set, lower fps to <= {slower:g}")
        return (
            # where a one-field fix is: modes when fewer fit, else max_hz when it may rise
            "motion.max_hz" if not available and fixes and fixes[0].startswith("raise motion.max_hz") else "motion.modes",
            f"with loop: true, each of the {modes} motion mode{'s' * (modes != 1)} needs its own whole number of "
            f"cycles: a {seconds:.6g} s clip ({self.frames} frame{'s' * (self.frames != 1)} at {fps:g} fps) has "
            f"{available} looping frequenc{'y' if available == 1 else 'ies'} (multiples of 1/duration = "
            f"{1 / seconds:.6g} Hz) <= max_hz ({hz:g} Hz); " + ", or ".join(fixes),
        )


def _round(value: float, up: bool) -> float:
    """``value`` to 4 decimals, rounded the way that keeps a suggested bound on the safe side."""
    return (math.ceil if up else math.floor)(value * 1e4 - 1e-6 if up else value * 1e4 + 1e-6) / 1e4


# --- Items as written --------------------------------------------------------------------
def _frames_or_duration(fields: Any) -> list[tuple[str, str]]:
    if "frames" in fields.model_fields_set and "duration" in fields.model_fields_set:
        return [("duration", f"set frames or duration, not both (got frames: {fields.frames}, duration: {fields.duration})")]
    return []


ItemFields = patch_of(
    ItemSpec,
    "ItemFields",
    """Every item field, all optional: the `defaults:` section, and the base of an item.

    `image: null` / `mask: null` in an item mean "no image / no mask" (overriding defaults).
    """,
    written={
        "image": (RelPath | None, Field(
            None, description="Still image to animate: relative to the manifest folder, an absolute path under "
            "FRAMEFOLD_INPUT_ROOTS, or a store URL (s3://, gs://, az://) under the manifest's folder or those roots.")),
        "mask": (RelPath | None, Field(
            None, description="Grayscale mask, located like image: motion is confined where it is bright.")),
        "duration": (Seconds | None, Field(
            None, description="Length in seconds; duration × fps must be a whole number of frames. "
            "Set frames or duration, not both.")),
        "window": (WindowPatch | None, Field(None, description=ItemSpec.model_fields["window"].description)),
        "upscale": (UpscalePatch | None, Field(None, description=ItemSpec.model_fields["upscale"].description)),
        "motion": (MotionPatch | None, Field(None, description=ItemSpec.model_fields["motion"].description)),
        "model": (ModelPatch | None, Field(None, description=ItemSpec.model_fields["model"].description)),
    },
    after={"duration": "frames"},
    skip=("id", "source"),
    nullable=("image", "mask"),
    rule=_frames_or_duration,
)


class ItemEntry(ItemFields):
    """One item of `items:` (or one catalog row): its own id plus any item field."""

    id: SafeName = Field(description=ItemSpec.model_fields["id"].description)


NESTED_FIELDS = ("window", "upscale", "motion", "model")  # merged key by key with defaults
SECTION_MODELS: dict[str, type[Patch]] = {
    "window": WindowPatch, "upscale": UpscalePatch, "motion": MotionPatch, "model": ModelPatch,
}
CATALOG_FIELDS = (  # what a catalog column may fill: scalar item fields, size, and nested keys as section.key
    *(name for name in ItemEntry.model_fields if name not in (*NESTED_FIELDS, "formats", "aspects")),
    *(f"{section}.{key}" for section, model in SECTION_MODELS.items() for key in model.model_fields),
)
