"""The ``diffusers`` backend: a video diffusion pipeline loaded from a local directory,
run window by window.

Loading is offline only (``HF_HUB_OFFLINE=1``, ``local_files_only=True``) and from
safetensors only. Each family lives in its own module (``tasks/backends/<family>.py``)
and says which pipeline class runs which task, how its latents are laid out and what
extra arguments its pipeline takes; everything else is shared here.

Noise: the initial latent of a window is cut from noise defined per *absolute* latent
frame — frame ``k`` of the clip's latent always comes from
``frame_noise(seed, item_id, k)`` — and passed through the pipeline's ``latents=``,
so the same frame starts from the same noise in every window that covers it, on any
worker. Any other randomness a pipeline draws (SVD's noise augmentation, CogVideoX's
image-latent sampling) comes from a generator seeded from (seed, item id) alone.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import threading
from pathlib import Path
from typing import Any

import einops
import torch

from kernels.noise import derive_seed, frame_noise
from manifests.families import FAMILIES
from tasks.backends import Conditioning, WindowRequest
from tasks.errors import ItemError

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# How many pipelines this process has loaded (a Ray actor loads exactly one).
LOADS = 0


def family_module(name: str):
    return importlib.import_module(f"tasks.backends.{name}")


class DiffusersBackend:
    def __init__(self, spec: dict[str, Any], device: str = "cpu") -> None:
        global LOADS
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import diffusers

        import tasks.backends.components  # noqa: F401 - framefold's own components load by module path
        diffusers.utils.logging.disable_progress_bar()
        diffusers.utils.logging.set_verbosity_error()
        self.spec = spec
        self.family = FAMILIES[spec["family"]]
        self.module = family_module(spec["family"])
        self.device = torch.device(device)
        self.dtype = DTYPES[spec["dtype"]]
        if self.dtype != torch.float32 and self.device.type == "cpu":
            self.dtype = torch.float32  # half precision on CPU is slow or unsupported; provenance says so
        path = Path(spec["path"])
        cls = getattr(diffusers, self.module.PIPELINES[spec["task"]])
        try:
            pipe = cls.from_pretrained(
                path, dtype=self.dtype, local_files_only=True, use_safetensors=None if spec.get("allow_pickle") else True,
                variant=spec.get("variant"),
            )
        except Exception as e:  # whatever diffusers raises for this directory: the item's reason, in one line
            raise ItemError(f"cannot load {cls.__name__} from {path}: {type(e).__name__}: {e}") from None
        if spec.get("scheduler"):
            scheduler_cls = getattr(diffusers, spec["scheduler"], None)
            if scheduler_cls is None:
                raise ItemError(f"model.scheduler: diffusers has no scheduler class {spec['scheduler']!r}")
            pipe.scheduler = scheduler_cls.from_config(pipe.scheduler.config)
        for name, component in pipe.components.items():
            if isinstance(component, torch.nn.Module):
                component.eval()
                empty = [n for n, t in [*component.named_parameters(), *component.named_buffers()] if t.is_meta]
                if empty:  # its config describes tensors its weights files do not hold
                    raise ItemError(f"cannot load {cls.__name__} from {path}: {name} has no weights for "
                                    f"{len(empty)} of its tensors ({', '.join(empty[:3])}{' …' if len(empty) > 3 else ''}); "
                                    f"its config.json and weights files do not match: save the model again")
        pipe.set_progress_bar_config(disable=True)
        self.pipe = pipe.to(self.device)
        LOADS += 1

    def identity(self) -> dict[str, Any]:
        return identify(self.spec)

    def latents(self, window: WindowRequest, conditioning: Conditioning) -> torch.Tensor:
        """The initial noise of ``window``, in the pipeline's ``latents=`` layout (batch 1)."""
        t = self.family.temporal
        first = window.frames[0]
        if t > 1 and first % t:
            raise ItemError(f"window starting at frame {first} is not on a latent frame (every {t} frames)")
        count = (len(window.frames) - 1) // t + 1
        vae = self.pipe.vae
        channels = getattr(vae.config, "latent_channels", None) or vae.config.z_dim
        scale = self.module.spatial_factor(self.pipe)
        height, width = conditioning.image_size
        noise = frame_noise(
            conditioning.seed, conditioning.item_id, range(first // t, first // t + count),
            (channels, height // scale, width // scale),
        )  # (F', C, h, w)
        return einops.repeat(noise, f"F C H W -> {self.family.layout}", B=1).to(self.device, self.dtype)

    @torch.inference_mode()
    def generate(
        self, window: WindowRequest, conditioning: Conditioning, noise: torch.Tensor | None = None
    ) -> torch.Tensor:
        p = conditioning.params
        height, width = conditioning.image_size
        free_noise = getattr(self.module, "free_noise_settings", lambda *a: None)(p, len(window.frames))
        latents = self.latents(window, conditioning) if noise is None else noise
        generator = torch.Generator(device="cpu").manual_seed(
            derive_seed(conditioning.seed, conditioning.item_id, "pipeline")
        )
        if free_noise:  # FreeNoise's noise rescheduling, on the item's frame noise
            latents = shuffle_context(latents, free_noise["context_length"], free_noise["context_stride"], generator)
        kwargs = dict(
            height=height,
            width=width,
            num_frames=len(window.frames),
            num_inference_steps=p["steps"],
            latents=latents,
            generator=generator,
            output_type="pt",
        )
        kwargs.update(self.module.call_kwargs(self.pipe, p, conditioning, window))
        if free_noise:
            with free_noise_enabled(self.pipe, free_noise):
                out = self.pipe(**kwargs).frames
        else:
            out = self.pipe(**kwargs).frames  # (B, F, C, H, W) in [0, 1]
        frames = torch.as_tensor(out)[0].to("cpu", torch.float32)
        if frames.shape[0] != len(window.frames):
            raise ItemError(f"the pipeline returned {frames.shape[0]} frames for a window of {len(window.frames)}")
        return frames


def shuffle_context(latents: torch.Tensor, length: int, stride: int, generator: torch.Generator) -> torch.Tensor:
    """FreeNoise's "shuffle_context" noise rescheduling on full-length latents (B, C, F, H, W):
    from frame ``length`` on, each run of ``stride`` frames is a permutation (drawn from
    ``generator``) of the frames one context earlier. The same loop as diffusers'
    ``_prepare_latents_free_noise`` runs on the noise it draws itself (diffusers 0.42
    skips it for ``latents=`` of full length and crashes on context-length ones)."""
    latents = latents.clone()
    frames = latents.shape[2]
    for i in range(length, frames, stride):
        start = max(0, i - length)
        end = min(frames, start + stride)
        if end == start:
            break
        indices = torch.arange(start, end)
        shuffled = indices[torch.randperm(end - start, generator=generator)]
        stop = min(frames, i + (end - start))
        latents[:, :, i:stop] = latents[:, :, shuffled[: stop - i]]
    return latents


# FreeNoise switches a loaded pipeline's state for one call (a stand-in motion adapter,
# FreeNoise blocks in the UNet): a model actor's codenoise thread reads the components of
# the same pipeline meanwhile, and must see them as loaded.
PIPE_STATE = threading.RLock()


def loaded_components(pipe) -> dict:
    """``pipe.components`` as loaded, never mid-way through a FreeNoise call on another thread."""
    with PIPE_STATE:
        return dict(pipe.components)


@contextlib.contextmanager
def free_noise_enabled(pipe, settings: dict):
    """diffusers' FreeNoise on ``pipe`` for one call (``settings``: the arguments of
    ``enable_free_noise``), then off again, so the cached pipeline serves plain windows
    next. Pipelines saved without their motion adapter (its modules live in the UNet)
    get a stand-in carrying the UNet's ``motion_max_seq_length``, which is all
    ``enable_free_noise`` reads from it. A denoiser without motion modules that fuses
    its own windows (``set_free_noise``, as the reference denoiser) is told too."""
    from types import SimpleNamespace

    with PIPE_STATE:
        adapter = pipe.motion_adapter
        if adapter is None:
            reach = getattr(pipe.unet.config, "motion_max_seq_length", None) or settings["context_length"]
            stand_in = SimpleNamespace(config=SimpleNamespace(motion_max_seq_length=reach))
            object.__setattr__(pipe, "motion_adapter", stand_in)
        own = getattr(pipe.unet, "set_free_noise", None)
        try:
            pipe.enable_free_noise(**settings)
            if own is not None:
                own(settings["context_length"], settings["context_stride"], settings["weighting_scheme"])
            yield pipe
        finally:
            if own is not None:
                own(None)
                pipe._free_noise_context_length = None
            else:
                pipe.disable_free_noise()
            object.__setattr__(pipe, "motion_adapter", adapter)


def identify(spec: dict[str, Any]) -> dict[str, Any]:
    """Model identity for content keys and provenance: family, task, pipeline and
    component classes, dtype, scheduler config, and the weights digest."""
    from tasks.backends.weights import weights_digest

    path = Path(spec["path"])
    try:
        index = json.loads((path / "model_index.json").read_text())
        scheduler_config = json.loads((path / "scheduler" / "scheduler_config.json").read_text())
    except (OSError, ValueError) as e:
        raise ItemError(f"model.path: cannot read the diffusers layout of {path}: {e}") from None
    classes = {k: v[1] for k, v in index.items() if isinstance(v, list) and len(v) == 2 and v[1]}
    return {
        "backend": "diffusers",
        "family": spec["family"],
        "task": spec["task"],
        "pipeline": index.get("_class_name"),
        "components": classes,
        "dtype": spec["dtype"],
        "scheduler": spec.get("scheduler") or scheduler_config.get("_class_name"),
        "scheduler_config": {k: v for k, v in scheduler_config.items() if not k.startswith("_")},
        "weights_digest": weights_digest(path),
        **({"variant": spec["variant"]} if spec.get("variant") else {}),  # absent: keys made before it existed hold
    }
