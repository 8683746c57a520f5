"""Broken catalog tables, Parquet and CSV alike: missing mapped columns, null, duplicate and
case-duplicate ids, cells of the wrong type, unreadable files. `validate` and `run` exit 2 with
the problem located (catalog.columns.*, catalog row N (item 'x').field, catalog.path) and write
nothing."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
import yaml

from flows.cli import main
from tests.conftest import draw_image


def _write(table: pa.Table | bytes, folder: Path, kind: str) -> str:
    path = folder / f"catalog.{kind}"
    if isinstance(table, bytes):
        path.write_bytes(table)
    elif kind == "parquet":
        pq.write_table(table, path)
    else:
        pa_csv.write_csv(table, path)
    return path.name


# (name, table, columns mapping, expected locations); one case per problem, run for both kinds
CASES = [
    ("missing-id-column", pa.table({"name": ["a"]}), {"id": "sku"}, ["catalog.columns.id", "'sku' is not in"]),
    ("missing-mapped-column", pa.table({"sku": ["a"]}), {"id": "sku", "prompt": "caption"},
     ["catalog.columns.prompt", "'caption' is not in"]),
    ("null-id", pa.table({"sku": ["a", None, "c"], "p": ["x", "y", "z"]}), {"id": "sku", "prompt": "p"},
     ["catalog row 2.id", "id is empty"]),
    ("duplicate-id", pa.table({"sku": ["a", "b", "a"]}), {"id": "sku"},
     ["catalog row 3 (item 'a').id", "duplicate id 'a'", "catalog row 1"]),
    ("case-duplicate-id", pa.table({"sku": ["mug", "MUG"]}), {"id": "sku"},
     ["catalog row 2 (item 'MUG').id", "letter case"]),
    ("unsafe-id", pa.table({"sku": ["ok", "../evil"]}), {"id": "sku"}, ["catalog row 2", "safe file name"]),
    ("text-in-integer-field", pa.table({"sku": ["a", "b"], "s": ["7", "seven"]}), {"id": "sku", "seed": "s"},
     ["catalog row 2 (item 'b').seed", "valid integer"]),
    ("fraction-in-integer-field", pa.table({"sku": ["a"], "f": [2.5]}), {"id": "sku", "frames": "f"},
     ["catalog row 1 (item 'a').frames"]),
    ("out-of-range", pa.table({"sku": ["a"], "f": [10**12]}), {"id": "sku", "frames": "f"},
     ["catalog row 1 (item 'a').frames", "max_frames"]),
    ("bad-size-text", pa.table({"sku": ["a"], "z": ["big"]}), {"id": "sku", "size": "z"},
     ["catalog row 1 (item 'a').size", "WIDTHxHEIGHT"]),
    ("missing-image-file", pa.table({"sku": ["a"], "i": ["nope.png"]}), {"id": "sku", "image": "i"},
     ["catalog row 1 (item 'a').image", "not found"]),
    ("escaping-image", pa.table({"sku": ["a"], "i": ["../../etc/passwd"]}), {"id": "sku", "image": "i"},
     ["catalog row 1 (item 'a').image", "escapes"]),
]  # fmt: skip
PARQUET_ONLY = [
    ("integer-ids", pa.table({"sku": [1, 2]}), {"id": "sku"}, ["catalog.columns.id", "ids must be text"]),
    ("list-in-text-field", pa.table({"sku": ["a"], "p": [["x", "y"]]}), {"id": "sku", "prompt": "p"},
     ["catalog row 1 (item 'a').prompt", "valid string"]),
    ("struct-in-number-field", pa.table({"sku": ["a"], "w": [{"x": 1}]}), {"id": "sku", "window.length": "w"},
     ["catalog row 1 (item 'a').window.length"]),
    # lax validation used to take true as 1 and false as 0: silently fps 1, seed 0
    ("bool-in-number-field", pa.table({"sku": ["a"], "f": [True]}), {"id": "sku", "fps": "f"},
     ["catalog row 1 (item 'a').fps", "true/false"]),
    ("bool-in-integer-field", pa.table({"sku": ["a", "b"], "s": [False, None]}), {"id": "sku", "seed": "s"},
     ["catalog row 1 (item 'a').seed", "true/false"]),
    ("bool-in-nested-field", pa.table({"sku": ["a"], "u": [True]}), {"id": "sku", "upscale.factor": "u"},
     ["catalog row 1 (item 'a').upscale.factor", "true/false"]),
]  # fmt: skip
GARBAGE = [
    ("parquet", b"PAR1 this is not parquet PAR1", ["catalog.path", "cannot read", "as Parquet"]),
    ("parquet", b"", ["catalog.path", "as Parquet"]),
    ("csv", b"sku,seed\na,1,3,4\n", ["catalog.path", "as CSV"]),
    ("csv", b"", ["catalog.path", "as CSV"]),
    ("csv", b"\xff\xfe\x00s\x00k\x00u\n\x00\x00", ["catalog.path"]),
]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    draw_image(tmp_path / "a.png", (32, 32))
    return tmp_path


def _check(project: Path, capsys, catalog: str, columns: dict, expected: list[str]) -> None:
    doc = {"version": 1, "name": "cat", "output": "out",
           "defaults": {"image": "a.png", "frames": 4, "fps": 8, "size": [16, 16],
                        "window": {"length": 4, "overlap": 0}},
           "catalog": {"path": catalog, "columns": columns}}
    manifest = project / "job.yaml"
    manifest.write_text(yaml.safe_dump(doc))
    before = sorted(p.name for p in project.iterdir())
    for command in ("validate", "run"):
        assert main([command, str(manifest)]) == 2, command
        err = capsys.readouterr().err
        assert "job.yaml" in err and "Traceback" not in err, err
        for text in expected:
            assert text in err, (text, err)
    assert sorted(p.name for p in project.iterdir()) == before


@pytest.mark.parametrize("kind", ["parquet", "csv"])
@pytest.mark.parametrize(("case", "table", "columns", "expected"), CASES, ids=[c[0] for c in CASES])
def test_broken_catalog_exits_2_with_location(project, capsys, kind, case, table, columns, expected):
    _check(project, capsys, _write(table, project, kind), columns, expected)


@pytest.mark.parametrize(("case", "table", "columns", "expected"), PARQUET_ONLY, ids=[c[0] for c in PARQUET_ONLY])
def test_wrong_parquet_types_exit_2_with_location(project, capsys, case, table, columns, expected):
    _check(project, capsys, _write(table, project, "parquet"), columns, expected)


@pytest.mark.parametrize(("kind", "content", "expected"), GARBAGE, ids=[f"{k}-{i}" for i, (k, _, _) in enumerate(GARBAGE)])
def test_unreadable_catalog_file_exits_2(project, capsys, kind, content, expected):
    _check(project, capsys, _write(content, project, kind), {"id": "sku"}, expected)


def test_catalog_id_clashing_with_an_inline_item_exits_2(project, capsys):
    _write(pa.table({"sku": ["Mug"]}), project, "csv")
    doc = {"version": 1, "name": "cat", "output": "out", "defaults": {"image": "a.png", "frames": 4},
           "items": [{"id": "mug"}], "catalog": {"path": "catalog.csv", "columns": {"id": "sku"}}}
    (project / "job.yaml").write_text(yaml.safe_dump(doc))
    assert main(["validate", str(project / "job.yaml")]) == 2
    err = capsys.readouterr().err
    assert ("catalog row 1 (item 'Mug').id: id 'Mug' differs only in letter case from 'mug' (items[0]); "
            "ids must differ by more than case (case-insensitive filesystems)") in err.replace("\n", " ")


def test_boolean_and_text_cells_for_true_false_fields_are_accepted(project, capsys):
    _write(pa.table({"sku": ["a", "b"], "l": [True, None]}), project, "parquet")
    _write(pa.table({"sku": ["c", "d"], "l": ["true", "false"]}), project, "csv")
    for name in ("catalog.parquet", "catalog.csv"):
        doc = {"version": 1, "name": "cat", "output": "out", "defaults": {"image": "a.png", "frames": 48},
               "catalog": {"path": name, "columns": {"id": "sku", "loop": "l"}}}
        (project / "job.yaml").write_text(yaml.safe_dump(doc))
        assert main(["validate", str(project / "job.yaml")]) == 0, capsys.readouterr().err
