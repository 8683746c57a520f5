"""Load a manifest file into a ``Job``, or raise ``ManifestError`` naming every problem found.

``load_manifest`` reads and checks; it never writes anything. The steps:

1. read the file (a regular file, at most 4 MiB, UTF-8) and hash its bytes;
2. parse YAML with a safe loader that refuses anchors/aliases, duplicate keys and
   nesting deeper than 64 levels;
3. validate the document against ``Manifest`` (strict types: a quoted "24" is not a number);
4. resolve each inline item: merge ``defaults`` (nested sections key by key; frames or
   duration as a unit), check its paths, build an ``ItemSpec`` (cross-field rules);
5. read the catalog (only the mapped columns) and resolve each row the same way, with
   lax types (table cells may be strings) and null cells meaning "not set";
6. check ids are unique, also ignoring case, and that there is at least one item;
7. check the output root.

Every pydantic, YAML, OS and pyarrow error becomes a ``Problem`` with a dotted location
(``items[2].window.overlap``, ``defaults.fps``, ``catalog.columns.id``,
``catalog row 17 (item 'sku-9').image``; rows count from 1, the first data row).
File-level problems (unreadable file, YAML syntax) have the location ``""``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import reprlib
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from .catalog_filter import FilterError, compile_filter
from .catalog_filter import parse as parse_filter
from .models import (
    NESTED_FIELDS,
    RULE_ERROR,
    CatalogSpec,
    ItemEntry,
    ItemFields,
    ItemSpec,
    Manifest,
    did_you_mean,
    frames_from_duration,
    is_safe_name,
)
from .settings import Settings

__all__ = ["Job", "ManifestError", "Problem", "load_manifest"]

MAX_MANIFEST_BYTES = 4 * 1024 * 1024  # inline items are for hand-written jobs; bulk goes in a catalog
MAX_YAML_DEPTH = 64


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

    def __init__(self, file: Path, problems: Sequence[Problem]) -> None:
        super().__init__(file, list(problems))  # args mirror __init__, so the error pickles (Ray, Prefect)
        self.file = Path(file)
        self.problems = list(problems)

    def __str__(self) -> str:
        return "\n".join(f"{self.file}: {problem}" for problem in self.problems)


@dataclass(frozen=True)
class Job:
    """A validated manifest: where it came from and its resolved items, inline items first."""

    manifest_path: Path  # resolved
    manifest_sha256: str  # of the file bytes
    root: Path  # resolved manifest folder
    name: str
    output: Path  # resolved output root
    items: tuple[ItemSpec, ...]
    signer: Any = None  # tasks.credentials.SignerConfig when outputs are to be signed


def load_manifest(path: str | Path, *, output: Path | None = None, settings: Settings | None = None) -> Job:
    """Read, validate and resolve the manifest at `path`.

    `output` overrides the manifest's `output` (an explicit choice: it may lie outside the
    manifest folder, but must not be an existing file). Raises ManifestError listing every
    problem found; never writes anything.
    """
    manifest_path = _resolved_or_as_given(Path(path))
    problems: list[Problem] = []

    # 1. Settings (from the environment unless given)
    if settings is None:
        try:
            settings = Settings()
        except ValidationError as error:
            raise ManifestError(manifest_path, _settings_problems(error)) from None

    # 2. Read and parse
    content, problem = _read_bytes(manifest_path)
    if problem is not None:
        raise ManifestError(manifest_path, [problem])
    document, problem = _parse_yaml(content)
    if problem is not None:
        raise ManifestError(manifest_path, [problem])
    if not isinstance(document, dict):
        got = "an empty document" if document is None else f"{type(document).__name__} {_short(document)}"
        raise ManifestError(
            manifest_path, [Problem("", f"the manifest must be a mapping (version, name, output, items, ...), got {got}")]
        )
    root = manifest_path.parent

    # 3. Validate the whole document, then take the parts that are usable on their own
    problems += _validate_document(document)
    failed = {_failed_part(p.location) for p in problems}
    raw_items = document.get("items", [])
    raw_items = raw_items if isinstance(raw_items, list) and "items" not in failed else []
    defaults = None if "defaults" in failed else ItemFields.model_validate(document.get("defaults", {}), strict=True)
    catalog = None
    if "catalog" not in failed and document.get("catalog") is not None:
        catalog = CatalogSpec.model_validate(document["catalog"], strict=True)

    # 4. Inline items
    resolve = _ItemResolver(defaults, root, settings)
    problems += resolve.defaults_problems
    items: list[ItemSpec] = []
    ids: list[tuple[str, str]] = []  # (id, location) of every entry with a usable id
    for index, raw in enumerate(raw_items):
        label = f"items[{index}]"
        item_id = _usable_id(raw)
        if item_id is not None:
            ids.append((item_id, label))
        if f"items[{index}]" in failed or defaults is None:
            continue
        entry = ItemEntry.model_validate(raw, strict=True)
        spec, item_problems = resolve(entry, source=label, prefix=label)
        problems += item_problems
        if spec is not None:
            items.append(spec)

    # 5. Catalog rows (those matching catalog.filter), numbered as in the file
    rows_read = 0
    catalog_ok = True
    rows: _CatalogRows | None = None
    if catalog is not None:
        rows, catalog_problems = _read_catalog(catalog, root)
        problems += catalog_problems
        catalog_ok = not catalog_problems
        rows_read = len(rows.numbers)
        for index, number in enumerate(rows.numbers):
            spec, row_id, row_problems = _resolve_row(rows.row(index), number, catalog, resolve)
            problems += row_problems
            if row_id is not None:
                ids.append((row_id, _row_label(number, row_id)))
            if spec is not None:
                items.append(spec)

    # 6. Ids unique (ignoring case), at least one item
    problems += _duplicate_id_problems(ids)
    if not raw_items and rows_read == 0 and not {"items", "catalog"} & failed and catalog_ok:
        if catalog is not None and rows is not None and rows.total and catalog.filter is not None:
            problems.append(
                Problem(
                    "catalog.filter",
                    f"no row of {catalog.path!r} matches the filter ({rows.total} row(s) read) and there are no inline items",
                )
            )
        elif catalog is not None:
            problems.append(Problem("catalog.path", f"catalog {catalog.path!r} has no rows and there are no inline items"))
        else:
            problems.append(Problem("items", "no items: add an items: list or a catalog: section"))

    # 7. Output root
    output_path, problem = _output_root(document.get("output"), "output" in failed, output, root)
    if problem is not None:
        problems.append(problem)

    # 8. Content credentials: the manifest's signer, else the runtime settings'
    signer, signer_problems = (None, []) if "provenance" in failed else _signer(document.get("provenance"), settings, root)
    problems += signer_problems

    if problems or output_path is None:
        problems.sort(key=_file_order)  # stable: within one item, stages keep their order
        raise ManifestError(manifest_path, problems or [Problem("output", "no usable output root")])
    return Job(
        manifest_path=manifest_path,
        manifest_sha256=hashlib.sha256(content).hexdigest(),
        root=root,
        name=document["name"],
        output=output_path,
        items=tuple(items),
        signer=signer,
    )


def _signer(section: dict | None, settings: Settings, root: Path):
    """(SignerConfig or None, problems): ``provenance.c2pa`` of the manifest (files inside its
    folder), else ``FRAMEFOLD_C2PA_CERT``/``_KEY``; the certificate and key are checked here."""
    c2pa = (section or {}).get("c2pa")
    if c2pa is None and settings.c2pa_cert is None and settings.c2pa_key is None:
        return None, []
    from tasks.credentials import ALGORITHMS, SignerConfig  # only runs that sign pay for c2pa

    if c2pa is not None:
        where = {"cert": "provenance.c2pa.cert", "key": "provenance.c2pa.key", "alg": "provenance.c2pa.alg"}
        files, problems = {}, []
        for name in ("cert", "key"):
            files[name], message = _input_file(c2pa[name], root)
            if message is not None:
                problems.append(Problem(where[name], message))
        if problems:
            return None, problems
        signer = SignerConfig(cert=files["cert"], key=files["key"], alg=c2pa.get("alg", "es256"), tsa_url=c2pa.get("tsa_url"))
    else:
        where = {"cert": "FRAMEFOLD_C2PA_CERT", "key": "FRAMEFOLD_C2PA_KEY", "alg": "FRAMEFOLD_C2PA_ALG"}
        if settings.c2pa_cert is None or settings.c2pa_key is None:
            missing = "FRAMEFOLD_C2PA_KEY" if settings.c2pa_cert is not None else "FRAMEFOLD_C2PA_CERT"
            return None, [Problem(missing, "set both FRAMEFOLD_C2PA_CERT and FRAMEFOLD_C2PA_KEY to sign outputs, or neither")]
        if settings.c2pa_alg not in ALGORITHMS:
            return None, [Problem("FRAMEFOLD_C2PA_ALG", f"must be one of {', '.join(ALGORITHMS)}, got {settings.c2pa_alg!r}")]
        try:
            signer = SignerConfig(cert=settings.c2pa_cert, key=settings.c2pa_key, alg=settings.c2pa_alg,
                                  tsa_url=settings.c2pa_tsa_url)
        except ValueError as error:
            return None, [Problem("FRAMEFOLD_C2PA_TSA_URL", str(error))]
    problems = [
        Problem(where.get(message.split(":", 1)[0], where["cert"]), message.split(": ", 1)[-1])
        for message in signer.check()
    ]
    return (None, problems) if problems else (signer, [])


_ITEM = re.compile(r"(items)\[(\d+)\]|(catalog row) (\d+)")


def _file_order(problem: Problem) -> tuple[int, int]:
    """Sort key: top-level sections in file order, items by index, catalog rows by number."""
    match = _ITEM.match(problem.location)
    if match:
        return (5, int(match[2])) if match[1] else (7, int(match[4]))
    top = re.split(r"[.\[]", problem.location, maxsplit=1)[0]
    order = {"version": 1, "name": 2, "output": 3, "defaults": 4, "items": 5, "catalog": 6}
    return order.get(top, 0), -1


# --- 1. Settings -----------------------------------------------------------------------
def _settings_problems(error: ValidationError) -> list[Problem]:
    return [
        Problem(f"settings.{'.'.join(map(str, e['loc']))}", f"invalid FRAMEFOLD_ environment setting: {e['msg']}")
        for e in error.errors(include_url=False)
    ]


# --- 2. Read and parse -----------------------------------------------------------------
def _resolved_or_as_given(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError, ValueError):
        return path


def _read_bytes(path: Path) -> tuple[bytes, Problem | None]:
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            return b"", Problem("", f"not a regular file: {path}")
        if info.st_size > MAX_MANIFEST_BYTES:
            return b"", Problem("", f"manifest is {info.st_size} bytes; the limit is {MAX_MANIFEST_BYTES}")
        with open(path, "rb") as file:
            content = file.read(MAX_MANIFEST_BYTES + 1)
        if len(content) > MAX_MANIFEST_BYTES:  # grew since stat()
            return b"", Problem("", f"manifest is over {MAX_MANIFEST_BYTES} bytes, the limit")
        return content, None
    except FileNotFoundError:
        return b"", Problem("", f"manifest not found: {path}")
    except (OSError, ValueError) as error:
        return b"", Problem("", f"cannot read manifest {path}: {getattr(error, 'strerror', None) or error}")


class _ManifestYamlLoader(yaml.SafeLoader):
    """SafeLoader that refuses anchors/aliases (billion laughs), duplicate keys and deep nesting."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise yaml.composer.ComposerError(
                None, None, "YAML anchors/aliases are not allowed in manifests", event.start_mark
            )
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"nesting deeper than {MAX_YAML_DEPTH} levels", event.start_mark
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # '<<': flattened by SafeLoader
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                    seen.add(key)
                except TypeError:  # unhashable key: SafeLoader reports it below
                    continue
                if duplicate:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r}", key_node.start_mark
                    )
        return super().construct_mapping(node, deep=deep)


def _parse_yaml(content: bytes) -> tuple[Any, Problem | None]:
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as error:
        return None, Problem("", f"not UTF-8 text (byte {content[error.start]:#04x} at offset {error.start})")
    loader = None
    try:
        loader = _ManifestYamlLoader(text)  # the reader rejects control characters right here
        return loader.get_single_data(), None
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        return None, Problem("", f"invalid YAML{where}: {error.problem or error.context}")
    except yaml.reader.ReaderError as error:
        return None, Problem("", f"not YAML text: character {error.character!r} at position {error.position} is not allowed")
    except (yaml.YAMLError, RecursionError, ValueError, TypeError, OverflowError) as error:
        return None, Problem("", f"invalid YAML: {error}")
    finally:
        if loader is not None:
            loader.dispose()


# --- 3. Validation errors -> Problems ---------------------------------------------------
def _validate_document(document: dict[str, Any]) -> list[Problem]:
    try:
        Manifest.model_validate(document, strict=True)
    except ValidationError as error:
        raw_items = document.get("items")
        return _problems(error, "", model=Manifest, items=raw_items if isinstance(raw_items, list) else None)
    return []


def _failed_part(location: str) -> str:
    """The part a problem invalidates: 'items[3]' for item problems, else the top-level key."""
    match = _ITEM.match(location)
    if match and match[1]:
        return match[0]
    return re.split(r"[.\[]", location, maxsplit=1)[0]


def _usable_id(raw: object) -> str | None:
    item_id = raw.get("id") if isinstance(raw, dict) else None
    return item_id if is_safe_name(item_id) else None


def _short(value: object) -> str:
    """A bounded repr of an input value for messages (large or deep inputs are elided)."""
    shortener = reprlib.Repr()  # Python 3.11: limits are attributes, not __init__ arguments
    shortener.maxstring = shortener.maxother = 60
    shortener.maxlist = shortener.maxtuple = shortener.maxdict = shortener.maxset = 4
    shortener.maxlevel = 2
    return shortener.repr(value)


def _problems(
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
            item_id = _usable_id(items[loc[1]])
        if kind == RULE_ERROR:
            for at, message in ctx["problems"]:
                parts = at if isinstance(at, tuple) else tuple(at.split("."))
                problems.append(Problem(_location(prefix, (*loc, *parts)), message, item_id))
            continue
        if kind == "extra_forbidden":
            key = str(loc[-1])
            if loc[-2:] == ("defaults", "id"):
                message = "id is set per item, not in defaults"
            else:
                message = "unknown field" + did_you_mean(key, _field_names_at(model, loc[:-1]))
            problems.append(Problem(_location(prefix, (*loc[:-1], key)), message, item_id))
            continue
        if kind == "missing":
            message = "required field is missing"
        elif kind == "invalid_key":
            message = f"keys must be strings, got {_short(e['input'])}"
            problems.append(Problem(f"{_location(prefix, loc[:-1])}[{_short(e['input'])}]", message, item_id))
            continue
        elif kind in ("model_type", "model_attributes_type", "dict_type"):
            message = f"expected a mapping (key: value), got {_short(e['input'])}"
        elif kind.startswith("framefold_"):
            message = e["msg"]
        else:
            message = f"{e['msg']}, got {_short(e['input'])}"
        problems.append(Problem(_location(prefix, loc), message, item_id))
    return problems


_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def _location(prefix: str, parts: Iterable[str | int]) -> str:
    """'items[2]' + ('window', 'overlap') -> 'items[2].window.overlap'; odd keys as ['a.b']."""
    location = prefix
    for part in parts:
        if isinstance(part, int):
            location += f"[{part}]"
        elif not _PLAIN_KEY.fullmatch(part):
            location += f"[{_short(part)}]"
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
        current = _model_in(current.model_fields[part].annotation)
    return list(current.model_fields) if current is not None else []


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


# --- 4./5. Resolving items -------------------------------------------------------------
class _ItemResolver:
    """Merges defaults into an item, checks its paths, and builds the ItemSpec."""

    def __init__(self, defaults: ItemFields | None, root: Path, settings: Settings) -> None:
        self.root = root
        self.settings = settings
        self.defaults = defaults.model_dump(exclude_unset=True) if defaults is not None else None
        self.defaults_problems: list[Problem] = []
        self.default_paths: dict[str, Path | None] = {}
        self._models: dict[str, tuple[Path | None, str | None]] = {}
        self._files: dict[str, tuple[Path | None, str | None]] = {}  # raw path -> _input_file(raw, root)
        self._upscalers: dict[str, tuple[Path | None, int | None, str | None]] = {}
        upscale = (self.defaults or {}).get("upscale") or {}
        if upscale.get("path") is not None and upscale.get("method") != "model":
            self.defaults_problems.append(Problem("defaults.upscale.path", "path is used by method: model only; set method: model or remove path"))
        for name in ("image", "mask"):  # checked once here, not once per item that inherits them
            if self.defaults is not None and self.defaults.get(name) is not None:
                resolved, message = self.input_file(self.defaults[name])
                if message is not None:
                    self.defaults_problems.append(Problem(f"defaults.{name}", message))
                self.default_paths[name] = resolved

    def input_file(self, raw: str) -> tuple[Path | None, str | None]:
        """`_input_file(raw, root)`, resolved and checked once per distinct path (catalogs repeat them)."""
        found = self._files.get(raw)
        if found is None:
            found = self._files[raw] = _input_file(raw, self.root)
        return found

    def __call__(self, entry: ItemEntry, *, source: str, prefix: str) -> tuple[ItemSpec | None, list[Problem]]:
        """(ItemSpec, []) or (None, problems) for one validated entry; problems located under `prefix`."""
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
            merged[name] = resolved if resolved is not None else self.root / value  # keeps the rules running

        model = merged.get("model")
        if isinstance(model, dict) and isinstance(model.get("path"), str):
            where = f"{prefix}.model.path" if "path" in (own.get("model") or {}) else "defaults.model.path"
            resolved, message = self._model_dir(model["path"])
            if message is not None:
                problems.append(Problem(where, message, item_id))
            merged["model"] = {**model, "path": resolved if resolved is not None else self.root / model["path"]}

        upscale = merged.get("upscale")
        if (own.get("upscale") or {}).get("path") is not None and (upscale or {}).get("method") != "model":
            problems.append(Problem(f"{prefix}.upscale.path", "path is used by method: model only; set method: model or remove path", item_id))
        if isinstance(upscale, dict) and upscale.get("method") != "model":
            merged["upscale"] = upscale = {k: v for k, v in upscale.items() if k != "path"}  # a default path, unused here
        if isinstance(upscale, dict) and isinstance(upscale.get("path"), str):
            where = f"{prefix}.upscale.path" if "path" in (own.get("upscale") or {}) else "defaults.upscale.path"
            resolved, scale, message = self._upscaler(upscale["path"])
            if message is not None:
                problems.append(Problem(where, message, item_id))
            upscale = {**upscale, "path": resolved if resolved is not None else self.root / upscale["path"]}
            if upscale.get("factor") is None and scale is not None:  # a x4 model makes x4 output unless told otherwise
                upscale["factor"] = float(scale)
            elif scale is not None and isinstance(upscale.get("factor"), (int, float)) and upscale["factor"] > scale:
                where = f"{prefix}.upscale.factor" if "factor" in (own.get("upscale") or {}) else "defaults.upscale.factor"
                problems.append(Problem(where, (
                    f"factor {upscale['factor']:g} is more than the ×{scale} upscaler makes; the rest would be plain "
                    f"resampling — use a model of scale {upscale['factor']:g} or more, or factor ≤ {scale}"), item_id))
            merged["upscale"] = upscale

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
            except ValueError as error:  # the other rules need frames: stop here
                return None, [*problems, Problem(f"{prefix}.duration", str(error), item_id)]

        try:
            spec = ItemSpec.model_validate(
                {**merged, "id": item_id, "source": source}, context={"settings": self.settings}
            )
        except ValidationError as error:
            return None, problems + _problems(error, prefix, model=ItemSpec, item_id=item_id)
        return (spec if not problems else None), problems


    def _upscaler(self, raw: str) -> tuple[Path | None, int | None, str | None]:
        """Super-resolution weights: (path, scale, problem), checked and loaded once per path."""
        if raw not in self._upscalers:
            self._upscalers[raw] = _upscaler_file(raw, self.settings, self.root)
        return self._upscalers[raw]

    def _model_dir(self, raw: str) -> tuple[Path | None, str | None]:
        """A model directory: inside the model root, diffusers layout, no pickle weights (checked once per path)."""
        if raw not in self._models:
            self._models[raw] = _model_dir(raw, self.settings, self.root)
        return self._models[raw]


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def _model_dir(raw: str, settings: Settings, manifest_root: Path) -> tuple[Path | None, str | None]:
    root = settings.model_root.resolve() if settings.model_root else manifest_root
    resolved, message = _inside(raw, root)
    if resolved is None:
        return None, (message or "").replace("manifest folder", "model root (FRAMEFOLD_MODEL_ROOT)" if settings.model_root else "manifest folder")
    if not resolved.is_dir():
        return resolved, f"model directory not found: {resolved}"
    if not (resolved / "model_index.json").is_file():
        return resolved, f"{resolved} is not a diffusers model directory (no model_index.json); save it with save_pretrained"
    files = sorted(p for p in resolved.rglob("*") if p.is_file())
    if not settings.allow_pickle:  # suffixes in any case: case-insensitive filesystems open MODEL.BIN as model.bin
        pickles = [str(p.relative_to(resolved)) for p in files if p.suffix.lower() in PICKLE_SUFFIXES]
        if pickles:
            return resolved, (
                f"{resolved} holds pickle weights ({', '.join(pickles[:3])}{' …' if len(pickles) > 3 else ''}), which "
                "can run code when loaded; convert them to safetensors, or set FRAMEFOLD_ALLOW_PICKLE=1 if you trust them"
            )
    for p in files:
        if p.suffix.lower() == ".safetensors":
            damage = _safetensors_damage(p)
            if damage is not None:
                return resolved, (
                    f"{p.relative_to(resolved)} in {resolved} is damaged or truncated ({damage}); "
                    "download or save the model again"
                )
    return resolved, None


def _upscaler_file(raw: str, settings: Settings, manifest_root: Path) -> tuple[Path | None, int | None, str | None]:
    """Super-resolution weights inside the model root, safetensors, that spandrel loads: (path, scale, problem)."""
    root = settings.model_root.resolve() if settings.model_root else manifest_root
    resolved, message = _inside(raw, root)
    if resolved is None:
        return None, None, (message or "").replace("manifest folder", "model root (FRAMEFOLD_MODEL_ROOT)" if settings.model_root else "manifest folder")
    if not resolved.is_file():
        return resolved, None, f"upscaler weights not found: {resolved}"
    if resolved.suffix.lower() != ".safetensors":
        return resolved, None, (
            f"{resolved} is not a .safetensors file; upscaler weights are loaded from safetensors only "
            "(pickle files can run code when loaded): convert it with safetensors.torch.save_file"
        )
    damage = _safetensors_damage(resolved)
    if damage is not None:
        return resolved, None, f"{resolved} is damaged or truncated ({damage}); download or save the weights again"
    from tasks.superres import UpscalerError, describe  # imported here: only manifests with a model upscaler pay for it

    try:
        return resolved, describe(resolved).scale, None
    except UpscalerError as error:
        return resolved, None, str(error)


def _safetensors_damage(path: Path) -> str | None:
    """What is wrong with a .safetensors file's framing, or None. Reads the header only: an
    8-byte little-endian length, a JSON header whose tensors' data_offsets end where the file does."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as file:
            head = file.read(8)
            if len(head) < 8:
                return f"{size} bytes, shorter than a safetensors header"
            length = int.from_bytes(head, "little")
            if length > size - 8:
                return f"the header claims {length:,} bytes but the file has {size:,}"
            header = json.loads(file.read(min(length, 100 << 20)))
        expected = 8 + length + max(
            (int(entry["data_offsets"][1]) for key, entry in header.items() if key != "__metadata__"), default=0
        )
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError) as error:
        return f"unreadable safetensors header: {type(error).__name__}"
    if expected != size:
        return f"{size:,} bytes where its header describes {expected:,}"
    return None


def _merge(defaults: dict[str, Any], own: dict[str, Any]) -> dict[str, Any]:
    """defaults overridden by own; nested sections merge key by key."""
    merged = {**defaults, **own}
    for name in NESTED_FIELDS:
        if isinstance(defaults.get(name), dict) and isinstance(own.get(name), dict):
            merged[name] = {**defaults[name], **own[name]}
    return merged


def _inside(raw: str, root: Path) -> tuple[Path | None, str | None]:
    """`raw` resolved against `root` (symlinks followed) if it stays inside root."""
    try:
        resolved = (root / raw).resolve()
    except (OSError, RuntimeError, ValueError) as error:
        return None, f"cannot resolve {raw!r}: {error}"
    if not resolved.is_relative_to(root):
        return None, f"{raw!r} escapes the manifest folder {root} (resolves to {resolved})"
    return resolved, None


def _input_file(raw: str, root: Path) -> tuple[Path | None, str | None]:
    """An input file path: inside root, and an existing regular file."""
    resolved, message = _inside(raw, root)
    if resolved is None:
        return None, message
    try:
        info = resolved.stat()
    except FileNotFoundError:
        return resolved, f"file not found: {resolved}"
    except OSError as error:
        return resolved, f"cannot read {resolved}: {error.strerror or error}"
    if not stat.S_ISREG(info.st_mode):
        return resolved, f"not a regular file: {resolved}"
    return resolved, None


# --- 5. Catalog ------------------------------------------------------------------------
@dataclass(frozen=True)
class _CatalogRows:
    """The catalog rows kept by the filter: their numbers in the file and their mapped cells."""

    numbers: list[int]  # 1-based row numbers in the file (the first data row is 1)
    cells: dict[str, list[Any]]  # item field -> the cells of its column, aligned with numbers
    total: int  # rows in the file, before the filter

    def row(self, index: int) -> dict[str, Any]:
        """Item field -> cell of the `index`-th kept row (null cells included)."""
        return {field: cells[index] for field, cells in self.cells.items()}


_NO_ROWS = _CatalogRows([], {}, 0)


def _read_catalog(catalog: CatalogSpec, root: Path) -> tuple[_CatalogRows, list[Problem]]:
    """The rows of the catalog that match its filter, reading only the mapped and filtered columns.

    CSV cells are read as text (the item model converts them; the filter converts them to
    compare with a number or true/false). The filter runs in Arrow, before any cell
    becomes a Python object.
    """
    import numpy as np
    import pyarrow as pa  # imported here: only manifests with a catalog pay for pyarrow
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq

    path, message = _input_file(catalog.path, root)
    if message is not None or path is None:
        return _NO_ROWS, [Problem("catalog.path", message or "unusable path")]
    is_csv = Path(catalog.path).suffix.lower() == ".csv"
    kind = "CSV" if is_csv else "Parquet"
    parsed = parse_filter(catalog.filter) if catalog.filter is not None else None  # syntax checked by CatalogSpec
    wanted = list(dict.fromkeys([*catalog.columns.values(), *(parsed.columns() if parsed else [])]))

    # Which columns exist (from the schema alone), then read only the wanted ones
    try:
        if is_csv:
            with pa_csv.open_csv(path) as reader:
                available = reader.schema.names
        else:
            available = pq.read_schema(path).names
    except Exception as error:  # noqa: BLE001 — any failure of a third-party reader on an untrusted file
        return _NO_ROWS, [Problem("catalog.path", f"cannot read {path} as {kind}: {type(error).__name__}: {error}")]
    shown = ", ".join(map(repr, available[:50])) + (" ..." if len(available) > 50 else "")
    problems = [
        Problem(_location("catalog", ("columns", field)), f"column {column!r} is not in {path.name}; available: {shown}")
        for field, column in catalog.columns.items()
        if column not in available
    ]
    if parsed is not None:
        problems += [
            Problem("catalog.filter", f"unknown column {column!r}; {path.name} has: {shown}")
            for column in parsed.columns()
            if column not in available
        ]
    if problems:
        return _NO_ROWS, problems
    try:
        if is_csv:
            convert = pa_csv.ConvertOptions(
                include_columns=wanted,
                column_types={column: pa.string() for column in wanted},
                strings_can_be_null=True,
                null_values=[""],
            )
            table = pa_csv.read_csv(path, convert_options=convert)
        else:
            table = pq.read_table(path, columns=wanted)
        for index, field in enumerate(table.schema):
            if pa.types.is_dictionary(field.type):  # categorical columns: their values, not their codes
                table = table.set_column(index, field.name, table.column(index).cast(field.type.value_type))
    except Exception as error:  # noqa: BLE001 — any failure of a third-party reader on an untrusted file
        return _NO_ROWS, [Problem("catalog.path", f"cannot read {path} as {kind}: {type(error).__name__}: {error}")]
    id_type = table.schema.field(catalog.columns["id"]).type
    if not (pa.types.is_string(id_type) or pa.types.is_large_string(id_type)):
        message = f"column {catalog.columns['id']!r} holds {id_type}; ids must be text (a string column)"
        return _NO_ROWS, [Problem("catalog.columns.id", message)]

    # Filter in Arrow, keeping each row's number in the file
    total = table.num_rows
    if parsed is None:
        numbers = list(range(1, total + 1))
    else:
        try:
            expression = compile_filter(parsed, table.schema, text_table=is_csv)
        except FilterError as error:
            return _NO_ROWS, [Problem("catalog.filter", line) for line in str(error).splitlines()]
        row_column = "__framefold_row__"
        while row_column in table.schema.names:
            row_column += "_"
        table = table.append_column(row_column, pa.array(np.arange(1, total + 1, dtype=np.int64)))
        try:
            table = table.filter(expression)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as error:
            hint = " (CSV cells compared with a number or true/false must hold one)" if is_csv else ""
            return _NO_ROWS, [Problem("catalog.filter", f"cannot apply the filter to {path.name}: {error}{hint}")]
        numbers = table.column(row_column).to_pylist()
    cells = {field: table.column(column).to_pylist() for field, column in catalog.columns.items()}
    return _CatalogRows(numbers, cells, total), []


def _row_label(number: int, item_id: str | None) -> str:
    return f"catalog row {number} (item '{item_id}')" if item_id is not None else f"catalog row {number}"


def _is_boolean_field(field: str) -> bool:
    """Whether an item field (dotted for nested sections: `window.length`) holds true/false."""
    section, _, key = field.rpartition(".")
    model = _model_in(ItemEntry.model_fields[section].annotation) if section else ItemEntry
    info = model.model_fields.get(key) if model is not None else None
    return info is not None and info.annotation in (bool, bool | None)


# Pair fields a text cell may spell out: field -> (pattern, number type, how to write it)
_PAIR_TEXT = {
    "size": (re.compile(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*"), int, "'WIDTHxHEIGHT' text such as '512x288'"),
    "motion.pan": (
        re.compile(r"\s*([-+]?(?:\d+\.?\d*|\.\d+))\s*,\s*([-+]?(?:\d+\.?\d*|\.\d+))\s*"),
        float,
        "'x, y' text such as '0.1, -0.05'",
    ),
}


def _resolve_row(
    row: dict[str, Any], number: int, catalog: CatalogSpec, resolve: _ItemResolver
) -> tuple[ItemSpec | None, str | None, list[Problem]]:
    """One catalog row (field -> cell) -> (ItemSpec or None, its usable id or None, problems).

    Null cells are "not set"; dotted fields fill nested sections (window.length -> window: {length}).
    """
    cell_id = row.get("id")
    if cell_id is None:
        return None, None, [Problem(f"catalog row {number}.id", f"id is empty (column {catalog.columns['id']!r})")]
    item_id = cell_id if is_safe_name(cell_id) else None
    prefix = _row_label(number, item_id)
    raw: dict[str, Any] = {}
    problems: list[Problem] = []
    for field, cell in row.items():
        if cell is None:
            continue
        if isinstance(cell, bool) and not _is_boolean_field(field):  # lax validation would take True as 1
            message = f"must not be true/false (column {catalog.columns[field]!r} holds booleans), got {cell}"
            problems.append(Problem(f"{prefix}.{field}", message, item_id))
            continue
        pair = _PAIR_TEXT.get(field)
        if pair is not None and isinstance(cell, str):
            pattern, number_type, spelling = pair
            match = pattern.fullmatch(cell)
            if match is None:
                message = f"must be {spelling} or a list of two numbers (column {catalog.columns[field]!r}), got {_short(cell)}"
                problems.append(Problem(f"{prefix}.{field}", message, item_id))
                continue
            cell = [number_type(match[1]), number_type(match[2])]
        section, dot, key = field.partition(".")
        if dot:
            raw.setdefault(section, {})[key] = cell
        else:
            raw[field] = cell
    try:
        entry = ItemEntry.model_validate(raw)
    except ValidationError as error:
        return None, item_id, problems + _problems(error, prefix, model=ItemEntry, item_id=item_id)
    if problems or resolve.defaults is None:
        return None, item_id, problems
    spec, problems = resolve(entry, source=f"catalog row {number}", prefix=prefix)
    return spec, item_id, problems


# --- 6. Unique ids ---------------------------------------------------------------------
def _duplicate_id_problems(ids: list[tuple[str, str]]) -> list[Problem]:
    first: dict[str, tuple[str, str]] = {}  # casefolded id -> (id, location)
    problems = []
    for item_id, location in ids:
        key = item_id.casefold()
        if key not in first:
            first[key] = (item_id, location)
            continue
        other_id, other_location = first[key]
        if other_id == item_id:
            message = f"duplicate id {item_id!r}: also used by {other_location}"
        else:
            message = (
                f"id {item_id!r} differs only in letter case from {other_id!r} ({other_location}); "
                "ids must differ by more than case (case-insensitive filesystems)"
            )
        problems.append(Problem(f"{location}.id", message, item_id))
    return problems


# --- 7. Output root --------------------------------------------------------------------
def _output_root(
    raw: object, invalid: bool, override: Path | None, root: Path
) -> tuple[Path | None, Problem | None]:
    if override is not None:
        try:
            resolved = Path(override).resolve()
        except (OSError, RuntimeError, ValueError, TypeError) as error:
            return None, Problem("output", f"cannot resolve output override {override!r}: {error}")
        where = "output (override)"
    elif invalid or not isinstance(raw, str):
        return None, None  # already reported by validation
    else:
        resolved, message = _inside(raw, root)
        if resolved is None:
            return None, Problem("output", message or "unusable path")
        where = "output"
    if os.path.lexists(resolved) and not resolved.is_dir():
        return None, Problem("output", f"{where} {resolved} exists and is not a directory")
    for parent in resolved.parents:  # the nearest existing ancestor must be a folder to create it in
        if os.path.lexists(parent):
            if not parent.is_dir():
                return None, Problem("output", f"{where} {resolved} cannot be created: {parent} is a file, not a directory")
            break
    return resolved, None
