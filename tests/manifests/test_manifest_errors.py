"""Malformed manifests: every one raises ManifestError, and each problem is located precisely."""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from manifests import Job, ManifestError, load_manifest

Mutation = Callable[[dict[str, Any]], None]


def _problems(path: Path, **kwargs: Any) -> list[tuple[str, str]]:
    with pytest.raises(ManifestError) as caught:
        load_manifest(path, **kwargs)
    error = caught.value
    assert error.problems, "a ManifestError always carries at least one problem"
    assert str(error).startswith(f"{error.file}: ")
    return [(p.location, p.message) for p in error.problems]


def _set(path: str, value: Any) -> Mutation:
    """Mutation setting a dotted/indexed path ('items.0.window.length') in the manifest dict."""

    def mutate(manifest: dict[str, Any]) -> None:
        *parents, last = [int(part) if part.isdigit() else part for part in path.split(".")]
        node: Any = manifest
        for part in parents:
            node = node[part]
        node[last] = value

    return mutate


def _delete(path: str) -> Mutation:
    def mutate(manifest: dict[str, Any]) -> None:
        *parents, last = [int(part) if part.isdigit() else part for part in path.split(".")]
        node: Any = manifest
        for part in parents:
            node = node[part]
        del node[last]

    return mutate


def _all(*mutations: Mutation) -> Mutation:
    def mutate(manifest: dict[str, Any]) -> None:
        for mutation in mutations:
            mutation(manifest)

    return mutate


MALFORMED: list[tuple[str, Mutation, str, str]] = [
    # (case id, mutation of the valid manifest, expected location, expected message fragment)
    ("version-2", _set("version", 2), "version", "must be 1"),
    ("version-string", _set("version", "1"), "version", "must be 1"),
    ("version-missing", _delete("version"), "version", "required"),
    ("name-unsafe", _set("name", "../up"), "name", "safe file name"),
    ("output-missing", _delete("output"), "output", "required"),
    ("output-escapes", _set("output", "../elsewhere"), "output", "escapes the manifest folder"),
    ("output-absolute", _set("output", "/tmp/out"), "output", "escapes the manifest folder"),
    ("unknown-top-level", _set("itmes", []), "itmes", "did you mean 'items'?"),
    ("defaults-typo", _set("defaults.windw", {"length": 8}), "defaults.windw", "did you mean 'window'?"),
    ("nested-typo", _set("defaults.window.lenght", 8), "defaults.window.lenght", "did you mean 'length'?"),
    ("defaults-id", _set("defaults.id", "x"), "defaults.id", "per item"),
    ("defaults-null", _set("defaults.seed", None), "defaults.seed", "must not be null"),
    ("defaults-not-mapping", _set("defaults", [1, 2]), "defaults", "expected a mapping"),
    ("fps-zero", _set("defaults.fps", 0), "defaults.fps", "greater than 0"),
    ("fps-too-high", _set("defaults.fps", 240), "defaults.fps", "got 240"),
    ("fps-quoted", _set("defaults.fps", "24"), "defaults.fps", "valid number"),
    ("fps-nan", _set("defaults.fps", float("nan")), "defaults.fps", "finite"),
    ("seed-negative", _set("items.0.seed", -1), "items[0].seed", "greater than or equal to 0"),
    ("seed-too-big", _set("items.0.seed", 2**63), "items[0].seed", "less than or equal to"),
    ("seed-float", _set("items.0.seed", 7.5), "items[0].seed", "valid integer"),
    ("frames-zero", _set("items.1.frames", 0), "items[1].frames", "greater than or equal to 1"),
    ("frames-over-max", _set("items.1.frames", 30_000), "items[1].frames", "max_frames (20000"),
    ("frames-and-duration", _set("items.1.duration", 2.0), "items[1].duration", "not both"),
    ("defaults-frames-and-duration", _set("defaults.frames", 96), "defaults.duration", "not both"),
    ("duration-not-whole", _set("items.0.duration", 1.01), "items[0].duration", "whole number of frames (got 24.24)"),
    ("size-odd", _set("items.0.size", [255, 256]), "items[0].size[0]", "multiple of 2"),
    ("size-small", _set("items.0.size", [256, 8]), "items[0].size[1]", "greater than or equal to 16"),
    ("size-over-max", _set("items.0.size", [8192, 256]), "items[0].size", "max_side (4096"),
    ("size-three", _set("items.0.size", [256, 256, 256]), "items[0].size", "at most 2"),
    ("window-overlap", _set("items.0.window", {"length": 16, "overlap": 16}), "items[0].window.overlap", "overlap must be < length (16), got 16"),
    ("window-overlap-merged", _set("items.0.window", {"length": 4}), "items[0].window.overlap", "overlap must be < length (4), got 4"),
    ("window-length-big", _set("items.0.window", {"length": 2048}), "items[0].window.length", "1024"),
    ("window-weighting", _set("items.0.window", {"weighting": "hann"}), "items[0].window.weighting", "'flat'"),
    ("window-not-mapping", _set("items.0.window", [16, 4]), "items[0].window", "expected a mapping"),
    ("window-mode-backend", _set("items.0.window", {"mode": "codenoise"}), "items[0].window.mode", "backend 'motion' supports: independent"),
    ("backend-unknown", _set("items.0.backend", "sora"), "items[0].backend", "'motion'"),
    ("loop-start-unknown", _set("items.0.loop_start", "middle"), "items[0].loop_start", "'smoothest'"),
    ("upscale-not-whole", _set("items.0.upscale", {"factor": 1.3}), "items[0].upscale.factor", "whole number of pixels"),
    ("upscale-odd", _all(_set("items.0.size", [258, 258]), _set("items.0.upscale", {"factor": 1.5})), "items[0].upscale.factor", "387 is odd"),
    ("upscale-even-control", _all(_set("items.0.size", [258, 256]), _set("items.0.upscale", {"factor": 3})), "", None),
    ("upscale-too-big", _set("items.0.upscale", {"factor": 9}), "items[0].upscale.factor", "less than or equal to 8"),
    ("upscale-over-max-output", _set("items.0.size", [4098, 256]), "items[0].upscale.factor", "max_output_side"),
    ("formats-empty", _set("items.0.formats", []), "items[0].formats", "at least 1"),
    ("formats-repeated", _set("items.0.formats", ["mp4", "mp4"]), "items[0].formats", "each value once"),
    ("aspects-repeated", _set("items.0.aspects", ["9:16", "9:16"]), "items[0].aspects", "each value once, got ['9:16', '9:16'] (9:16 repeated)"),
    ("formats-unknown", _set("items.0.formats", ["mov"]), "items[0].formats[0]", "'mp4', 'webm', 'gif' or 'poster'"),
    ("aspects-bad", _set("items.0.aspects", ["native", "16x9"]), "items[0].aspects[1]", "'W:H'"),
    ("aspects-zero", _set("items.0.aspects", ["0:1"]), "items[0].aspects[0]", "1 to 99"),
    ("aspects-too-thin", _set("items.0.aspects", ["native", "1:40"]), "items[0].aspects", "aspects[1]: 1:40 cut from"),
    ("aspects-repeated", _set("items.0.aspects", ["1:1", "1:1"]), "items[0].aspects", "once"),
    ("gpus-word", _set("items.0.gpus", "lots"), "items[0].gpus", "'auto' or a number"),
    ("gpus-too-many", _set("items.0.gpus", 16), "items[0].gpus", "0 to 8"),
    ("background-name", _set("items.0.background", "red"), "items[0].background", "pattern"),
    ("fit-unknown", _set("items.0.fit", "crop"), "items[0].fit", "'cover'"),
    ("prompt-too-long", _set("items.0.prompt", "x" * 2001), "items[0].prompt", "at most 2000"),
    ("prompt-number", _set("items.0.prompt", 42), "items[0].prompt", "valid string"),
    ("loop-quoted", _set("items.0.loop", "yes"), "items[0].loop", "valid boolean"),
    ("motion-pan", _set("items.0.motion", {"pan": [0.0, 0.9]}), "items[0].motion.pan[1]", "0.5"),
    ("motion-typo", _set("items.0.motion", {"ampltude": 0.1}), "items[0].motion.ampltude", "did you mean 'amplitude'?"),
    ("loop-max-hz", _set("items.1.motion", {"max_hz": 0.4}), "items[1].motion.max_hz", "1/duration = 0.5 Hz"),
    ("no-image", _delete("items.0.image"), "items[0].image", "backend 'motion' animates a still image; set image: PATH"),
    ("image-null", _set("items.0.image", None), "items[0].image", "set image: PATH"),
    ("image-missing-file", _set("items.0.image", "images/nope.png"), "items[0].image", "file not found"),
    ("image-escapes", _set("items.0.image", "../images/mug-blue.png"), "items[0].image", "escapes the manifest folder"),
    ("image-absolute", _set("items.0.image", "/etc/hostname"), "items[0].image", "escapes the manifest folder"),
    ("image-directory", _set("items.0.image", "images"), "items[0].image", "not a regular file"),
    ("image-nul", _set("items.0.image", "images/a\x00.png"), "items[0].image", "NUL"),
    ("image-empty", _set("items.0.image", ""), "items[0].image", "at least 1"),
    ("mask-missing", _set("items.1.mask", "images/none.png"), "items[1].mask", "file not found"),
    ("defaults-image-missing", _set("defaults.image", "images/gone.png"), "defaults.image", "file not found"),
    ("id-missing", _delete("items.0.id"), "items[0].id", "required"),
    ("id-duplicate", _set("items.1.id", "mug-blue"), "items[1].id", "duplicate id 'mug-blue': also used by items[0]"),
    ("id-case-collision", _set("items.1.id", "MUG-Blue"), "items[1].id", "only in letter case"),
    ("items-not-list", _set("items", {"id": "a"}), "items", "valid list"),
    ("item-not-mapping", _set("items.0", "mug-blue"), "items[0]", "expected a mapping"),
    ("no-items", _set("items", []), "items", "no items"),
    ("non-string-key", _set("defaults.1", "x"), "defaults[1]", "keys must be strings"),
    ("odd-key", _set("defaults.window.length]", 8), "defaults.window['length]']", "unknown field"),
    ("bracket-key", _set("items[7", 8), "['items[7']", "unknown field"),
    ("dotted-column-typo", _set("catalog", {"path": "catalog.parquet", "columns": {"id": "sku", "window.lenght": "seed"}}), "catalog.columns['window.lenght']", "not a key of window; did you mean 'window.length'?"),
    ("dotted-column-missing", _set("catalog", {"path": "catalog.parquet", "columns": {"id": "sku", "window.length": "w"}}), "catalog.columns['window.length']", "column 'w' is not in catalog.parquet"),
    ("catalog-formats-field", _set("catalog", {"path": "catalog.parquet", "columns": {"id": "sku", "formats": "caption"}}), "catalog.columns.formats", "not a per-row field"),
    ("catalog-filter-syntax", _set("catalog", {"path": "catalog.parquet", "columns": {"id": "sku"}, "filter": "seed >"}), "catalog.filter", "syntax error at character 6: '>' needs a value on each side"),
    ("catalog-filter-unknown-column", _set("catalog", {"path": "catalog.parquet", "columns": {"id": "sku"}, "filter": "sede > 1"}), "catalog.filter", "unknown column 'sede'; did you mean 'seed'? catalog.parquet has: 'sku', 'caption', 'seed', 'image'"),
    ("catalog-filter-type", _set("catalog", {"path": "catalog.parquet", "columns": {"id": "sku"}, "filter": "seed > '1'"}), "catalog.filter", "column 'seed' holds numbers (int64), compared with text ('1')"),
    ("catalog-filter-empty", _set("catalog", {"path": "catalog.parquet", "columns": {"id": "sku"}, "filter": ""}), "catalog.filter", "at least 1 character"),
    ("catalog-filter-number", _set("catalog", {"path": "catalog.parquet", "columns": {"id": "sku"}, "filter": 3}), "catalog.filter", "valid string"),
    ("duration-too-short", _set("items.0.duration", 1e-9), "items[0].duration", "at least 1 frame"),
    ("duration-overflows", _set("items.0.duration", 1e308), "items[0].duration", "not a number of frames (got inf)"),
    ("gpus-bool", _set("items.0.gpus", True), "items[0].gpus", "'auto' or a number"),
    ("catalog-no-id", _set("catalog", {"path": "catalog.parquet", "columns": {"prompt": "caption"}}), "catalog.columns.id", "required"),
    ("catalog-unknown-field", _set("catalog", {"path": "catalog.parquet", "columns": {"id": "sku", "promt": "caption"}}), "catalog.columns.promt", "did you mean 'prompt'?"),
    ("catalog-nested-field", _set("catalog", {"path": "catalog.parquet", "columns": {"id": "sku", "window": "w"}}), "catalog.columns.window", "is a section: map each of its keys with a dotted name, e.g. 'window.length'"),
    ("catalog-extension", _set("catalog", {"path": "catalog.xlsx", "columns": {"id": "sku"}}), "catalog.path", ".parquet or .csv"),
    ("catalog-file-missing", _set("catalog", {"path": "missing.parquet", "columns": {"id": "sku"}}), "catalog.path", "file not found"),
    ("catalog-escapes", _set("catalog", {"path": "../catalog.parquet", "columns": {"id": "sku"}}), "catalog.path", "escapes"),
    ("catalog-missing-column", _set("catalog", {"path": "catalog.parquet", "columns": {"id": "sku", "prompt": "text"}}), "catalog.columns.prompt", "available: 'sku', 'caption', 'seed', 'image'"),
    ("catalog-column-typo", _set("catalog", {"path": "catalog.parquet", "columns": {"id": "sku", "prompt": "captoin"}}), "catalog.columns.prompt", "column 'captoin' is not in catalog.parquet; did you mean 'caption'? available: 'sku'"),
    ("catalog-not-parquet", _set("catalog", {"path": "garbage.parquet", "columns": {"id": "sku"}}), "catalog.path", "cannot read"),
]
# cases whose mutation alone is valid are marked with a None message: they check no false positive
VALID_CONTROLS = {case for case, _, _, fragment in MALFORMED if fragment is None}


@pytest.fixture
def catalog_project(project: Any) -> Any:
    project.parquet(
        {
            "sku": ["sku-1", "sku-2"],
            "caption": ["one", "two"],
            "seed": [1, 2],
            "image": ["images/mug-blue.png", "images/mug-red.png"],
        }
    )
    (project.root / "garbage.parquet").write_bytes(b"PAR1 this is not parquet at all")
    return project


@pytest.mark.parametrize(("case", "mutate", "location", "fragment"), MALFORMED, ids=[case[0] for case in MALFORMED])
def test_malformed_manifest_is_located(
    catalog_project: Any, base: dict[str, Any], case: str, mutate: Mutation, location: str, fragment: str | None
) -> None:
    mutate(base)
    path = catalog_project.write(base)
    if case in VALID_CONTROLS:
        assert isinstance(load_manifest(path), Job)
        return
    problems = _problems(path)
    assert location in [loc for loc, _ in problems], problems
    message = next(message for loc, message in problems if loc == location)
    assert fragment in message


@pytest.mark.parametrize(
    "bad_id",
    ["..", "a..b", "a\n", "a/b", "a\\b", "a\x00b", "C:foo", "/abs", "trailing.", ".hidden", "-dash", "", "a b", "é", "con", "NUL.txt", "x" * 129],
)
def test_unsafe_ids_are_rejected(project: Any, base: dict[str, Any], bad_id: str) -> None:
    base["items"][0]["id"] = bad_id
    problems = _problems(project.write(base))
    assert ("items[0].id" in [loc for loc, _ in problems]), problems


def test_problems_carry_item_ids_and_all_items_are_checked(project: Any, base: dict[str, Any]) -> None:
    base["items"][0]["window"] = {"length": 4}  # merged rule error
    base["items"][1]["seed"] = "seven"  # type error
    base["items"].append({"id": "third", "image": "images/none.png", "window": {"mode": "outpaint"}})
    with pytest.raises(ManifestError) as caught:
        load_manifest(project.write(base))
    assert [(p.location, p.item_id) for p in caught.value.problems] == [
        ("items[0].window.overlap", "mug-blue"),
        ("items[1].seed", "mug-red"),
        ("items[2].image", "third"),
        ("items[2].window.mode", "third"),
    ]
    assert "items[0].window.overlap (item 'mug-blue'): overlap must be < length (4), got 4" in str(caught.value)


def test_defaults_problems_are_reported_once(project: Any, base: dict[str, Any]) -> None:
    base["defaults"]["image"] = "images/gone.png"
    base["items"] = [{"id": f"item-{n}"} for n in range(5)]
    assert [loc for loc, _ in _problems(project.write(base))] == ["defaults.image"]


def test_catalog_row_problems(project: Any, base: dict[str, Any]) -> None:
    (project.root / "catalog.csv").write_text(
        "sku,image,seed\n"
        "sku-1,images/mug-blue.png,abc\n"  # row 1: seed not an integer
        ",images/mug-blue.png,1\n"  # row 2: null id
        "mug-blue,images/mug-blue.png,2\n"  # row 3: same id as items[0]
        "SKU-1,images/nope.png,3\n"  # row 4: case collision with row 1, missing image
        "bad/id,images/mug-blue.png,4\n",  # row 5: unsafe id
        encoding="utf-8",
    )
    base["catalog"] = {"path": "catalog.csv", "columns": {"id": "sku", "image": "image", "seed": "seed"}}
    problems = _problems(project.write(base))
    assert [loc for loc, _ in problems] == [
        "catalog row 1 (item 'sku-1').seed",
        "catalog row 2.id",
        "catalog row 3 (item 'mug-blue').id",
        "catalog row 4 (item 'SKU-1').image",
        "catalog row 4 (item 'SKU-1').id",
        "catalog row 5.id",
    ]
    messages = dict(problems)
    assert "also used by items[0]" in messages["catalog row 3 (item 'mug-blue').id"]
    assert "'sku-1' (catalog row 1 (item 'sku-1'))" in messages["catalog row 4 (item 'SKU-1').id"]


def test_catalog_parquet_wrong_cell_type(project: Any, base: dict[str, Any]) -> None:
    project.parquet({"sku": ["a-1", "a-2"], "seed": ["3", "abc"], "fps": [24.0, float("nan")]})
    base["catalog"] = {"path": "catalog.parquet", "columns": {"id": "sku", "seed": "seed", "fps": "fps"}}
    base["defaults"]["image"] = "images/mug-blue.png"
    assert [loc for loc, _ in _problems(project.write(base))] == [
        "catalog row 2 (item 'a-2').seed",
        "catalog row 2 (item 'a-2').fps",
    ]


def test_catalog_id_column_must_be_text(project: Any, base: dict[str, Any]) -> None:
    project.parquet({"sku": [123, 124]})  # integer ids would lose leading zeros: refuse, don't convert
    base["catalog"] = {"path": "catalog.parquet", "columns": {"id": "sku"}}
    problems = _problems(project.write(base))
    assert problems == [("catalog.columns.id", "column 'sku' holds int64; ids must be text (a string column)")]


def test_empty_catalog_and_no_items(project: Any, base: dict[str, Any]) -> None:
    import pyarrow as pa

    project.parquet({"sku": pa.array([], pa.string()), "seed": pa.array([], pa.int64())})
    base["items"] = []
    base["catalog"] = {"path": "catalog.parquet", "columns": {"id": "sku"}}
    assert [loc for loc, _ in _problems(project.write(base))] == ["catalog.path"]


def test_symlink_escaping_the_folder(project: Any, base: dict[str, Any], tmp_path: Path) -> None:
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"not yours")
    os.symlink(secret, project.root / "images" / "link.png")
    os.symlink(tmp_path, project.root / "up")
    base["items"][0]["image"] = "images/link.png"
    base["items"][1]["image"] = "up/secret.png"
    problems = _problems(project.write(base))
    assert [loc for loc, _ in problems] == ["items[0].image", "items[1].image"]
    assert all("escapes the manifest folder" in message for _, message in problems)


def test_symlink_inside_the_folder_is_fine(project: Any, base: dict[str, Any]) -> None:
    os.symlink(project.root / "images" / "mug-blue.png", project.root / "images" / "alias.png")
    base["items"][0]["image"] = "images/alias.png"
    job = load_manifest(project.write(base))
    assert job.items[0].image == project.root.resolve() / "images" / "mug-blue.png"


def test_output_that_is_an_existing_file(project: Any, base: dict[str, Any], tmp_path: Path) -> None:
    (project.root / "out").mkdir()
    (project.root / "out" / "spring-catalog").write_text("a file")
    path = project.write(base)
    assert [loc for loc, _ in _problems(path)] == ["output"]

    other = tmp_path / "a-file"
    other.write_text("x")
    assert [loc for loc, _ in _problems(path, output=other)] == ["output"]
    assert load_manifest(path, output=tmp_path / "new-dir").output == (tmp_path / "new-dir").resolve()


# --- file-level problems ------------------------------------------------------------------
def _file_problem(path: Path, fragment: str) -> None:
    problems = _problems(path)
    assert [loc for loc, _ in problems] == [""], problems
    assert fragment in problems[0][1], problems


def test_missing_file(tmp_path: Path) -> None:
    _file_problem(tmp_path / "nope.yaml", "not found")


def test_directory_instead_of_file(tmp_path: Path) -> None:
    _file_problem(tmp_path, "not a regular file")


def test_unreadable_file(project: Any, base: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    # chmod 0 does not stop root (CI runs as root), so the OS refusal is simulated at open()
    path = project.write(base)
    real_open = open

    def refusing_open(file, *args, **kwargs):
        if Path(file) == path:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", refusing_open)
    _file_problem(path, "cannot read")


def test_not_utf8(project: Any) -> None:
    _file_problem(project.write("name: caf\xe9\n".encode("latin-1")), "not UTF-8")


def test_binary_garbage(project: Any) -> None:
    garbage = bytes(range(256)) * 8 + os.urandom(4096)
    _file_problem(project.write(garbage), "not UTF-8")
    _file_problem(project.write(b"version: 1\x00\x01\x02"), "not YAML text")


def test_yaml_syntax_error_gives_line_and_column(project: Any) -> None:
    _file_problem(project.write("version: 1\nname: x\nitems: [a, b\n"), "invalid YAML at line 4, column 1")
    _file_problem(project.write("version: 1\n  name: x\n"), "line 2, column 7")


@pytest.mark.parametrize(("text", "fragment"), [("", "empty document"), ("- a\n- b\n", "got list ['a', 'b']"), ("42\n", "got int 42")])
def test_document_that_is_not_a_mapping(project: Any, text: str, fragment: str) -> None:
    _file_problem(project.write(text), fragment)


def test_duplicate_keys_are_rejected(project: Any) -> None:
    _file_problem(project.write("version: 1\nname: a\nname: b\n"), "duplicate key 'name'")


def test_multiple_documents_are_rejected(project: Any) -> None:
    _file_problem(project.write("version: 1\n---\nversion: 1\n"), "invalid YAML")


def test_billion_laughs_is_rejected_fast(project: Any) -> None:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{n}: &a{n} [" + ",".join([f"*a{n - 1}"] * 9) + "]" for n in range(1, 10)]
    path = project.write("version: 1\nname: x\noutput: out\ndefaults:\n  prompt: *a9\n" + "\n".join(lines) + "\n")
    started = time.perf_counter()
    _file_problem(path, "YAML anchors/aliases are not allowed in manifests")
    assert time.perf_counter() - started < 1.0


def test_a_lone_anchor_is_rejected_too(project: Any) -> None:
    _file_problem(project.write("version: 1\nname: &n x\n"), "anchors/aliases")


@pytest.mark.parametrize("style", ["flow", "block"])
def test_very_deep_nesting_is_rejected(project: Any, style: str) -> None:
    depth = 20_000
    if style == "flow":
        text = "version: 1\ndefaults: " + "[" * depth + "]" * depth + "\n"
    else:
        text = "version: 1\n" + "".join(f"{' ' * n}k:\n" for n in range(2000)) + " " * 2000 + "v\n"
    started = time.perf_counter()
    _file_problem(project.write(text), "nesting deeper than 64 levels")
    assert time.perf_counter() - started < 2.0


def test_twenty_level_nested_junk(project: Any, base: dict[str, Any]) -> None:
    junk: Any = "deep"
    for level in range(20):  # 20 levels of alternating mappings and lists, with scalars beside
        junk = {f"k{level}": junk, "n": level, "s": "ü" * level} if level % 2 else [1.5, None, junk, True]
    base["defaults"]["window"] = junk
    base["items"][0]["motion"] = {"junk": junk}
    problems = _problems(project.write(base))
    assert [loc for loc, _ in problems] == [
        "defaults.window.k19",  # the junk's top level is a mapping: its keys are unknown window fields
        "defaults.window.n",
        "defaults.window.s",
        "items[0].motion.junk",
    ]
    assert all(len(message) < 300 for _, message in problems)  # inputs are shown abbreviated


def test_bad_environment_settings_become_a_manifest_error(
    project: Any, base: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FRAMEFOLD_MAX_FRAMES", "lots")
    assert [loc for loc, _ in _problems(project.write(base))] == ["settings.max_frames"]


# --- never writes -------------------------------------------------------------------------
def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(path.relative_to(root)): (path.lstat().st_size, path.lstat().st_mtime_ns)
        for path in sorted(root.rglob("*"))
    }


def test_load_manifest_never_writes(catalog_project: Any, base: dict[str, Any], tmp_path: Path) -> None:
    base["catalog"] = {"path": "catalog.parquet", "columns": {"id": "sku", "prompt": "caption", "image": "image"}}
    good = catalog_project.write(base, "good.yaml")
    base["items"][0]["window"] = {"length": 2}
    bad = catalog_project.write(base, "bad.yaml")
    before = _snapshot(tmp_path)

    job = load_manifest(good)
    assert len(job.items) == 4 and not job.output.exists()
    with pytest.raises(ManifestError):
        load_manifest(bad)
    load_manifest(good, output=tmp_path / "override")

    assert _snapshot(tmp_path) == before


def test_looping_motion_needs_enough_frequencies(project: Any, base: dict[str, Any]) -> None:
    from manifests import ManifestError, load_manifest

    doc = copy.deepcopy(base)
    doc["defaults"].update({"loop": True, "fps": 24, "frames": 24, "motion": {"modes": 4, "max_hz": 3.0}})
    doc["defaults"].pop("duration", None)
    with pytest.raises(ManifestError) as info:
        load_manifest(project.write(doc))
    # items[1] sets frames: 48 (2 s, six frequencies <= 3 Hz) and is fine; items[0] inherits the
    # defaults as they are, so the problem is where it is written: in defaults
    assert [p.location for p in info.value.problems] == ["defaults.motion.modes"]
    assert "lower motion.modes to 3" in str(info.value)


@pytest.mark.parametrize(("length", "fps", "modes"), [(1, 24, 4), (4, 24, 1), (2, 8, 2), (30, 24, 4), (5, 6, 3),
                                                     (0.5, 24, 3), (1.0, 8, 4)])  # fmt: skip
def test_a_loop_too_short_for_its_motion_gets_fixes_that_each_work(project: Any, base: dict[str, Any], length, fps,
                                                                   modes):  # fmt: skip
    """Each fix the message offers (fewer modes; max_hz up to 12 Hz and half the frame rate;
    more frames; with frames set, a lower fps), applied alone, makes the item valid. A float
    ``length`` is a duration in seconds, an int a number of frames."""
    import re

    timing = {"duration": length} if isinstance(length, float) else {"frames": length}
    item = {"id": "short", "image": base["items"][0]["image"], "loop": True, "fps": fps, **timing,
            "motion": {"modes": modes}}  # fmt: skip
    base["items"] = [item]
    ((where, message),) = _problems(project.write(base))
    frames = round(length * fps) if "duration" in timing else length
    available = int(3.0 * frames / fps)  # looping frequencies up to the default max_hz, 3 Hz
    fixes = message.split("; ", 1)[1].split(", or ")
    raising = modes * fps / frames <= min(12, fps / 2)
    assert raising == any(f.startswith("raise motion.max_hz") for f in fixes), fixes
    assert where == ("items[0].motion.max_hz" if raising and not available else "items[0].motion.modes"), message
    assert bool(available) == any(f.startswith("lower motion.modes") for f in fixes), fixes
    for fix in fixes:
        fixed = {**item, "motion": {"modes": modes}}
        number = float(re.search(r"(?:>=|<=|least|to) ([0-9.]+)", fix).group(1))
        if fix.startswith("lower motion.modes"):
            fixed["motion"] = {"modes": int(number)}
        elif fix.startswith("raise motion.max_hz"):
            fixed["motion"] = {"modes": modes, "max_hz": number}
        elif fix.startswith("make the clip"):
            fixed.pop("duration", None)
            fixed["frames"] = int(number)
        else:
            assert fix.startswith("with frames: set, lower fps"), fix
            if "duration" in timing:
                continue  # it says what it needs: frames, not a duration
            fixed["fps"] = number
        load_manifest(project.write({**base, "items": [fixed]}))  # valid: no ManifestError


def test_only_a_store_that_did_not_answer_is_not_bad_input() -> None:
    """A manifest whose every problem is a store that did not answer through its retries is not
    known to be bad (the CLI exits 1: run again); one real problem beside it makes it bad input."""
    from manifests import locations
    from manifests.problems import Problem

    def refused() -> bytes:
        raise ConnectionRefusedError(111, "Connection refused")

    with pytest.raises(locations.StoreError, match=r"connection refused \(after 2 attempts; ") as caught:
        locations.retrying("read", "s3://b/job.yaml", refused, policy=locations.RetryPolicy(attempts=2, backoff=0),
                           sleep=lambda _: None)
    assert caught.value.unreachable
    down = Problem("", f"cannot read manifest s3://b/job.yaml: {caught.value}")
    assert ManifestError("s3://b/job.yaml", [down]).store_unreachable
    assert not ManifestError("s3://b/job.yaml", [down, Problem("defaults.fps", "must be greater than 0")]).store_unreachable
    with pytest.raises(locations.StoreError, match="bad key") as caught:  # not retried: refused at once, and not "unreachable"
        locations.retrying("read", "s3://b/job.yaml", lambda: (_ for _ in ()).throw(ValueError("bad key")), sleep=lambda _: None)
    assert not caught.value.unreachable
