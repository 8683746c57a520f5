"""Figure 7: uint8 Lanczos resampling — framefold's separable kernel vs Pillow.

Upscaling (``upscale.method: lanczos``) takes uint8 frames (H, W, 3) to the output size.
Two paths make the same Lanczos-3 (PIL's pixel-centre convention): ``kernels.resample``
(``from_uint8`` → float32 separable matmuls → ``to_uint8``) and Pillow's
``Image.resize(LANCZOS)`` on the uint8 frame (C, fixed-point, 8-bit between its two
passes). Each case times both on the same frames (median of repeats, one thread for
torch as Pillow uses one) and compares their outputs level by level: the maximum and
mean absolute difference in 8-bit levels, on detailed frames (edges, noise) and on smooth
ones. The faster path is the one to use when its largest difference is at most 1 level (a
rounding step); ``tasks/upscale.py`` uses the kernel, as the choice below says. Where the two differ by more, it is Pillow
that departs from Lanczos-3: it rounds and clips to 8 bits between its horizontal and
vertical passes, cutting the overshoot of the first pass at edges (the kernel with that
rounding added matches Pillow within one level).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench.common import pyplot, save_figure, table
from kernels.pixels import from_uint8, to_uint8
from kernels.resample import resize

# (input width, height) -> output (width, height); factors as manifests use them
CASES = [((128, 72), (256, 144)), ((128, 72), (192, 108)), ((256, 256), (512, 512)), ((320, 180), (640, 360)),
         ((512, 288), (1024, 576))]
QUICK_CASES = CASES[:3]
FRAMES = 8
AS_GOOD_LEVELS = 1  # the largest difference (8-bit levels) that counts as "as good"


def _frames(size: tuple[int, int], count: int, seed: int = 0, detail: bool = True) -> np.ndarray:
    """uint8 (count, H, W, 3): smooth gradients plus (with `detail`) sharp edges and fine noise."""
    width, height = size
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    frames = []
    for k in range(count):
        third = (x + y + 7 * k) % 32 / 32 if detail else (x + y) / (width + height)  # a sawtooth has edges
        base = np.stack([x / width, y / height, third], axis=-1) * 200
        edges = ((x // 9 + y // 7 + k) % 2)[..., None] * 40
        noise = rng.normal(0, 12, base.shape) if detail else 0
        frames.append(np.clip(base + (edges + noise if detail else 20), 0, 255).astype(np.uint8))
    return np.stack(frames)


def kernel_path(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    width, height = size
    x = torch.from_numpy(frames)
    return torch.stack([to_uint8(resize(from_uint8(f), (height, width), method="lanczos")) for f in x]).numpy()


def pillow_path(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return np.stack([np.asarray(Image.fromarray(f).resize(size, Image.Resampling.LANCZOS)) for f in frames])


def _median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run(quick: bool, workdir=None) -> dict:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # Pillow resizes on one thread: compare like with like
    rows = []
    try:
        for size, out in QUICK_CASES if quick else CASES:
            frames = _frames(size, 2 if quick else FRAMES)
            a, b = kernel_path(frames, out), pillow_path(frames, out)  # also warms the kernel's cached tables
            diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
            smooth = _frames(size, 1, seed=1, detail=False)
            smooth_diff = np.abs(kernel_path(smooth, out).astype(np.int16) - pillow_path(smooth, out).astype(np.int16))
            repeats = 3 if quick else 5
            rows.append({
                "input": list(size), "output": list(out), "frames": len(frames),
                "kernel_ms": 1e3 * _median_seconds(lambda: kernel_path(frames, out), repeats) / len(frames),
                "pillow_ms": 1e3 * _median_seconds(lambda: pillow_path(frames, out), repeats) / len(frames),
                "max_levels": int(diff.max()), "mean_levels": float(diff.mean()),
                "share_differing": float((diff > 0).mean()), "max_levels_smooth": int(smooth_diff.max()),
            })
    finally:
        torch.set_num_threads(threads)
    faster = "pillow" if sum(r["pillow_ms"] for r in rows) < sum(r["kernel_ms"] for r in rows) else "kernel"
    as_good = max(r["max_levels"] for r in rows) <= AS_GOOD_LEVELS
    return {"rows": rows, "faster": faster, "as_good": as_good,
            "choice": faster if as_good else "kernel", "threshold_levels": AS_GOOD_LEVELS}


def section(data: dict) -> str:
    rows = data["rows"]
    speedup = statistics.median(r["kernel_ms"] / r["pillow_ms"] for r in rows)
    verdict = (f"**Choice: {data['choice']}.** Faster: {data['faster']} (median kernel ÷ Pillow time "
               f"{speedup:.2f}×); largest difference {max(r['max_levels'] for r in rows)} level(s) "
               f"(as good: ≤ {data['threshold_levels']}).")
    return "\n".join([
        verdict + "\n",
        table(["input", "output", "frames", "kernel ms/frame", "Pillow ms/frame", "kernel ÷ Pillow",
               "max |Δ| levels", "mean |Δ| levels", "pixels differing", "max |Δ| levels, smooth frame"],
              [[f"{r['input'][0]}×{r['input'][1]}", f"{r['output'][0]}×{r['output'][1]}", r["frames"],
                f"{r['kernel_ms']:.2f}", f"{r['pillow_ms']:.2f}", f"{r['kernel_ms'] / r['pillow_ms']:.2f}",
                r["max_levels"], f"{r['mean_levels']:.4f}", f"{100 * r['share_differing']:.2f} %",
                r["max_levels_smooth"]] for r in rows]),
    ])


def plot(data: dict, out_dir: Path) -> list[str]:
    plt = pyplot()
    rows = data["rows"]
    labels = [f"{r['input'][0]}×{r['input'][1]}\n→{r['output'][0]}×{r['output'][1]}" for r in rows]
    fig, ax = plt.subplots(figsize=(7, 3.8))
    xs = np.arange(len(rows))
    ax.bar(xs - 0.2, [r["kernel_ms"] for r in rows], 0.4, label="kernels.resample (float32)")
    ax.bar(xs + 0.2, [r["pillow_ms"] for r in rows], 0.4, label="Pillow LANCZOS (uint8)")
    for x, r in zip(xs, rows):
        ax.annotate(f"max Δ {r['max_levels']}", (x, max(r["kernel_ms"], r["pillow_ms"])), ha="center", va="bottom",
                    fontsize=7)
    ax.set(xticks=xs, ylabel="ms per frame (1 thread)", title=f"uint8 Lanczos resampling — choice: {data['choice']}")
    ax.set_xticklabels(labels, fontsize=7)
    ax.legend(fontsize=7)
    return [save_figure(fig, out_dir, "fig7_resample.png")]
