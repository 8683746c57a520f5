"""Property: whatever junk is injected into a valid manifest, load_manifest returns a Job or
raises ManifestError, never any other exception."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from manifests import Job, ManifestError, load_manifest

FIELD_NAMES = [
    "version", "name", "output", "defaults", "items", "catalog", "id", "image", "mask", "prompt", "backend",
    "seed", "fps", "frames", "duration", "size", "loop", "window", "length", "overlap", "mode", "upscale",
    "factor", "formats", "motion", "max_hz", "pan", "gpus", "fit", "background", "path", "columns",
]  # fmt: skip
TRICKY_STRINGS = [
    "auto", "mp4", "motion", "cosine", "codenoise", "images/mug-blue.png", "../outside.png", "/etc/passwd",
    "images", "", ".", "..", "catalog.parquet", "catalog.csv", "x\x00y", "C:foo", "#ffffff", "ünïcødé-☃",
    "1e309", "NaN", "MUG-BLUE", "mug-blue", "sku-1", "*alias", "&anchor",
]  # fmt: skip

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(st.characters(exclude_categories=("Cs",)), max_size=24),
    st.sampled_from(TRICKY_STRINGS),
)
keys = st.one_of(st.sampled_from(FIELD_NAMES), st.text(max_size=8), st.integers(-3, 3), st.booleans())
junk = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(keys, children, max_size=4),
    ),
    max_leaves=24,
)


class _NoAliasDumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


@pytest.fixture(scope="module")
def fuzz_project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """A manifest folder with images and a catalog, and a valid manifest for it (inline + catalog)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path_factory.mktemp("fuzz") / "job"
    (root / "images").mkdir(parents=True)
    for name in ("mug-blue.png", "mask.png"):
        (root / "images" / name).write_bytes(b"\x89PNG\r\n\x1a\n")
    pq.write_table(pa.table({"sku": ["sku-1", "sku-2"], "caption": ["a", None]}), root / "catalog.parquet")
    (root / "catalog.csv").write_text("sku,caption\nsku-3,c\n", encoding="utf-8")
    manifest = {
        "version": 1,
        "name": "fuzz",
        "output": "out",
        "defaults": {"image": "images/mug-blue.png", "fps": 24, "duration": 2.0, "window": {"length": 8, "overlap": 2}},
        "items": [
            {"id": "mug-blue", "prompt": "steam", "mask": "images/mask.png", "motion": {"zoom": 0.1}},
            {"id": "mug-red", "frames": 48, "upscale": {"factor": 2}},
        ],
        "catalog": {"path": "catalog.parquet", "columns": {"id": "sku", "prompt": "caption"}},
    }
    assert isinstance(load_manifest(_write(root, manifest)), Job)
    return root, manifest


def _write(root: Path, manifest: Any) -> Path:
    path = root / "manifest.yaml"
    path.write_text(yaml.dump(manifest, Dumper=_NoAliasDumper, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def _mutate_structure(data: st.DataObject, manifest: dict[str, Any]) -> dict[str, Any]:
    """Walk into the manifest at random, then replace, add or delete something there."""
    manifest = copy.deepcopy(manifest)
    node: Any = manifest
    while True:
        children = list(node.keys()) if isinstance(node, dict) else list(range(len(node)))
        if not children:
            break
        key = data.draw(st.sampled_from(children))
        if not isinstance(node[key], (dict, list)) or not data.draw(st.booleans()):
            break
        node = node[key]
    action = data.draw(st.sampled_from(["replace", "add", "delete"]))
    if action == "add" or not children:
        if isinstance(node, dict):
            node[data.draw(keys)] = data.draw(junk)
        else:
            node.append(data.draw(junk))
    elif action == "replace":
        node[key] = data.draw(junk)
    else:
        del node[key]
    return manifest


def _mutate_text(data: st.DataObject, text: str) -> bytes:
    """Splice random text or bytes into the YAML."""
    raw = text.encode("utf-8")
    start = data.draw(st.integers(0, len(raw)))
    end = data.draw(st.integers(start, min(len(raw), start + 16)))
    insert = data.draw(st.one_of(st.binary(max_size=16), st.text(max_size=16).map(lambda s: s.encode("utf-8", "surrogatepass"))))
    return raw[:start] + insert + raw[end:]


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_junk_gives_a_job_or_a_manifest_error(fuzz_project: tuple[Path, dict[str, Any]], data: st.DataObject) -> None:
    root, manifest = fuzz_project
    mutated = _mutate_structure(data, manifest)
    for _ in range(data.draw(st.integers(0, 2))):  # sometimes several mutations
        mutated = _mutate_structure(data, mutated)
    path = _write(root, mutated)
    if data.draw(st.integers(0, 3)) == 0:
        path.write_bytes(_mutate_text(data, path.read_text(encoding="utf-8")))

    try:
        job = load_manifest(path)
    except ManifestError as error:
        assert error.problems and all(isinstance(p.location, str) and p.message for p in error.problems)
        assert str(error)
    else:
        assert isinstance(job, Job) and job.items
