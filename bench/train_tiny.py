"""Train the small text-to-video model framefold ships as an example ("shapes").

AnimateDiff's layout with diffusers' own classes: a ``UNet2DConditionModel`` plus a
``MotionAdapter`` fused into a ``UNetMotionModel``, a tiny ``CLIPTextModel`` with a
word-level ``CLIPTokenizer`` written here, a DDIM scheduler (x₀-prediction, cosine
betas, trailing spacing) and framefold's weight-free ``PixelShuffleVAE`` (latents are
pixel-unshuffled 32×32 frames: 48 channels at 8×8, decoded exactly).

Data: clips the script renders itself, one coloured shape on a dark background,
moving (wrapping around the frame), rotating or pulsing; the caption names the
colour, the shape and the motion ("a red square moving left"). Every frame is a
function of its absolute time, so clips of any length exist for comparison.

Run once, in the background (about an hour on one CPU thread)::

    OMP_WAIT_POLICY=PASSIVE nice -n 10 python -m bench.train_tiny --out manifests/examples/models/shapes --minutes 60

It writes an EMA checkpoint (a diffusers directory) every few minutes, a loss log
(``loss.jsonl``) and, at the end, ``recipe.json`` (hyper-parameters, data recipe,
seed, steps, weights digest). CI never retrains: tests check the digest against the
recipe and that a few more steps from the committed weights lower the loss.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import copy
import json
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

COLOURS = {
    "red": (0.92, 0.18, 0.15), "green": (0.20, 0.80, 0.25), "blue": (0.22, 0.40, 0.95),
    "yellow": (0.95, 0.85, 0.15), "white": (0.95, 0.95, 0.95), "magenta": (0.90, 0.25, 0.85),
}  # fmt: skip
SHAPES = ("circle", "square", "triangle")
MOTIONS = ("moving left", "moving right", "moving up", "moving down", "rotating", "pulsing")
BACKGROUND = (0.10, 0.10, 0.12)
WORDS = ["a", *COLOURS, *SHAPES, "moving", "left", "right", "up", "down", "rotating", "pulsing"]

SIZE = 32  # frame side in pixels
FACTOR = 4  # pixel-unshuffle factor: latents 48 x 8 x 8
FRAMES = 8  # frames per training clip (the model's window)
MAX_TOKENS = 8

RECIPE = {
    "name": "shapes",
    "seed": 0,
    "frames": FRAMES,
    "size": SIZE,
    "batch": 4,
    "lr": 1e-3,
    "weight_decay": 0.0,
    "warmup_steps": 100,
    "ema_decay": 0.995,
    "caption_dropout": 0.1,
    "grad_clip": 1.0,
    "prediction_type": "sample",  # x0: clean frames at every step (v left per-pixel noise here)
    "snr_clamp": [1.0, 5.0],
    "temporal_weight": 0.0,
    "timesteps": 1000,
    "threads": 1,
    "data": {
        "generator": "bench.train_tiny.render_clips",
        "colours": list(COLOURS),
        "shapes": list(SHAPES),
        "motions": list(MOTIONS),
        "background": BACKGROUND,
        "speed_px_per_frame": [1.0, 2.0],
        "angular_speed_rad_per_frame": [0.15, 0.35],
        "pulse_period_frames": [6.0, 10.0],
        "pulse_depth": 0.35,
        "radius_px": [5.0, 8.0],
        "supersample": 4,
        "caption": "a {colour} {shape} {motion}",
    },
}


OBJECTIVE = ("prediction_type", "snr_clamp", "batch", "threads", "temporal_weight")  # per training phase

# --------------------------------------------------------------------------- data


def captions_of(params: list[dict]) -> list[str]:
    return [f"a {p['colour']} {p['shape']} {p['motion']}" for p in params]


def sample_params(rng: np.random.Generator, n: int) -> list[dict]:
    d = RECIPE["data"]
    out = []
    for _ in range(n):
        motion = MOTIONS[rng.integers(len(MOTIONS))]
        p = {
            "colour": list(COLOURS)[rng.integers(len(COLOURS))],
            "shape": SHAPES[rng.integers(len(SHAPES))],
            "motion": motion,
            "x": float(rng.uniform(0, SIZE)), "y": float(rng.uniform(0, SIZE)),
            "radius": float(rng.uniform(*d["radius_px"])),
            "angle": float(rng.uniform(0, 2 * math.pi)),
            "speed": float(rng.uniform(*d["speed_px_per_frame"])),
            "spin": float(rng.uniform(*d["angular_speed_rad_per_frame"]) * rng.choice([-1, 1])),
            "period": float(rng.uniform(*d["pulse_period_frames"])),
            "phase": float(rng.uniform(0, 2 * math.pi)),
        }  # fmt: skip
        out.append(p)
    return out


def render_clips(params: list[dict], frames, size: int = SIZE, supersample: int = 4) -> torch.Tensor:
    """Clips (N, T, 3, size, size) in [0, 1] for absolute frame indices ``frames``."""
    t = torch.as_tensor(list(frames), dtype=torch.float32)  # (T,)
    n, s = len(params), size * supersample
    g = (torch.arange(s, dtype=torch.float32) + 0.5) / supersample  # pixel coordinates
    gy, gx = torch.meshgrid(g, g, indexing="ij")
    out = torch.empty(n, len(t), 3, size, size)
    bg = torch.tensor(BACKGROUND).view(1, 3, 1, 1)
    depth = RECIPE["data"]["pulse_depth"]
    for i, p in enumerate(params):
        x = torch.full_like(t, p["x"])
        y = torch.full_like(t, p["y"])
        angle = torch.full_like(t, p["angle"])
        radius = torch.full_like(t, p["radius"])
        m = p["motion"]
        if m == "moving left":
            x = x - p["speed"] * t
        elif m == "moving right":
            x = x + p["speed"] * t
        elif m == "moving up":
            y = y - p["speed"] * t
        elif m == "moving down":
            y = y + p["speed"] * t
        elif m == "rotating":
            angle = angle + p["spin"] * t
        elif m == "pulsing":
            radius = radius * (1 + depth * torch.sin(2 * math.pi * t / p["period"] + p["phase"]))
        # displacement on the torus (shapes wrap around the frame edges)
        dx = torch.remainder(gx[None] - x[:, None, None] + size / 2, size) - size / 2
        dy = torch.remainder(gy[None] - y[:, None, None] + size / 2, size) - size / 2
        c, sn = torch.cos(angle)[:, None, None], torch.sin(angle)[:, None, None]
        u, v = c * dx + sn * dy, -sn * dx + c * dy
        r = radius[:, None, None]
        if p["shape"] == "circle":
            inside = dx**2 + dy**2 <= (0.9 * r) ** 2
        elif p["shape"] == "square":
            inside = (u.abs() <= 0.75 * r) & (v.abs() <= 0.75 * r)
        else:
            inside = torch.ones_like(u, dtype=torch.bool)
            for k in range(3):
                a = math.pi / 3 + 2 * math.pi * k / 3
                inside &= u * math.cos(a) + v * math.sin(a) <= r / 2
        cover = F.avg_pool2d(inside.float()[:, None], supersample)  # (T, 1, size, size)
        colour = torch.tensor(COLOURS[p["colour"]]).view(1, 3, 1, 1)
        out[i] = bg * (1 - cover) + colour * cover
    return out


# --------------------------------------------------------------------------- model


def write_tokenizer(path: Path) -> None:
    """A word-level CLIP tokenizer: every vocabulary word is one token (merges spell it)."""
    vocab: dict[str, int] = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    merges: list[str] = []
    for c in sorted({c for w in WORDS for c in w[:-1]} | {w[-1] + "</w>" for w in WORDS} | {w[-1] for w in WORDS}):
        vocab.setdefault(c, len(vocab))
    for w in WORDS:  # merged right to left: "e d</w>", then "r ed</w>" (no pair of one word splits another)
        parts = list(w[:-1]) + [w[-1] + "</w>"]
        while len(parts) > 1:
            a, b = parts[-2], parts[-1]
            merges.append(f"{a} {b}")
            parts = parts[:-2] + [a + b]
            vocab.setdefault(parts[-1], len(vocab))
    merges = list(dict.fromkeys(merges))
    path.mkdir(parents=True, exist_ok=True)
    (path / "vocab.json").write_text(json.dumps(vocab, indent=0))
    (path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    tokenizer = load_tokenizer(path)
    for w in WORDS:
        assert len(tokenizer.tokenize(w)) == 1, f"{w!r} is not one token: {tokenizer.tokenize(w)}"


def load_tokenizer(path: Path):
    from transformers import CLIPTokenizer

    return CLIPTokenizer(str(path / "vocab.json"), str(path / "merges.txt"), model_max_length=MAX_TOKENS)


def build(tok_dir: Path):
    """(unet, text_encoder, tokenizer, vae, scheduler), freshly initialised from the recipe's seed."""
    import diffusers as d
    from transformers import CLIPTextConfig, CLIPTextModel

    from tasks.backends.components import PixelShuffleVAE

    torch.manual_seed(RECIPE["seed"])
    tokenizer = load_tokenizer(tok_dir)
    channels = 3 * FACTOR * FACTOR
    unet2d = d.UNet2DConditionModel(
        block_out_channels=(48, 96), layers_per_block=1, sample_size=SIZE // FACTOR, in_channels=channels,
        out_channels=channels, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=64, attention_head_dim=16,
        norm_num_groups=16,
    )  # fmt: skip
    adapter = d.MotionAdapter(
        block_out_channels=(48, 96), motion_layers_per_block=1, motion_norm_num_groups=16,
        motion_num_attention_heads=4, motion_max_seq_length=32,
    )  # fmt: skip
    unet = d.UNetMotionModel.from_unet2d(unet2d, adapter)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=64, intermediate_size=128,
            num_attention_heads=4, num_hidden_layers=2, vocab_size=len(tokenizer), max_position_embeddings=MAX_TOKENS,
            projection_dim=64,
        )
    )  # fmt: skip
    vae = PixelShuffleVAE(factor=FACTOR)
    scheduler = d.DDIMScheduler(
        num_train_timesteps=RECIPE["timesteps"], beta_schedule="squaredcos_cap_v2",
        prediction_type=RECIPE["prediction_type"], clip_sample=False, set_alpha_to_one=True,
        timestep_spacing="trailing", steps_offset=0,
    )  # fmt: skip
    return unet, text_encoder, tokenizer, vae, scheduler


def to_latents(clips: torch.Tensor) -> torch.Tensor:
    """(N, T, 3, H, W) in [0, 1] -> (N, C, T, h, w) in the pipeline's layout."""
    n, t = clips.shape[:2]
    z = F.pixel_unshuffle(clips.flatten(0, 1) * 2 - 1, FACTOR)
    return z.view(n, t, *z.shape[1:]).permute(0, 2, 1, 3, 4).contiguous()


def encode_text(tokenizer, text_encoder, captions: list[str]) -> torch.Tensor:
    ids = tokenizer(captions, padding="max_length", max_length=MAX_TOKENS, truncation=True, return_tensors="pt")
    return text_encoder(ids.input_ids)[0]


def loss_on(unet, text_encoder, tokenizer, scheduler, clips, captions, generator, snr_clamp=None,
            temporal_weight: float = 0.0) -> torch.Tensor:
    """MSE against the scheduler's prediction type (``sample``: x₀, ``v_prediction``: v,
    ``epsilon``: ε) on one batch, timesteps and noise from ``generator``. ``snr_clamp``
    ``(low, high)`` weights each clip's x₀ error by its signal-to-noise ratio clamped to
    that range (min-SNR-γ with a floor: every noise level keeps a weight, none dominates).
    ``temporal_weight`` (x₀-prediction only) adds that multiple of the error in the
    frame-to-frame differences of x̂₀: errors a window's frames share cost less than
    errors that make its motion uneven."""
    x0 = to_latents(clips)
    n, _, t = x0.shape[:3]
    steps = torch.randint(0, scheduler.config.num_train_timesteps, (n,), generator=generator)
    noise = torch.randn(x0.shape, generator=generator)
    xt = scheduler.add_noise(x0, noise, steps)
    kind = scheduler.config.prediction_type
    target = {"sample": x0, "epsilon": noise}.get(kind)
    if target is None:
        target = scheduler.get_velocity(x0, noise, steps)
    emb = encode_text(tokenizer, text_encoder, captions).repeat_interleave(t, dim=0)  # (N*T, L, D)
    pred = unet(xt, steps, encoder_hidden_states=emb).sample
    per_clip = (pred - target).pow(2).flatten(1).mean(1)
    if temporal_weight:
        if kind != "sample":
            raise ValueError("temporal_weight compares x0 frame differences: use it with prediction_type sample")
        moved = (pred.diff(dim=2) - target.diff(dim=2)).pow(2).flatten(1).mean(1)
        per_clip = per_clip + temporal_weight * moved
    if snr_clamp is None:
        return per_clip.mean()
    if kind == "epsilon":
        raise ValueError("snr_clamp weights x0 errors: use it with prediction_type sample or v_prediction")
    ab = scheduler.alphas_cumprod[steps]
    snr = ab / (1 - ab)
    # the clip's error in x₀ units is per_clip × {sample: 1, v: σ² = (1 + SNR)⁻¹}
    to_x0 = torch.ones_like(snr) if kind == "sample" else 1 / (1 + snr)
    return (per_clip * to_x0 * snr.clamp(*snr_clamp)).mean()


def objective_of(given: dict, before: dict | None) -> dict:
    """A run's prediction type, SNR clamp, batch, threads and temporal weight: ``given``
    (None: not given) over the resumed model's recipe ``before`` (its objective carries on
    unless told otherwise), over this script's RECIPE for a fresh model."""
    if before is None:
        base = {k: RECIPE[k] for k in OBJECTIVE}
    else:  # a recipe from before snr_clamp existed trained without one
        base = {k: before.get(k, {"snr_clamp": None, "temporal_weight": 0.0}.get(k, RECIPE.get(k))) for k in OBJECTIVE}
    out = base | {k: v for k, v in given.items() if v is not None}
    clamp = out["snr_clamp"]
    if clamp is not None and (len(clamp) != 2 or not 0 <= clamp[0] <= clamp[1]):
        raise SystemExit(f"--snr-clamp LOW HIGH needs 0 <= LOW <= HIGH, got {clamp}")
    if clamp is not None and out["prediction_type"] == "epsilon":
        raise SystemExit("--snr-clamp weights x0 errors: use it with --prediction-type sample or v_prediction")
    if (out["temporal_weight"] or 0) < 0:
        raise SystemExit(f"--temporal-weight must be >= 0, got {out['temporal_weight']}")
    if out["temporal_weight"] and out["prediction_type"] != "sample":
        raise SystemExit("--temporal-weight compares x0 frame differences: use it with --prediction-type sample")
    return out


def save_pipeline(out: Path, unet, text_encoder, tokenizer, vae, scheduler) -> None:
    import diffusers as d

    pipe = d.AnimateDiffPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, motion_adapter=None,
        scheduler=scheduler, feature_extractor=None, image_encoder=None,
    )  # fmt: skip
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(tmp, safe_serialization=True)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


def train(out: Path, minutes: float, max_steps: int, save_every_s: float, resume: Path | None = None,
          lr: float | None = None, lr_final: float | None = None, ema_decay: float | None = None,
          argv: list[str] | None = None, objective: dict | None = None) -> None:
    """Train for ``minutes`` (or ``max_steps``). ``resume``: a published model to continue
    from; its step count, time and loss log carry on. The learning rate warms up over
    ``warmup_steps``, then follows a cosine from ``lr`` to ``lr_final`` over the run's
    minutes (both default to the recipe's ``lr``: constant). ``objective``: the recipe's
    ``prediction_type``, ``snr_clamp``, ``batch``, ``threads`` and ``temporal_weight`` for
    this run (a resumed model may change its prediction type; the scheduler it is saved
    with follows)."""
    import diffusers as d

    before = None
    if resume is not None and (training_dir(resume) / "recipe.json").exists():
        before = json.loads((training_dir(resume) / "recipe.json").read_text())
    objective = objective_of(objective or {}, before)
    torch.set_num_threads(objective["threads"])
    out.mkdir(parents=True, exist_ok=True)
    tok_dir = out / "work" / "tokenizer_src"
    write_tokenizer(tok_dir)
    unet, text_encoder, tokenizer, vae, scheduler = build(tok_dir)
    scheduler = d.DDIMScheduler.from_config(scheduler.config, prediction_type=objective["prediction_type"])
    lr0 = RECIPE["lr"] if lr is None else lr
    lr1 = lr0 if lr_final is None else lr_final
    ema_decay = RECIPE["ema_decay"] if ema_decay is None else ema_decay
    step0, elapsed0, phases = 0, 0.0, []
    log_path = out / "work" / "loss.jsonl"
    if resume is not None:
        from transformers import CLIPTextModel

        unet = d.UNetMotionModel.from_pretrained(resume / "unet")
        text_encoder = CLIPTextModel.from_pretrained(resume / "text_encoder")
        prior = training_dir(resume)
        if before is not None:
            step0, elapsed0 = before["steps"], before["elapsed_s"]
            phases = before.get("phases") or [{"steps": step0, "lr": before["lr"], "lr_final": before["lr"],
                                               "ema_decay": before["ema_decay"]}]  # fmt: skip
            phases = [{k: before.get(k, 0.0 if k == "temporal_weight" else None) for k in OBJECTIVE} | ph
                      for ph in phases]
            if not log_path.exists():
                log_path.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(prior / "loss.jsonl", log_path)
    (out / "work" / "phases.json").write_text(json.dumps(
        phases + [{"steps": None, "lr": lr0, "lr_final": lr1, "ema_decay": ema_decay, **objective, "from_step": step0,
                   "argv": ["python", "-m", "bench.train_tiny", *(sys.argv[1:] if argv is None else argv)]}]))
    unet.train()
    text_encoder.train()
    params = list(unet.parameters()) + list(text_encoder.parameters())
    print(f"parameters: unet {sum(p.numel() for p in unet.parameters()) / 1e6:.2f} M, "
          f"text {sum(p.numel() for p in text_encoder.parameters()) / 1e6:.2f} M", flush=True)  # fmt: skip
    opt = torch.optim.AdamW(params, lr=RECIPE["lr"], weight_decay=RECIPE["weight_decay"])
    ema_unet, ema_text = copy.deepcopy(unet).eval(), copy.deepcopy(text_encoder).eval()
    for m in (ema_unet, ema_text):
        m.requires_grad_(False)
    rng = np.random.default_rng(RECIPE["seed"] + step0)  # a resumed run draws clips it has not seen
    gen = torch.Generator().manual_seed(RECIPE["seed"] + step0)
    log = open(log_path, "a")
    start = last_save = time.time()
    step, running = step0, []
    while step - step0 < max_steps and time.time() - start < minutes * 60:
        params_b = sample_params(rng, objective["batch"])
        offset = int(rng.integers(0, 10_000))
        clips = render_clips(params_b, range(offset, offset + FRAMES))
        caps = [c if rng.random() >= RECIPE["caption_dropout"] else "" for c in captions_of(params_b)]
        frac = min(1.0, (time.time() - start) / (minutes * 60))
        rate = (lr1 + (lr0 - lr1) * 0.5 * (1 + math.cos(math.pi * frac))) * min(
            1.0, (step - step0 + 1) / RECIPE["warmup_steps"])
        for g in opt.param_groups:
            g["lr"] = rate
        loss = loss_on(unet, text_encoder, tokenizer, scheduler, clips, caps, gen, objective["snr_clamp"],
                       objective["temporal_weight"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, RECIPE["grad_clip"])
        opt.step()
        decay = min(ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for live, ema in ((unet, ema_unet), (text_encoder, ema_text)):
                for pe, pl in zip(ema.parameters(), live.parameters()):
                    pe.lerp_(pl, 1 - decay)
        step += 1
        running.append(loss.item())
        if step % 10 == 0:
            rec = {"step": step, "loss": float(np.mean(running)), "lr": rate,
                   "elapsed_s": round(elapsed0 + time.time() - start, 1)}
            log.write(json.dumps(rec) + "\n")
            log.flush()
            running = []
            if step % 50 == 0:
                print(rec, flush=True)
        if time.time() - last_save > save_every_s:
            save_pipeline(out / "work" / "checkpoint", ema_unet, ema_text, tokenizer, vae, scheduler)
            (out / "work" / "checkpoint_step.txt").write_text(str(step))
            last_save = time.time()
    save_pipeline(out / "work" / "checkpoint", ema_unet, ema_text, tokenizer, vae, scheduler)
    (out / "work" / "checkpoint_step.txt").write_text(str(step))
    print(f"done: {step} steps in {time.time() - start:.0f} s", flush=True)


def training_dir(model: Path) -> Path:
    """Where a published model's recipe, loss curve and figures live (beside it)."""
    return model.with_name(model.name + "-training")


def finalize(work: Path, dest: Path) -> dict:
    """Copy the last checkpoint of a training run (``work``: the ``--out`` directory) to
    ``dest`` (the diffusers model alone) and, beside it in ``dest-training/``,
    ``recipe.json`` (hyper-parameters, data recipe, seed, steps, elapsed time, the
    weights digest of ``dest``) and the loss curve (``loss.jsonl``, ``loss.png``)."""
    from tasks.backends.weights import weights_digest

    ckpt = work / "work" / "checkpoint"
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(ckpt, dest)
    digest = weights_digest(dest)
    steps = int((work / "work" / "checkpoint_step.txt").read_text())
    lines = [line for line in (work / "work" / "loss.jsonl").read_text().splitlines()
             if json.loads(line)["step"] <= steps]  # the log runs on past the last checkpoint if stopped early
    losses = [json.loads(line) for line in lines]
    info = training_dir(dest)
    info.mkdir(parents=True, exist_ok=True)
    (info / "loss.jsonl").write_text("\n".join(lines) + "\n")
    phases = json.loads((work / "work" / "phases.json").read_text()) if (work / "work" / "phases.json").exists() else []
    if phases:
        phases[-1]["steps"] = steps - phases[-1].pop("from_step", 0)
        if losses:  # a run stopped before its minutes were up ends short of lr_final
            phases[-1]["lr_reached"] = losses[-1]["lr"]
    last = {k: phases[-1][k] for k in OBJECTIVE if phases and k in phases[-1]}
    recipe = {**RECIPE, **last, "steps": steps, "phases": phases, "elapsed_s": losses[-1]["elapsed_s"] if losses else 0,
              "final_loss": losses[-1]["loss"] if losses else None, "weights_digest": digest,
              "command": "python -m bench.train_tiny --out DIR --minutes 60; python -m bench.train_tiny --finalize DIR "
                         "--dest manifests/examples/models/shapes",
              "architecture": {"unet": "UNet2DConditionModel (48, 96) + MotionAdapter -> UNetMotionModel",
                               "text_encoder": "CLIPTextModel hidden 64, 2 layers, word-level tokenizer",
                               "vae": "PixelShuffleVAE factor 4 (latents 48 x 8 x 8 for 32 x 32 frames)",
                               "scheduler": f"DDIMScheduler {last.get('prediction_type', RECIPE['prediction_type'])}, "
                                            "squaredcos_cap_v2, trailing"}}  # fmt: skip
    (info / "recipe.json").write_text(json.dumps(recipe, indent=1) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3))
        ax.plot([r["step"] for r in losses], [r["loss"] for r in losses], lw=1)
        start = 0
        for phase in phases:  # each phase's objective: losses of different objectives do not compare
            ax.axvline(start, color="grey", lw=0.5)
            ax.annotate(phase.get("prediction_type", RECIPE["prediction_type"]).replace("_prediction", ""),
                        (start, 1), xycoords=("data", "axes fraction"), va="top", fontsize=7)
            start += phase["steps"]
        ax.set_xlabel("step"), ax.set_ylabel("training loss (mean of 10 steps)"), ax.set_yscale("log")
        ax.set_title(f"shapes: {steps} steps, {recipe['elapsed_s'] / 60:.0f} min of CPU")
        fig.tight_layout()
        fig.savefig(info / "loss.png", dpi=80)
    except ImportError:
        pass
    return recipe


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, help="training directory (checkpoints, loss log)")
    ap.add_argument("--finalize", type=Path, default=None, help="a finished training directory to publish")
    ap.add_argument("--dest", type=Path, default=Path("manifests/examples/models/shapes"))
    ap.add_argument("--minutes", type=float, default=60)
    ap.add_argument("--steps", type=int, default=10**9)
    ap.add_argument("--save-every", type=float, default=300, help="seconds between checkpoints")
    ap.add_argument("--resume", type=Path, default=None, help="a published model to continue training")
    ap.add_argument("--lr", type=float, default=None, help="peak learning rate (default: the recipe's)")
    ap.add_argument("--lr-final", type=float, default=None, help="learning rate at the end of the cosine")
    ap.add_argument("--ema-decay", type=float, default=None)
    ap.add_argument("--prediction-type", choices=["v_prediction", "sample", "epsilon"], default=None,
                    help="what the UNet predicts (default: the recipe's); a resumed model may switch")
    ap.add_argument("--snr-clamp", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                    help="weight each clip's x0 error by its SNR clamped to [LOW, HIGH]")
    ap.add_argument("--temporal-weight", type=float, default=None,
                    help="weight of the x0 frame-difference error (x0-prediction; default: the recipe's)")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args(argv)
    if a.finalize is not None:
        print(json.dumps(finalize(a.finalize, a.dest), indent=1))
        return 0
    if a.out is None:
        ap.error("--out is required to train")
    objective = {"prediction_type": a.prediction_type, "snr_clamp": a.snr_clamp, "batch": a.batch, "threads": a.threads,
                 "temporal_weight": a.temporal_weight}
    train(a.out, a.minutes, a.steps, a.save_every, a.resume, a.lr, a.lr_final, a.ema_decay, argv, objective)
    return 0


if __name__ == "__main__":
    sys.exit(main())
