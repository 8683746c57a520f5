"""Quality side by side: independent, codenoise (1 and 2 actors) and freenoise on the
exact reference denoiser and on the small trained model.

Everything runs through framefold's own paths: items come from a manifest
(``manifests.load_manifest``), plans from ``tasks.plan``, windows from the diffusers
backend and ``tasks.stitch`` (independent, freenoise), the windowed denoiser of
``tasks.codenoise`` (in this process for one actor; an ``ActorPool`` of two Ray actors
for two). Frames are the 8-bit frames framefold encodes.

On the reference denoiser (``tasks.backends.components.GaussianProcessDenoiser``) the
truth is known: the correlation of frames t and t+k is ``autocovariance(k)/sigma²``
wherever t sits. ``reference_stats`` measures, per seed, how far the correlation of
frame pairs that straddle a window boundary is from it (and, as the sampler's own
floor, pairs inside one window).

    python -m bench.quality reference --seeds 8 --frames 64
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")

MODES = ("independent", "codenoise", "freenoise")


def items_for(model: Path, *, mode: str, seeds, frames: int, length: int, overlap: int, size: int,
              steps: int, prompt: str = "waves", guidance: float = 1.0, weighting: str = "linear",
              loop: bool = False, name: str | None = None):  # fmt: skip
    """Resolved items (one per seed) of a manifest written beside ``model``."""
    from manifests import load_manifest

    doc = {"version": 1, "name": f"q-{mode}", "output": "out",
           "defaults": {"backend": "diffusers", "fps": 8, "steps": steps, "guidance": guidance, "size": [size, size],
                        "loop": loop, "prompt": prompt, "frames": frames,
                        "model": {"family": "animatediff", "path": model.name},
                        "window": {"length": length, "overlap": overlap, "mode": mode, "weighting": weighting}},
           "items": [{"id": f"s{seed}", "seed": int(seed)} for seed in seeds]}  # fmt: skip
    path = model.parent / f"q-{model.name}-{mode}-{loop}{'-' + name if name else ''}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return load_manifest(path).items


def render(item, *, pool=None, image: torch.Tensor | None = None) -> torch.Tensor:
    """The item's frames (T, H, W, 3) uint8 at its generation size (``image``: the
    item's still, fitted, for image-to-video backends)."""
    from kernels.pixels import to_uint8
    from tasks.backends import Conditioning, load, spec_of
    from tasks.plan import plan_item
    from tasks.stitch import stitch

    spec, params = spec_of(item), item.params()
    cond = Conditioning(item.id, item.seed, image, None, params)
    plan = plan_item(item)
    if item.window.mode == "codenoise":
        from tasks.codenoise import codenoise_frames

        if pool is None:
            model = load(spec).pipe.unet

            def submit(key, x, shared, own):
                with torch.inference_mode():
                    return model(**{key: x}, **shared, **own, return_dict=False)[0]

            video, _ = codenoise_frames(spec, params, cond, submit=submit, local=True)
        else:
            video, _ = codenoise_frames(spec, params, cond, submit=pool.denoise)
        return to_uint8(video)
    backend = load(spec)
    windows = ((i, to_uint8(backend.generate(r, cond))) for i, r in enumerate(plan.requests(item.fps)))
    return torch.cat(list(stitch(windows, plan.windows, num_frames=plan.num_frames, weighting=plan.weighting)))


def boundaries(item) -> list[int]:
    """Frames where a window of the item's mode starts or ends (inside the clip)."""
    from kernels.windows import plan_windows

    t, length, overlap = item.frames, item.window.length, item.window.overlap
    if item.window.mode == "freenoise":  # diffusers' FreeNoise windows, with its extra tail window
        stride = length - overlap
        wins = [(s, s + length) for s in range(0, t - length + 1, stride)]
        if wins[-1][1] != t:
            wins.append((t - length, t))
    else:
        wins = [(w.start, w.start + w.length) for w in plan_windows(t, length=length, overlap=overlap,
                                                                    circular=item.loop)]  # fmt: skip
    return sorted({e % t for w in wins for e in w} - {0} if item.loop else {e for w in wins for e in w} - {0, t})


def reference_stats(frames_by_seed: list[torch.Tensor], bounds: list[int], autocovariance: np.ndarray, *,
                    lags=(1, 2, 4), circular: bool = False) -> dict:  # fmt: skip
    """Per lag: mean |ρ̂(t, t+k) − ρ(k)| over boundary-straddling pairs and over the
    other pairs, per seed (mean and std over seeds), and the per-frame variance ratio."""
    from kernels.metrics import crossing, lag_correlation

    truth = autocovariance / autocovariance[0]
    out: dict = {}
    for k in lags:
        cross, inner = [], []
        for frames in frames_by_seed:
            x = frames.to(torch.float64).div(255).mul(2).sub(1).reshape(len(frames), -1)
            if circular:
                x = torch.cat([x, x[:k]])
            rho = lag_correlation(x, k)
            mask = crossing(bounds, len(frames), k, circular=circular)
            dev = (rho - truth[k]).abs()
            cross.append(float(dev[mask].mean()))
            inner.append(float(dev[~mask].mean()))
        out[f"lag{k}"] = {"truth": float(truth[k]), "cross_mean": float(np.mean(cross)),
                          "cross_std": float(np.std(cross)), "inner_mean": float(np.mean(inner)),
                          "inner_std": float(np.std(inner)), "cross_per_seed": cross}  # fmt: skip
    var = torch.stack([f.to(torch.float64).div(255).mul(2).sub(1).reshape(len(f), -1).pow(2).mean(1)
                       for f in frames_by_seed]).mean(0) / autocovariance[0]  # fmt: skip
    out["variance_ratio"] = {"min": float(var.min()), "median": float(var.median())}
    return out


def as_delivered(item, video: np.ndarray, folder: Path):
    """A loop item's frames (T, H, W, 3) uint8 in the order its file has them (the item's
    ``loop_start``, as ``tasks.finish`` applies it), and the :class:`tasks.loopcut.LoopCut`."""
    from tasks.loopcut import LoopCut, cut_loop

    cut = LoopCut(item.loop_start_rule or "first")
    out = np.concatenate([c.numpy() for c in cut_loop([torch.from_numpy(video)], folder, cut)])
    return out, cut


def loop_closure(items, clips: list[torch.Tensor], folder: Path) -> dict:
    """Wrap step ÷ median step of looping clips (T, H, W, 3) uint8: of the generated order,
    and of each clip's mp4 (its frames from the item's ``loop_start``) decoded back (mean,
    std and largest over clips), and the mp4's largest step around the loop ÷ its median."""
    from tasks.encode import VideoEncoder
    from tasks.quality import measure_file, measure_frames

    folder.mkdir(parents=True, exist_ok=True)
    frames, files, largest = [], [], []
    for n, (item, clip) in enumerate(zip(items, clips)):
        generated = np.ascontiguousarray(clip.numpy())
        height, width = generated.shape[1:3]
        frames.append(measure_frames([generated], loop=True)["loop_closure_ratio"])
        video, _ = as_delivered(item, generated, folder)
        path = folder / f"{n}.mp4"
        with VideoEncoder(path, width=width, height=height, fps=8, loop_frames=len(video)) as enc:
            enc.write(video)
        measured = measure_file(path, width=width, height=height, loop=True)
        files.append(measured["loop_closure_ratio"])
        largest.append(measured["largest_step_ratio"])
    return {"generated": {"mean": float(np.mean(frames)), "std": float(np.std(frames)), "max": float(np.max(frames))},
            "mp4": {"mean": float(np.mean(files)), "std": float(np.std(files)), "max": float(np.max(files))},
            "mp4_largest_step": {"mean": float(np.mean(largest)), "std": float(np.std(largest))}}


def reference(seeds: int = 8, frames: int = 64, *, length: int = 16, overlap: int = 4, size: int = 16,
              steps: int = 50, modes=MODES, loop: bool = False, weighting: str = "linear",
              work: Path | None = None) -> dict:  # fmt: skip
    """The side-by-side statistics on the exact reference denoiser."""
    from tasks.backends.components import build_reference_pipeline

    work = Path(work or tempfile.mkdtemp(prefix="ff-quality-"))
    model = work / "reference"
    if not (model / "model_index.json").exists():
        build_reference_pipeline(model, window=length, size=size)
    from tasks.backends import load, spec_of

    results: dict = {}
    for mode in modes:
        if loop and mode == "freenoise":
            continue
        items = items_for(model, mode=mode, seeds=range(seeds), frames=frames, length=length,
                          overlap=overlap, size=size, steps=steps, loop=loop, weighting=weighting)  # fmt: skip
        unet = load(spec_of(items[0])).pipe.unet
        autocovariance = unet.autocovariance.numpy()
        t0 = time.perf_counter()
        clips = [render(item) for item in items]
        seconds = (time.perf_counter() - t0) / len(items)
        stats = reference_stats(clips, boundaries(items[0]), autocovariance, circular=loop)
        stats["seconds_per_clip"] = round(seconds, 3)
        if loop:  # the wrap in the frames and in each clip's mp4 (encoded as framefold encodes loops)
            stats["loop_closure"] = loop_closure(items, clips, work / f"loops-{mode}")
        results[mode] = stats
    return {"seeds": seeds, "frames": frames, "window": [length, overlap], "size": size, "steps": steps,
            "loop": loop, "weighting": weighting, "modes": results}  # fmt: skip


def trained(model: Path, *, mode: str, seeds: int = 8, frames: int = 64, steps: int = 10, actors: int = 1,
            prompt: str = "a red square moving right", loop: bool = False, strip: Path | None = None,
            overlap: int = 4, weighting: str = "linear", guidance: float = 3.0) -> dict:  # fmt: skip
    """One mode on the trained model: seam and drift metrics measured on each seed's
    mp4 (decoded back), coherence against the training clips (frame-to-frame change; the
    prompt's shape: :func:`shape_stats`), seconds per clip and this process's peak memory
    (run one mode per process to compare peaks)."""
    from bench.train_tiny import COLOURS, render_clips, sample_params
    from tasks.encode import VideoEncoder
    from tasks.quality import decode, measure_file, measure_frames

    import shutil

    work = Path(tempfile.mkdtemp(prefix="ff-quality-"))  # the manifest lives beside the model: use a copy
    shutil.copytree(model, work / model.name)
    model = work / model.name
    items = items_for(model, mode=mode, seeds=range(seeds), frames=frames, length=8, overlap=overlap, size=32,
                      steps=steps, prompt=prompt, guidance=guidance, weighting=weighting, loop=loop)  # fmt: skip
    pool = None
    if actors > 1:
        import ray

        from tasks.backends import spec_of
        from tasks.pool import ActorPool

        ray.init(address="local", num_cpus=actors, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        pool = ActorPool(spec_of(items[0]), size=actors, gpus=0, cpus=1)
    spans = [(w.start, w.length) for w in __import__("tasks.plan", fromlist=["plan_item"]).plan_item(items[0]).windows]
    if mode == "freenoise":
        spans = [(b - 4, 8) for b in boundaries(items[0])[::2]] or spans
    t0 = time.perf_counter()
    per_seed, clips, shapes, evenness, generated_wraps = [], [], [], [], []
    colour = COLOURS[prompt.split()[1]]
    with tempfile.TemporaryDirectory() as tmp:
        for item in items:
            video = render(item, pool=pool).numpy()
            clips.append(video)
            shown = spans
            if loop:  # the file's order (loop_start), and the generated order's wrap for comparison
                generated_wraps.append(step_spread(video, loop=True))
                video, cut = as_delivered(item, video, Path(tmp))
                shown = [((start - cut.start) % len(video), length) for start, length in spans]
            path = Path(tmp) / f"{item.id}.mp4"
            with VideoEncoder(path, width=32, height=32, fps=8, loop_frames=len(video) if loop else None) as enc:
                enc.write(video)
            per_seed.append(measure_file(path, width=32, height=32, windows=shown, loop=loop))
            decoded = np.concatenate([np.asarray(c).reshape(-1, 32, 32, 3) for c in decode(path, width=32, height=32)])
            shapes.append(shape_stats(decoded, colour))
            evenness.append(step_spread(decoded, loop=loop))
    seconds = (time.perf_counter() - t0) / seeds
    if pool is not None:
        pool.close()
    # the training data's own frame-to-frame change, for the same caption
    params = sample_params(np.random.default_rng(0), 64)
    params = [p for p in params if p["motion"] == prompt.split(" ", 3)[-1]][:8] or params[:8]
    truth_clips = [(render_clips([p], range(frames))[0] * 255).round().byte().permute(0, 2, 3, 1).numpy()
                   for p in params]  # fmt: skip
    truth = [measure_frames([clip]) for clip in truth_clips]
    truth_spread = [step_spread(clip)["steps_over_1_2"] for clip in truth_clips]
    coverage = float(np.median([shape_stats(clip, COLOURS[p["colour"]])["coverage"]
                                for clip, p in zip(truth_clips, params)]))  # each clip's shape in its own colour
    if strip is not None:
        save_strip(clips[0], strip, first=max(0, (boundaries(items[0]) or [8])[0] - 4), count=12)

    def agg(key):
        return agg2([m[key] for m in per_seed if m.get(key) is not None])

    def agg2(vals):
        return {"mean": round(float(np.mean(vals)), 6), "std": round(float(np.std(vals)), 6)} if vals else None

    return {"mode": mode, "actors": actors, "seeds": seeds, "frames": frames, "steps": steps, "loop": loop,
            "window": [8, overlap], "weighting": weighting, "guidance": guidance,
            "seam_ratio": agg("seam_ratio"), "median_step": agg("median_step"), "flicker": agg("flicker"),
            "loop_closure_ratio": agg("loop_closure_ratio"), "brightness_drift": agg("brightness_drift"),
            "loop_closure_per_seed": [m.get("loop_closure_ratio") for m in per_seed] if loop else None,
            # the largest step around the loop ÷ median step: the same wherever the file starts
            "largest_step_ratio": agg("largest_step_ratio") if loop else None,
            "largest_step_per_seed": [m.get("largest_step_ratio") for m in per_seed] if loop else None,
            "colour_drift": agg("colour_drift"),
            # how even the motion is: the share of steps above 1.2× their clip's median (the training
            # clips' alongside), and for loops where the wrap ranks among its clip's steps
            "steps_over_1_2": agg2([e["steps_over_1_2"] for e in evenness]),
            "training_steps_over_1_2": round(float(np.mean(truth_spread)), 4),
            # the generated order's wrap (before loop_start moves it to the quietest step): its
            # ratio to the median step and its rank among the clip's steps (a seam would rank near 1)
            "generated_wrap_per_seed": [g["wrap_ratio"] for g in generated_wraps] if loop else None,
            "wrap_rank_per_seed": [g["wrap_rank"] for g in generated_wraps] if loop else None,
            "training_median_step": float(np.median([m["median_step"] for m in truth])),
            # the prompt's shape: its share of the frame ÷ the training clips', frames where it shows
            # (share within 0.5–2× theirs), and how far the rest is from the training background
            "coverage_ratio": agg2([s["coverage"] / coverage for s in shapes]),
            "frames_with_shape": agg2([float(np.mean((s["per_frame"] >= coverage / 2)
                                                     & (s["per_frame"] <= 2 * coverage))) for s in shapes]),
            "background_error": agg2([s["background_error"] for s in shapes]),
            "seconds_per_clip": round(seconds, 3), "peak_rss_mib": round(peak_rss_mib(), 1)}  # fmt: skip


def loops(manifest: Path) -> list[dict]:
    """Every ``loop: true`` item of ``manifest``, generated and upscaled as framefold does
    (its still, window plan and resampling upscaler; no mask, no learned upscaler):
    wrap step ÷ median step (``loop_closure_ratio``) of its frames before encoding, of a
    plain mp4 and of the mp4 framefold writes for a loop (:func:`tasks.encode.loop_coding`),
    and the loop file's size ÷ the plain one's."""
    from manifests import load_manifest
    from manifests.settings import Settings
    from tasks.encode import VideoEncoder
    from tasks.media import load_image
    from tasks.quality import measure_file, measure_frames
    from tasks.upscale import upscale

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for item in load_manifest(manifest).items:
            if not item.loop:
                continue
            image = None
            if item.image is not None:
                image, _ = load_image(item.image, size=item.size, fit=item.fit, background=item.background,
                                      max_pixels=Settings().max_image_pixels)
            video = render(item, image=image)
            width, height = item.output_size
            if (width, height) != tuple(item.size):
                video = torch.cat(list(upscale([video], size=(width, height), method=item.upscale.method)))
            row = {"id": item.id, "backend": item.backend, "frames": len(video), "size": [width, height],
                   "frames_ratio": measure_frames([video.numpy()], loop=True)["loop_closure_ratio"]}  # fmt: skip
            for kind, loop_frames in (("plain", None), ("loop", len(video))):
                path = Path(tmp) / f"{item.id}-{kind}.mp4"
                with VideoEncoder(path, width=width, height=height, fps=item.fps, loop_frames=loop_frames) as enc:
                    enc.write(video.numpy())
                row[f"{kind}_ratio"] = measure_file(path, width=width, height=height, loop=True)["loop_closure_ratio"]
                row[f"{kind}_bytes"] = path.stat().st_size
            row["size_ratio"] = round(row["loop_bytes"] / row["plain_bytes"], 3)
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def step_spread(frames: np.ndarray, *, loop: bool = False) -> dict:
    """How even a clip's motion is, from its frames (T, H, W, 3): ``steps_over_1_2``, the
    share of its frame steps above 1.2× their median (acceptance 3's bar for a loop's
    wrap); for a loop also ``wrap_rank``, the share of its other steps smaller than the
    wrap (a seam puts it near 1; a wrap that is an ordinary step ranks anywhere,
    about 0.5 on average over seeds), and ``wrap_ratio``, the wrap ÷ the median step."""
    from kernels.metrics import frame_steps

    steps = frame_steps(torch.from_numpy(np.ascontiguousarray(frames))).numpy()
    out = {"steps_over_1_2": round(float(np.mean(steps > 1.2 * np.median(steps))), 4)}
    if loop:
        wrap = float(frame_steps(torch.from_numpy(np.ascontiguousarray(frames[[-1, 0]])))[0])
        out["wrap_rank"] = round(float(np.mean(steps < wrap)), 4)
        out["wrap_ratio"] = round(wrap / float(np.median(steps)), 4) if np.median(steps) > 0 else None
    return out


def shape_stats(frames: np.ndarray, colour) -> dict:
    """Frames (T, H, W, 3) uint8 of a one-shape clip of ``colour`` (RGB in 0..1) on the
    training background: per frame, the share of pixels nearer the colour than the
    background (``per_frame``, its mean ``coverage``), and the RMS distance (0..1) of the
    other pixels from the background colour (``background_error``)."""
    from bench.train_tiny import BACKGROUND

    x = frames.astype(np.float32) / 255
    to_colour = np.linalg.norm(x - np.asarray(colour, np.float32), axis=-1)
    to_background = np.linalg.norm(x - np.asarray(BACKGROUND, np.float32), axis=-1)
    shape = to_colour < to_background
    per_frame = shape.reshape(len(x), -1).mean(1)
    rest = to_background[~shape]
    return {"per_frame": per_frame, "coverage": float(per_frame.mean()),
            "background_error": float(np.sqrt(np.mean(rest**2))) if rest.size else 0.0}


DIRECTIONS = {"moving right": (1, 0), "moving left": (-1, 0), "moving down": (0, 1), "moving up": (0, -1)}


def prompt_following(frames: np.ndarray, prompt: str) -> dict:
    """What of a ``"a {colour} {shape} {motion}"`` prompt one clip (T, H, W, 3) uint8 of the
    shapes data shows: ``colour_match``, the share of its shape pixels (farther than 0.2 from
    the training background) whose nearest training colour is the prompt's; for a moving
    prompt ``velocity``, the median per-frame displacement (pixels) of the shape's centroid
    along the prompt's direction (circular means: shapes wrap around the frame edges; the
    training clips move 1–2 pixels per frame)."""
    from bench.train_tiny import BACKGROUND, COLOURS

    x = frames.astype(np.float32) / 255
    names = list(COLOURS)
    palette = np.asarray([COLOURS[c] for c in names], np.float32)
    shape = np.linalg.norm(x - np.asarray(BACKGROUND, np.float32), axis=-1) > 0.2
    nearest = np.argmin(np.linalg.norm(x[..., None, :] - palette, axis=-1), axis=-1)
    colour = prompt.split()[1]
    out = {"colour_match": float(np.mean(nearest[shape] == names.index(colour))) if shape.any() else 0.0}
    motion = prompt.split(" ", 3)[-1]
    if motion in DIRECTIONS:
        own = shape & (nearest == names.index(colour))
        axis = 2 if DIRECTIONS[motion][0] else 1  # x: columns, y: rows
        size = own.shape[axis]
        theta = 2 * np.pi * (np.arange(size) + 0.5) / size
        weights = own.sum(axis=3 - axis)  # (T, size): the shape's pixels per column (row)
        centre = np.angle((weights * np.exp(1j * theta)).sum(1)) * size / (2 * np.pi)
        seen = weights.sum(1) > 0
        step = (np.diff(centre) + size / 2) % size - size / 2
        step = step[seen[1:] & seen[:-1]]
        sign = sum(DIRECTIONS[motion])
        out["velocity"] = float(np.median(step) * sign) if step.size else None
    return out


def following(model: Path, *, seeds: int = 8, frames: int = 16, steps: int = 5, mode: str = "independent") -> dict:
    """Does the trained model do what its prompt says? Per prompt (every colour; every
    direction of motion, on a square and a circle), :func:`prompt_following` over
    ``seeds`` clips of the model and, alongside, over training clips of that prompt."""
    with tempfile.TemporaryDirectory(prefix="ff-following-") as tmp:
        return _following(model, Path(tmp), seeds=seeds, frames=frames, steps=steps, mode=mode)


def _following(model: Path, work: Path, *, seeds: int, frames: int, steps: int, mode: str) -> dict:
    import shutil

    from bench.train_tiny import COLOURS, captions_of, render_clips, sample_params

    shutil.copytree(model, work / model.name)
    prompts = [f"a {c} circle pulsing" for c in COLOURS]
    prompts += [f"a red {s} {m}" for s in ("square", "circle") for m in DIRECTIONS]
    pool = sample_params(np.random.default_rng(0), 4000)
    out = {}
    for prompt in prompts:
        tag = prompt.replace(" ", "-")
        items = items_for(work / model.name, mode=mode, seeds=range(seeds), frames=frames, length=8, overlap=4,
                          size=32, steps=steps, prompt=prompt, guidance=3.0, loop=False, name=tag)  # fmt: skip
        got = [prompt_following(render(item).numpy(), prompt) for item in items]
        params = [p for p in pool if captions_of([p])[0] == prompt][:seeds]
        truth = [prompt_following((render_clips([p], range(frames))[0] * 255).round().byte()
                                  .permute(0, 2, 3, 1).numpy(), prompt) for p in params]  # fmt: skip
        row = {}
        for key in ("colour_match", "velocity"):
            vals = [g[key] for g in got if g.get(key) is not None]
            known = [t[key] for t in truth if t.get(key) is not None]
            if vals:
                row[key] = {"mean": round(float(np.mean(vals)), 3), "std": round(float(np.std(vals)), 3),
                            "training": round(float(np.mean(known)), 3) if known else None}
        out[prompt] = row
        print(prompt, json.dumps(row), file=sys.stderr, flush=True)
    return {"mode": mode, "seeds": seeds, "frames": frames, "steps": steps, "prompts": out}


def motion_words(model: Path, *, noise_levels=(200, 400, 600, 800, 950)) -> dict:
    """Does the trained model read its motion words? Three probes of its components:
    ``text_distance`` — how far the text encoder's output moves (largest over token
    positions; ``norm``: its size) when one word changes: the direction, the shape or the
    colour; ``loss`` — the denoising loss (x₀ units) of 16 training clips moving left or
    right at each noise level, with their own caption, with the direction word swapped and
    with no caption; ``tracked_velocity`` — the velocity (pixels per frame, along the
    motion) of the x̂₀ the model predicts for 8 training clips of a red shape moving right
    (1–2 in the clips) at each noise level."""
    import diffusers
    import torch.nn.functional as F
    from transformers import CLIPTextModel, CLIPTokenizer

    from bench import train_tiny as T

    unet = diffusers.UNetMotionModel.from_pretrained(model / "unet").eval()
    text = CLIPTextModel.from_pretrained(model / "text_encoder").eval()
    tok = CLIPTokenizer.from_pretrained(model / "tokenizer")
    scheduler = diffusers.DDIMScheduler.from_pretrained(model / "scheduler")
    with torch.no_grad():
        emb = T.encode_text(tok, text, ["a red square moving right", "a red square moving left",
                                        "a red circle moving right", "a blue square moving right"])
    distance = {word: round(float((emb[0] - emb[i]).norm(dim=-1).max()), 3)
                for i, word in ((1, "direction"), (2, "shape"), (3, "colour"))}
    distance["norm"] = round(float(emb[0].norm(dim=-1).max()), 3)

    def predict(params: list[dict], captions: list[str], t: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        x0 = T.to_latents(T.render_clips(params, range(5, 5 + T.FRAMES)))
        noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
        steps = torch.full((len(params),), t)
        with torch.no_grad():
            hidden = T.encode_text(tok, text, captions).repeat_interleave(T.FRAMES, 0)
            pred = unet(scheduler.add_noise(x0, noise, steps), steps, encoder_hidden_states=hidden).sample
        return pred, x0

    pool = T.sample_params(np.random.default_rng(11), 400)
    sideways = [p for p in pool if p["motion"] in ("moving right", "moving left")][:16]
    own = T.captions_of(sideways)
    swapped = [c.replace("right", "?").replace("left", "right").replace("?", "left") for c in own]
    right = [p for p in pool if p["motion"] == "moving right" and p["colour"] == "red"][:8]
    loss, tracked = {}, {}
    for t in noise_levels:
        row = {}
        for name, captions in (("own caption", own), ("direction swapped", swapped), ("no caption", [""] * 16)):
            pred, x0 = predict(sideways, captions, t, seed=t)
            row[name] = round(float((pred - x0).pow(2).mean()), 5)
        loss[t] = row
        pred, _ = predict(right, T.captions_of(right), t, seed=t)
        frames = F.pixel_shuffle(pred.permute(0, 2, 1, 3, 4).flatten(0, 1), T.FACTOR)
        frames = ((frames.clamp(-1, 1) + 1) / 2 * 255).round().byte().view(len(right), T.FRAMES, 3, T.SIZE, T.SIZE)
        v = [prompt_following(clip.permute(0, 2, 3, 1).numpy(), "a red square moving right").get("velocity")
             for clip in frames]  # fmt: skip
        tracked[t] = [None if x is None else round(x, 2) for x in v]
    return {"text_distance": distance, "loss": loss, "tracked_velocity": tracked}


def save_strip(frames: np.ndarray, path: Path, *, first: int, count: int, scale: int = 4) -> None:
    """Frames ``first .. first+count`` side by side, enlarged ×``scale`` (nearest)."""
    from PIL import Image

    row = np.concatenate(list(frames[first : first + count]), axis=1)
    Image.fromarray(row).resize((row.shape[1] * scale, row.shape[0] * scale), Image.NEAREST).save(path)


def combine_strips(rows: list[tuple[str, Path]], out: Path) -> None:
    """Frame strips (from ``--strip``) stacked into one figure, each row labelled."""
    from PIL import Image, ImageDraw

    strips = [(label, Image.open(path).convert("RGB")) for label, path in rows]
    label_w, gap = 150, 6
    width = label_w + max(im.width for _, im in strips)
    height = sum(im.height + gap for _, im in strips)
    sheet = Image.new("RGB", (width, height), "white")
    draw, y = ImageDraw.Draw(sheet), 0
    for label, im in strips:
        sheet.paste(im, (label_w, y))
        draw.text((6, y + im.height // 2 - 6), label, fill="black")
        y += im.height + gap
    sheet.save(out)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="quality side by side")
    ap.add_argument("what", choices=["reference", "trained", "following", "words", "strips", "loops"],
                    help="following: what of its prompts the trained model shows (colour, direction); "
                         "words: whether it reads its motion words (text encoder, loss, x0 probes); "
                         "strips: stack LABEL=PNG strips (the rest of the line) into --out; "
                         "loops: the loop items of --manifest, plain vs loop-coded mp4")
    ap.add_argument("strips", nargs="*", metavar="LABEL=PNG")
    ap.add_argument("--model", type=Path, default=Path(__file__).resolve().parents[1] / "manifests/examples/models/shapes")
    ap.add_argument("--mode", default="codenoise")
    ap.add_argument("--modes", default=",".join(MODES), help="reference: modes to compare")
    ap.add_argument("--weighting", default="linear")
    ap.add_argument("--overlap", type=int, default=4)
    ap.add_argument("--actors", type=int, default=1)
    ap.add_argument("--strip", type=Path, default=None)
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--loop", action="store_true")
    ap.add_argument("--guidance", type=float, default=3.0, help="trained: classifier-free guidance scale")
    ap.add_argument("--prompt", default="a red square moving right", help="trained: the items' prompt")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--manifest", type=Path, default=Path(__file__).resolve().parents[1] / "manifests/examples/loops.yaml")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    if a.what == "strips":
        combine_strips([tuple(x.split("=", 1)) for x in a.strips], a.out)
        return 0
    if a.what == "loops":
        res = loops(a.manifest)
    elif a.what == "words":
        res = motion_words(a.model)
    elif a.what == "following":
        res = following(a.model, seeds=a.seeds, frames=a.frames, steps=a.steps, mode=a.mode)
    elif a.what == "trained":
        res = trained(a.model, mode=a.mode, seeds=a.seeds, frames=a.frames, steps=a.steps, actors=a.actors,
                      loop=a.loop, strip=a.strip, overlap=a.overlap, prompt=a.prompt, weighting=a.weighting,
                      guidance=a.guidance)  # fmt: skip
    else:
        res = reference(a.seeds, a.frames, steps=a.steps, loop=a.loop, modes=a.modes.split(","),
                        weighting=a.weighting, overlap=a.overlap)  # fmt: skip
    text = json.dumps(res, indent=1)
    if a.out:
        a.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
