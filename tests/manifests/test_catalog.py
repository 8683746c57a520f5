"""Catalogs: catalog.filter (parsed by framefold, applied by pyarrow), per-row overrides of
nested fields, null cells, row locations, and a 10,000-row catalog."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from manifests import Job, ManifestError, MotionSpec, UpscaleSpec, WindowSpec, load_manifest
from manifests.catalog_filter import FilterError, parse

UTC = timezone.utc


def _problems(path: Path) -> list[tuple[str, str]]:
    with pytest.raises(ManifestError) as caught:
        load_manifest(path)
    return [(p.location, p.message) for p in caught.value.problems]


def _ids(job: Job) -> list[str]:
    return [item.id for item in job.items]


# --- a small typed catalog ------------------------------------------------------------------
ROWS = {
    "sku": ["p-1", "p-2", "p-3", "p-4", "p-5", "p-6", "p-7", "p-8"],
    "category": ["mugs", "mugs", "bowls", "lamps", None, "mugs", "bowls", "it's"],
    "price": [5.0, 12.5, 20.0, 35.0, 8.0, None, 19.99, 3.0],
    "stock": [0, 3, 10, None, 1, 7, 2, 5],
    "active": [True, False, True, True, None, True, False, True],
    "updated_at": [
        datetime(2026, 10, 1, tzinfo=UTC),
        datetime(2026, 11, 1, 12, tzinfo=UTC),
        datetime(2026, 11, 2, tzinfo=UTC),
        None,
        datetime(2026, 10, 31, 23, 59, tzinfo=UTC),
        datetime(2026, 11, 15, tzinfo=UTC),
        datetime(2026, 11, 1, tzinfo=UTC),
        datetime(2026, 12, 24, tzinfo=UTC),
    ],
    "day": [date(2026, 10, 1), date(2026, 11, 1), None, date(2026, 10, 31), date(2026, 12, 1), date(2026, 11, 2), date(2026, 9, 9), date(2026, 10, 30)],
    "tags": [["a"], [], None, ["b"], ["a", "b"], [], [], ["c"]],
}
TYPES = {"updated_at": pa.timestamp("us", tz="UTC"), "day": pa.date32(), "stock": pa.int64()}


@pytest.fixture
def typed(project: Any, base: dict[str, Any]) -> Any:
    """A project with a typed Parquet catalog (text, float, int, bool, timestamp, date, list) and no inline items."""
    pq.write_table(pa.table({k: pa.array(v, TYPES.get(k)) for k, v in ROWS.items()}), project.root / "catalog.parquet")
    base["items"] = []
    base["defaults"]["image"] = "images/mug-blue.png"
    base["catalog"] = {"path": "catalog.parquet", "columns": {"id": "sku"}}

    def write(filter_text: str | None, **catalog: Any) -> Path:
        doc = {**base, "catalog": {**base["catalog"], **catalog}}
        if filter_text is not None:
            doc["catalog"]["filter"] = filter_text
        return project.write(doc)

    return write


FILTERS = [
    # (filter, skus kept) — a null cell never matches a comparison, also under not
    ("category == 'mugs'", ["p-1", "p-2", "p-6"]),
    ("category != 'mugs'", ["p-3", "p-4", "p-7", "p-8"]),
    ("price < 8", ["p-1", "p-8"]),
    ("price <= 8", ["p-1", "p-5", "p-8"]),
    ("price > 19.99", ["p-3", "p-4"]),
    ("price >= 20", ["p-3", "p-4"]),
    ("stock == 0", ["p-1"]),
    ("stock != 0", ["p-2", "p-3", "p-5", "p-6", "p-7", "p-8"]),
    ("stock > 2.5", ["p-2", "p-3", "p-6", "p-8"]),  # an int column against a float
    ("price == 20", ["p-3"]),  # a float column against an int
    ("active == true", ["p-1", "p-3", "p-4", "p-6", "p-8"]),
    ("active == false", ["p-2", "p-7"]),
    ("updated_at > '2026-11-01'", ["p-2", "p-3", "p-6", "p-8"]),  # a date is its midnight, UTC
    ("updated_at >= '2026-11-01T12:00:00Z'", ["p-2", "p-3", "p-6", "p-8"]),
    ("updated_at > '2026-11-01T12:00:00'", ["p-3", "p-6", "p-8"]),
    ("updated_at < '2026-11-01 01:00:00+01:00'", ["p-1", "p-5"]),  # 2026-11-01T00:00Z
    ("day <= '2026-10-31'", ["p-1", "p-4", "p-7", "p-8"]),
    ("day == '2026-11-01'", ["p-2"]),
    ("category in ['bowls', 'lamps']", ["p-3", "p-4", "p-7"]),
    ("category in ['bowls',]", ["p-3", "p-7"]),
    ("category not in ['mugs', 'bowls']", ["p-4", "p-8"]),
    ("stock in [0, 7, 99]", ["p-1", "p-6"]),
    ("category is null", ["p-5"]),
    ("price is not null and stock is null", ["p-4"]),
    ("category == 'mugs' and price > 10", ["p-2"]),
    ("category == 'bowls' or stock == 0", ["p-1", "p-3", "p-7"]),
    ("not (category == 'mugs')", ["p-3", "p-4", "p-7", "p-8"]),
    ("not category == 'mugs' and price < 30", ["p-3", "p-7", "p-8"]),  # not binds tighter than and
    ("category == 'lamps' or category == 'bowls' and price > 19.99", ["p-3", "p-4"]),  # and before or
    ("(category == 'lamps' or category == 'bowls') and price > 19.99", ["p-3", "p-4"]),
    ("(category == 'bowls' or category == 'mugs') and not (active == false)", ["p-1", "p-3", "p-6"]),
    ("20 <= price", ["p-3", "p-4"]),  # value on the left: the operator flips
    ("category == 'it\\'s'", ["p-8"]),
    ('category == "it\'s"', ["p-8"]),
    ("`category` == 'mugs' AND `price` > 10", ["p-2"]),  # backquoted names, keywords in any case
    ("NOT category IN ['mugs'] OR category IS NULL", ["p-3", "p-4", "p-5", "p-7", "p-8"]),
    ("tags is null", ["p-3"]),  # a list column can only be tested for null
    ("sku == 'p-7'", ["p-7"]),
    # SQL as users write it
    ("sku = 'p-7'", ["p-7"]),
    ("category <> 'mugs'", ["p-3", "p-4", "p-7", "p-8"]),
    ("category LIKE 'm%'", ["p-1", "p-2", "p-6"]),
    ("category LIKE '_owls'", ["p-3", "p-7"]),
    ("category NOT LIKE 'm%'", ["p-3", "p-4", "p-7", "p-8"]),
    ("category ILIKE 'MUG%'", ["p-1", "p-2", "p-6"]),
    ("upper(category) = 'MUGS'", ["p-1", "p-2", "p-6"]),
    ("category IN ('mugs', 'lamps')", ["p-1", "p-2", "p-4", "p-6"]),
    ("category NOT IN ('mugs', 'lamps')", ["p-3", "p-7", "p-8"]),
    ("updated_at >= '2026-11-01'", ["p-2", "p-3", "p-6", "p-7", "p-8"]),  # midnight itself included
    ("day >= DATE '2026-11-01'", ["p-2", "p-5", "p-6"]),
    ("price BETWEEN 5 AND 12.5", ["p-1", "p-2", "p-5"]),
    ("price NOT BETWEEN 5 AND 12.5", ["p-3", "p-4", "p-7", "p-8"]),
    ("category IS NULL", ["p-5"]),
    ("(category = 'mugs' OR category = 'bowls') AND NOT stock = 0 AND price IS NOT NULL", ["p-2", "p-3", "p-7"]),
    ("price > -1 AND stock >= 1e1", ["p-3"]),
]


@pytest.mark.parametrize(("filter_text", "kept"), FILTERS, ids=[f for f, _ in FILTERS])
def test_filter_keeps_matching_rows(typed: Any, filter_text: str, kept: list[str]) -> None:
    job = load_manifest(typed(filter_text))
    assert _ids(job) == kept
    # rows keep their numbers in the file
    assert [item.source for item in job.items] == [f"catalog row {int(sku[2:])}" for sku in kept]


SYNTAX_ERRORS = [
    # (filter, character where it goes wrong, message fragment)
    ("price >", 7, "'>' needs a value on each side"),
    ("price = = 3", 9, "'=' needs a value on each side"),
    ("price = 3 and", 11, "'and' needs a value on each side"),
    ("(price = 3", 10, "'(' is never closed"),
    ("price = 3)", 10, "unexpected ')'"),
    ("category = 'mugs", 12, "unterminated text"),
    ("`price = 3", 1, "unterminated column name"),
    ("category = mugs", 12, "a column is compared with a column ('mugs'); quote text ('mugs')"),
    ("price 3", 7, "unexpected '3'"),
    ("category in ()", 1, "IN needs a list of values"),
    ("category is mugs", 1, "IS tests NULL only"),
    ("price = 3 price = 4", 17, "unexpected '='"),
    ("1 = 2", 1, "both sides are values"),
    ("category = null", 1, "test a missing value with IS NULL or IS NOT NULL"),
    ("price > 1.2.3", 9, "expected a value ('text', a number, true or false)"),
    ("updated_at > 2026-11-01", 14, "quote dates and times: '2026-11-01'"),
    ("price = 3; drop table t", 10, "a filter is one condition"),
    ("__import__('os')", 1, "function __import__() is not allowed"),
    ("lowr(category) = 'mugs'", 1, "function lowr() is not allowed; did you mean 'lower'?"),
    ("sleep(5) = 0", 1, "function sleep() is not allowed"),
    ("price IN (SELECT price FROM other)", 1, "subqueries are not allowed"),
    ("EXISTS (SELECT 1)", 16, "subqueries are not allowed"),
    ("SELECT * FROM t", 1, "a filter is a condition, not a query"),
    ("other.price > 3", 1, "columns of other tables are not allowed (other.price)"),
    ("price = ?", 1, "got a parameter (?)"),
    ("price + 1 > 3", 1, "expected a column, got arithmetic (price + 1)"),
    ("category LIKE sku", 1, "LIKE takes a quoted pattern"),
    ("price", 1, "expected a condition such as column = value"),
    ("caption LIKE 'cup!%' ESCAPE '!'", 1, "ESCAPE is not supported"),
]


@pytest.mark.parametrize(("filter_text", "position", "fragment"), SYNTAX_ERRORS, ids=[s for s, _, _ in SYNTAX_ERRORS])
def test_filter_syntax_error_names_the_position(typed: Any, filter_text: str, position: int, fragment: str) -> None:
    ((location, message),) = _problems(typed(filter_text))
    assert location == "catalog.filter"
    assert message.startswith(f"syntax error at character {position}: "), message
    assert fragment in message
    assert "⟨here⟩" in message and message.replace("⟨here⟩", "").endswith(filter_text)


def test_filter_syntax_error_is_found_without_reading_the_table(project: Any, base: dict[str, Any]) -> None:
    base["catalog"] = {"path": "missing.parquet", "columns": {"id": "sku"}, "filter": "a >"}
    locations = [loc for loc, _ in _problems(project.write(base))]
    assert locations == ["catalog.filter"]  # a manifest-level problem: the catalog is not read at all


def test_filter_unknown_columns_list_the_available_ones(typed: Any) -> None:
    problems = _problems(typed("categroy == 'mugs' or prise > 3 or zzz is null"))
    available = "'sku', 'category', 'price', 'stock', 'active', 'updated_at', 'day', 'tags'"
    assert problems == [
        ("catalog.filter", f"unknown column 'categroy'; did you mean 'category'? catalog.parquet has: {available}"),
        ("catalog.filter", f"unknown column 'prise'; did you mean 'price'? catalog.parquet has: {available}"),
        ("catalog.filter", f"unknown column 'zzz'; catalog.parquet has: {available}"),
    ]


TYPE_ERRORS = [
    ("price > '3'", "type mismatch at character 9: column 'price' holds numbers (double), compared with text ('3'); write a number (no quotes)"),
    ("category == 3", "column 'category' holds text (string), compared with a number (3); write a quoted 'text'"),
    ("active == 1", "column 'active' holds true/false (bool), compared with a number (1); write true or false"),
    ("stock == true", "column 'stock' holds numbers (int64), compared with true/false (true)"),
    ("updated_at > 20261101", "column 'updated_at' holds timestamps (timestamp[us, tz=UTC]), compared with a number"),
    ("updated_at > 'yesterday'", "'yesterday' is not ISO time such as '2026-11-01'"),
    ("day > '2026-11-01T10:00'", "column 'day' holds dates (date32[day]); '2026-11-01T10:00' is not ISO date"),
    ("tags == 'a'", "column 'tags' holds list<element: string>; a filter compares text, numbers"),
    ("category in ['mugs', 2]", "type mismatch at character 22: column 'category' holds text"),
]


@pytest.mark.parametrize(("filter_text", "fragment"), TYPE_ERRORS, ids=[f for f, _ in TYPE_ERRORS])
def test_filter_type_mismatch_is_located(typed: Any, filter_text: str, fragment: str) -> None:
    problems = _problems(typed(filter_text))
    assert [loc for loc, _ in problems] == ["catalog.filter"], problems
    assert fragment in problems[0][1]


def test_every_type_mismatch_is_reported(typed: Any) -> None:
    problems = _problems(typed("price > 'a' and stock == 'b' or active == 'c'"))
    assert [loc for loc, _ in problems] == ["catalog.filter"] * 3
    assert [m.split(":")[1].split("holds")[0].strip() for _, m in problems] == ["column 'price'", "column 'stock'", "column 'active'"]


def test_filter_matching_nothing(typed: Any, project: Any, base: dict[str, Any]) -> None:
    assert _problems(typed("price > 1000")) == [
        ("catalog.filter", "no row of 'catalog.parquet' matches the filter (8 row(s) read) and there are no inline items")
    ]
    # with inline items, an empty selection is fine (a nightly job with nothing new)
    base["items"] = [{"id": "inline", "image": "images/mug-red.png"}]
    base["catalog"] = {"path": "catalog.parquet", "columns": {"id": "sku"}, "filter": "price > 1000"}
    assert _ids(load_manifest(project.write(base))) == ["inline"]


def test_only_mapped_and_filtered_columns_are_read(typed: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    read: list[Any] = []
    real = pq.read_table

    def spy(source: Any, *args: Any, **kwargs: Any) -> Any:
        read.append(kwargs.get("columns"))
        return real(source, *args, **kwargs)

    monkeypatch.setattr(pq, "read_table", spy)
    job = load_manifest(typed("category == 'mugs' and day > '2026-10-01'", columns={"id": "sku", "seed": "stock"}))
    assert read == [["sku", "stock", "category", "day"]]
    assert [(item.id, item.seed) for item in job.items] == [("p-2", 3), ("p-6", 7)]


def test_dictionary_encoded_columns_compare_by_value(project: Any, base: dict[str, Any]) -> None:
    table = pa.table({"sku": pa.array(["a", "b", "c"]).dictionary_encode(), "kind": pa.array(["x", "y", "x"]).dictionary_encode()})
    pq.write_table(table, project.root / "catalog.parquet")
    base["items"] = []
    base["defaults"]["image"] = "images/mug-blue.png"
    base["catalog"] = {"path": "catalog.parquet", "columns": {"id": "sku", "prompt": "kind"}, "filter": "kind == 'x'"}
    job = load_manifest(project.write(base))
    assert [(item.id, item.prompt) for item in job.items] == [("a", "x"), ("c", "x")]


# --- CSV: every cell is text ----------------------------------------------------------------
@pytest.fixture
def csv_project(project: Any, base: dict[str, Any]) -> Any:
    (project.root / "catalog.csv").write_text(
        "sku,category,stock,active,updated_at\n"
        "c-1,mugs,0,true,2026-10-01T00:00:00\n"
        "c-2,mugs,12,false,2026-11-05T00:00:00\n"
        "c-3,bowls,,true,\n"
        "c-4,lamps,5,true,2026-11-02\n",
        encoding="utf-8",
    )
    base["items"] = []
    base["defaults"]["image"] = "images/mug-blue.png"

    def write(filter_text: str) -> Path:
        base["catalog"] = {"path": "catalog.csv", "columns": {"id": "sku"}, "filter": filter_text}
        return project.write(base)

    return write


@pytest.mark.parametrize(
    ("filter_text", "kept"),
    [
        ("category == 'mugs'", ["c-1", "c-2"]),
        ("stock >= 5", ["c-2", "c-4"]),  # text cells converted to numbers for the comparison
        ("stock in [0, 5]", ["c-1", "c-4"]),
        ("active == false", ["c-2"]),
        ("stock is null", ["c-3"]),
        ("updated_at > '2026-11'", ["c-2", "c-4"]),  # text against text: ISO text sorts by time
        ("00123 == stock or stock == 12", ["c-2"]),
        # SQL as users write it, on text cells
        ("category = 'mugs'", ["c-1", "c-2"]),
        ("category LIKE 'b%'", ["c-3"]),
        ("category IN ('bowls', 'lamps')", ["c-3", "c-4"]),
        ("updated_at >= '2026-11-01'", ["c-2", "c-4"]),
        ("stock BETWEEN 1 AND 12", ["c-2", "c-4"]),
        ("updated_at IS NULL", ["c-3"]),
        ("NOT (category = 'mugs' OR stock IS NULL) AND upper(category) = 'LAMPS'", ["c-4"]),
    ],
)
def test_csv_filter(csv_project: Any, filter_text: str, kept: list[str]) -> None:
    assert _ids(load_manifest(csv_project(filter_text))) == kept


def test_csv_filter_cell_that_does_not_convert(csv_project: Any) -> None:
    problems = _problems(csv_project("category > 3"))
    assert [loc for loc, _ in problems] == ["catalog.filter"]
    assert problems[0][1].startswith("cannot apply the filter to catalog.csv: Failed to parse string: ")
    assert problems[0][1].endswith("(CSV cells compared with a number or true/false must hold one)")


# --- per-row overrides --------------------------------------------------------------------------
def test_nested_and_size_overrides_from_parquet(project: Any, base: dict[str, Any]) -> None:
    project.parquet(
        {
            "sku": ["r-1", "r-2", "r-3", "r-4"],
            "wlen": pa.array([24, None, 8, None], pa.int64()),
            "amp": [0.05, None, None, 0.1],
            "up": [1.0, None, 3.0, None],
            "method": ["nearest", None, None, None],
            "dims": ["320x192", None, None, "128×64"],
            "size_list": pa.array([None, [64, 32], None, None], pa.list_(pa.int64())),
            "pan": pa.array([[0.1, -0.1], None, None, None], pa.list_(pa.float64())),
        }
    )
    base["items"] = []
    base["defaults"].update({"image": "images/mug-blue.png", "motion": {"max_hz": 2.0, "amplitude": 0.01}})
    columns = {
        "id": "sku", "window.length": "wlen", "motion.amplitude": "amp", "upscale.factor": "up",
        "upscale.method": "method", "size": "dims", "motion.pan": "pan",
    }
    base["catalog"] = {"path": "catalog.parquet", "columns": columns}
    job = load_manifest(project.write(base))
    r1, r2, r3, r4 = job.items
    # defaults: window 16/4 cosine, upscale ×2 lanczos, size 256², motion max_hz 2 amplitude 0.01
    assert r1.window == WindowSpec(length=24, overlap=4)
    assert r1.upscale == UpscaleSpec(factor=1.0, method="nearest")
    assert r1.motion == MotionSpec(amplitude=0.05, max_hz=2.0, pan=(0.1, -0.1))
    assert r1.size == (320, 192)
    # a row of null cells is exactly the defaults
    assert (r2.window, r2.upscale, r2.motion, r2.size) == (WindowSpec(), UpscaleSpec(factor=2.0), MotionSpec(amplitude=0.01, max_hz=2.0), (256, 256))
    assert r3.window == WindowSpec(length=8, overlap=4) and r3.upscale.factor == 3.0 and r3.output_size == (768, 768)
    assert r4.motion.amplitude == 0.1 and r4.size == (128, 64)


def test_size_from_a_list_column(project: Any, base: dict[str, Any]) -> None:
    project.parquet({"sku": ["s-1", "s-2"], "size": pa.array([[64, 32], None], pa.list_(pa.int64()))})
    base["items"] = []
    base["defaults"]["image"] = "images/mug-blue.png"
    base["catalog"] = {"path": "catalog.parquet", "columns": {"id": "sku", "size": "size"}}
    assert [item.size for item in load_manifest(project.write(base)).items] == [(64, 32), (256, 256)]


def test_nested_overrides_from_csv_text(project: Any, base: dict[str, Any]) -> None:
    (project.root / "catalog.csv").write_text(
        "sku,wlen,overlap,weighting,zoom,pan,size,fps\n"
        "t-1,32,8,linear,0.1,\"0.05, -0.05\",192x128,30\n"
        "t-2,,,,,,,\n",
        encoding="utf-8",
    )
    base["items"] = []
    base["defaults"]["image"] = "images/mug-blue.png"
    base["catalog"] = {
        "path": "catalog.csv",
        "columns": {
            "id": "sku", "window.length": "wlen", "window.overlap": "overlap", "window.weighting": "weighting",
            "motion.zoom": "zoom", "motion.pan": "pan", "size": "size", "fps": "fps",
        },
    }
    t1, t2 = load_manifest(project.write(base)).items
    assert t1.window == WindowSpec(length=32, overlap=8, weighting="linear")
    assert (t1.motion.zoom, t1.motion.pan, t1.size, t1.fps, t1.frames) == (0.1, (0.05, -0.05), (192, 128), 30.0, 120)
    assert (t2.window, t2.motion, t2.size, t2.fps, t2.frames) == (WindowSpec(), MotionSpec(), (256, 256), 24.0, 96)


def test_wrong_override_cells_are_located_at_row_item_and_field(project: Any, base: dict[str, Any]) -> None:
    (project.root / "catalog.csv").write_text(
        "sku,wlen,amp,size,pan,seed,factor\n"
        "ok-1,8,0.01,64x64,,1,\n"
        "bad-2,eight,0.01,64x64,,2,\n"  # not an integer
        "bad-3,8,0.9,64x64,,3,\n"  # amplitude over 0.2
        "bad-4,8,0.01,64 by 64,,4,\n"  # size text
        "bad-5,2,0.01,64x64,,5,\n"  # length 2 <= defaults' overlap 4: a merged rule
        "bad-6,8,0.01,64x64,\"0.1\",6,\n"  # pan needs two numbers
        "bad-7,8,0.01,66x66,,x,1.5\n",  # seed not a number; 66 × 1.5 = 99 is odd
        encoding="utf-8",
    )
    base["defaults"]["image"] = "images/mug-blue.png"
    base["catalog"] = {
        "path": "catalog.csv",
        "columns": {
            "id": "sku", "window.length": "wlen", "motion.amplitude": "amp", "size": "size", "motion.pan": "pan",
            "seed": "seed", "upscale.factor": "factor",
        },
    }
    problems = _problems(project.write(base))
    assert [loc for loc, _ in problems] == [
        "catalog row 2 (item 'bad-2').window.length",
        "catalog row 3 (item 'bad-3').motion.amplitude",
        "catalog row 4 (item 'bad-4').size",
        "catalog row 5 (item 'bad-5').window.overlap",
        "catalog row 6 (item 'bad-6').motion.pan",
        "catalog row 7 (item 'bad-7').seed",
    ]
    messages = dict(problems)
    assert "valid integer" in messages["catalog row 2 (item 'bad-2').window.length"]
    assert "less than or equal to 0.2" in messages["catalog row 3 (item 'bad-3').motion.amplitude"]
    assert messages["catalog row 4 (item 'bad-4').size"] == (
        "must be 'WIDTHxHEIGHT' text such as '512x288' or a list of two numbers (column 'size'), got '64 by 64'"
    )
    assert messages["catalog row 5 (item 'bad-5').window.overlap"] == "overlap must be < length (2), got 4"
    assert "'x, y' text" in messages["catalog row 6 (item 'bad-6').motion.pan"]


def test_filtered_rows_keep_their_file_numbers_in_problems(project: Any, base: dict[str, Any]) -> None:
    project.parquet({"sku": ["a", "b", "c", "d"], "kind": ["x", "y", "y", "y"], "seed": ["1", "2", "oops", "4"]})
    base["catalog"] = {"path": "catalog.parquet", "columns": {"id": "sku", "seed": "seed"}, "filter": "kind == 'y'"}
    base["defaults"]["image"] = "images/mug-blue.png"
    assert [loc for loc, _ in _problems(project.write(base))] == ["catalog row 3 (item 'c').seed"]


def test_duplicate_ids_across_rows_are_caught(project: Any, base: dict[str, Any]) -> None:
    project.parquet({"sku": ["d-1", "d-2", "d-1", "D-2", "mug-red"], "kind": ["x"] * 5})
    base["catalog"] = {"path": "catalog.parquet", "columns": {"id": "sku"}, "filter": "kind == 'x'"}
    base["defaults"]["image"] = "images/mug-blue.png"
    problems = _problems(project.write(base))
    assert problems == [
        ("catalog row 3 (item 'd-1').id", "duplicate id 'd-1': also used by catalog row 1 (item 'd-1')"),
        (
            "catalog row 4 (item 'D-2').id",
            "id 'D-2' differs only in letter case from 'd-2' (catalog row 2 (item 'd-2')); "
            "ids must differ by more than case (case-insensitive filesystems)",
        ),
        ("catalog row 5 (item 'mug-red').id", "duplicate id 'mug-red': also used by items[1]"),
    ]


# --- a 10,000-row catalog -----------------------------------------------------------------------
def test_ten_thousand_row_catalog(project: Any, base: dict[str, Any]) -> None:
    from PIL import Image

    rows, images = 10_000, 20
    for n in range(images):
        Image.new("RGB", (32, 24), (n * 12, 100, 200 - n * 5)).save(project.root / "images" / f"p{n:02d}.png")
    categories = ("mugs", "bowls", "plates", "vases", "lamps")
    start = datetime(2026, 9, 1, tzinfo=UTC)
    updated = [start + timedelta(hours=(n * 7919) % (120 * 24)) for n in range(rows)]
    table = pa.table(
        {
            "sku": [f"sku-{n:05d}" for n in range(rows)],
            "image_path": [f"images/p{n % images:02d}.png" for n in range(rows)],
            "caption": [f"product {n}" for n in range(rows)],
            "category": [categories[n % 5] for n in range(rows)],
            "updated_at": pa.array(updated, pa.timestamp("us", tz="UTC")),
            "seed": pa.array(range(rows), pa.int64()),
            "wlen": pa.array([None if n % 4 else 8 for n in range(rows)], pa.int64()),
        }
    )
    pq.write_table(table, project.root / "catalog.parquet")
    base["items"] = []
    base["catalog"] = {
        "path": "catalog.parquet",
        "columns": {"id": "sku", "image": "image_path", "prompt": "caption", "seed": "seed", "window.length": "wlen"},
    }
    everything = load_manifest(project.write(base, "all.yaml"))
    assert len(everything.items) == rows

    base["catalog"]["filter"] = "category = 'mugs' AND updated_at > '2026-11-01'"
    filtered = load_manifest(project.write(base, "filtered.yaml"))
    cutoff = datetime(2026, 11, 1, tzinfo=UTC)
    expected = [n for n in range(rows) if n % 5 == 0 and updated[n] > cutoff]
    assert 0 < len(expected) < rows // 5
    assert [item.id for item in filtered.items] == [f"sku-{n:05d}" for n in expected]
    assert [item.source for item in filtered.items] == [f"catalog row {n + 1}" for n in expected]
    first = filtered.items[0]
    n = expected[0]
    root = project.root.resolve()
    assert (first.image, first.prompt, first.seed) == (root / "images" / f"p{n % images:02d}.png", f"product {n}", n)
    assert {item.window.length for item in filtered.items} == {8, 16}


# --- the parser on its own ----------------------------------------------------------------------
def test_parse_reports_columns_in_order_and_never_evaluates() -> None:
    assert parse("b == 1 or (a in ['x'] and not b is null)").columns() == ["b", "a"]
    assert parse("`price` BETWEEN 1 AND 2 OR lower(c) LIKE 'x%'").columns() == ["price", "c"]
    for text in ("__import__('os')", "a == (lambda: 1)()", "a == 1; import os", "a.b == 1", "a == [1]"):
        with pytest.raises(FilterError, match="syntax error at character"):
            parse(text)


def test_parse_limits() -> None:
    with pytest.raises(FilterError, match="nested deeper than 32 levels"):
        parse("(" * 40 + "a == 1" + ")" * 40)
    with pytest.raises(FilterError, match="nested deeper than 32 levels"):
        parse("not " * 40 + "a == 1")
    with pytest.raises(FilterError, match="is empty"):
        parse("   ")
    long = " or ".join(["a == 1"] * 700)
    with pytest.raises(FilterError, match="the limit is 4096"):
        parse(long)
