"""Catalog items: the rows of a Parquet or CSV table that match ``catalog.filter``, read
column by column (only the mapped and filtered columns), each resolved like an inline item.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError

from . import locations
from .catalog_filter import FilterError, compile_filter
from .catalog_filter import parse as parse_filter
from .fields import did_you_mean, is_safe_name
from .items import ItemEntry, ItemSpec
from .paths import input_file
from .problems import Problem, location, model_in, problems_from, short
from .resolve import ItemResolver
from .schema import CatalogSpec

T = TypeVar("T")


# --- 5. Catalog ------------------------------------------------------------------------
def _read(path: Path | str, read: Callable[[Any], T]) -> T:
    """``read(source)`` on the catalog: a local path as is; a store object opened without
    read-ahead, so that each read pyarrow makes (the footer, then the chunks of the columns it
    needs) is one ranged request and unmapped columns are never fetched. A store read goes
    through the store's retries, as every other store request: a 5xx answer, throttling or a
    dropped connection is tried again, and one that never answers says so."""
    if isinstance(path, Path):
        return read(path)

    def attempt() -> T:
        fs, inner = locations.filesystem(path)
        with fs.open(inner, "rb", cache_type="none") as source:
            return read(source)

    return locations.retrying("read catalog", locations.redacted(path), attempt)


def _unreadable(path: Path | str, kind: str, error: Exception) -> Problem:
    """The problem of a catalog that could not be read: the store's own message when it did not
    answer (run again), else what the reader said of the file."""
    if isinstance(error, locations.StoreError):
        if error.unreachable:
            return Problem("catalog.path", str(error))
        error = error.__cause__ if isinstance(error.__cause__, Exception) else error
    return Problem("catalog.path", f"cannot read {path} as {kind}: {type(error).__name__}: {error}")


@dataclass(frozen=True)
class CatalogRows:
    """The catalog rows kept by the filter: their numbers in the file and their mapped cells."""

    numbers: list[int]  # 1-based row numbers in the file (the first data row is 1)
    cells: dict[str, list[Any]]  # item field -> the cells of its column, aligned with numbers
    total: int  # rows in the file, before the filter

    def row(self, index: int) -> dict[str, Any]:
        """Item field -> cell of the `index`-th kept row (null cells included)."""
        return {field: cells[index] for field, cells in self.cells.items()}


_NO_ROWS = CatalogRows([], {}, 0)


def read_catalog(catalog: CatalogSpec, root: Path | str, roots: tuple[str, ...] = (), *,
                 listings: dict | None = None) -> tuple[CatalogRows, list[Problem]]:
    """The rows of the catalog that match its filter, reading only the mapped and filtered columns.

    CSV cells are read as text (the item model converts them; the filter converts them to
    compare with a number or true/false). The filter runs in Arrow, before any cell
    becomes a Python object.
    """
    import numpy as np
    import pyarrow as pa  # imported here: only manifests with a catalog pay for pyarrow
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq

    path, message = input_file(catalog.path, root, roots, listings=listings)
    if message is not None or path is None:
        return _NO_ROWS, [Problem("catalog.path", message or "unusable path")]
    name = locations.name_of(path)
    is_csv = Path(catalog.path).suffix.lower() == ".csv"
    kind = "CSV" if is_csv else "Parquet"
    parsed = parse_filter(catalog.filter) if catalog.filter is not None else None  # syntax checked by CatalogSpec
    wanted = list(dict.fromkeys([*catalog.columns.values(), *(parsed.columns() if parsed else [])]))

    # Which columns exist (from the schema alone), then read only the wanted ones
    try:
        if is_csv:
            def schema_names(source: Any) -> list[str]:
                with pa_csv.open_csv(source) as reader:
                    return reader.schema.names

            available = _read(path, schema_names)
        else:
            available = _read(path, lambda source: pq.read_schema(source).names)
    except Exception as error:  # noqa: BLE001 — any failure of a third-party reader on an untrusted file
        return _NO_ROWS, [_unreadable(path, kind, error)]
    shown = ", ".join(map(repr, available[:50])) + (" ..." if len(available) > 50 else "")
    problems = [
        Problem(location("catalog", ("columns", field)),
                f"column {column!r} is not in {name}{did_you_mean(column, available) or ';'} available: {shown}")
        for field, column in catalog.columns.items()
        if column not in available
    ]
    if parsed is not None:
        problems += [
            Problem("catalog.filter", f"unknown column {column!r}{did_you_mean(column, available) or ';'} {name} has: {shown}")
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
            table = _read(path, lambda source: pa_csv.read_csv(source, convert_options=convert))
        else:
            table = _read(path, lambda source: pq.read_table(source, columns=wanted))
        for index, field in enumerate(table.schema):
            if pa.types.is_dictionary(field.type):  # categorical columns: their values, not their codes
                table = table.set_column(index, field.name, table.column(index).cast(field.type.value_type))
    except Exception as error:  # noqa: BLE001 — any failure of a third-party reader on an untrusted file
        return _NO_ROWS, [_unreadable(path, kind, error)]
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
            return _NO_ROWS, [Problem("catalog.filter", f"cannot apply the filter to {name}: {error}{hint}")]
        numbers = table.column(row_column).to_pylist()
    cells = {field: table.column(column).to_pylist() for field, column in catalog.columns.items()}
    return CatalogRows(numbers, cells, total), []


def row_label(number: int, item_id: str | None) -> str:
    return f"catalog row {number} (item '{item_id}')" if item_id is not None else f"catalog row {number}"


def _is_boolean_field(field: str) -> bool:
    """Whether an item field (dotted for nested sections: `window.length`) holds true/false."""
    section, _, key = field.rpartition(".")
    model = model_in(ItemEntry.model_fields[section].annotation) if section else ItemEntry
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


def resolve_row(
    row: dict[str, Any], number: int, catalog: CatalogSpec, resolve: ItemResolver
) -> tuple[ItemSpec | None, str | None, list[Problem]]:
    """One catalog row (field -> cell) -> (ItemSpec or None, its usable id or None, problems).

    Null cells are "not set"; dotted fields fill nested sections (window.length -> window: {length}).
    """
    cell_id = row.get("id")
    if cell_id is None:
        return None, None, [Problem(f"catalog row {number}.id", f"id is empty (column {catalog.columns['id']!r})")]
    item_id = cell_id if is_safe_name(cell_id) else None
    prefix = row_label(number, item_id)
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
                message = f"must be {spelling} or a list of two numbers (column {catalog.columns[field]!r}), got {short(cell)}"
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
        return None, item_id, problems + problems_from(error, prefix, model=ItemEntry, item_id=item_id)
    if problems or resolve.defaults is None:
        return None, item_id, problems
    spec, problems = resolve(entry, source=f"catalog row {number}", prefix=prefix)
    return spec, item_id, problems

