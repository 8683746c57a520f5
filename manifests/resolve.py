"""Resolution of defaults: merge ``defaults:`` into an item (nested sections key by key;
frames or duration as a unit), check its paths, and build its ``ItemSpec``."""

from __future__ import annotations

import math

from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .job import ModelUpscaler
from .items import NESTED_FIELDS, ItemEntry, ItemFields, ItemSpec, frames_from_duration
from .locations import join
from .paths import input_file, model_dir, upscaler_file
from .problems import Problem, problems_from
from .settings import Settings


# --- 4./5. Resolving items -------------------------------------------------------------
class ItemResolver:
    """Merges defaults into an item, checks its paths, and builds the ItemSpec."""

    def __init__(self, defaults: ItemFields | None, root: Path | str, settings: Settings,
                 check_input: Callable[[Path | str], str | None] | None = None) -> None:
        self.root = root
        self.settings = settings
        self.check_input = check_input  # opens and decodes a still (tasks.inputs.checker): None skips it
        self.defaults = defaults.model_dump(exclude_unset=True) if defaults is not None else None
        self.defaults_problems: list[Problem] = []
        self.default_paths: dict[str, Path | None] = {}
        self._models: dict[str, tuple[Path | None, str | None]] = {}
        self._files: dict[str, tuple[Path | str | None, str | None]] = {}  # raw path -> input_file(raw, root)
        self.listings: dict = {}  # store folder -> its objects (one listing per folder)
        self._upscalers: dict[str, tuple[Path | None, str | None]] = {}
        self.upscalers: list[ModelUpscaler] = []  # items whose upscaler tasks.preflight checks
        self._inherited: set[tuple[str, str]] | None = None  # see _problems_of_defaults
        self._reported: set[tuple[str, str]] = set()  # defaults.* problems reported already
        upscale = (self.defaults or {}).get("upscale") or {}
        if upscale.get("path") is not None and upscale.get("method") != "model":
            self.defaults_problems.append(Problem("defaults.upscale.path", "path is used by method: model only; set method: model or remove path"))
        for name in ("image", "mask"):  # checked once here, not once per item that inherits them
            if self.defaults is not None and self.defaults.get(name) is not None:
                resolved, message = self.input_file(self.defaults[name])
                if message is not None:
                    self.defaults_problems.append(Problem(f"defaults.{name}", message))
                self.default_paths[name] = resolved

    def input_file(self, raw: str) -> tuple[Path | str | None, str | None]:
        """`input_file(raw, root)`, resolved and checked once per distinct path (catalogs repeat them)."""
        found = self._files.get(raw)
        if found is None:
            found = input_file(raw, self.root, tuple(self.settings.input_roots), listings=self.listings)
            if found[1] is None and found[0] is not None and self.check_input is not None:
                found = (found[0], self.check_input(found[0]))
            self._files[raw] = found
        return found

    def input_problems(self, raw: dict, prefix: str, item_id: str | None, reported: set[str]) -> list[Problem]:
        """The problems of the stills (``image``, ``mask``) an item names itself, for an item
        that failed validation elsewhere, so that one pass reports them too (fields already
        in ``reported`` are skipped)."""
        out = []
        for name in ("image", "mask"):
            value, where = raw.get(name), f"{prefix}.{name}"
            if isinstance(value, str) and where not in reported:
                _, message = self.input_file(value)
                if message is not None:
                    out.append(Problem(where, message, item_id))
        return out

    def __call__(self, entry: ItemEntry, *, source: str, prefix: str) -> tuple[ItemSpec | None, list[Problem]]:
        """(ItemSpec, []) or (None, problems) for one validated entry; problems located under `prefix`,
        except those the item inherits unchanged from `defaults`: each of those is reported once, at
        ``defaults.<field>``, for the first item that inherits it."""
        spec, problems = self._resolve(entry, source=source, prefix=prefix)
        if not problems or self.defaults is None:
            return spec, problems
        if self._inherited is None:
            self._inherited = self._problems_of_defaults()
        placed = []
        for problem in problems:
            rest = problem.location[len(prefix) + 1:] if problem.location.startswith(prefix + ".") else None
            field = rest.split(".")[0].split("[")[0] if rest else None
            if rest is not None and field in self.defaults and (rest, problem.message) in self._inherited:
                problem = Problem(f"defaults.{rest}", problem.message)  # where it is written
            if problem.location.startswith("defaults."):
                key = (problem.location, problem.message)
                if key in self._reported:
                    continue
                self._reported.add(key)
                problem = Problem(problem.location, problem.message)  # the defaults', not one item's
            placed.append(problem)
        return spec, placed

    def _problems_of_defaults(self) -> set[tuple[str, str]]:
        """(field location, message) of what an item setting nothing but its id gets wrong: the
        problems an item inherits from `defaults` when its own fields change nothing about them."""
        upscalers = list(self.upscalers)
        _, problems = self._resolve(ItemEntry.model_validate({"id": "defaults"}, strict=True),
                                    source="defaults", prefix="@")
        self.upscalers[:] = upscalers
        return {(p.location[2:], p.message) for p in problems if p.location.startswith("@.")}

    def _resolve(self, entry: ItemEntry, *, source: str, prefix: str) -> tuple[ItemSpec | None, list[Problem]]:
        if self.defaults is None:  # invalid defaults are reported once, at defaults.*
            return None, []
        own = entry.model_dump(exclude_unset=True)
        item_id = own.pop("id")
        merged = _merge(self.defaults, own)
        problems: list[Problem] = []

        for name in ("image", "mask"):  # paths from defaults were checked once, in __init__
            value = merged.get(name)
            if value is None:
                continue
            if name in own:
                resolved, message = self.input_file(value)
                if message is not None:
                    problems.append(Problem(f"{prefix}.{name}", message, item_id))
            else:
                resolved = self.default_paths.get(name)
            merged[name] = resolved if resolved is not None else join(self.root, value)  # keeps the rules running

        model = merged.get("model")
        if isinstance(model, dict) and isinstance(model.get("path"), str):
            where = f"{prefix}.model.path" if "path" in (own.get("model") or {}) else "defaults.model.path"
            resolved, message = self._model_dir(model["path"])
            if message is not None:
                problems.append(Problem(where, message, item_id))
            merged["model"] = {**model, "path": resolved if resolved is not None else join(self.root, model["path"])}

        upscale = merged.get("upscale")
        if (own.get("upscale") or {}).get("path") is not None and (upscale or {}).get("method") != "model":
            problems.append(Problem(f"{prefix}.upscale.path", "path is used by method: model only; set method: model or remove path", item_id))
        if isinstance(upscale, dict) and upscale.get("method") != "model":
            merged["upscale"] = upscale = {k: v for k, v in upscale.items() if k != "path"}  # a default path, unused here
        upscaler = None
        if isinstance(upscale, dict) and isinstance(upscale.get("path"), str):
            own_upscale = own.get("upscale") or {}
            where = f"{prefix}.upscale.path" if "path" in own_upscale else "defaults.upscale.path"
            resolved, message = self._upscaler(upscale["path"])
            if message is not None:
                problems.append(Problem(where, message, item_id))
            merged["upscale"] = {**upscale, "path": resolved if resolved is not None else join(self.root, upscale["path"])}
            factor_at = None  # not set: tasks.preflight makes the model's scale the factor
            if upscale.get("factor") is not None:
                factor_at = f"{prefix}.upscale.factor" if "factor" in own_upscale else "defaults.upscale.factor"
            upscaler = ModelUpscaler(item_id, prefix, where, factor_at)

        # frames or duration, as a unit: the item's own if it sets either, else the defaults'
        timing = own if ("frames" in own or "duration" in own) else self.defaults
        merged.pop("frames", None)
        merged.pop("duration", None)
        if "frames" in timing:
            merged["frames"] = timing["frames"]
        elif "duration" in timing:
            fps = merged.get("fps", ItemSpec.model_fields["fps"].default)
            try:
                merged["frames"] = frames_from_duration(timing["duration"], fps)
            except ValueError as error:  # reported; the other rules run on the nearest whole length
                problems.append(Problem(f"{prefix}.duration", str(error), item_id))
                exact = timing["duration"] * fps
                merged["frames"] = max(1, round(exact)) if math.isfinite(exact) else 1

        try:
            spec = ItemSpec.model_validate(
                {**merged, "id": item_id, "source": source}, context={"settings": self.settings}
            )
        except ValidationError as error:
            return None, problems + problems_from(error, prefix, model=ItemSpec, item_id=item_id)
        if problems:
            return None, problems
        if upscaler is not None:
            self.upscalers.append(upscaler)
        return spec, []


    def _upscaler(self, raw: str) -> tuple[Path | None, str | None]:
        """Super-resolution weights: (path, problem), checked once per path."""
        if raw not in self._upscalers:
            self._upscalers[raw] = upscaler_file(raw, self.settings, self.root)
        return self._upscalers[raw]

    def _model_dir(self, raw: str) -> tuple[Path | None, str | None]:
        """A model directory: inside the model root, diffusers layout, no pickle weights (checked once per path)."""
        if raw not in self._models:
            self._models[raw] = model_dir(raw, self.settings, self.root)
        return self._models[raw]


def _merge(defaults: dict[str, Any], own: dict[str, Any]) -> dict[str, Any]:
    """defaults overridden by own; nested sections merge key by key."""
    merged = {**defaults, **own}
    for name in NESTED_FIELDS:
        if isinstance(defaults.get(name), dict) and isinstance(own.get(name), dict):
            merged[name] = {**defaults[name], **own[name]}
    return merged


