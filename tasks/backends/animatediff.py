"""AnimateDiff (text-to-video): a Stable Diffusion UNet with motion modules.
Latents (B, C, F, H/8, W/8); at most 32 frames per window (the motion modules' reach)."""

PIPELINES = {"t2v": "AnimateDiffPipeline"}


def spatial_factor(pipe) -> int:
    return pipe.vae_scale_factor


def call_kwargs(pipe, params, conditioning, window) -> dict:
    # clip_skip=None: clip_skip is broken under transformers 5
    return dict(prompt=params["prompt"], negative_prompt=params["negative_prompt"] or None,
                guidance_scale=params["guidance"], clip_skip=None)
