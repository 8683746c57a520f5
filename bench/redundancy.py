"""Figure 6: redundancy — frames generated ÷ frames delivered, per mode and window choice.

Pure plan geometry (``kernels.windows``), no timing. ``independent`` renders every
window's frames (the plans framefold runs: linear, and circular for loops), tending to
W/(W−O) for long clips. ``codenoise`` runs the denoiser on every window's latent frames
at every step: the same ratio over latent frames (``tasks.codenoise.latent_plan``),
shown for a model that compresses time 4× (Wan, CogVideoX). ``outpaint`` has no backend
that runs it yet.
"""

from __future__ import annotations

from pathlib import Path

from bench.common import pyplot, table
from kernels.windows import plan_windows, redundancy

LENGTHS = (8, 16, 24, 32)
OVERLAPS = (2, 4, 8)
FRAMES = 241  # 10 s at 24 fps, +1 so that 4k+1 latent rules hold for codenoise


def _codenoise(frames: int, length: int, overlap: int) -> float | None:
    try:
        from tasks.codenoise import latent_plan
    except ImportError:
        return None
    try:
        count, plan = latent_plan(frames, length=length, overlap=overlap, temporal=4, circular=False)
    except ValueError:
        return None
    return redundancy(plan, count)


def run(quick: bool, workdir) -> dict:
    rows = []
    for length in LENGTHS:
        for overlap in OVERLAPS:
            if overlap >= length:
                continue
            rows.append({
                "length": length, "overlap": overlap, "limit": length / (length - overlap),
                "linear": redundancy(plan_windows(FRAMES, length=length, overlap=overlap), FRAMES),
                "circular": redundancy(plan_windows(FRAMES, length=length, overlap=overlap, circular=True), FRAMES),
                "codenoise_t4": None if quick else _codenoise(FRAMES, length, overlap),  # imports diffusers
            })
    return {"frames": FRAMES, "rows": rows}


def section(data: dict) -> str:
    fmt = lambda x: "—" if x is None else f"{x:.3f}"  # noqa: E731
    return "\n".join([
        f"T = {data['frames']} frames. `independent` columns count rendered pixel frames; `codenoise (time ÷ 4)` "
        "counts denoiser latent-frame evaluations per step over latent frames; `outpaint` has no backend yet.\n",
        table(["W", "O", "W ÷ (W − O)", "independent, linear", "independent, circular (loop)",
               "codenoise (time ÷ 4), linear", "outpaint"],
              [[r["length"], r["overlap"], f"{r['limit']:.3f}", fmt(r["linear"]), fmt(r["circular"]),
                fmt(r["codenoise_t4"]), "n/a"] for r in data["rows"]]),
    ])


def plot(data: dict, out_dir: Path) -> list[str]:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.8))
    for overlap in OVERLAPS:
        rows = [r for r in data["rows"] if r["overlap"] == overlap]
        ax.plot([r["length"] for r in rows], [r["linear"] for r in rows], "o-", label=f"O={overlap} linear")
        ax.plot([r["length"] for r in rows], [r["circular"] for r in rows], "x--", label=f"O={overlap} circular")
    ax.set_xlabel("window length W")
    ax.set_ylabel("frames generated ÷ delivered")
    ax.set_title(f"Redundancy (T = {data['frames']})")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    name = "fig6_redundancy.png"
    fig.savefig(out_dir / name, dpi=110)
    plt.close(fig)
    return [name]
