"""CogVideoX (text- and image-to-video, DiT). Latents (B, 1+(F-1)/4, C, H/8, W/8); its
VAE decodes latent frames in pairs, so windows have 8k+1 frames."""

PIPELINES = {"t2v": "CogVideoXPipeline", "i2v": "CogVideoXImageToVideoPipeline"}


def spatial_factor(pipe) -> int:
    return pipe.vae_scale_factor_spatial


def call_kwargs(pipe, params, conditioning, window) -> dict:
    kwargs = dict(prompt=params["prompt"], negative_prompt=params["negative_prompt"] or None,
                  guidance_scale=params["guidance"], use_dynamic_cfg=False)
    if conditioning.image is not None:
        kwargs["image"] = conditioning.pil_image()
    return kwargs
