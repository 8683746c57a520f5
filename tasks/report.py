"""``OUTPUT/report.html``: the batch as a page of cards, one per item, failures first.

Each card shows the poster, an animated preview (the item's GIF, else a small webm made
from its video into ``OUTPUT/previews/``), the prompt, the status and its reason, the
quality metrics (seam, loop closure, flicker, colour drift), GPU-seconds and links to the
output files and the sidecar. The page is one self-contained file (inline style and
script, no network) whose links are relative, so it works opened from the output folder,
a copy of it, or a bucket's static listing — no server.
"""

from __future__ import annotations

import contextlib
import html
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

from tasks import provenance, store
from tasks.renditions import (PREVIEWS, SHEET_ROWS, STALE_PREVIEW_PART_S, contact_sheet, ensure_thumb, make_preview,
                              preview_name)

REPORT = "report.html"
CONTACT_SHEET = "contact-sheet.jpg"
_ORDER = {"failed": 0, "done": 1, "skipped": 2}

log = logging.getLogger("framefold")


def publish(output: store.Location, summary: dict) -> None:
    """A run's contact sheet and report.html next to its outputs, for every run (one that skipped
    everything too). Sets ``summary["contact_sheet"]`` and ``summary["report"]``: None when not
    written, with the cause in ``summary["not_written"]`` and one warning line (the traceback
    at debug level); writing them never fails a finished run."""
    not_written = summary.setdefault("not_written", {})
    try:
        rows = [(r["id"], r["status"], None if r["status"] == "failed" else ensure_thumb(output, r["id"]))
                for r in summary["items"][:SHEET_ROWS]]  # strips are rebuilt (decoding) only for rows drawn
        path = store.join(output, CONTACT_SHEET)
        contact_sheet(rows, path, total=len(summary["items"]))
        summary["contact_sheet"] = str(path)
    except Exception as e:  # noqa: BLE001 - reporting must never fail a finished run
        summary["contact_sheet"] = None
        not_written["contact sheet"] = _not_written("the contact sheet", e)
    try:
        summary["report"] = str(write_report(output, summary))
    except Exception as e:  # noqa: BLE001
        summary["report"] = None
        not_written["report"] = _not_written("the batch report", e)
    if not not_written:
        del summary["not_written"]


def _not_written(what: str, e: Exception) -> str:
    """One warning line naming the cause (a store error names the URI), returned; the traceback at debug level."""
    cause = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    log.warning("could not write %s: %s", what, cause)
    log.debug("could not write %s", what, exc_info=True)
    return cause


def write_report(output: store.Location, summary: dict) -> store.Location:
    """Write ``OUTPUT/report.html`` (a folder or a store URL) for the run ``summary`` (as
    returned by the flow) and the previews it needs; returns its location."""
    cards = []
    previews = _previews_by_item(output)  # listed once: a catalog's report is not quadratic in its items
    for item in sorted(summary["items"], key=lambda r: (_ORDER.get(r["status"], 3), r["id"])):
        record = provenance.read_sidecar(store.join(output, f"{item['id']}.json"))
        cards.append(_card(output, item, record, previews.get(item["id"], ())))
    page = _PAGE.format(
        title=html.escape(f"{summary['job']} — run {summary['run_id']}"),
        counts=html.escape(", ".join(f"{k} {v}" for k, v in summary["counts"].items())),
        seconds=f"{summary['seconds']:.1f}",
        gpu=f"{summary['gpu_seconds']:.1f}",
        total=len(cards),
        cards="\n".join(cards),
    )
    path = store.join(output, REPORT)
    store.write_bytes(path, page.encode("utf-8"), durable=False)
    return path


def _previews_by_item(output: store.Location) -> dict[str, list[str]]:
    """The webm previews in ``OUTPUT/previews/`` by item id (``<id>-<key12>.webm``); the
    temporary files of previews whose making was killed (over an hour old) are removed."""
    found: dict[str, list[str]] = {}
    for name in store.listdir(store.join(output, PREVIEWS)):
        if name.endswith(".webm") and not name.startswith(".") and "-" in name:
            found.setdefault(name.rsplit("-", 1)[0], []).append(name)
    work = store.staging(output) / PREVIEWS  # where previews are encoded (the output folder itself when local)
    for stale in work.glob(".*.part") if work.is_dir() else ():
        with contextlib.suppress(OSError):
            if time.time() - stale.stat().st_mtime > STALE_PREVIEW_PART_S:
                stale.unlink()
    return found


def _card(output: store.Location, item: dict, record: dict | None, previews: Sequence[str] = ()) -> str:
    files = {Path(o["path"]).name: o for o in provenance.outputs_of(record)} if record else {}
    current = item["status"] != "failed"  # a failed item's files, if any, are an earlier run's
    poster = next((n for n, o in files.items() if o.get("format") == "poster"), None)
    preview = _preview(output, item["id"], record, files, previews)
    params = (record or {}).get("params") or {}
    prompt = item.get("prompt") or params.get("prompt") or ""
    metrics = _metrics(item.get("metrics") or {}, (record or {}).get("metrics") or {})
    gpu = item.get("gpu_seconds") or ((record or {}).get("device") or {}).get("gpu_seconds") or 0.0
    links = [f'<a href="{_href(n)}">{html.escape(n)}</a>' for n in files]
    if record:
        links.append(f'<a href="{_href(item["id"] + ".json")}">sidecar</a>')
    media = []
    if preview is not None:
        if preview.endswith(".gif"):
            media.append(f'<img class="preview" src="{_href(preview)}" alt="preview of {html.escape(item["id"])}">')
        else:
            media.append(f'<video class="preview" src="{_href(preview)}" autoplay muted loop playsinline '
                         f'{"poster=" + chr(34) + _href(poster) + chr(34) if poster else ""}></video>')
    if poster is not None:
        media.append(f'<img class="poster" src="{_href(poster)}" alt="poster of {html.escape(item["id"])}">')
    if not media:
        media.append('<div class="none">no output</div>')
    note = "" if current or not files else '<p class="note">files below are from an earlier run</p>'
    search = " ".join([item["id"], item["status"], item.get("reason") or "", prompt]).lower()
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in metrics)
    return _CARD.format(
        id=html.escape(item["id"]),
        status=html.escape(item["status"]),
        reason=html.escape(item.get("reason") or ""),
        search=html.escape(search, quote=True),
        media="".join(media),
        prompt=html.escape(prompt) or "<em>no prompt</em>",
        rows=rows + f"<tr><th>GPU-seconds</th><td>{gpu:.2f}</td></tr>",
        note=note,
        links=" · ".join(links) or "<em>no files</em>",
    )


def _metrics(summary_metrics: dict, record_metrics: dict) -> list[tuple[str, str]]:
    m = {**record_metrics, **summary_metrics}
    drift = m.get("colour_drift")
    if isinstance(drift, dict):
        drift = drift.get("max_mean_spread")
    flicker = (m.get("flicker") or {}).get("ratio") if isinstance(m.get("flicker"), dict) else m.get("flicker")
    out = []
    for label, value in (("seam", m.get("seam_ratio")), ("loop closure", m.get("loop_closure_ratio")),
                         ("flicker", flicker), ("colour drift", drift)):
        out.append((label, "–" if value is None else f"{value:.3f}"))
    return out


def _preview(output: store.Location, item_id: str, record: dict | None, files: dict[str, dict],
             previews: Sequence[str] = ()) -> str | None:
    """Relative path of an animated preview: the item's GIF, else the small webm made once
    per content key from its video (made here if the run that made the video did not);
    None when the item has no video. ``previews``: the names of the item's webm previews
    already in the folder (all but the current one are deleted)."""
    gif = next((n for n, o in files.items() if o.get("format") == "gif"), None)
    if gif is not None:
        return gif
    videos = sorted((n for n, o in files.items() if o.get("format") in ("mp4", "webm")),
                    key=lambda n: (files[n].get("aspect", "native") != "native", files[n].get("format") != "mp4"))
    if not videos:  # the same choice as RenditionWriter.preview_source: native first, mp4 first
        return None
    video = videos[0]
    key = (record or {}).get("content_key")
    name = preview_name(item_id, key)
    if Path(name).name not in previews and _make_missing(output, item_id, key, video) is None:
        return None
    for old in previews:  # earlier versions', and those of versions never recorded (a killed or failed run)
        if old != Path(name).name:
            with contextlib.suppress(store.StoreError):
                store.delete(store.join(output, PREVIEWS, old))
    return name


def _make_missing(output: store.Location, item_id: str, key: str | None, video: str) -> str | None:
    """The preview of an output made without one, encoded here from ``video`` (a copy of it
    fetched first when the output is in a store)."""
    source = store.join(output, video)
    if not store.is_url(source):
        return make_preview(output, item_id, key, Path(source)) if Path(source).is_file() else None
    local = store.part_path(store.staging(output) / PREVIEWS / f"{item_id}.source{Path(video).suffix}")
    try:
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(store.read_bytes(source))
        return make_preview(output, item_id, key, local)
    except (OSError, store.StoreError) as e:
        log.warning("no preview for %s (%s)", item_id, e)
        return None
    finally:
        local.unlink(missing_ok=True)


def _href(relative: str) -> str:
    return html.escape(quote(relative), quote=True)


_CARD = """<article class="card {status}" data-search="{search}" data-status="{status}">
<header><h2>{id}</h2><span class="status">{status}</span></header>
<div class="media">{media}</div>
<p class="reason">{reason}</p>
<p class="prompt">{prompt}</p>
<table class="metrics">{rows}</table>
{note}<p class="links">{links}</p>
</article>"""

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 1.5rem; color: #222; background: #fafafa; }}
h1 {{ font-size: 1.3rem; margin: 0 0 .3rem; }}
.summary {{ color: #555; margin: 0 0 1rem; }}
#filter {{ font: inherit; padding: .4rem .6rem; width: min(30rem, 100%); margin-bottom: 1rem; }}
#cards {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(260px, 1fr)); gap: 1rem; }}
.card {{ background: #fff; border: 1px solid #ddd; border-radius: 8px; padding: .8rem; }}
.card.failed {{ border-color: #c62828; background: #fff5f5; }}
.card header {{ display: flex; justify-content: space-between; align-items: baseline; }}
.card h2 {{ font-size: 1rem; margin: 0; word-break: break-all; }}
.status {{ font-weight: 600; text-transform: uppercase; font-size: .75rem; }}
.failed .status {{ color: #c62828; }} .done .status {{ color: #2e7d32; }} .skipped .status {{ color: #00838f; }}
.media {{ display: flex; gap: .4rem; margin: .5rem 0; }}
.media img, .media video {{ width: 50%; max-height: 200px; object-fit: contain; background: #eee; }}
.none {{ color: #999; padding: 1rem; }}
.reason {{ margin: .2rem 0; white-space: pre-wrap; word-break: break-word; }}
.failed .reason {{ color: #c62828; }}
.prompt {{ font-style: italic; color: #444; margin: .2rem 0; }}
.metrics th {{ text-align: left; font-weight: normal; color: #666; padding-right: 1rem; }}
.note {{ color: #8a6d00; margin: .2rem 0; }}
.links a {{ color: #1565c0; }}
.hidden {{ display: none; }}
</style>
</head>
<body>
<h1>{title}</h1>
<p class="summary">{counts} · {seconds} s · {gpu} GPU-seconds · {total} item(s), failures first</p>
<input id="filter" type="search" placeholder="filter by id, status, reason or prompt" aria-label="filter">
<p id="shown" class="summary"></p>
<main id="cards">
{cards}
</main>
<script>
(function () {{
  var box = document.getElementById("filter");
  var cards = Array.prototype.slice.call(document.querySelectorAll(".card"));
  var shown = document.getElementById("shown");
  function apply() {{
    var words = box.value.toLowerCase().split(/\\s+/).filter(Boolean);
    var n = 0;
    cards.forEach(function (card) {{
      var text = card.getAttribute("data-search");
      var hit = words.every(function (w) {{ return text.indexOf(w) >= 0; }});
      card.classList.toggle("hidden", !hit);
      if (hit) n += 1;
    }});
    shown.textContent = n + " of " + cards.length + " shown";
  }}
  box.addEventListener("input", apply);
  apply();
}})();
</script>
</body>
</html>
"""
