"""report.html in a real headless browser (the system's Chromium, driven by Playwright):
opened from the output folder as a file (no server), it loads without console errors, shows
every item as a card with the failure first, its previews play, its relative links point at
files that exist, and the filter box narrows the cards. The test saves a screenshot."""

from __future__ import annotations

import json

import shutil
from pathlib import Path
from urllib.parse import unquote

import pytest
import yaml

from flows.cli import main
from tasks.report import REPORT

CHROMIUM = Path("/usr/bin/chromium")
# Launch flags for a closed network, as root in a container (see ENVIRONMENT.md).
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = [
    pytest.mark.usefixtures("ray_cluster", "prefect_server"),
    pytest.mark.skipif(not CHROMIUM.is_file(), reason="needs /usr/bin/chromium (`make test` installs it)"),
]


@pytest.fixture
def reported_run(small_job, capsys):
    """small_job with a GIF for item a, and item b failing at run time (a folder sits where its
    video goes); run once, returns the output folder."""
    doc = yaml.safe_load(small_job.read_text())
    doc["items"][0]["prompt"] = "a <b>bold</b> cup & saucer"  # markup in a prompt is shown, never run
    doc["items"][0]["formats"] = ["mp4", "gif", "poster"]
    doc["defaults"]["formats"] = ["mp4", "poster"]
    small_job.write_text(yaml.safe_dump(doc))
    out = small_job.parent / "out"
    (out / "b.mp4" / "keep").mkdir(parents=True)
    capsys.readouterr()
    assert main(["run", str(small_job)]) == 1
    printed = capsys.readouterr().out
    # the failure in full under the table, on one line (not folded into a narrow column)
    line = next(line for line in printed.splitlines() if line.startswith("  b: "))
    assert "IsADirectoryError" in line and line.rstrip().endswith("b.mp4'")
    return out


def test_report_lists_every_item_failures_first_and_its_previews_play(reported_run, tmp_path):
    from playwright.sync_api import sync_playwright

    # a copy elsewhere: the page depends on nothing but the folder it sits in
    folder = tmp_path / "copied"
    shutil.copytree(reported_run, folder)
    report = folder / REPORT
    assert report.is_file()
    text = report.read_text()
    assert "<script src" not in text and "http://" not in text and "https://" not in text  # self-contained

    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)  # a fresh temporary profile
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
            page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
            page.goto(report.as_uri())
            page.wait_for_load_state("load")

            # every item, failure first, with status, reason and prompt (escaped)
            cards = page.locator("article.card")
            assert cards.count() == 3
            ids = cards.locator("h2").all_inner_texts()
            assert ids[0] == "b" and sorted(ids) == ["a", "b", "c"]
            assert cards.nth(0).get_attribute("data-status") == "failed"
            assert "b.mp4" in cards.nth(0).locator(".reason").inner_text()
            card_a = page.locator("article.card", has=page.locator("h2", has_text="a")).first
            assert card_a.locator(".prompt").inner_text() == "a <b>bold</b> cup & saucer"
            for label in ("seam", "loop closure", "flicker", "colour drift", "GPU-seconds"):
                assert label in card_a.locator(".metrics").inner_text()

            # previews play: a's GIF is decoded, c's webm advances; posters are decoded
            page.wait_for_function(
                "() => [...document.querySelectorAll('video.preview')].every(v => v.currentTime > 0.2)", timeout=30_000)
            assert page.locator("video.preview").count() == 1  # c (a has its GIF)
            assert page.evaluate("() => [...document.querySelectorAll('img')].every(i => i.complete && i.naturalWidth > 0)")
            assert page.locator("img.preview").count() == 1 and page.locator("img.poster").count() == 2

            # links are relative and resolve inside the folder
            hrefs = page.eval_on_selector_all("a[href]", "els => els.map(e => e.getAttribute('href'))")
            assert hrefs and all("://" not in h and not h.startswith("/") for h in hrefs)
            assert all((folder / unquote(h)).is_file() for h in hrefs), hrefs
            assert {"a.json", "c.json", "a.gif", "c.mp4"} <= set(hrefs)

            # the filter box
            page.fill("#filter", "failed")
            assert page.locator("article.card:not(.hidden)").all_inner_texts()[0].startswith("b")
            assert page.locator("article.card:not(.hidden)").count() == 1
            page.fill("#filter", "")
            assert page.locator("article.card:not(.hidden)").count() == 3

            shot = tmp_path / "report.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")
    assert errors == []


def test_a_rerun_keeps_current_previews_and_drops_earlier_versions(reported_run, small_job):
    from tasks.renditions import PREVIEWS

    previews = reported_run / PREVIEWS
    (current,) = previews.glob("c-*.webm")
    made = current.stat().st_mtime_ns
    orphan = previews / "c-111111111111.webm"  # made for a version that was never recorded
    orphan.write_bytes(b"orphan")
    assert main(["run", str(small_job)]) == 1  # a and c are current (skipped), b fails again
    assert current.stat().st_mtime_ns == made  # not encoded again
    assert not orphan.exists()

    stale = current.rename(previews / "c-000000000000.webm")  # as if c's preview were an earlier version's
    other = previews / "c-d-000000000000.webm"  # the preview of another item, "c-d"
    other.write_bytes(b"other")
    assert main(["run", str(small_job)]) == 1
    assert current.is_file() and not stale.exists() and other.exists()
    assert f"{PREVIEWS}/{current.name}" in (reported_run / REPORT).read_text()


def test_previews_are_made_where_the_video_is_finished_not_by_the_driver(small_job, monkeypatch):
    """The driver cannot encode previews here (its encoder raises); the finishing tasks, in Ray's
    worker processes, make them, and a new version of an item replaces its earlier preview."""
    import subprocess

    import tasks.renditions

    def refuse(src, dst):
        raise subprocess.SubprocessError("the driver encoded a preview")

    monkeypatch.setattr(tasks.renditions, "encode_preview", refuse)
    doc = yaml.safe_load(small_job.read_text())
    doc["items"][1]["aspects"] = ["9:16"]  # no native video: the preview is made from the 9:16 one
    small_job.write_text(yaml.safe_dump(doc))
    out = small_job.parent / "out"
    assert main(["run", str(small_job)]) == 0
    previews = sorted(p.name for p in (out / "previews").glob("*.webm"))
    assert [name.rsplit("-", 1)[0] for name in previews] == ["a", "b", "c"]
    page = (out / REPORT).read_text()
    assert all(f"previews/{name}" in page for name in previews)

    doc["items"][2]["seed"] = 99  # a new version of c
    small_job.write_text(yaml.safe_dump(doc))
    assert main(["run", str(small_job)]) == 0
    after = sorted(p.name for p in (out / "previews").glob("*.webm"))
    record = json.loads((out / "c.json").read_text())
    assert after == [*previews[:2], f"c-{record['content_key'][:12]}.webm"] and after[2] != previews[2]
    assert f"previews/{after[2]}" in (out / REPORT).read_text()


def test_the_report_lists_previews_by_item_and_clears_killed_encodes(tmp_path):
    import os
    import time

    from tasks.renditions import PREVIEWS
    from tasks.report import _previews_by_item

    folder = tmp_path / PREVIEWS
    folder.mkdir()
    for name in ("a-0123456789ab.webm", "a-b-0123456789ab.webm", "a-ffffffffffff.webm"):
        (folder / name).write_bytes(b"webm")
    old = folder / ".a-0123456789ab.webm.0badf00d.part"  # a preview's encode killed two hours ago
    fresh = folder / ".c-0123456789ab.webm.12345678.part"  # one being encoded now
    for part in (old, fresh):
        part.write_bytes(b"part")
    os.utime(old, (time.time() - 7200,) * 2)
    found = _previews_by_item(tmp_path)
    assert {k: sorted(v) for k, v in found.items()} == {
        "a": ["a-0123456789ab.webm", "a-ffffffffffff.webm"], "a-b": ["a-b-0123456789ab.webm"]}
    assert not old.exists() and fresh.exists()
