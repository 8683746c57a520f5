"""codenoise: synchronized temporal co-denoising (MultiDiffusion in time) over Ray actors.

The item's pipeline runs once, at full length, on the coordinator (this process):
prompt encoding, the scheduler and the final decode are the pipeline's own. Only its
denoiser (UNet or transformer) is replaced by :class:`WindowedDenoiser`, which at
every call cuts the full latent into overlapping windows along the latent frame axis,
has the model actors of the pool predict each window, and averages the predictions
over the overlaps with the window weighting (``kernels.overlap.overlap_add``, float32,
the same kernel as pixel stitching). The scheduler then takes one step on the full,
fused prediction, so neighbouring windows agree a little more at every step.

What is averaged is the denoiser's raw output — noise (ε) for AnimateDiff, flow
velocity for Wan — i.e. exactly what the family's scheduler consumes; the scheduler
step is then one step on a full-length latent as if one model had seen it all.
Classifier-free guidance is applied by the pipeline after fusion; it is linear in the
two predictions, so fusing before or after guidance gives the same result.

Transport: per denoiser call, each window's latent slice (and the text embeddings,
put once per call) goes to an actor through Ray's object store and its prediction
(same shape) comes back; the full latent stays on the coordinator. If an actor dies,
Ray restarts it and re-runs the windows it held (``ModelActor`` max_restarts /
max_task_retries); the prediction is a pure function of its inputs, so the result is
identical to an undisturbed run.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import ray
import einops
import torch

from kernels.noise import derive_seed, frame_noise
from kernels.overlap import overlap_add
from kernels.windows import plan_windows, window_indices, window_weights
from manifests.families import FAMILIES
from tasks.backends import Conditioning
from tasks.backends.diffusers_backend import DTYPES, family_module
from tasks.errors import ItemError

# Families whose pipeline runs through the windowed denoiser, and the name and frame
# axis of the denoiser input: (B, C, F, H, W) for both.
DENOISERS = {"animatediff": ("unet", 2), "wan": ("transformer", 2)}


def latent_plan(frames: int, *, length: int, overlap: int, temporal: int, circular: bool):
    """Windows over latent frames matching pixel windows of ``length``/``overlap``."""
    count = (frames - 1) // temporal + 1
    l_len = (length - 1) // temporal + 1
    stride = (length - overlap) // temporal
    return count, plan_windows(count, length=l_len, overlap=l_len - stride, circular=circular)


from diffusers import ModelMixin  # noqa: E402 - heavy import; this module is loaded only for codenoise items


class WindowedDenoiser(ModelMixin):
    """Stands in for a pipeline's denoiser (a ModelMixin, as pipelines require); see the
    module docstring."""

    def __init__(self, config: dict, *, dtype: torch.dtype, submit, windows, num_frames: int, weighting: str,
                 frame_dim: int, stats: dict, local: bool = False) -> None:
        super().__init__()
        from diffusers.configuration_utils import FrozenDict

        self.config = FrozenDict(config)
        self.register_buffer("_anchor", torch.zeros((), dtype=dtype), persistent=False)
        self.submit = submit
        self.indices = [window_indices(w, num_frames) for w in windows]
        self.weights = [window_weights(w.length, weighting) for w in windows]
        self.num_frames = num_frames
        self.frame_dim = frame_dim
        self.stats = stats
        self.local = local  # submit returns predictions in this process (no Ray): measurements, tests

    @property
    def dtype(self) -> torch.dtype:
        return self._anchor.dtype

    @property
    def device(self) -> torch.device:
        return self._anchor.device

    def cache_context(self, *args, **kwargs):
        return contextlib.nullcontext()

    def forward(self, sample=None, timestep=None, *args, hidden_states=None, return_dict=True, **kwargs):
        x = sample if sample is not None else hidden_states
        key = "sample" if sample is not None else "hidden_states"
        tick = time.perf_counter()
        batch = x.shape[0]
        per_frame = {k for k, v in kwargs.items()  # AnimateDiff repeats text embeddings per frame: (B·F, …)
                     if torch.is_tensor(v) and v.ndim and v.shape[0] == batch * self.num_frames}
        shared = {"timestep": timestep, **{k: v for k, v in kwargs.items() if k not in per_frame}}
        shared = shared if self.local else ray.put(shared)
        refs = []
        for idx in self.indices:
            idx = idx.to(x.device)
            rows = (torch.arange(batch, device=x.device)[:, None] * self.num_frames + idx[None]).flatten()
            own = {k: kwargs[k].index_select(0, rows).cpu() for k in per_frame}
            refs.append(self.submit(key, x.index_select(self.frame_dim, idx).cpu(), shared, own))
        outs = refs if self.local else ray.get(refs)
        fused = overlap_add(
            [o.movedim(self.frame_dim, 0) for o in outs], self.indices, self.weights, self.num_frames
        ).movedim(0, self.frame_dim).to(x.device, x.dtype)
        self.stats["calls"] += 1
        self.stats["exchange_bytes"] += 2 * sum(o.numel() * o.element_size() for o in outs)
        self.stats["exchange_seconds"] += time.perf_counter() - tick
        return SimpleNamespace(sample=fused) if return_dict else (fused,)


def codenoise_frames(spec: dict[str, Any], item_params: dict[str, Any], conditioning: Conditioning, *,
                     submit, device: str = "cpu", local: bool = False) -> tuple[torch.Tensor, dict]:
    """Run one item in codenoise mode; returns frames (T, 3, H, W) in [0, 1] and stats
    (latent windows, denoiser calls, bytes and seconds exchanged). ``local``: ``submit``
    returns each window's prediction itself instead of a Ray reference."""
    import diffusers

    import tasks.backends.components  # noqa: F401 - framefold's own components load by module path

    family = FAMILIES[spec["family"]]
    if spec["family"] not in DENOISERS:
        raise ItemError(f"window.mode codenoise supports {', '.join(DENOISERS)}, not {spec['family']!r}")
    name, frame_dim = DENOISERS[spec["family"]]
    module = family_module(spec["family"])
    path = Path(spec["path"])
    dtype = DTYPES[spec["dtype"]] if device != "cpu" else torch.float32
    window = item_params["window"]
    frames = item_params["frames"]
    count, windows = latent_plan(frames, length=window["length"], overlap=window["overlap"],
                                 temporal=family.temporal, circular=item_params["loop"])
    stats = {"latent_frames": count, "latent_windows": [[w.start, w.length] for w in windows],
             "calls": 0, "exchange_bytes": 0, "exchange_seconds": 0.0}
    config = json.loads((path / name / "config.json").read_text())
    denoiser = WindowedDenoiser(config, dtype=dtype, submit=submit, windows=windows, num_frames=count,
                                weighting=window["weighting"], frame_dim=frame_dim, stats=stats, local=local)
    cls = getattr(diffusers, module.PIPELINES[spec["task"]])
    pipe = cls.from_pretrained(path, dtype=dtype, local_files_only=True, use_safetensors=True, **{name: denoiser})
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            component.eval()
    pipe.set_progress_bar_config(disable=True)
    pipe = pipe.to(device)

    height, width = conditioning.image_size
    vae = pipe.vae
    channels = getattr(vae.config, "latent_channels", None) or vae.config.z_dim
    scale = module.spatial_factor(pipe)
    noise = frame_noise(conditioning.seed, conditioning.item_id, range(count), (channels, height // scale, width // scale))
    latents = einops.repeat(noise, f"F C H W -> {family.layout}", B=1)  # the family's latent layout, batch 1
    generator = torch.Generator(device="cpu").manual_seed(derive_seed(conditioning.seed, conditioning.item_id, "pipeline"))
    kwargs = dict(height=height, width=width, num_frames=frames, num_inference_steps=item_params["steps"],
                  latents=latents.to(device, dtype), generator=generator, output_type="pt")
    kwargs.update(module.call_kwargs(pipe, item_params, conditioning, None))
    with torch.inference_mode():
        out = pipe(**kwargs).frames
    video = torch.as_tensor(out)[0].to("cpu", torch.float32)
    if video.shape[0] != frames:
        raise ItemError(f"codenoise produced {video.shape[0]} frames, expected {frames}")
    return video, stats
