"""A single-process, readable MultiDiffusion-in-time loop for AnimateDiff (no Ray, no
proxies): the reference that framefold's distributed codenoise must match."""

from __future__ import annotations

import torch

from kernels.overlap import overlap_add
from kernels.windows import window_indices, window_weights


@torch.inference_mode()
def multidiffusion_animatediff(pipe, *, prompt, negative_prompt, latents, steps, guidance, windows, weighting,
                               generator):
    """latents (1, C, F, h, w) standard normal; returns frames (F, 3, H, W) in [0, 1]."""
    frames = latents.shape[2]
    cond, uncond = pipe.encode_prompt(prompt, latents.device, 1, True, negative_prompt=negative_prompt, clip_skip=None)
    embeds = torch.cat([uncond, cond])  # (2, tokens, dim): the UNet sees (2·frames, …) per window
    pipe.scheduler.set_timesteps(steps, device=latents.device)
    latents = latents * pipe.scheduler.init_noise_sigma
    extra = pipe.prepare_extra_step_kwargs(generator, 0.0)
    indices = [window_indices(w, frames) for w in windows]
    weights = [window_weights(w.length, weighting) for w in windows]
    for t in pipe.scheduler.timesteps:
        x = pipe.scheduler.scale_model_input(torch.cat([latents] * 2), t)
        # 1. every window predicts the noise of its frames (cond and uncond together)
        preds = [pipe.unet(x[:, :, idx], t, encoder_hidden_states=embeds.repeat_interleave(len(idx), dim=0)).sample
                 for idx in indices]
        # 2. overlaps are averaged with the window weights
        pred = overlap_add([p.movedim(2, 0) for p in preds], indices, weights, frames).movedim(0, 2)
        # 3. guidance, then one scheduler step on the whole latent
        uncond_pred, cond_pred = pred.chunk(2)
        pred = uncond_pred + guidance * (cond_pred - uncond_pred)
        latents = pipe.scheduler.step(pred, t, latents, **extra).prev_sample
    video = pipe.decode_latents(latents, 16)
    return pipe.video_processor.postprocess_video(video=video, output_type="pt")[0]
