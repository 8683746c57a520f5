"""The building blocks of the manifest schema: constrained types, rule errors, base models.

Every model of a manifest derives from ``Strict`` (unknown keys are errors, NaN and
infinity are not numbers); resolved models from ``Resolved`` (immutable), the partial
sections written in a file from ``Patch`` (a key may be left out, not set to null).
Cross-field rules report through ``raise_rule_problems`` so that one validator can name
several fields (``manifests.problems`` turns each into one ``Problem``).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from collections.abc import Callable
from typing import Annotated, Any, ClassVar, Literal, get_args, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    WrapValidator,
    create_model,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError

from .families import FAMILIES


# --- Backends ----------------------------------------------------------------------------
@dataclass(frozen=True)
class BackendInfo:
    """What the manifest layer needs to know about a backend to validate an item for it."""

    window_modes: tuple[str, ...]  # window.mode values the backend can run
    needs_image: bool  # True: the item must set `image`


# Adding a backend is adding one line here (and its module under tasks/backends/).
BACKENDS: dict[str, BackendInfo] = {
    "motion": BackendInfo(window_modes=("independent",), needs_image=True),  # spectral motion texture, no weights
    "diffusers": BackendInfo(window_modes=("independent", "codenoise", "outpaint", "freenoise"), needs_image=False),  # local weights
}
Backend = Literal[tuple(BACKENDS)]  # type: ignore[valid-type]  # Literal["motion", ...] built from BACKENDS


# --- Rule errors -------------------------------------------------------------------------
RULE_ERROR = "framefold_rule"  # error type of cross-field rules; ctx["problems"] = ((field path, message), ...)
_VALUE_ERROR = "framefold_value"  # error type of single-value checks whose message already says what came
FieldPath = str | tuple[str, ...]  # "window.overlap", or ("columns", key) when a key may hold a dot


def raise_rule_problems(problems: list[tuple[FieldPath, str]]) -> None:
    """Raise one pydantic error carrying every (field path, message) rule violation."""
    if problems:
        summary = "; ".join(f"{at if isinstance(at, str) else '.'.join(at)}: {message}" for at, message in problems)
        raise PydanticCustomError(RULE_ERROR, "{summary}", {"summary": summary, "problems": tuple(problems)})


def did_you_mean(word: str, choices: tuple[str, ...] | list[str]) -> str:
    """'; did you mean 'x'?' for the closest choice, or ''."""
    close = difflib.get_close_matches(word, choices, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def value_error(message: str) -> PydanticCustomError:
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
        raise value_error(problem)
    return value


def _check_no_nul(value: str) -> str:
    if "\x00" in value:
        raise value_error(f"must not contain a NUL byte, got {value!r}")
    return value


def check_unique(values: list[str]) -> list[str]:
    repeated = sorted({v for v in values if values.count(v) > 1})
    if repeated:
        raise value_error(f"must list each value once, got {values!r} ({', '.join(repeated)} repeated)")
    return values


def _auto_or_gpu_count(value: Any, handler: Any) -> Any:
    """gpus is 'auto' or a number 0..8; one clear error instead of one per union branch."""
    try:
        return handler(value)
    except ValidationError:
        raise value_error(f"must be 'auto' or a number of GPUs from 0 to 8, got {value!r}") from None


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
LoopStart = Literal["auto", "smoothest", "first"]
Format = Literal["mp4", "webm", "gif", "poster"]  # tasks.renditions.EXTENSIONS
Formats = Annotated[tuple[Format, ...], Field(min_length=1), AfterValidator(check_unique)]
ASPECT_PATTERN = r"^(native|[1-9][0-9]?:[1-9][0-9]?)$"


def _check_aspect(value: str) -> str:
    if not re.fullmatch(ASPECT_PATTERN, value):
        raise value_error(f"must be 'native' or 'W:H' with whole numbers 1 to 99 (e.g. '9:16', '1:1'), got {value!r}")
    return value


Aspect = Annotated[
    str,
    AfterValidator(_check_aspect),
    WithJsonSchema({"type": "string", "pattern": ASPECT_PATTERN,
                    "description": "'native' (the whole frame) or 'W:H' with W and H from 1 to 99, e.g. '9:16'."}),
]
Aspects = Annotated[tuple[Aspect, ...], Field(min_length=1, max_length=8), AfterValidator(check_unique)]
GpuRequest = Annotated[
    Annotated[float, Field(ge=0, le=8)] | Literal["auto"],
    WrapValidator(_auto_or_gpu_count),
]
WindowLength = Annotated[int, Field(ge=1, le=1024)]
Overlap = Annotated[int, Field(ge=0, le=1023)]
Weighting = Literal["flat", "linear", "cosine", "gaussian"]  # kernels.windows.WEIGHTINGS (tests/manifests/test_layers.py)
WindowMode = Literal[tuple(dict.fromkeys(m for b in BACKENDS.values() for m in b.window_modes))]  # type: ignore[valid-type]
UpscaleFactor = Annotated[float, Field(ge=1, le=8)]
UpscaleMethod = Literal["lanczos", "bicubic", "bilinear", "nearest", "model"]  # kernels.resample.METHODS + model
TileSide = Annotated[int, Field(ge=0, le=4096)]
TileOverlap = Annotated[int, Field(ge=0, le=1024)]
Amplitude = Annotated[float, Field(ge=0, le=0.2)]
ModeCount = Annotated[int, Field(ge=1, le=16)]
MAX_HZ = 12.0  # motion.max_hz: the highest oscillation a still is animated with
MaxHz = Annotated[float, Field(gt=0, le=MAX_HZ)]
Shift = Annotated[float, Field(ge=-0.5, le=0.5)]
FamilyName = Literal[tuple(FAMILIES)]  # type: ignore[valid-type]
Dtype = Literal["float32", "float16", "bfloat16"]  # tasks.backends.diffusers_backend.DTYPES
SchedulerName = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9]*Scheduler$", max_length=64)]
Variant = Annotated[str, Field(pattern=r"^[A-Za-z0-9_]{1,32}$")]  # a weights file infix: model.fp16.safetensors
Steps = Annotated[int, Field(ge=1, le=1000)]
Guidance = Annotated[float, Field(ge=0, le=50)]
SIGNING_ALGORITHMS = ("es256", "es384", "es512", "ps256", "ps384", "ps512", "ed25519")  # C2PA signature algorithms
DEFAULT_SIGNING_ALG = SIGNING_ALGORITHMS[0]  # for an EC P-256 key
SigningAlg = Literal[SIGNING_ALGORITHMS]  # type: ignore[valid-type]


class Strict(BaseModel):
    """Base of every model here: unknown keys are errors, NaN and infinity are not numbers."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Resolved(Strict):
    """Base of resolved models: immutable (and hashable)."""

    model_config = ConfigDict(frozen=True)


class Patch(Strict):
    """Base of the partial models of a manifest: a key may be left out, but not set to null.

    Leaving a key out means "inherit"; an explicit null would be ambiguous, so it is an
    error (except for fields listed in `_nullable`, where null means "none").
    """

    _nullable: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="after")
    def _no_nulls(self) -> Patch:
        if all(getattr(self, name) is not None for name in self.model_fields_set):  # the common case, fast
            return self
        raise_rule_problems(
            [
                (name, "must not be null; leave the key out to use the default")
                for name in type(self).model_fields  # in declaration order
                if name in self.model_fields_set and getattr(self, name) is None and name not in self._nullable
            ]
        )
        return self



Rule = Callable[[Any], list[tuple[FieldPath, str]]]  # a section -> its (field path, message) problems


def patch_of(
    spec: type[BaseModel],
    name: str,
    doc: str,
    *,
    written: dict[str, tuple[Any, FieldInfo]] | None = None,
    after: dict[str, str] | None = None,
    skip: tuple[str, ...] = (),
    nullable: tuple[str, ...] = (),
    rule: Rule | None = None,
) -> type[Patch]:
    """The model of `spec` as written in a manifest: every field optional (left out: inherit),
    with the spec's constraints, and its description followed by the spec's default.

    `written` replaces or adds fields whose written form differs (a relative path for an
    absolute one, a section's patch for its spec); `after` places an added field after a
    spec field (added field -> spec field); `skip` leaves fields out; `nullable` may be null ("none"); `rule` runs on the
    patch as on the spec (it must skip fields left out, which are None).
    """
    fields: dict[str, tuple[Any, FieldInfo]] = {}
    for field, info in spec.model_fields.items():
        if field in skip:
            continue
        annotation = _as_written(info.annotation)
        if info.metadata:
            annotation = Annotated[(annotation, *info.metadata)]
        fields[field] = (annotation | None, Field(None, description=with_default(info)))
        fields |= {added: (written or {})[added] for added, before in (after or {}).items() if before == field}
    fields |= written or {}
    validators = {}
    if rule is not None:
        validators["_section_rule"] = model_validator(mode="after")(_checked_by(rule))
    model = create_model(name, __base__=Patch, __doc__=doc, __module__=spec.__module__, __validators__=validators, **fields)
    model._nullable = frozenset(nullable)
    return model


def _checked_by(rule: Rule) -> Callable[[Any], Any]:
    def check(self: Any) -> Any:
        raise_rule_problems(rule(self))
        return self

    return check


def _as_written(annotation: Any) -> Any:
    """A resolved model's type as YAML writes it: tuples are lists (strict validation takes
    no list for a tuple)."""
    if get_origin(annotation) is not tuple:
        return annotation
    args = get_args(annotation)
    if len(args) == 2 and args[1] is Ellipsis:
        return list[args[0]]
    return Annotated[list[args[0]], Field(min_length=len(args), max_length=len(args))]


def with_default(info: FieldInfo) -> str:
    """A field's description followed by its default, as a manifest author writes it."""
    if info.is_required() or info.default_factory is not None or info.default is None:
        return info.description or ""
    return f"{info.description} Default {_written(info.default)}."


def _written(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_written(v) for v in value) + "]"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return str(value) if value != "" else "''"
