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
7. check the output root;
8. take the signer (``provenance.c2pa``, else ``FRAMEFOLD_C2PA_*``): its files must exist.

Checks that need a model or a key loaded (an upscaler's architecture and scale, a
signer's certificate and key) are left to ``tasks.preflight``, which the CLI and the
flow run on the ``Job`` before any work: this package imports no model library.

Every pydantic, YAML, OS and pyarrow error becomes a ``Problem`` with a dotted location
(``items[2].window.overlap``, ``defaults.fps``, ``catalog.columns.id``,
``catalog row 17 (item 'sku-9').image``; rows count from 1, the first data row).
File-level problems (unreadable file, YAML syntax) have the location ``""``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection
from pathlib import Path

from pydantic import ValidationError

from .catalog import CatalogRows, read_catalog, resolve_row, row_label
from . import locations
from .fields import SIGNING_ALGORITHMS
from .items import ItemEntry, ItemFields, ItemSpec
from .job import Job, SignerConfig
from .paths import input_file, output_root
from .problems import ManifestError, Problem, failed_part, file_order, problems_from, short, usable_id
from .resolve import ItemResolver
from .schema import C2paSpec, CatalogSpec, Manifest
from .settings import Settings
from .yaml_safe import parse_yaml, read_bytes

__all__ = ["Job", "ManifestError", "Problem", "load_manifest"]


def load_manifest(
    path: str | Path,
    *,
    output: str | Path | None = None,
    settings: Settings | None = None,
    check_input: Callable[[Path | str], str | None] | None = None,
    only: Collection[str] | None = None,
) -> Job:
    """Read, validate and resolve the manifest at `path`.

    `output` overrides the manifest's `output` (an explicit choice: it may lie outside the
    manifest folder, but must not be an existing file). `check_input(location)` -> problem or
    None is called once per distinct input still (``tasks.inputs.checker`` opens and decodes
    it; this package imports no image library). Raises ManifestError listing every problem
    found; never writes anything. ``only``: the ids of the items wanted (``run --only``): the
    job holds those, and the problems of other items (a missing or broken still, …) do
    not refuse it; problems of the manifest itself still do.
    """
    manifest_path = _manifest_location(path)
    problems: list[Problem] = []

    # 1. Settings (from the environment unless given)
    if settings is None:
        try:
            settings = Settings()
        except ValidationError as error:
            raise ManifestError(manifest_path, _settings_problems(error)) from None

    # 2. Read and parse
    content, problem = read_bytes(manifest_path)
    if problem is not None:
        raise ManifestError(manifest_path, [problem])
    document, problem = parse_yaml(content)
    if problem is not None:
        raise ManifestError(manifest_path, [problem])
    if not isinstance(document, dict):
        got = "an empty document" if document is None else f"{type(document).__name__} {short(document)}"
        raise ManifestError(
            manifest_path, [Problem("", f"the manifest must be a mapping (version, name, output, items, ...), got {got}")]
        )
    root = locations.parent_of(manifest_path)

    # 3. Validate the whole document, then take the parts that are usable on their own
    problems += _validate_document(document)
    failed = {failed_part(p.location) for p in problems}
    raw_items = document.get("items", [])
    raw_items = raw_items if isinstance(raw_items, list) and "items" not in failed else []
    defaults = None if "defaults" in failed else ItemFields.model_validate(document.get("defaults", {}), strict=True)
    catalog = None
    if "catalog" not in failed and document.get("catalog") is not None:
        catalog = CatalogSpec.model_validate(document["catalog"], strict=True)

    # 4. Inline items
    resolve = ItemResolver(defaults, root, settings, check_input)
    problems += resolve.defaults_problems
    items: list[ItemSpec] = []
    ids: list[tuple[str, str]] = []  # (id, location) of every entry with a usable id
    reported = {p.location for p in problems}  # fields with a problem already (validation's)
    for index, raw in enumerate(raw_items):
        label = f"items[{index}]"
        item_id = usable_id(raw)
        if item_id is not None:
            ids.append((item_id, label))
        if f"items[{index}]" in failed or defaults is None:
            if isinstance(raw, dict):  # its stills' problems belong in the same report
                problems += resolve.input_problems(raw, label, item_id, reported)
            continue
        entry = ItemEntry.model_validate(raw, strict=True)
        spec, item_problems = resolve(entry, source=label, prefix=label)
        problems += item_problems
        if spec is not None:
            items.append(spec)

    # 5. Catalog rows (those matching catalog.filter), numbered as in the file
    rows_read = 0
    catalog_ok = True
    rows: CatalogRows | None = None
    if catalog is not None:
        rows, catalog_problems = read_catalog(catalog, root, tuple(settings.input_roots), listings=resolve.listings)
        problems += catalog_problems
        catalog_ok = not catalog_problems
        rows_read = len(rows.numbers)
        for index, number in enumerate(rows.numbers):
            spec, row_id, row_problems = resolve_row(rows.row(index), number, catalog, resolve)
            problems += row_problems
            if row_id is not None:
                ids.append((row_id, row_label(number, row_id)))
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
    output_path, problem = output_root(document.get("output"), "output" in failed, output, root,
                                       tuple(settings.output_roots))
    if problem is not None:
        problems.append(problem)

    # 8. Content credentials: the manifest's signer, else the runtime settings'
    signer, signer_from, signer_problems = (
        (None, None, []) if "provenance" in failed else _signer(document.get("provenance"), settings, root)
    )
    problems += signer_problems

    if only is not None:
        wanted = set(only)
        problems = [p for p in problems if p.item_id is None or p.item_id in wanted]
        items = [i for i in items if i.id in wanted]

    if problems or output_path is None:
        problems.sort(key=file_order)  # stable: within one item, stages keep their order
        problems = _capped(problems)
        raise ManifestError(manifest_path, problems or [Problem("output", "no usable output root")])
    return Job(
        manifest_path=manifest_path,
        manifest_sha256=hashlib.sha256(content).hexdigest(),
        root=root,
        name=document["name"],
        output=output_path,
        items=tuple(items),
        signer=signer,
        signer_from=signer_from,
        upscalers=tuple(resolve.upscalers),
    )


def _signer(section: dict | None, settings: Settings, root: Path):
    """(SignerConfig or None, where it came from, problems): ``provenance.c2pa`` of the manifest
    (files inside its folder), else ``FRAMEFOLD_C2PA_CERT``/``_KEY``. The files must exist here;
    ``tasks.preflight`` reads the certificate and key."""
    c2pa = (section or {}).get("c2pa")
    if c2pa is None and settings.c2pa_cert is None and settings.c2pa_key is None:
        return None, None, []
    if c2pa is not None:
        files, problems = {}, []
        for name in ("cert", "key"):
            files[name], message = input_file(c2pa[name], root, local=True)
            if message is not None:
                problems.append(Problem(f"provenance.c2pa.{name}", message))
        if problems:
            return None, None, problems
        spec = C2paSpec.model_validate(c2pa)  # validated already: this fills in the defaults
        signer = SignerConfig(cert=files["cert"], key=files["key"], alg=spec.alg, tsa_url=spec.tsa_url)
        return signer, "manifest", []
    if settings.c2pa_cert is None or settings.c2pa_key is None:
        missing = "FRAMEFOLD_C2PA_KEY" if settings.c2pa_cert is not None else "FRAMEFOLD_C2PA_CERT"
        return None, None, [Problem(missing, "set both FRAMEFOLD_C2PA_CERT and FRAMEFOLD_C2PA_KEY to sign outputs, or neither")]
    if settings.c2pa_alg not in SIGNING_ALGORITHMS:
        message = f"must be one of {', '.join(SIGNING_ALGORITHMS)}, got {settings.c2pa_alg!r}"
        return None, None, [Problem("FRAMEFOLD_C2PA_ALG", message)]
    try:
        signer = SignerConfig(cert=settings.c2pa_cert, key=settings.c2pa_key, alg=settings.c2pa_alg,
                              tsa_url=settings.c2pa_tsa_url)
    except ValueError as error:
        return None, None, [Problem("FRAMEFOLD_C2PA_TSA_URL", str(error))]
    return signer, "settings", []


# --- 2. Read and parse -----------------------------------------------------------------
def _manifest_location(path: str | Path) -> Path | str:
    """A local manifest's resolved path (``file://`` URLs included), or a store URL as given."""
    if isinstance(path, str) and locations.is_url(path):
        return path
    try:
        return _resolved_or_as_given(Path(locations.local_or_url(path)))
    except ValueError:  # a file:// URL naming another host: reported when it cannot be read
        return Path(path)


def _resolved_or_as_given(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError, ValueError):
        return path


# --- 3. Validation ---------------------------------------------------
def _validate_document(document: dict) -> list[Problem]:
    try:
        Manifest.model_validate(document, strict=True)
    except ValidationError as error:
        raw_items = document.get("items")
        return problems_from(error, "", model=Manifest, items=raw_items if isinstance(raw_items, list) else None)
    return []


# --- 1. Settings -----------------------------------------------------------------------
def _settings_problems(error: ValidationError) -> list[Problem]:
    return [
        Problem(f"settings.{'.'.join(map(str, e['loc']))}", f"invalid FRAMEFOLD_ environment setting: {e['msg']}")
        for e in error.errors(include_url=False)
    ]


# --- catalog rows: the listing is capped ----------------------------------------------------
ROW_PROBLEMS_LISTED = 50  # problems of catalog rows listed; the rest are counted


def _capped(problems: list[Problem]) -> list[Problem]:
    """`problems` with at most ROW_PROBLEMS_LISTED of them at catalog rows (the first, in row
    order), and one line counting the others: a catalog of 10,000 bad rows reads in one screen."""
    rows = [p for p in problems if p.location.startswith("catalog row ")]
    if len(rows) <= ROW_PROBLEMS_LISTED:
        return problems
    dropped = {id(p) for p in rows[ROW_PROBLEMS_LISTED:]}
    more = {p.location.split(".")[0].split(" (")[0] for p in rows[ROW_PROBLEMS_LISTED:]}
    kept = [p for p in problems if id(p) not in dropped]
    kept.append(Problem("catalog", f"... and {len(dropped)} more problem(s) in {len(more)} other row(s), not listed "
                                   f"(the first {ROW_PROBLEMS_LISTED} are); fix those and validate again"))
    return kept


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


