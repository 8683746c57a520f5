"""One schema: the written sections are derived from the resolved ones, the manifest's
choices are the constants of the code that runs them, and the README's field table says
what `framefold schema` says."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import get_args

import pytest

from flows.cli import main
from manifests import fields
from manifests.items import ItemFields, ItemSpec
from manifests.sections import MotionPatch, MotionSpec, UpscalePatch, UpscaleSpec, WindowPatch, WindowSpec

ROOT = Path(__file__).resolve().parents[2]
FIELD_TABLE = "| field | type, range | default | meaning |"


def test_choices_are_the_constants_of_the_code_that_runs_them() -> None:
    from kernels.resample import METHODS
    from kernels.windows import WEIGHTINGS
    from tasks.backends import diffusers_backend
    from tasks.renditions import EXTENSIONS

    assert get_args(fields.Weighting) == WEIGHTINGS
    assert get_args(fields.UpscaleMethod) == (*METHODS, "model")
    assert get_args(fields.Format) == tuple(EXTENSIONS)
    assert get_args(fields.Dtype) == tuple(diffusers_backend.DTYPES)
    assert set(get_args(fields.WindowMode)) == {m for f in fields.FAMILIES.values() for m in f.modes}


@pytest.mark.parametrize(("spec", "patch"), [(WindowSpec, WindowPatch), (UpscaleSpec, UpscalePatch),
                                             (MotionSpec, MotionPatch), (ItemSpec, ItemFields)])
def test_a_patch_has_its_specs_fields_and_carries_their_defaults(spec, patch) -> None:
    assert set(spec.model_fields) - {"id", "source"} <= set(patch.model_fields)
    for name, info in patch.model_fields.items():
        resolved = spec.model_fields.get(name)
        assert info.default is None and not info.is_required(), name
        if resolved is not None and resolved.default not in (None, ...) and resolved.default_factory is None:
            default = fields._written(resolved.default)
            assert info.description.endswith(f" Default {default}."), (name, info.description)


def test_a_rule_of_a_section_holds_where_it_is_written() -> None:
    from pydantic import ValidationError

    for model, data, where in ((WindowPatch, {"length": 4, "overlap": 4}, "overlap"),
                               (UpscalePatch, {"tile": 16, "tile_overlap": 16}, "tile_overlap"),
                               (WindowSpec, {"length": 4, "overlap": 4}, "overlap"),
                               (UpscaleSpec, {"tile": 16, "tile_overlap": 16}, "tile_overlap")):
        with pytest.raises(ValidationError) as caught:
            model.model_validate(data)
        [error] = caught.value.errors()
        assert [at for at, _ in error["ctx"]["problems"]] == [where]
    assert UpscalePatch.model_validate({"tile": 0, "tile_overlap": 16}).tile == 0  # tiling off: any overlap


def _readme_rows() -> list[tuple[list[str], str]]:
    """(field names, default cell) of each row of the field table, wherever the docs keep it."""
    for doc in (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))):
        lines = doc.read_text().splitlines() if doc.is_file() else []
        if FIELD_TABLE in lines:
            start = lines.index(FIELD_TABLE) + 2
            rows = []
            for line in lines[start:]:
                if not line.startswith("|"):
                    break
                cells = [c.strip() for c in line.strip("|").split(" | ")]
                rows.append((re.findall(r"`([a-z_.]+)`", cells[0]), cells[2]))
            return rows
    raise AssertionError(f"no field table ({FIELD_TABLE}) in README.md or docs/")


def _schema_defaults(capsys) -> dict[str, str | None]:
    """Dotted item field -> the default its description states in `framefold schema`, or None."""
    assert main(["schema"]) == 0
    defs = json.loads(capsys.readouterr().out)["$defs"]
    found = {}
    for section, model in (("", "ItemEntry"), ("window.", "WindowPatch"), ("upscale.", "UpscalePatch"),
                           ("motion.", "MotionPatch"), ("model.", "ModelPatch")):
        for name, prop in defs[model]["properties"].items():
            if section == "" and name in ("window", "upscale", "motion", "model"):
                continue
            match = re.search(r" Default (.+)\.$", prop.get("description", ""))
            found[section + name] = match[1] if match else None
    return found


def _same(written: str, cell: str) -> bool:
    """Whether a README default cell ('`[256, 256]`', '48 frames', '6.0', '`""`') states `written`."""
    text = cell.replace("`", "").strip()
    if written == "''":
        return text == '""'
    try:
        return float(written) == float(text.split(" ")[0])
    except ValueError:
        return text == written or text.startswith(f"{written} ")


def test_readme_field_table_matches_the_schema(capsys) -> None:
    schema = _schema_defaults(capsys)
    rows = _readme_rows()
    documented = [name for names, _ in rows for name in names]
    assert sorted(documented) == sorted(schema)  # every field once, none that does not exist
    for names, cell in rows:
        cells = re.split(r",\s*(?![^\[]*\])", cell)
        for n, name in enumerate(names):
            written = schema[name]
            if written is not None:
                mine = cells[n] if len(cells) == len(names) else cell
                assert _same(written, mine), (name, written, cell)
