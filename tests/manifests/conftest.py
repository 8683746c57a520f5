"""Shared helpers for manifest tests: a project folder with tiny real images and a valid manifest."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

BASE_MANIFEST: dict[str, Any] = {
    "version": 1,
    "name": "spring-catalog",
    "output": "out/spring-catalog",
    "defaults": {
        "backend": "motion",
        "seed": 7,
        "fps": 24,
        "duration": 4.0,
        "size": [256, 256],
        "loop": True,
        "window": {"length": 16, "overlap": 4, "weighting": "cosine", "mode": "independent"},
        "upscale": {"factor": 2, "method": "lanczos"},
        "formats": ["mp4"],
    },
    "items": [
        {"id": "mug-blue", "image": "images/mug-blue.png", "prompt": "steam rising", "window": {"length": 24}},
        {"id": "mug-red", "image": "images/mug-red.png", "mask": "images/mask.png", "frames": 48},
    ],
}


@pytest.fixture
def base() -> dict[str, Any]:
    """A fresh deep copy of the valid manifest (inline items only), to mutate in a test."""
    return copy.deepcopy(BASE_MANIFEST)


def _tiny_png(path: Path, colour: tuple[int, int, int], mode: str = "RGB") -> None:
    try:
        from PIL import Image
    except ImportError:  # load_manifest only checks that the files exist
        path.write_bytes(b"\x89PNG\r\n\x1a\n")
        return
    Image.new(mode, (16, 16), colour if mode == "RGB" else colour[0]).save(path)


class _NoAliasDumper(yaml.SafeDumper):
    """Writes a repeated object in full each time (manifests may not contain aliases)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


class Project:
    """A manifest folder in tmp_path: images/, and helpers to write manifests and catalogs."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "images").mkdir(parents=True)
        _tiny_png(root / "images" / "mug-blue.png", (40, 60, 200))
        _tiny_png(root / "images" / "mug-red.png", (200, 40, 40))
        _tiny_png(root / "images" / "mask.png", (255, 255, 255), mode="L")

    def write(self, manifest: dict[str, Any] | str | bytes, name: str = "manifest.yaml") -> Path:
        path = self.root / name
        if isinstance(manifest, bytes):
            path.write_bytes(manifest)
        elif isinstance(manifest, str):
            path.write_text(manifest, encoding="utf-8")
        else:
            text = yaml.dump(manifest, Dumper=_NoAliasDumper, sort_keys=False, allow_unicode=True)
            path.write_text(text, encoding="utf-8")
        return path

    def parquet(self, columns: dict[str, list[Any]], name: str = "catalog.parquet") -> Path:
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = self.root / name
        pq.write_table(pa.table(columns), path)
        return path


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return Project(tmp_path / "job")


@pytest.fixture(autouse=True)
def _no_framefold_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests see framefold's default limits, whatever the developer's shell exports."""
    import os

    for name in list(os.environ):
        if name.startswith("FRAMEFOLD_") or name == "RAY_ADDRESS":
            monkeypatch.delenv(name)
