"""AnimateDiff (text-to-video): a Stable Diffusion UNet with motion modules.
Latents (B, C, F, H/8, W/8); at most 32 frames per window (the motion modules' reach),
or any length with ``window.mode: freenoise`` (diffusers' FreeNoise)."""

from manifests.families import FREENOISE_WEIGHTINGS

PIPELINES = {"t2v": "AnimateDiffPipeline"}


def spatial_factor(pipe) -> int:
    return pipe.vae_scale_factor


def call_kwargs(pipe, params, conditioning, window) -> dict:
    # clip_skip=None: clip_skip is broken under transformers 5
    return dict(prompt=params["prompt"], negative_prompt=params["negative_prompt"] or None,
                guidance_scale=params["guidance"], clip_skip=None)


def free_noise_settings(params: dict, frames: int) -> dict | None:
    """The arguments of ``pipe.enable_free_noise`` for a freenoise item of ``frames``
    frames, or None when one context window covers the clip (the plain pipeline runs).
    Context length = window.length, stride = length - overlap; FreeNoise's own
    shuffled-context noise (drawn from the item's pipeline generator)."""
    window = params["window"]
    if window["mode"] != "freenoise" or frames <= window["length"]:
        return None
    return {
        "context_length": window["length"],
        "context_stride": window["length"] - window["overlap"],
        "weighting_scheme": FREENOISE_WEIGHTINGS[window["weighting"]],
        "noise_type": "shuffle_context",
    }
