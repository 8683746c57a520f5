"""Figure 5: framefold codenoise (and independent windows) vs diffusers FreeNoise.

``measure(runner, frames)`` runs one subprocess per frame count and records its wall
time and peak RSS (the child's own ``VmHWM``, the kernel's high-water mark). A
runner maps a frame count to the command line of one generation, which prints one JSON
line; ``freenoise_runner`` is diffusers' FreeNoise on the tiny random-weight
AnimateDiff of tests/fixtures/tiny_models.py (``enable_free_noise(context_length=16,
context_stride=4)``). ``framefold_runner`` runs framefold's own codenoise (or independent
windows) on the same model with one model actor on a local Ray.
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


def framefold_runner(model: Path, *, mode: str, overlap: int, height: int, width: int, steps: int,
                     guidance: float, profile: bool = False) -> Runner:
    """Command lines for one framefold generation (``mode`` codenoise or independent) of
    ``frames`` frames on the same model, windows of 16 frames overlapping by ``overlap``."""
    return lambda frames: [
        sys.executable, "-m", "bench.peer", "framefold", str(model), "--mode", mode, "--overlap", str(overlap),
        "--frames", str(frames), "--height", str(height), "--width", str(width), "--steps", str(steps),
        "--guidance", str(guidance), *(["--profile"] if profile else []),
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


# What the coordinator's profile reports (cumulative time of the function): (meaning, function name).
PROFILED = (
    ("loading the pipeline (text encoder, VAE, scheduler) on the coordinator", "from_pretrained"),
    ("the pipeline call: prompt encoding, every step, decoding", "__call__"),
    ("the windowed denoiser: cutting windows, sending them, fusing the predictions", "forward"),
    ("waiting for the actors' predictions (ray.get)", "get_objects"),
    ("fusing the predictions (overlap_add)", "overlap_add"),
    ("decoding the latents", "decode"),
)

# framefold's rows: (label, mode, window overlap); windows are 16 frames like FreeNoise's context.
FRAMEFOLD_ROWS = (
    ("codenoise, stride 4", "codenoise", 12),  # FreeNoise's window and stride: 4× redundant
    ("codenoise, stride 12", "codenoise", 4),  # the default overlap: 1.33× redundant
    ("independent, stride 12", "independent", 4),
)


def run(quick: bool, workdir: Path, env: dict) -> dict:
    height = width = 64
    steps, guidance = (2, 7.5) if quick else (3, 7.5)
    frames = (16, 20) if quick else (16, 32, 64, 128)
    model = build_model(workdir / "tiny-animatediff", env)
    rows = measure(freenoise_runner(model, height=height, width=width, steps=steps, guidance=guidance), frames, env,
                   budget_s=60 if quick else 240)
    ours = {}
    for label, mode, overlap in FRAMEFOLD_ROWS[:1] if quick else FRAMEFOLD_ROWS:
        runner = framefold_runner(model, mode=mode, overlap=overlap, height=height, width=width, steps=steps,
                                  guidance=guidance)
        ours[label] = measure(runner, frames[1:] if not quick else frames[:1], env, budget_s=40 if quick else 200)
    profiled = framefold_runner(model, mode="codenoise", overlap=4, height=height, width=width, steps=steps,
                                guidance=guidance, profile=True)
    profile = [] if quick else measure(profiled, frames[-2:-1], env)  # --quick: under two minutes
    return {"height": height, "width": width, "steps": steps, "guidance": guidance, "freenoise": rows,
            "framefold": ours, "profile": profile[0] if profile and "profile" in profile[0] else None, **FREENOISE}


def section(data: dict) -> str:
    ours = data.get("framefold", {})
    frames = [r["frames"] for r in data["freenoise"]]
    head = ["frames", "FreeNoise wall s", "FreeNoise load + call s", "FreeNoise peak RSS MiB"]
    for label in ours:
        head += [f"{label}: wall s", f"{label}: generate s", f"{label}: peak RSS MiB (coordinator + actor)"]
    rows = []
    for n in frames:
        r = next(r for r in data["freenoise"] if r["frames"] == n)
        row = [n, f"skipped: {r['skipped']}", "", ""] if "skipped" in r else [
            n, f"{r['wall_s']:.1f}", f"{r['load_s'] + r['generate_s']:.1f}", mib(r["peak_rss"])]
        for label, measured in ours.items():
            o = next((o for o in measured if o["frames"] == n), None)
            if o is None:
                row += ["—", "—", "—"]
            elif "skipped" in o:
                row += [f"skipped: {o['skipped']}", "", ""]
            else:
                row += [f"{o['wall_s']:.1f}", f"{o['generate_s']:.1f}",
                        f"{mib(o['peak_rss'] + o['actor_peak_rss'])} ({mib(o['peak_rss'])} + {mib(o['actor_peak_rss'])})"]
        rows.append(row)
    return "\n".join([
        f"The same tiny AnimateDiff ({data['height']}×{data['width']}, {data['steps']} steps, guidance "
        f"{data['guidance']}, windows of {data['context_length']} frames), one subprocess per cell. diffusers FreeNoise: "
        f"`enable_free_noise(context_length={data['context_length']}, context_stride={data['context_stride']})`, one "
        "process. framefold: its own code path (`tasks.codenoise.codenoise_frames`, or `generate_windows` + `stitch` "
        "for independent windows) with one model actor on a local Ray; its peak RSS is the coordinator's plus the "
        "actor's high-water marks (Ray's own daemons, about 1 GB here, are left out of both sides' figures). Wall "
        "includes Python start-up, imports and loading the pipeline (and Ray's start for framefold). FreeNoise's load + "
        "call is loading its pipeline and the generation call; framefold's generate is the item's generation as the "
        "pipeline runs it: the coordinator loads its pipeline (text encoder, VAE, scheduler) and runs it, the actor "
        "having loaded the model when the pool started. FreeNoise fuses overlapping windows inside the motion modules only; codenoise "
        "runs the whole UNet per window and averages the noise predictions, so at stride 4 it does 4× the UNet "
        "work of a single pass, and at stride 12 (framefold's default overlap) 1.33×.\n",
        table(head, rows),
        _goals(data),
    ])


def _goals(data: dict) -> str:
    """Issue goals for this figure, judged at the largest frame count every series measured."""
    ours = data.get("framefold", {})
    done = lambda rows: {r["frames"]: r for r in rows if "skipped" not in r}  # noqa: E731
    free = done(data["freenoise"])
    series = {label: done(rows) for label, rows in ours.items()}
    common = set(free).intersection(*series.values()) if series else set()
    if not common:
        return ""
    n = max(common)
    rss = lambda r: r["peak_rss"] + r.get("actor_peak_rss", 0)  # noqa: E731
    free_s = free[n]["load_s"] + free[n]["generate_s"]
    lines = [f"\nGoals, at {n} frames (FreeNoise: {free_s:.1f} s to load and generate, {mib(free[n]['peak_rss'])} MiB):\n"]
    for label, rows in series.items():
        flat = max(rss(r) for r in rows.values()) / min(rss(r) for r in rows.values())
        lines.append(
            f"- {label}: peak RSS {rss(rows[n]) / free[n]['peak_rss']:.2f}× FreeNoise's (goal ≤ 0.5), "
            f"{flat:.2f}× from its fewest to its most frames (flat: goal); generate "
            f"{rows[n]['generate_s'] / free_s:.2f}× FreeNoise's time"
            + (" (goal < 1 for independent windows and for codenoise at stride 12)." if "stride 12" in label else ".")
        )
    lines.append(
        "- Memory: framefold's figure is two processes (the coordinator and one model actor), each holding torch "
        "and diffusers (about 450 MiB apiece before any frame), where FreeNoise is one; the frames themselves add "
        "little to either at 64×64, and framefold's stays flat as the clip grows because only windows travel."
    )
    slower = [label for label, rows in series.items() if rows[n]["generate_s"] > free_s]
    if slower:
        lines.append(
            f"- Time ({', '.join(slower)} slower than FreeNoise): on this tiny model a UNet call costs milliseconds, "
            "so framefold's per-window Ray round trip (the latent slice out, the prediction back, every step) weighs "
            "as much as the compute it spreads, and at stride 4 every frame goes through the UNet four times where "
            "FreeNoise shares the work outside its motion modules. With a real model, whose UNet call on a window "
            "costs seconds on a GPU, the round trip is small and the windows run on as many GPUs as the pool has."
        )
    lines.append("- The naive per-window co-denoising loop (every window runs the whole UNet, each step) is what "
                 "codenoise computes, spread over the pool's actors; it is not run separately here.")
    prof = data.get("profile")
    if prof:
        lines.append(
            f"\nProfile (cProfile of framefold's coordinator, codenoise at stride 12, {prof['frames']} frames; "
            f"{prof['generate_s']:.1f} s with the profiler on), time inside each function including what it calls:\n"
        )
        lines.append(table(["where", "function", "calls", "seconds", "share of the generation"],
                           [[f["what"], f"`{f['function']}`", f["calls"], f"{f['seconds']:.2f}", f"{f['share']:.0%}"]
                            for f in prof["profile"]]))
    return "\n".join(lines)


def plot(data: dict, out_dir: Path) -> list[str]:
    from bench.common import pyplot

    plt = pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    series = [("diffusers FreeNoise (load + call)", data["freenoise"], lambda r: r["peak_rss"],
               lambda r: r["load_s"] + r["generate_s"])]
    series += [(f"framefold {label}", rows, lambda r: r["peak_rss"] + r["actor_peak_rss"], lambda r: r["generate_s"])
               for label, rows in data.get("framefold", {}).items()]
    for label, rows, rss, seconds in series:
        rows = [r for r in rows if "skipped" not in r]
        a.plot([r["frames"] for r in rows], [seconds(r) for r in rows], "o-", label=label)
        b.plot([r["frames"] for r in rows], [rss(r) / 2**20 for r in rows], "o-", label=label)
    for ax, ylabel in ((a, "generate s"), (b, "peak RSS MiB")):
        ax.set_xlabel("frames")
        ax.set_ylabel(ylabel)
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=7)
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


def _framefold(args) -> None:
    """One framefold generation on one model actor: codenoise, or independent windows stitched."""
    import logging
    import tempfile

    import ray

    from manifests import Settings, load_manifest
    from tasks.backends import Conditioning, spec_of
    from tasks.generate import generate_windows
    from tasks.plan import plan_item
    from tasks.pool import ActorPool
    from tasks.stitch import stitch

    with tempfile.TemporaryDirectory(prefix="framefold-peer-") as tmp:
        manifest = Path(tmp) / "job.yaml"
        manifest.write_text(json.dumps({
            "version": 1, "name": "peer", "output": "out",
            "items": [{"id": "peer", "backend": "diffusers", "prompt": "a cup of coffee, steam rising",
                       "model": {"family": "animatediff", "path": Path(args.model).name},
                       "frames": args.frames, "size": [args.width, args.height], "steps": args.steps,
                       "guidance": args.guidance, "seed": 0,
                       "window": {"length": 16, "overlap": args.overlap, "mode": args.mode, "weighting": "flat"}}],
        }))
        settings = Settings(model_root=Path(args.model).resolve().parent)
        item = load_manifest(manifest, settings=settings).items[0]
    ray.init(address="local", num_cpus=1, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    pool = ActorPool(spec_of(item), size=1, gpus=0)
    actor_pid = ray.get(pool.actors[0].pid.remote())
    cond = Conditioning(item_id=item.id, seed=item.seed, image=None, mask=None, params=item.params())

    def generate() -> int:
        if args.mode == "codenoise":
            from tasks.codenoise import codenoise_frames

            video, _ = codenoise_frames(spec_of(item), item.params(), cond, submit=pool.denoise)
            return len(video)
        plan = plan_item(item)
        windows = ((i, r.pixels) for i, r in generate_windows(pool.submit, cond, plan.requests(item.fps), plan.order,
                                                               in_flight=2))
        return sum(len(c) for c in stitch(windows, plan.windows, num_frames=plan.num_frames, weighting=plan.weighting))

    # one-time process costs, outside the timing as FreeNoise's imports are: diffusers and the
    # pipeline's modules (codenoise loads the coordinator's pipeline) and the stitch kernel's compilation
    import numpy as np

    import diffusers

    import tasks.codenoise  # noqa: F401
    from kernels.blend import blend_pair

    diffusers.AnimateDiffPipeline  # noqa: B018 - resolves diffusers' lazy import of the pipeline and CLIP modules

    one = np.zeros((1, 1), np.uint8)
    blend_pair(one, np.ones(1), one, np.ones(1), one.copy())
    report = {}
    tick = time.perf_counter()
    if args.profile:  # cProfile of the coordinator: where its wall time goes, by function (self time)
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        delivered = profiler.runcall(generate)
        stats = pstats.Stats(profiler).stats  # (file, line, name) -> (calls, _, self s, cumulative s, _)
        total = time.perf_counter() - tick
        report["profile"] = []
        for what, name in PROFILED:  # the biggest cumulative entry of each
            found = [(k, v) for k, v in stats.items() if k[2] == name]
            if found:
                k, v = max(found, key=lambda kv: kv[1][3])
                report["profile"].append({"what": what, "function": f"{Path(k[0]).name}:{name}", "calls": v[0],
                                          "seconds": v[3], "share": v[3] / total})
    else:
        delivered = generate()
    generate_s = time.perf_counter() - tick
    actor_peak = _vm_hwm(actor_pid)
    pool.close()
    ray.shutdown()
    print(json.dumps({"frames_out": delivered, "generate_s": generate_s, "peak_rss": _vm_hwm("self"),
                      "actor_peak_rss": actor_peak, **report}))


def _vm_hwm(pid) -> int:
    """A process's peak resident set (VmHWM), bytes."""
    status = Path(f"/proc/{pid}/status").read_text()
    return next(int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmHWM:"))


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
    ff = sub.add_parser("framefold", help="one framefold generation on one model actor; prints a JSON line")
    ff.add_argument("model")
    ff.add_argument("--mode", choices=("codenoise", "independent"), required=True)
    ff.add_argument("--overlap", type=int, required=True)
    ff.add_argument("--frames", type=int, required=True)
    for name, default in (("--height", 64), ("--width", 64), ("--steps", 3)):
        ff.add_argument(name, type=int, default=default)
    ff.add_argument("--guidance", type=float, default=7.5)
    ff.add_argument("--profile", action="store_true", help="cProfile the coordinator; report its top functions")
    parser.add_argument("--frames", type=int, nargs="+", default=[32, 64, 128], help="standalone: frame counts")
    args = parser.parse_args(argv)
    if args.cmd == "build":
        _build(args.path)
    elif args.cmd == "freenoise":
        _freenoise(args)
    elif args.cmd == "framefold":
        _framefold(args)
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
