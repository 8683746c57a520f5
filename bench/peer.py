"""Figure 5: framefold codenoise vs diffusers FreeNoise — the FreeNoise side.

``measure(runner, frames)`` runs one subprocess per frame count and records its wall
time and peak RSS (the child's own ``VmHWM``, the kernel's high-water mark). A
runner maps a frame count to the command line of one generation, which prints one JSON
line; ``freenoise_runner`` is diffusers' FreeNoise on the tiny random-weight
AnimateDiff of tests/fixtures/tiny_models.py (``enable_free_noise(context_length=16,
context_stride=4)``). A framefold-codenoise column is one more runner passed to
``measure`` (a ``framefold run`` of a codenoise manifest on the same tiny model).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace

from bench.common import ROOT, child_env, mib, table

Runner = Callable[[int], list[str]]

FREENOISE = {"context_length": 16, "context_stride": 4}


def build_model(path: Path, env: dict) -> Path:
    """The tiny AnimateDiff pipeline, built in a subprocess (keeps diffusers out of this one)."""
    if not (path / "model_index.json").exists():
        subprocess.run([sys.executable, "-m", "bench.peer", "build", str(path)], env=env, cwd=ROOT, check=True,
                       capture_output=True, text=True)
    return path


def freenoise_runner(model: Path, *, height: int, width: int, steps: int, guidance: float) -> Runner:
    """Command lines for one FreeNoise generation of ``frames`` frames."""
    return lambda frames: [
        sys.executable, "-m", "bench.peer", "freenoise", str(model), "--frames", str(frames), "--height", str(height),
        "--width", str(width), "--steps", str(steps), "--guidance", str(guidance),
    ]


def measure(runner: Runner, frames: Sequence[int], env: dict, *, budget_s: float = float("inf")) -> list[dict]:
    """Run ``runner(n)`` for each n in ``frames`` (increasing), one subprocess each: wall
    time, peak RSS and the child's JSON report. A run predicted (linearly from the last)
    to overrun ``budget_s`` is skipped and marked so."""
    rows, spent, last = [], 0.0, None
    for n in frames:
        if last is not None and spent + last["wall_s"] * n / last["frames"] > budget_s:
            rows.append({"frames": n, "skipped": f"time budget ({budget_s:.0f} s)"})
            continue
        tick = time.perf_counter()
        proc = subprocess.run(runner(n), env=env, cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - tick
        spent += wall
        if proc.returncode != 0:
            rows.append({"frames": n, "skipped": f"failed ({proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}"})
            continue
        report = json.loads(proc.stdout.strip().splitlines()[-1])
        last = {"frames": n, "wall_s": wall, **report}
        rows.append(last)
    return rows


def run(quick: bool, workdir: Path, env: dict) -> dict:
    height = width = 64
    steps, guidance = (2, 7.5) if quick else (3, 7.5)
    frames = (16, 20) if quick else (16, 32, 64, 128)
    model = build_model(workdir / "tiny-animatediff", env)
    rows = measure(freenoise_runner(model, height=height, width=width, steps=steps, guidance=guidance), frames, env,
                   budget_s=60 if quick else 480)
    return {"height": height, "width": width, "steps": steps, "guidance": guidance, "freenoise": rows,
            **FREENOISE}


def section(data: dict) -> str:
    rows = []
    for r in data["freenoise"]:
        if "skipped" in r:
            rows.append([r["frames"], f"skipped: {r['skipped']}", "", "", "not measured yet", "not measured yet"])
        else:
            rows.append([r["frames"], f"{r['wall_s']:.1f}", f"{r['generate_s']:.1f}", mib(r["peak_rss"]),
                         "not measured yet", "not measured yet"])
    return "\n".join([
        f"diffusers FreeNoise on the tiny AnimateDiff (`enable_free_noise(context_length={data['context_length']}, "
        f"context_stride={data['context_stride']})`, {data['height']}×{data['width']}, {data['steps']} steps, guidance "
        f"{data['guidance']}), one subprocess per row; wall includes Python start-up, imports and loading the "
        "pipeline. The framefold codenoise columns are a placeholder: `bench.peer.measure` takes a runner, and "
        "a codenoise runner (a `framefold run` of a codenoise manifest on the same model) fills them.\n",
        table(["frames", "FreeNoise wall s", "FreeNoise pipeline call s", "FreeNoise peak RSS MiB",
               "framefold codenoise wall s", "framefold codenoise peak RSS MiB"], rows),
    ])


def plot(data: dict, out_dir: Path) -> list[str]:
    from bench.common import pyplot

    plt = pyplot()
    rows = [r for r in data["freenoise"] if "skipped" not in r]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    a.plot([r["frames"] for r in rows], [r["wall_s"] for r in rows], "o-", label="diffusers FreeNoise")
    b.plot([r["frames"] for r in rows], [r["peak_rss"] / 2**20 for r in rows], "o-", label="diffusers FreeNoise")
    for ax, ylabel in ((a, "wall s"), (b, "peak RSS MiB")):
        ax.set_xlabel("frames")
        ax.set_ylabel(ylabel)
        ax.set_ylim(bottom=0)
        ax.legend(title="framefold codenoise: to be added", fontsize=8)
    a.set_title("Peer: time")
    b.set_title("Peer: memory")
    fig.tight_layout()
    name = "fig5_peer.png"
    fig.savefig(out_dir / name, dpi=110)
    plt.close(fig)
    return [name]


# --------------------------------------------------------------------------- child processes


def _build(path: str) -> None:
    from tests.fixtures.tiny_models import build_tiny_pipeline

    build_tiny_pipeline("animatediff", "t2v", Path(path))


def _freenoise(args) -> None:
    import torch
    from diffusers import DiffusionPipeline

    tick = time.perf_counter()
    pipe = DiffusionPipeline.from_pretrained(args.model, local_files_only=True)
    if pipe.motion_adapter is None:
        # The tiny pipeline keeps its motion modules inside the UNet (UNetMotionModel) and
        # saves no separate adapter; enable_free_noise only reads the adapter's
        # motion_max_seq_length, which the UNet's config holds too.
        limit = pipe.unet.config.motion_max_seq_length
        pipe.motion_adapter = SimpleNamespace(config=SimpleNamespace(motion_max_seq_length=limit))
    pipe.enable_free_noise(**FREENOISE)
    pipe.set_progress_bar_config(disable=True)
    load_s = time.perf_counter() - tick
    tick = time.perf_counter()
    out = pipe(
        prompt="a cup of coffee, steam rising", negative_prompt="", num_frames=args.frames, height=args.height,
        width=args.width, num_inference_steps=args.steps, guidance_scale=args.guidance, output_type="np",
        generator=torch.Generator().manual_seed(0),
    )
    generate_s = time.perf_counter() - tick
    frames = out.frames[0]
    # VmHWM: this process's own high-water mark (ru_maxrss would also carry the forking parent's)
    status = Path("/proc/self/status").read_text()
    peak = next(int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmHWM:"))
    print(json.dumps({"frames_out": len(frames), "load_s": load_s, "generate_s": generate_s, "peak_rss": peak}))


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.peer [--frames 32 64 128]`` prints the FreeNoise table alone;
    the ``build`` and ``freenoise`` subcommands are the child processes ``measure`` runs."""
    parser = argparse.ArgumentParser(prog="python -m bench.peer", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd")
    b = sub.add_parser("build", help="build the tiny AnimateDiff pipeline into DIR")
    b.add_argument("path")
    f = sub.add_parser("freenoise", help="one FreeNoise generation; prints a JSON line")
    f.add_argument("model")
    f.add_argument("--frames", type=int, required=True)
    for name, default in (("--height", 64), ("--width", 64), ("--steps", 3)):
        f.add_argument(name, type=int, default=default)
    f.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--frames", type=int, nargs="+", default=[32, 64, 128], help="standalone: frame counts")
    args = parser.parse_args(argv)
    if args.cmd == "build":
        _build(args.path)
    elif args.cmd == "freenoise":
        _freenoise(args)
    else:  # standalone: the FreeNoise table for --frames
        import tempfile

        with tempfile.TemporaryDirectory(prefix="framefold-peer-") as tmp:
            env = child_env(Path(tmp))
            model = build_model(Path(tmp) / "tiny-animatediff", env)
            rows = measure(freenoise_runner(model, height=64, width=64, steps=3, guidance=7.5), args.frames, env)
            print(section({"height": 64, "width": 64, "steps": 3, "guidance": 7.5, "freenoise": rows, **FREENOISE}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
