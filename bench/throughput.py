"""Figure 4: end-to-end throughput.

Two jobs, each one ``framefold run`` in a subprocess (reporting to the suite's Prefect
server): the demo manifest (three 72-frame loops, 256² upscaled ×2) and a catalog of
100 items made here (small Pillow stills in a Parquet table; motion backend, 48 frames
of 128²). From the run and the sidecars: items per hour, seconds of finished video per
wall-clock second, the time to the first finished output (first sidecar's mtime − the
moment the command started) and the per-stage breakdown (sidecars' ``timings_s``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from bench.common import ROOT, draw_still, pyplot, run_framefold, table

STAGES = ("key", "inputs", "plan", "generate", "stitch", "upscale", "encode")


def _catalog(folder: Path, items: int, side: int, frames: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    stills = [draw_still(folder / "images" / f"p{n:03d}.png", (96, 72), seed=n).relative_to(folder) for n in range(items)]
    pq.write_table(pa.table({
        "sku": [f"sku-{n:03d}" for n in range(items)],
        "image_path": [str(p) for p in stills],
        "caption": [f"product {n}, a slow turn" for n in range(items)],
    }), folder / "catalog.parquet")
    doc = {
        "version": 1, "name": "catalog", "output": "out",
        "defaults": {
            "backend": "motion", "seed": 3, "fps": 24, "frames": frames, "size": [side, side], "loop": True,
            "window": {"length": 16, "overlap": 4, "weighting": "cosine"}, "upscale": {"factor": 1},
        },
        "catalog": {"path": "catalog.parquet", "columns": {"id": "sku", "image": "image_path", "prompt": "caption"}},
    }
    path = folder / "catalog.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _measure(label: str, manifest: Path, out: Path, env: dict) -> dict:
    r = run_framefold(manifest, out, env)
    counts = r["summary"]["counts"]
    sidecars = [json.loads(p.read_text()) | {"_mtime": p.stat().st_mtime} for p in sorted(out.glob("*.json"))]
    if counts["failed"] or not sidecars:
        raise RuntimeError(f"{label}: {counts}")
    video_s = sum(s["video"]["frames"] / s["video"]["fps"] for s in sidecars)
    stages = {k: sum(s["timings_s"].get(k, 0.0) for s in sidecars) for k in STAGES}
    mtimes = sorted(s["_mtime"] for s in sidecars)
    return {
        "label": label, "items": len(sidecars), "wall_s": r["wall_s"], "flow_s": r["summary"]["seconds"],
        "video_s": video_s, "first_output_s": mtimes[0] - r["started"],
        "steady_s_per_item": (mtimes[-1] - mtimes[0]) / (len(mtimes) - 1) if len(mtimes) > 1 else None,
        "stages": stages, "frames": sum(s["video"]["frames"] for s in sidecars),
        "size": sidecars[0]["video"]["width"],
    }


def run(quick: bool, workdir: Path, env: dict) -> dict:
    rows = []
    if not quick:  # the demo is three full 512² items: too long for --quick
        rows.append(_measure("demo manifest (3 items, 72 frames, 256² → 512²)", ROOT / "manifests/examples/demo.yaml",
                             workdir / "demo-out", env))
    items, side, frames = (4, 64, 48) if quick else (100, 128, 48)
    manifest = _catalog(workdir / "catalog", items, side, frames)
    rows.append(_measure(f"catalog ({items} items, {frames} frames, {side}²)", manifest, workdir / "catalog" / "out", env))
    return {"rows": rows, "quick": quick}


def section(data: dict) -> str:
    out = [table(
        ["job", "items", "run wall s", "items / hour", "video s / wall s", "first output after s",
         "steady s / item"],
        [[r["label"], r["items"], f"{r['wall_s']:.1f}", f"{r['items'] / r['wall_s'] * 3600:,.0f}",
          f"{r['video_s'] / r['wall_s']:.3f}", f"{r['first_output_s']:.1f}",
          "—" if r["steady_s_per_item"] is None else f"{r['steady_s_per_item']:.2f}"] for r in data["rows"]],
    )]
    if data["quick"]:
        out.append("\n(--quick: the demo manifest is not run.)")
    out.append("\nPer-stage time summed over items (sidecars' `timings_s`; items run 2 at a time, so the sum "
               "exceeds the wall time), and each stage's share:\n")
    rows = []
    for r in data["rows"]:
        total = sum(r["stages"].values()) or 1
        rows.append([r["label"]] + [f"{r['stages'][k]:.1f} ({r['stages'][k] / total:.0%})" for k in STAGES])
    out.append(table(["job"] + [f"{k} s" for k in STAGES], rows))
    return "\n".join(out)


def plot(data: dict, out_dir: Path) -> list[str]:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 3.2))
    labels = [r["label"].split(" (")[0] for r in data["rows"]]
    left = [0.0] * len(labels)
    for k in STAGES:
        shares = [r["stages"][k] / (sum(r["stages"].values()) or 1) for r in data["rows"]]
        ax.barh(labels, shares, left=left, label=k)
        left = [a + b for a, b in zip(left, shares)]
    ax.set_xlabel("share of item time")
    ax.set_title("Where an item's time goes")
    ax.legend(ncol=len(STAGES), fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.25))
    fig.tight_layout()
    name = "fig4_throughput.png"
    fig.savefig(out_dir / name, dpi=110)
    plt.close(fig)
    return [name]
