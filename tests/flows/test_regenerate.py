"""Idempotent regeneration over a catalog: a re-run makes nothing, a changed input or
parameter makes exactly its item again, and the ledger says why each item ran."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from flows.cli import main
from tasks.provenance import read_ledger
from tests.conftest import draw_image, write_manifest

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_cluster", "prefect_server")]

ROWS = 80


def _run(capsys, manifest, *args) -> dict:
    code = main(["run", str(manifest), "--json", *args])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0, [i for i in summary["items"] if i["status"] == "failed"][:3]
    return summary


def test_a_catalog_regenerates_exactly_what_changed(tmp_path, capsys):
    for n in range(ROWS):
        draw_image(tmp_path / "img" / f"p{n:03d}.png", (20, 20), seed=n)
    catalog = tmp_path / "catalog.csv"
    lines = ["sku,image,seed"] + [f"sku-{n:03d},img/p{n:03d}.png,{n}" for n in range(ROWS)]
    catalog.write_text("\n".join(lines) + "\n")
    doc = {"version": 1, "name": "catalog", "output": "out",
           "defaults": {"fps": 4, "frames": 2, "size": [16, 16], "window": {"length": 2, "overlap": 0}},
           "catalog": {"path": "catalog.csv", "columns": {"id": "sku", "image": "image", "seed": "seed"}}}
    manifest = write_manifest(tmp_path, doc)
    out = tmp_path / "out"

    first = _run(capsys, manifest)
    assert first["counts"] == {"done": ROWS, "skipped": 0, "failed": 0}
    assert {i["reason"] for i in first["items"]} == {"new"}

    again = _run(capsys, manifest)
    assert again["counts"] == {"done": 0, "skipped": ROWS, "failed": 0}

    draw_image(tmp_path / "img" / "p061.png", (20, 20), seed=9999)  # one product photo replaced
    lines[1 + 45] = "sku-045,img/p045.png,7"  # one row's seed edited
    catalog.write_text("\n".join(lines) + "\n")
    changed = _run(capsys, manifest)
    made = {i["id"]: i["reason"] for i in changed["items"] if i["status"] == "done"}
    assert made == {"sku-061": "input changed", "sku-045": "parameters changed"}
    assert changed["counts"]["skipped"] == ROWS - 2

    forced = _run(capsys, manifest, "--only", "sku-007", "sku-008", "--force")
    assert {i["id"]: (i["status"], i["reason"]) for i in forced["items"]} == {
        "sku-007": ("done", "forced"), "sku-008": ("done", "forced")}

    # the ledger: one row per run and item, with the same reasons
    rows = read_ledger(out).to_pylist()
    per_run = Counter(r["run_id"] for r in rows)
    assert sorted(per_run.values()) == [2, ROWS, ROWS, ROWS]
    assert len({(r["run_id"], r["item_id"]) for r in rows}) == len(rows)
    by_run = {r["item_id"]: r["reason"] for r in rows if r["run_id"] == changed["run_id"] and r["status"] == "done"}
    assert by_run == made
