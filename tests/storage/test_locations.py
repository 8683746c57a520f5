"""Where a manifest may read and write: paths and URLs resolved against the manifest's folder
and the configured roots; nothing escapes (symlinks, '..', URL tricks, file:// elsewhere)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from manifests.locations import resolve, split_roots, within


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "job").mkdir()
    (tmp_path / "stills").mkdir()
    (tmp_path / "stills" / "a.png").write_bytes(b"x")
    os.symlink("/etc/passwd", tmp_path / "job" / "link.png")
    os.symlink(tmp_path / "stills", tmp_path / "job" / "linked")
    return tmp_path


def test_local_paths_inside_the_manifest_folder_or_a_root(tree):
    job, stills = tree / "job", tree / "stills"
    assert resolve("sub/x.png", job) == (job / "sub" / "x.png", None)
    assert resolve("../stills/a.png", job, [str(stills)]) == (stills / "a.png", None)
    assert resolve(str(stills / "a.png"), job, [str(stills)]) == (stills / "a.png", None)
    assert resolve(f"file://{stills}/a.png", job, [str(stills)]) == (stills / "a.png", None)
    assert resolve("linked/a.png", job, [f"file://{stills}"]) == (stills / "a.png", None)  # a symlink into a root


@pytest.mark.parametrize("raw", ["../stills/a.png", "link.png", "linked/a.png", "/etc/passwd", "file:///etc/passwd",
                                 "file://localhost/etc/passwd", "s3://bucket/a.png"])
def test_escapes_without_roots(tree, raw):
    found, message = resolve(raw, tree / "job")
    assert found is None and "escapes the manifest folder" in message and "FRAMEFOLD_INPUT_ROOTS" in message


@pytest.mark.parametrize("raw, why", [
    ("s3://bucket/in/../../other/a.png", "'.' or '..' segments"),
    ("s3://bucket/in/%2e%2e/a.png", "'.' or '..' segments"),
    ("s3://bucket/in/./a.png", "'.' or '..' segments"),
    ("s3://bucket/in//a.png", "empty or percent-encoded"),
    ("s3://key:secret@bucket/in/a.png", "carries credentials"),
    ("s3://bucket/in/a.png?versionId=1", "query or fragment"),
    ("s3://bucket/in\\..\\a.png", "backslash"),
    ("s3://bucket-evil/in/a.png", "escapes the manifest folder"),  # a bucket whose name extends the root's
    ("s3://bucket/inner/a.png", "escapes the manifest folder"),  # a prefix whose name extends the root's
    ("file://evil.example/etc/passwd", "not host"),
])
def test_url_tricks_are_refused(tree, raw, why):
    found, message = resolve(raw, tree / "job", ["s3://bucket/in"])
    assert found is None and why in message


def test_relative_to_a_manifest_in_a_store():
    assert resolve("stills/a.png", "s3://bucket/jobs") == ("s3://bucket/jobs/stills/a.png", None)
    assert resolve("s3://bucket/jobs/x/a.png", "s3://bucket/jobs") == ("s3://bucket/jobs/x/a.png", None)
    for raw in ("../stills/a.png", "/etc/passwd", "s3://bucket/stills/a.png", "gs://bucket/jobs/a.png"):
        assert resolve(raw, "s3://bucket/jobs")[0] is None, raw
    assert resolve("../stills/a.png", "s3://bucket/jobs", ["s3://bucket/stills"])[0] is None  # no '..' in keys
    assert resolve("s3://bucket/stills/a.png", "s3://bucket/jobs", ["s3://bucket/stills/"]) == (
        "s3://bucket/stills/a.png", None)


def test_within_and_roots_setting():
    assert within("s3://b/x/y", "s3://b") and within("s3://b/x", "s3://b/x/") and not within("s3://b/xy", "s3://b/x")
    assert not within(Path("/b/x"), "s3://b") and not within("s3://b/x", Path("/"))
    assert split_roots("s3://a/in, /data/stills ,") == ["s3://a/in", "/data/stills"]
    assert split_roots('["/x", "gs://b"]') == ["/x", "gs://b"] and split_roots("") == []
