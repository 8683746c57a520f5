"""Malformed manifests through the command line: whatever the file holds, `framefold validate`
and `framefold run` exit 2 with a message (or 0 when the document happens to be valid), print
no traceback and create nothing.

Builds on tests/manifests/test_manifest_fuzz.py (which fuzzes ``load_manifest``): the same
structural mutations of a valid manifest, plus whole documents of junk: wrong types, missing
and extra keys, huge numbers, unicode, deep nesting, non-mapping YAML, alias bombs and binary
garbage — through ``flows.cli.main`` as a user would run them.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from flows.cli import main
from tests.manifests.test_manifest_fuzz import _mutate_structure, _mutate_text, _NoAliasDumper, junk

def _settings(n: int) -> settings:
    return settings(max_examples=n, deadline=None, database=None, suppress_health_check=list(HealthCheck))

BASE: dict[str, Any] = {
    "version": 1,
    "name": "fuzz",
    "output": "out",
    "defaults": {"image": "images/mug-blue.png", "fps": 8, "frames": 8, "size": [16, 16],
                 "window": {"length": 4, "overlap": 1}},
    "items": [
        {"id": "mug-blue", "prompt": "steam", "mask": "images/mask.png", "motion": {"zoom": 0.1}},
        {"id": "mug-red", "duration": 1.0, "upscale": {"factor": 2}},
    ],
    "catalog": {"path": "catalog.parquet", "columns": {"id": "sku", "prompt": "caption"}},
}

# Field paths of BASE and values of the wrong type, out of range or huge for them
PATHS = [
    ("version",), ("name",), ("output",), ("defaults",), ("items",), ("catalog",), ("defaults", "fps"),
    ("defaults", "frames"), ("defaults", "size"), ("defaults", "window"), ("defaults", "window", "length"),
    ("defaults", "window", "overlap"), ("defaults", "image"), ("items", 0), ("items", 0, "id"),
    ("items", 0, "mask"), ("items", 0, "motion", "zoom"), ("items", 1, "duration"), ("items", 1, "upscale", "factor"),
    ("catalog", "path"), ("catalog", "columns"), ("catalog", "columns", "id"),
]  # fmt: skip
HOSTILE_VALUES = st.one_of(
    st.sampled_from([
        10**400, -(10**400), 2**63, 2**64, -1, 0, 1e308, -1e308, 5e-324, float("inf"), float("nan"),
        "", " ", "24", "1e3", "0x10", "true", "null", "~", "[16, 16]", "..", "../x", "/etc/passwd", "C:evil",
        "a\x00b", "\u202egnp.exe", "e\u0301", "☃" * 300, "x" * 5000, [], {}, [[]], [16], [16, 16, 16], [-16, 16],
        [2**70, 16], {"length": {"length": {"length": 4}}}, True, False, None,
    ]),
    junk,
)  # fmt: skip


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A manifest folder with real tiny images and catalogs, for which BASE is valid."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path_factory.mktemp("cli-fuzz") / "job"
    (root / "images").mkdir(parents=True)
    for name in ("mug-blue.png", "mask.png"):
        Image.new("RGB", (16, 16), (90, 120, 200)).save(root / "images" / name)
    pq.write_table(pa.table({"sku": ["sku-1", "sku-2"], "caption": ["a", None]}), root / "catalog.parquet")
    (root / "catalog.csv").write_text("sku,caption\nsku-3,c\n", encoding="utf-8")
    path = root / "manifest.yaml"
    path.write_text(yaml.safe_dump(BASE, sort_keys=False))
    assert _cli(["validate", str(path)])[0] == 0
    return root


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _cli(argv: list[str]) -> tuple[int, str, str]:
    """``flows.cli.main`` in-process; any exception escaping it is a failure of the CLI."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:  # argparse
            code = e.code
    return code, out.getvalue(), err.getvalue()


def _check(root: Path, content: bytes, *, also_run: bool) -> None:
    path = root / "manifest.yaml"
    path.write_bytes(content)
    before = _tree(root)
    code, out, err = _cli(["validate", str(path)])  # any exception (a rich MarkupError too) fails the test
    assert code in (0, 2), (code, out, err)
    assert "Traceback" not in err and "Traceback" not in out
    if code == 2:
        assert "manifest.yaml" in err and err.strip(), err
    else:
        assert "valid" in out
    assert _tree(root) == before, "validate wrote something"
    if also_run and code == 2:  # a valid manifest would run for real: only bad ones go through `run`
        run_code, _, run_err = _cli(["run", str(path)])
        assert run_code == 2 and "Traceback" not in run_err
        assert run_err.count("\n") >= 1 and "manifest.yaml" in run_err
        assert _tree(root) == before, "run created files for an invalid manifest"


def _dump(document: Any) -> bytes:
    return yaml.dump(document, Dumper=_NoAliasDumper, allow_unicode=True, sort_keys=False).encode("utf-8", "surrogatepass")


def _set(document: dict, path: tuple, value: Any) -> dict:
    import copy

    document = copy.deepcopy(document)
    node = document
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return document


def _delete(document: dict, path: tuple) -> dict:
    import copy

    document = copy.deepcopy(document)
    node = document
    for part in path[:-1]:
        node = node[part]
    del node[path[-1]]
    return document


@_settings(260)
@given(data=st.data())
def test_structural_mutations_through_the_cli(project: Path, data: st.DataObject) -> None:
    """Random replace/add/delete anywhere (tests/manifests' mutator), sometimes spliced bytes."""
    mutated = _mutate_structure(data, BASE)
    for _ in range(data.draw(st.integers(0, 2))):
        mutated = _mutate_structure(data, mutated)
    content = _dump(mutated)
    if data.draw(st.integers(0, 3)) == 0:
        content = _mutate_text(data, content.decode("utf-8", "replace"))
    _check(project, content, also_run=data.draw(st.integers(0, 7)) == 0)


@_settings(160)
@given(path=st.sampled_from(PATHS), value=HOSTILE_VALUES, delete=st.booleans(), extra=st.booleans(),
       also_run=st.integers(0, 5))
def test_wrong_types_missing_extra_keys_and_huge_numbers(
    project: Path, path: tuple, value: Any, delete: bool, extra: bool, also_run: int
) -> None:
    document = _delete(BASE, path) if delete else _set(BASE, path, value)
    if extra:  # and an unknown key next to the field
        node = document
        for part in path[:-1]:
            node = node[part]
        if isinstance(node, dict):
            node[f"{path[-1]}_"] = value
    _check(project, _dump(document), also_run=also_run == 0)


def _alias_bomb(width: int, depth: int) -> bytes:
    lines = ["a0: &a0 [lol]"]
    for level in range(1, depth + 1):
        lines.append(f"a{level}: &a{level} [{', '.join([f'*a{level - 1}'] * width)}]")
    lines += ["version: 1", "name: bomb", "output: out", "items: *a%d" % depth]
    return "\n".join(lines).encode()


def _nested(kind: str, depth: int) -> bytes:
    if kind == "flow-list":
        return b"version: 1\nname: n\noutput: out\nitems: " + b"[" * depth + b"]" * depth + b"\n"
    if kind == "flow-map":
        return b"version: 1\nname: n\nitems: " + b"{a: " * depth + b"1" + b"}" * depth + b"\n"
    body = "".join(f"{'  ' * i}k{i}:\n" for i in range(depth)) + "  " * depth + "x\n"
    return ("version: 1\nname: n\noutput: out\ndefaults:\n" + "".join("  " + line + "\n" for line in body.splitlines())).encode()


documents = st.one_of(
    # non-mapping YAML: lists, scalars, an empty document, several documents
    junk.filter(lambda d: not isinstance(d, dict)).map(_dump),
    st.sampled_from([b"", b"---\n", b"--- 1\n--- 2\n", b"~\n", b"!!binary aGVsbG8=\n", b"!!python/object:os.system {}\n",
                     b"!!set {a, b}\n", b"? [a, b]\n: c\n", b"<<: {version: 1}\nname: m\n", b"\xef\xbb\xbfversion: 1\n",
                     b"version: 1\nversion: 1\n", b"%YAML 1.1\n---\nversion: 1\n", b"\t- tab\n", b"version: 1\r\nname: \x85\n"]),
    # alias bombs (billion laughs) and anchors
    st.builds(_alias_bomb, st.integers(2, 9), st.integers(1, 9)),
    # deeply nested junk
    st.builds(_nested, st.sampled_from(["flow-list", "flow-map", "block"]), st.integers(30, 3000)),
    # binary garbage, and garbage after a valid start
    st.binary(min_size=1, max_size=600),
    st.binary(max_size=200).map(lambda b: _dump(BASE)[:120] + b),
    # unicode anywhere: every key and value replaced by random text
    st.dictionaries(st.text(max_size=12), st.text(max_size=40), max_size=8).map(_dump),
    st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass")),
    # mappings with non-string keys and the right keys holding the wrong structure
    st.dictionaries(st.one_of(st.integers(), st.booleans(), st.none(), st.floats()), junk, min_size=1, max_size=4).map(_dump),
    st.fixed_dictionaries({"version": junk, "name": junk, "output": junk, "items": junk}).map(_dump),
)


@_settings(200)
@given(content=documents, also_run=st.integers(0, 5))
def test_whole_documents_of_junk(project: Path, content: bytes, also_run: int) -> None:
    _check(project, content, also_run=also_run == 0)


@pytest.mark.parametrize("content", [
    _alias_bomb(10, 12),  # 10**12 leaves if expanded
    b"items: " + b"[" * 100_000 + b"]" * 100_000,
    b"version: 1\nname: big\noutput: out\nitems: [" + b"{id: x}, " * 500_000 + b"]\n",  # > 4 MiB
    b"version: " + b"9" * 100_000 + b"\n",
    b"\x00" * 10_000,
], ids=["billion-laughs", "nested-100k", "over-4MiB", "100k-digit-number", "nul-bytes"])
def test_extreme_documents_are_refused_quickly(project: Path, content: bytes) -> None:
    import time

    t0 = time.perf_counter()
    _check(project, content, also_run=True)
    assert time.perf_counter() - t0 < 10


def test_a_markup_crash_is_reported_not_discarded(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A CLI that printed a path as rich markup would crash on 'out[/x]': the check fails on it."""
    from rich.errors import MarkupError

    def crash(argv: list[str]) -> int:
        raise MarkupError("closing tag '[/x]' at position 3 doesn't match any open tag")

    monkeypatch.setitem(globals(), "main", crash)
    with pytest.raises(MarkupError):
        _check(project, b"version: 1\nname: m\noutput: out[/x]\n", also_run=False)
