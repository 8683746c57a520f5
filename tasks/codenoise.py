"""codenoise: synchronized temporal co-denoising (MultiDiffusion in time) over Ray actors.

The item's pipeline runs once, at full length, on the coordinator — a method of one of
the model's actors (``ModelActor.codenoise``), which reuses the components it loaded
once: prompt encoding, the scheduler and the decode are the pipeline's own, the decode
taken a few latent frames at a time and streamed out as 8-bit chunks. Only its
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
(same shape) comes back; the full latent stays on the coordinator. The coordinator's
own actor predicts windows too (its denoiser calls run beside the coordinator's thread). If an actor dies,
Ray restarts it and re-runs the windows it held (``ModelActor`` max_restarts /
max_task_retries); the prediction is a pure function of its inputs, so the result is
identical to an undisturbed run.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import einops
import ray
import torch

from kernels.noise import derive_seed, frame_noise
from kernels.overlap import overlap_add
from kernels.windows import plan_windows, window_indices, window_weights
from manifests.families import FAMILIES
from tasks.backends import Conditioning
from tasks.backends.diffusers_backend import family_module, loaded_components
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


# Latent frames the VAE decodes at once (AnimateDiff decodes frame by frame; 16 is its
# pipeline's own decode_chunk_size, so a chunked decode is the pipeline's decode exactly).
DECODE_CHUNK = 16


def codenoise_frames(spec: dict[str, Any], item_params: dict[str, Any], conditioning: Conditioning, *,
                     submit, device: str = "cpu", local: bool = False) -> tuple[torch.Tensor, dict]:
    """Run one item in codenoise mode in this process (loading its pipeline here); returns
    frames (T, 3, H, W) in [0, 1] and stats (latent windows, denoiser calls, bytes and
    seconds exchanged). ``local``: ``submit`` returns each window's prediction itself
    instead of a Ray reference. The product runs :func:`codenoise_chunks` inside a model actor."""
    from tasks.backends import load

    stats: dict = {}
    chunks = list(codenoise_chunks(load(spec, device).pipe, spec, item_params, conditioning, submit=submit,
                                   stats=stats, local=local))
    return torch.cat(chunks), stats


def animatediff_decode_chunks(vae, latents: torch.Tensor, chunk: int) -> Iterator[torch.Tensor]:
    """AnimateDiff's ``decode_latents`` and ``postprocess`` on latents (1, C, F, h, w), ``chunk``
    latent frames at a time (its VAE decodes each frame on its own): frames (k, 3, H, W)."""
    latent = latents[0].movedim(1, 0) / vae.config.scaling_factor  # (F, C, h, w)
    for start in range(0, latent.shape[0], chunk):
        yield (vae.decode(latent[start:start + chunk]).sample.float() / 2 + 0.5).clamp(0, 1)


def wan_decode_chunks(vae, latents: torch.Tensor, chunk: int) -> Iterator[torch.Tensor]:
    """Wan's decode (``WanPipeline``'s de-normalisation, then ``AutoencoderKLWan``'s causal
    decoder) on latents (1, C, F, h, w), ``chunk`` latent frames at a time: the decoder runs
    frame by frame with a cache of its causal convolutions (a cache of its own: the VAE
    stays free for other callers), exactly as ``vae.decode`` does inside, but the frames leave as they are made (latent frame 0 gives 1 frame, each later
    one 4), so memory does not grow with the clip. A VAE set to tile spatially decodes
    the clip in one call."""
    from diffusers.models.autoencoders.autoencoder_kl_wan import unpatchify

    z = latents.to(vae.dtype)
    shape = (1, vae.config.z_dim, 1, 1, 1)
    mean = torch.tensor(vae.config.latents_mean).view(shape).to(z.device, z.dtype)
    inverse_std = 1.0 / torch.tensor(vae.config.latents_std).view(shape).to(z.device, z.dtype)
    z = z / inverse_std + mean  # as WanPipeline, to the last bit
    if getattr(vae, "use_tiling", False):
        yield (vae.decode(z).sample[0].movedim(1, 0).float() / 2 + 0.5).clamp(0, 1)
        return
    # a cache of our own, not the VAE's (vae.decode on the actor's other thread resets that one)
    cache = [None] * vae._cached_conv_counts["decoder"]
    x = vae.post_quant_conv(z)  # pointwise in time
    for start in range(0, x.shape[2], chunk):
        parts = [vae.decoder(x[:, :, i:i + 1], feat_cache=cache, feat_idx=[0], first_chunk=i == 0)
                 for i in range(start, min(start + chunk, x.shape[2]))]  # fmt: skip
        out = torch.cat(parts, 2)
        if vae.config.patch_size is not None:
            out = unpatchify(out, patch_size=vae.config.patch_size)
        yield (out.clamp(-1, 1)[0].movedim(1, 0).float() / 2 + 0.5).clamp(0, 1)


def pipeline_settings(loaded, cls, components: dict) -> dict:
    """The loaded pipeline's own settings that ``cls`` takes besides its components (wan's
    ``expand_timesteps``, …): a pipeline rebuilt around the windowed denoiser behaves as loaded."""
    import inspect

    names = set(inspect.signature(cls.__init__).parameters) - set(components) - {"self"}
    return {k: loaded.config[k] for k in names if k in loaded.config}


def codenoise_chunks(loaded, spec: dict[str, Any], item_params: dict[str, Any], conditioning: Conditioning, *,
                     submit, stats: dict, chunk: int = DECODE_CHUNK, local: bool = False):
    """Co-denoise one item with the components of the ``loaded`` pipeline (text encoder,
    VAE, … on their device and dtype; its denoiser stays free for window calls), then
    decode the latent ``chunk`` latent frames at a time: yields frames (k, 3, H, W) in
    [0, 1] in order, so memory does not grow with the clip beyond its latent. ``stats`` is filled as for
    :func:`codenoise_frames`."""
    import diffusers

    import tasks.backends.components  # noqa: F401 - framefold's own components load by module path

    family = FAMILIES[spec["family"]]
    if spec["family"] not in DENOISERS:
        raise ItemError(f"window.mode codenoise supports {', '.join(DENOISERS)}, not {spec['family']!r}")
    name, frame_dim = DENOISERS[spec["family"]]
    module = family_module(spec["family"])
    if getattr(loaded, "transformer_2", None) is not None:
        raise ItemError("window.mode codenoise co-denoises with one transformer; this model switches between two "
                        "(transformer, transformer_2 at its boundary_ratio): use window.mode independent")
    own = getattr(loaded, name)
    device, dtype = own.device, own.dtype
    window = item_params["window"]
    frames = item_params["frames"]
    count, windows = latent_plan(frames, length=window["length"], overlap=window["overlap"],
                                 temporal=family.temporal, circular=item_params["loop"])
    stats.update({"latent_frames": count, "latent_windows": [[w.start, w.length] for w in windows],
                  "calls": 0, "exchange_bytes": 0, "exchange_seconds": 0.0})
    denoiser = WindowedDenoiser(dict(own.config), dtype=dtype, submit=submit, windows=windows, num_frames=count,
                                weighting=window["weighting"], frame_dim=frame_dim, stats=stats, local=local)
    # the loaded pipeline's components, a scheduler of its own (schedulers keep state per call)
    components = {**loaded_components(loaded), name: denoiser.to(device),
                  "scheduler": type(loaded.scheduler).from_config(loaded.scheduler.config)}
    cls = getattr(diffusers, module.PIPELINES[spec["task"]])
    pipe = cls(**components, **pipeline_settings(loaded, cls, components))
    pipe.set_progress_bar_config(disable=True)

    height, width = conditioning.image_size
    vae = pipe.vae
    channels = getattr(vae.config, "latent_channels", None) or vae.config.z_dim
    scale = module.spatial_factor(pipe)
    noise = frame_noise(conditioning.seed, conditioning.item_id, range(count), (channels, height // scale, width // scale))
    latents = einops.repeat(noise, f"F C H W -> {family.layout}", B=1)  # the family's latent layout, batch 1
    generator = torch.Generator(device="cpu").manual_seed(derive_seed(conditioning.seed, conditioning.item_id, "pipeline"))
    kwargs = dict(height=height, width=width, num_frames=frames, num_inference_steps=item_params["steps"],
                  latents=latents.to(device, dtype), generator=generator, output_type="latent")
    kwargs.update(module.call_kwargs(pipe, item_params, conditioning, None))
    made = 0
    with torch.inference_mode():
        out = pipe(**kwargs).frames
        decoded = wan_decode_chunks(vae, out, chunk) if spec["family"] == "wan" else animatediff_decode_chunks(
            vae, out, chunk)
        for video in decoded:  # (k, 3, H, W) in [0, 1]
            video = video.to("cpu", torch.float32)
            made += len(video)
            yield video
    if made != frames:
        raise ItemError(f"codenoise produced {made} frames, expected {frames}")
