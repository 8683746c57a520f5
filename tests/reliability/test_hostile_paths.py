"""Hostile names and paths: unsafe item ids, inputs that leave the manifest folder (also through
symlinks), output roots that cannot be folders. `validate` and `run` exit 2 naming the file and
the field, print no traceback and create nothing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from flows.cli import main
from tests.conftest import draw_image


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """job/ (the manifest folder, with a.png) beside outside/ (a file the job must not reach)."""
    job = tmp_path / "job"
    draw_image(job / "a.png", (32, 32))
    draw_image(tmp_path / "outside" / "secret.png", (32, 32), seed=1)
    os.symlink(tmp_path / "outside" / "secret.png", job / "link.png")
    os.symlink(tmp_path / "outside", job / "linked-dir")
    os.symlink("loop.png", job / "loop.png")
    os.symlink(job / "a.png", job / "inside-link.png")  # a symlink that stays inside is fine
    (job / "a-file").write_text("not a folder\n")
    return job


def _doc(items: list[dict], **top) -> dict:
    return {"version": 1, "name": "paths", "output": "out",
            "defaults": {"frames": 4, "fps": 8, "size": [16, 16], "window": {"length": 4, "overlap": 0}},
            "items": items, **top}


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root.parent)) for p in root.parent.rglob("*")}


def _exit_2_everywhere(job: Path, doc: dict, field: str, capsys, *extra: str, expect: str | None = None) -> None:
    path = job / "job.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True))
    before = _tree(job)
    for command in (["validate", str(path)], ["run", str(path), *extra]):
        assert main(command) == 2, command
        err = capsys.readouterr().err
        assert "job.yaml" in err and field in err, err
        assert expect is None or expect in err, err
        assert "Traceback" not in err
        assert _tree(job) == before, f"{command[0]} created files"


UNSAFE_IDS = ["..", ".", "a/b", "../evil", "a\x00b", "/abs", "/etc/passwd", "C:evil", "c:\\evil", "a\\b", "CON",
              "nul.txt", ".hidden", "-flag", "x" * 129, "spa ce", "ünï", "a\nb", ""]  # fmt: skip


@pytest.mark.parametrize("item_id", UNSAFE_IDS, ids=[repr(i)[:20] for i in UNSAFE_IDS])
def test_unsafe_item_ids_exit_2(project, capsys, item_id):
    _exit_2_everywhere(project, _doc([{"id": item_id, "image": "a.png"}]), "items[0].id", capsys)


@pytest.mark.parametrize("other", ["MUG", "Mug", "mUg"])
def test_ids_differing_only_by_case_exit_2(project, capsys, other):
    doc = _doc([{"id": "mug", "image": "a.png"}, {"id": other, "image": "a.png"}])
    _exit_2_everywhere(project, doc, "items[1].id", capsys, expect="letter case")


@pytest.mark.parametrize(("image", "expect"), [
    ("link.png", "escapes the manifest folder"),  # a symlinked file leading outside
    ("linked-dir/secret.png", "escapes the manifest folder"),  # through a symlinked folder
    ("../outside/secret.png", "escapes the manifest folder"),
    ("/etc/passwd", "escapes the manifest folder"),
    ("C:evil.png", "not found"),
    ("loop.png", "Symlink loop"),
    ("a.png\x00.txt", "NUL"),
    (".", "not a regular file"),
])  # fmt: skip
def test_inputs_leaving_the_folder_or_unusable_exit_2(project, capsys, image, expect):
    for field in ("image", "mask"):
        item = {"id": "a", "image": "a.png", field: image}
        _exit_2_everywhere(project, _doc([item]), f"items[0].{field}", capsys, expect=expect)
    _exit_2_everywhere(project, _doc([{"id": "a"}], defaults={"image": image, "frames": 4}), "defaults.image",
                       capsys, expect=expect)


def test_a_symlink_staying_inside_is_accepted(project, capsys):
    path = project / "job.yaml"
    path.write_text(yaml.safe_dump(_doc([{"id": "a", "image": "inside-link.png"}])))
    assert main(["validate", str(path)]) == 0


@pytest.mark.parametrize(("output", "expect"), [
    ("a-file", "exists and is not a directory"),
    ("a-file/sub", "is a file, not a directory"),  # was accepted, then the run crashed with a traceback
    ("a-file/sub/deeper", "is a file, not a directory"),
    ("linked-dir/out", "escapes the manifest folder"),
    ("../elsewhere", "escapes the manifest folder"),
    ("/tmp", "escapes the manifest folder"),
])  # fmt: skip
def test_unusable_output_roots_exit_2(project, capsys, output, expect):
    doc = _doc([{"id": "a", "image": "a.png"}], output=output)
    _exit_2_everywhere(project, doc, "output", capsys, expect=expect)


@pytest.mark.parametrize("out", ["a-file", "a-file/sub"])
def test_out_override_onto_a_file_exits_2(project, capsys, out):
    path = project / "job.yaml"
    path.write_text(yaml.safe_dump(_doc([{"id": "a", "image": "a.png"}])))
    before = _tree(project)
    assert main(["run", str(path), "--out", str(project / out)]) == 2
    err = capsys.readouterr().err
    assert "output (override)" in err and "a-file" in err and "Traceback" not in err
    assert _tree(project) == before


def test_output_paths_with_markup_characters_are_printed_verbatim(project, capsys):
    for output in ("renders[final]", "out[/x]"):
        path = project / "job.yaml"
        path.write_text(yaml.safe_dump(_doc([{"id": "a", "image": "a.png"}], output=output)))
        assert main(["validate", str(path)]) == 0
        assert output.split("/")[-1] in capsys.readouterr().out.replace("\n", "")


def test_run_summary_prints_ids_reasons_and_outputs_verbatim(capsys):
    from flows.cli import _print_summary

    summary = {"job": "job[x]", "run_id": "r1", "seconds": 1.0, "output": "out[/x]",
               "counts": {"done": 1, "skipped": 0, "failed": 1},
               "items": [{"id": "a", "status": "done", "reason": "", "seconds": 1.0, "outputs": ["a[final].mp4"]},
                         {"id": "b", "status": "failed", "reason": "img/shot[/b].png: not an image", "seconds": 0.1,
                          "outputs": []}]}
    _print_summary(summary)
    printed = capsys.readouterr().out.replace("\n", "").replace("│", "").replace(" ", "")
    for text in ("job[x]", "a[final].mp4", "img/shot[/b].png", "out[/x]"):
        assert text in printed, text
