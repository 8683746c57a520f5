"""The manifests layer is pure schema and loading: it imports nothing from tasks/ (or any
other framefold layer), and validating a manifest loads no model library."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODEL_LIBRARIES = ("torch", "spandrel", "c2pa", "diffusers", "transformers", "ray", "prefect")
FRAMEFOLD_LAYERS = ("tasks", "flows", "kernels", "bench", "tests")


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import statement in `path`, relative ones resolved."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.lineno, "manifests" if node.level else node.module or ""))
    return found


def test_manifests_import_no_other_layer_and_no_model_library() -> None:
    files = sorted((ROOT / "manifests").glob("*.py"))
    assert len(files) > 5
    bad = [
        f"{path.name}:{line}: {module}"
        for path in files
        for line, module in _imports(path)
        if module.split(".")[0] in (*FRAMEFOLD_LAYERS, *MODEL_LIBRARIES)
    ]
    assert bad == []


def test_the_walk_sees_a_forbidden_import(tmp_path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from tasks.superres import describe\n    import torch.nn\n")
    assert _imports(bad) == [(2, "tasks.superres"), (3, "torch.nn")]


@pytest.mark.timeout(120)
def test_validate_loads_no_model_library() -> None:
    """`framefold validate` on the demo: `python -X importtime` lists every module imported."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "flows.cli", "validate", "manifests/examples/demo.yaml"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=110,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "valid" in done.stdout
    imported = {
        line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")
    }
    assert "manifests.load" in imported  # the listing is real
    loaded = sorted(m for m in imported if m.split(".")[0] in ("torch", "spandrel", "c2pa"))
    assert loaded == []


def test_no_file_of_manifests_is_over_400_lines() -> None:
    lengths = {path.name: len(path.read_text().splitlines()) for path in (ROOT / "manifests").glob("*.py")}
    assert {name: n for name, n in lengths.items() if n > 400} == {}
