"""Validation in one pass: every problem of a manifest at once, each once, at the place it is
written — in defaults, in an item, or in a catalog row — with input stills opened and decoded,
and a long catalog's problems capped."""

from __future__ import annotations

import re

import yaml

from flows.cli import main
from tests.conftest import draw_image


def test_six_independent_mistakes_are_listed_once_each_where_they_are_written(tmp_path, capsys):
    draw_image(tmp_path / "img" / "good.png", (64, 64), seed=1)
    (tmp_path / "img" / "broken.png").write_text("a text file, not a PNG\n")
    (tmp_path / "rows.csv").write_text("sku,fps\nr1,24\nr2,fast\n")
    doc = {
        "version": 1, "name": "six", "output": "out",
        "defaults": {"fps": 24, "duration": 1.01, "size": [64, 64], "image": "img/good.png",  # 24.24 frames
                     "window": {"length": 8, "overlap": 2}},
        "items": [
            {"id": "a", "image": "img/broken.png"},
            {"id": "b", "image": "img/missing.png", "window": {"overlap": 8}},
            {"id": "c", "promt": "a typo"},
        ],
        "catalog": {"path": "rows.csv", "columns": {"id": "sku", "fps": "fps"}},
    }
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))

    assert main(["validate", str(tmp_path / "job.yaml")]) == 2
    err = capsys.readouterr().err
    lines = [line.split("job.yaml: ", 1)[1] for line in err.splitlines() if "job.yaml: " in line]
    expected = [
        ("defaults.duration", "whole number of frames (got 24.24)"),  # once, not once per item and row
        ("items[0].image (item 'a')", "broken.png: not a readable image"),
        ("items[1].image (item 'b')", "file not found"),
        ("items[1].window.overlap (item 'b')", "overlap must be < length (8), got 8"),
        ("items[2].promt (item 'c')", "unknown field; did you mean 'prompt'?"),
        ("catalog row 2 (item 'r2').fps", "valid number"),
    ]
    assert len(lines) == 6, err
    for line, (where, what) in zip(lines, expected):
        assert line.startswith(where + ": ") and what in line, (line, where, what)
    assert "invalid manifest (6 problems)" in err and "Traceback" not in err


def test_a_non_image_in_defaults_is_reported_once_at_defaults(tmp_path, capsys):
    (tmp_path / "still.png").write_text("<html>not an image</html>")
    doc = {"version": 1, "name": "d", "output": "out", "defaults": {"image": "still.png", "frames": 8},
           "items": [{"id": f"i{n}"} for n in range(5)]}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(doc))
    assert main(["validate", str(tmp_path / "job.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.count("not a readable image") == 1 and "defaults.image: still.png: not a readable image" in err


def test_catalog_rows_are_checked_row_by_row_with_a_cap(tmp_path, capsys):
    draw_image(tmp_path / "a.png", (32, 32))
    (tmp_path / "rows.csv").write_text("sku,fps\n" + "".join(f"r{n},x{n}\n" for n in range(1, 121)))
    doc = {"version": 1, "name": "cap", "output": "out", "defaults": {"image": "a.png", "frames": 8},
           "catalog": {"path": "rows.csv", "columns": {"id": "sku", "fps": "fps"}}}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(doc))
    assert main(["validate", str(tmp_path / "job.yaml")]) == 2
    err = capsys.readouterr().err
    rows = re.findall(r"catalog row (\d+) \(item 'r\d+'\)\.fps", err)
    assert rows == [str(n) for n in range(1, 51)]  # the first 50, in row order
    assert "... and 70 more problem(s) in 70 other row(s), not listed (the first 50 are)" in err


def test_an_item_that_fails_validation_still_has_its_stills_checked(tmp_path, capsys):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "text.png").write_text("not a PNG\n")
    doc = {"version": 1, "name": "t", "output": "out",
           "defaults": {"frames": 8, "size": [64, 64], "window": {"length": 8, "overlap": 2}},
           "items": [{"id": "a", "image": "img/missing.png", "window": {"length": 8, "overlap": 8}},
                     {"id": "b", "image": "img/text.png", "frames": 0},
                     {"id": "c", "image": ["not", "a", "path"], "mask": "img/gone.png"}]}  # fmt: skip
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    assert main(["validate", str(tmp_path / "job.yaml")]) == 2
    err = capsys.readouterr().err
    for where, what in (("items[0].window.overlap (item 'a')", "overlap must be < length"),
                        ("items[0].image (item 'a')", "file not found"),
                        ("items[1].frames (item 'b')", "greater than or equal to 1"),
                        ("items[1].image (item 'b')", "text.png: not a readable image"),
                        ("items[2].image (item 'c')", ""),  # the wrong type, reported once
                        ("items[2].mask (item 'c')", "file not found")):  # fmt: skip
        assert [line for line in err.splitlines() if f": {where}: " in line and what in line], (where, err)
    assert err.count("items[2].image") == 1 and "invalid manifest (6 problems)" in err, err


def test_a_catalogs_path_filter_and_columns_are_reported_together(tmp_path, capsys):
    doc = {"version": 1, "name": "t", "output": "out", "defaults": {"frames": 8},
           "catalog": {"path": "rows.txt", "columns": {"id": "sku", "nosuch": "cap"}, "filter": "fr > 3 AND"}}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    assert main(["validate", str(tmp_path / "job.yaml")]) == 2
    err = capsys.readouterr().err
    assert "catalog.path: must name a .parquet or .csv file" in err, err
    assert "catalog.filter: syntax error" in err and "catalog.columns.nosuch: not an item field" in err, err
    del doc["catalog"]["columns"]  # a missing field does not hide the others either
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    assert main(["validate", str(tmp_path / "job.yaml")]) == 2
    err = capsys.readouterr().err
    for where in ("catalog.path: must name", "catalog.columns: ", "catalog.filter: syntax error"):
        assert where in err, (where, err)
