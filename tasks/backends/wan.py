"""Wan 2.x (text- and image-to-video, DiT). Latents (B, C, 1+(F-1)/4, H/8, W/8): windows
of 4k+1 frames starting on multiples of 4."""

PIPELINES = {"t2v": "WanPipeline", "i2v": "WanImageToVideoPipeline"}


def spatial_factor(pipe) -> int:
    return pipe.vae_scale_factor_spatial


def call_kwargs(pipe, params, conditioning, window) -> dict:
    kwargs = dict(prompt=params["prompt"], negative_prompt=params["negative_prompt"] or None,
                  guidance_scale=params["guidance"])
    if conditioning.image is not None:
        kwargs["image"] = conditioning.pil_image()
    return kwargs
