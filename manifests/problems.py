"""What is wrong with a manifest, and where: ``Problem``, ``ManifestError``, and the
translation of pydantic errors into dotted locations.

A location reads like the file: ``items[2].window.overlap``, ``defaults.fps``,
``catalog.columns.id``, ``catalog row 17 (item 'sku-9').image`` (rows count from 1, the
first data row). File-level problems (unreadable file, YAML syntax) have the location ``""``.
"""

from __future__ import annotations

import re
import reprlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from .fields import RULE_ERROR, did_you_mean, is_safe_name
from .locations import redacted, unreachable


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a manifest: where (dotted location), what, and for which item."""

    location: str
    message: str
    item_id: str | None = None

    def __str__(self) -> str:
        where = self.location
        if self.item_id is not None and f"(item '{self.item_id}')" not in where:
            where = f"{where} (item '{self.item_id}')"
        return f"{where}: {self.message}" if where else self.message


class ManifestError(Exception):
    """A manifest that cannot be run; ``problems`` lists everything found, in file order."""

    def __init__(self, file: Path | str, problems: Sequence[Problem]) -> None:
        super().__init__(file, list(problems))  # args mirror __init__, so the error pickles (Ray, Prefect)
        # a path, or a store URL (never printed with the credentials a URL may carry)
        self.file = redacted(file) if isinstance(file, str) and "://" in file else Path(file)
        self.problems = list(problems)

    def __str__(self) -> str:
        return "\n".join(f"{self.file}: {problem}" for problem in self.problems)

    @property
    def store_unreachable(self) -> bool:
        """Every problem is a store that did not answer (the manifest's, an input's): nothing is
        known to be wrong with the manifest, and running again later may succeed."""
        return bool(self.problems) and all(unreachable(p.message) for p in self.problems)



_ITEM = re.compile(r"(items)\[(\d+)\]|(catalog row) (\d+)")


def file_order(problem: Problem) -> tuple[int, int]:
    """Sort key: top-level sections in file order, items by index, catalog rows by number."""
    match = _ITEM.match(problem.location)
    if match:
        return (5, int(match[2])) if match[1] else (7, int(match[4]))
    top = re.split(r"[.\[]", problem.location, maxsplit=1)[0]
    order = {"version": 1, "name": 2, "output": 3, "defaults": 4, "items": 5, "catalog": 6}
    return order.get(top, 0), -1


def failed_part(location: str) -> str:
    """The part a problem invalidates: 'items[3]' for item problems, else the top-level key."""
    match = _ITEM.match(location)
    if match and match[1]:
        return match[0]
    return re.split(r"[.\[]", location, maxsplit=1)[0]


def usable_id(raw: object) -> str | None:
    item_id = raw.get("id") if isinstance(raw, dict) else None
    return item_id if is_safe_name(item_id) else None


def short(value: object) -> str:
    """A bounded repr of an input value for messages (large or deep inputs are elided)."""
    shortener = reprlib.Repr()  # Python 3.11: limits are attributes, not __init__ arguments
    shortener.maxstring = shortener.maxother = 60
    shortener.maxlist = shortener.maxtuple = shortener.maxdict = shortener.maxset = 4
    shortener.maxlevel = 2
    return shortener.repr(value)


def problems_from(
    error: ValidationError,
    prefix: str,
    *,
    model: type[BaseModel],
    item_id: str | None = None,
    items: list[Any] | None = None,
) -> list[Problem]:
    """Translate pydantic errors of `model` to Problems located under `prefix` (e.g. 'items[2]').

    `items`: the raw item list when validating a whole manifest, to name the item of an error.
    """
    problems = []
    default_id = item_id
    for e in error.errors(include_url=False):
        loc, kind, ctx = tuple(e["loc"]), e["type"], e.get("ctx") or {}
        item_id = default_id
        if items is not None and len(loc) > 1 and loc[0] == "items" and isinstance(loc[1], int):
            item_id = usable_id(items[loc[1]])
        if kind == RULE_ERROR:
            for at, message in ctx["problems"]:
                parts = at if isinstance(at, tuple) else tuple(at.split("."))
                problems.append(Problem(location(prefix, (*loc, *parts)), message, item_id))
            continue
        if kind == "extra_forbidden":
            key = str(loc[-1])
            if loc[-2:] == ("defaults", "id"):
                message = "id is set per item, not in defaults"
            else:
                message = "unknown field" + did_you_mean(key, _field_names_at(model, loc[:-1]))
            problems.append(Problem(location(prefix, (*loc[:-1], key)), message, item_id))
            continue
        if kind == "missing":
            message = "required field is missing"
        elif kind == "invalid_key":
            message = f"keys must be strings, got {short(e['input'])}"
            problems.append(Problem(f"{location(prefix, loc[:-1])}[{short(e['input'])}]", message, item_id))
            continue
        elif kind in ("model_type", "model_attributes_type", "dict_type"):
            message = f"expected a mapping (key: value), got {short(e['input'])}"
        elif kind.startswith("framefold_"):
            message = e["msg"]
        else:
            message = f"{e['msg']}, got {short(e['input'])}"
        problems.append(Problem(location(prefix, loc), message, item_id))
    return problems


_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def location(prefix: str, parts: Iterable[str | int]) -> str:
    """'items[2]' + ('window', 'overlap') -> 'items[2].window.overlap'; odd keys as ['a.b']."""
    location = prefix
    for part in parts:
        if isinstance(part, int):
            location += f"[{part}]"
        elif not _PLAIN_KEY.fullmatch(part):
            location += f"[{short(part)}]"
        else:
            location = f"{location}.{part}" if location else part
    return location


def _field_names_at(model: type[BaseModel], loc: Sequence[str | int]) -> list[str]:
    """Field names of the model found at `loc` inside `model` (for 'did you mean')."""
    current: type[BaseModel] | None = model
    for part in loc:
        if isinstance(part, int):
            continue
        if current is None or part not in current.model_fields:
            return []
        current = model_in(current.model_fields[part].annotation)
    return list(current.model_fields) if current is not None else []


def model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = model_in(arg)
        if found is not None:
            return found
    return None

