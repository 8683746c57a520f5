"""Roots from the CLI: local paths outside the manifest folder are read and written under
FRAMEFOLD_INPUT_ROOTS / FRAMEFOLD_OUTPUT_ROOTS; every escape (symlinks, '..', file:// to /etc,
store URL tricks, outputs outside the roots) exits 2 before any work, creating nothing and
sending no request to the store."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from flows.cli import main
from tests.conftest import draw_image


@pytest.fixture
def project(tmp_path: Path) -> Path:
    job = tmp_path / "job"
    draw_image(job / "a.png", (32, 32))
    draw_image(tmp_path / "stills" / "b.png", (32, 32), seed=1)
    os.symlink("/etc", tmp_path / "stills" / "etc-link")
    return job


def _write(job: Path, *, image: str = "a.png", output: str = "out", catalog: dict | None = None) -> Path:
    doc = {"version": 1, "name": "roots", "output": output,
           "defaults": {"frames": 4, "fps": 8, "size": [16, 16], "window": {"length": 4, "overlap": 0}},
           "items": [{"id": "a", "image": image}]}
    if catalog:
        doc["catalog"] = catalog
    path = job / "job.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_roots_allow_local_inputs_and_outputs_outside_the_manifest_folder(project, monkeypatch, capsys):
    stills, out = project.parent / "stills", project.parent / "deliveries"
    path = _write(project, image=str(stills / "b.png"), output=str(out / "spring"))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "items[0].image" in err and "FRAMEFOLD_INPUT_ROOTS" in err and "output" in err and "FRAMEFOLD_OUTPUT_ROOTS" in err
    monkeypatch.setenv("FRAMEFOLD_INPUT_ROOTS", f"{stills}, s3://assets/stills")
    monkeypatch.setenv("FRAMEFOLD_OUTPUT_ROOTS", f"file://{out}")
    assert main(["validate", str(path)]) == 0
    assert str(out / "spring") in capsys.readouterr().out.replace("\n", "")


ESCAPES = [
    ("image", "../../../../../../etc/passwd", "escapes the manifest folder"),
    ("image", "file:///etc/passwd", "escapes the manifest folder"),
    ("image", "file://localhost/etc/hostname", "escapes the manifest folder"),
    ("image", "STILLS/etc-link/hostname", "escapes the manifest folder"),  # a symlink out of a root
    ("image", "STILLS/../job/../../etc/passwd", "escapes the manifest folder"),
    ("image", "s3://assets/stills/../secrets/key.png", "'..' segments"),
    ("image", "s3://assets/stills/%2E%2E/secrets/key.png", "'..' segments"),
    ("image", "s3://assets/stills-private/key.png", "escapes the manifest folder"),
    ("image", "s3://AKIA:secret@assets/stills/a.png", "carries credentials"),
    ("output", "/tmp/framefold-out", "escapes the manifest folder"),
    ("output", "s3://assets/out", "FRAMEFOLD_OUTPUT_ROOTS"),
    ("output", "STILLS/../deliveries", "escapes the manifest folder"),
]


@pytest.mark.parametrize("field, raw, expect", ESCAPES, ids=[f"{f}={r}" for f, r, _ in ESCAPES])
def test_escapes_exit_2_before_any_work(project, monkeypatch, capsys, field, raw, expect):
    stills = project.parent / "stills"
    monkeypatch.setenv("FRAMEFOLD_INPUT_ROOTS", f"{stills},s3://assets/stills")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # any request to a store would fail, not hang
    raw = raw.replace("STILLS", str(stills))
    path = _write(project, **{field: raw})
    before = _tree(project.parent)
    for command in (["validate", str(path)], ["run", str(path)]):
        assert main(command) == 2, command
        err = capsys.readouterr().err
        location = "items[0].image" if field == "image" else "output"
        assert "job.yaml" in err and location in err and expect in err, err
        assert "Traceback" not in err and "AKIA:secret" not in err  # a URL's credentials are never printed
        assert _tree(project.parent) == before, f"{command[0]} created files"


def test_catalog_outside_the_roots_exits_2(project, capsys):
    path = _write(project, catalog={"path": "file:///etc/catalog.parquet", "columns": {"id": "sku"}})
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert "catalog.path" in err and "escapes the manifest folder" in err
