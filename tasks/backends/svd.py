"""Stable Video Diffusion (image-to-video). Latents (B, F, C, H/8, W/8). Guidance rises
linearly over the frames of a window from 1 to ``guidance``; no text prompt."""

PIPELINES = {"i2v": "StableVideoDiffusionPipeline"}


def spatial_factor(pipe) -> int:
    return pipe.vae_scale_factor


def call_kwargs(pipe, params, conditioning, window) -> dict:
    return dict(image=conditioning.pil_image(), min_guidance_scale=1.0, max_guidance_scale=max(1.0, params["guidance"]),
                fps=max(1, round(params["fps"])) - 1, decode_chunk_size=len(window.frames))
