"""Figure 2: memory against video length.

One item (motion backend, 256², W=16, O=4, no upscale) at 64 … 4096 frames, each a full
``framefold run`` in a subprocess reporting to the suite's Prefect server; the RSS of
the framefold process and of its whole process tree (the local Ray it starts: GCS,
raylet, workers) is sampled every 0.1 s. The goal is a flat curve: the stream holds
windows in flight, never the video.

One more run (not in --quick) repeats the middle length with glibc's
``MALLOC_MMAP_THRESHOLD_`` fixed at 128 KiB (large buffers always mmapped, and returned
on free): if the framefold process grows without it but not with it, the growth is the
allocator's heap, not data the pipeline holds.

The peer's curve comes from Figure 5's runs: diffusers' FreeNoise (tiny AnimateDiff,
64×64, 3 steps) holds every latent frame and decodes the whole clip at once; at 64×64
those are small next to its imports, so its curve rises slowly.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from bench.common import ROOT, draw_still, mib, pyplot, run_framefold, table


def _manifest(folder: Path, frames: int, side: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    draw_still(folder / "still.png", (side, side), seed=1)
    doc = {
        "version": 1, "name": f"memory-{frames}", "output": "out",
        "defaults": {
            "backend": "motion", "seed": 1, "fps": 24, "frames": frames, "size": [side, side], "loop": False,
            "window": {"length": 16, "overlap": 4, "weighting": "cosine"}, "upscale": {"factor": 1},
        },
        "items": [{"id": "clip", "image": "still.png"}],
    }
    path = folder / "job.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


MMAP_THRESHOLD = "131072"


def _run(workdir: Path, frames: int, side: int, env: dict, tag: str = "") -> dict:
    folder = workdir / f"memory-{frames}{tag}"
    r = run_framefold(_manifest(folder, frames, side), folder / "out", env)
    item = r["summary"]["items"][0]
    if item["status"] != "done":
        raise RuntimeError(f"memory run at {frames} frames: {item['status']}: {item['reason']}")
    return {"frames": frames, "side": side, "wall_s": r["wall_s"], "item_s": item["seconds"],
            "peak_tree": r["peak_tree"], "peak_driver": r["peak_driver"], "samples": r["samples"]}


def run(quick: bool, workdir: Path, env: dict) -> dict:
    frames_list, side = ((32, 128), 64) if quick else ((64, 256, 1024, 4096), 256)
    rows = [_run(workdir, frames, side, env) for frames in frames_list]
    probe = frames_list[len(frames_list) // 2]
    fixed = None if quick else _run(workdir, probe, side, {**env, "MALLOC_MMAP_THRESHOLD_": MMAP_THRESHOLD}, "-mmap")
    return {"rows": rows, "fixed_threshold": fixed, "root": str(ROOT)}


def section(data: dict, peer: dict | None) -> str:
    rows, first = [], data["rows"][0]
    for r in data["rows"]:
        rows.append([
            r["frames"], f"{r['side']}²", f"{r['item_s']:.1f}", f"{r['wall_s']:.1f}", mib(r["peak_driver"]),
            f"{r['peak_driver'] / first['peak_driver']:.2f}×", mib(r["peak_tree"]), f"{r['peak_tree'] / first['peak_tree']:.2f}×",
        ])
    last = data["rows"][-1]
    ratios = (last["peak_driver"] / first["peak_driver"], last["peak_tree"] / first["peak_tree"])
    verdict = lambda x: "met" if x <= 1.2 else f"missed by {x - 1.2:.2f}"  # noqa: E731
    out = [table(["frames", "size", "item s", "run wall s", "framefold process peak RSS MiB", "vs first",
                  "process tree peak RSS MiB", "vs first"], rows)]
    out.append(f"\nGoal flat (≤ 1.2× from {first['frames']} to {last['frames']} frames): framefold process "
               f"{ratios[0]:.2f}× — {verdict(ratios[0])}; whole tree {ratios[1]:.2f}× — {verdict(ratios[1])}.")
    fixed = data.get("fixed_threshold")
    same = next((r for r in data["rows"] if fixed and r["frames"] == fixed["frames"]), None)
    if same:
        out.append(f"\nThe same {fixed['frames']}-frame run with `MALLOC_MMAP_THRESHOLD_={MMAP_THRESHOLD}`: framefold "
                   f"process peak {mib(fixed['peak_driver'])} MiB ({fixed['peak_driver'] / first['peak_driver']:.2f}× the "
                   f"first row) against {mib(same['peak_driver'])} MiB without; item {fixed['item_s']:.1f} s against "
                   f"{same['item_s']:.1f} s.")
    fn = [r for r in (peer or {}).get("freenoise", []) if r.get("peak_rss")]
    if fn:
        out.append("\nPeer: diffusers FreeNoise (tiny AnimateDiff, `enable_free_noise(context_length=16, "
                   f"context_stride=4)`, {peer['height']}×{peer['width']}, {peer['steps']} steps), one process, "
                   "peak RSS from the kernel's high-water mark (`VmHWM`):\n")
        out.append(table(["frames", "peak RSS MiB", "vs first", "wall s"],
                         [[r["frames"], mib(r["peak_rss"]), f"{r['peak_rss'] / fn[0]['peak_rss']:.2f}×", f"{r['wall_s']:.1f}"]
                          for r in fn]))
    return "\n".join(out)


def plot(data: dict, peer: dict | None, out_dir: Path) -> list[str]:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    f = [r["frames"] for r in data["rows"]]
    ax.plot(f, [r["peak_tree"] / 2**20 for r in data["rows"]], "o-", label="framefold run: process tree")
    ax.plot(f, [r["peak_driver"] / 2**20 for r in data["rows"]], "s-", label="framefold run: framefold process")
    fixed = data.get("fixed_threshold")
    if fixed:
        ax.plot([fixed["frames"]], [fixed["peak_driver"] / 2**20], "k*", markersize=10,
                label=f"framefold process, MALLOC_MMAP_THRESHOLD_={MMAP_THRESHOLD}")
    fn = [r for r in (peer or {}).get("freenoise", []) if r.get("peak_rss")]
    if fn:
        ax.plot([r["frames"] for r in fn], [r["peak_rss"] / 2**20 for r in fn], "^-", label="diffusers FreeNoise (tiny)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("frames")
    ax.set_ylabel("peak RSS (MiB)")
    ax.set_ylim(bottom=0)
    ax.set_title("Peak memory vs video length")
    ax.legend(fontsize=8)
    fig.tight_layout()
    name = "fig2_memory.png"
    fig.savefig(out_dir / name, dpi=110)
    plt.close(fig)
    return [name]
