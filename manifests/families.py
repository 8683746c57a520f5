"""What each diffusers model family accepts: tasks, size multiples, frame-count rules.

Pure data, shared by manifest validation (reject an item that breaks a rule, never
round it) and by the backend modules in ``tasks/backends/`` (latent layout, noise).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    name: str
    tasks: tuple[str, ...]  # "t2v" (text-to-video), "i2v" (image-to-video)
    size_multiple: int  # width and height must be multiples of this
    min_side: int
    temporal: int  # pixel frames per latent frame (temporal VAE compression)
    frame_modulus: int  # a window's frame count must be ≡ 1 (mod this); 1: any count
    min_frames: int
    max_frames: int | None  # per window (e.g. AnimateDiff's motion modules: 32)
    layout: str  # latent layout handed to the pipeline's `latents=`
    modes: tuple[str, ...] = ("independent",)  # window.mode values (codenoise: windowed denoiser)

    def frame_rule(self) -> str:
        if self.frame_modulus > 1:
            return f"{self.frame_modulus}k+1 frames ({', '.join(str(self.frame_modulus * k + 1) for k in range(1, 4))}, …)"
        top = f"…{self.max_frames}" if self.max_frames else "or more"
        return f"{self.min_frames}{top} frames"

    def window_frames_ok(self, n: int) -> bool:
        if n < self.min_frames or (self.max_frames is not None and n > self.max_frames):
            return False
        return (n - 1) % self.frame_modulus == 0


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        # UNet + motion modules, latents (B, C, F, H/8, W/8); motion modules see at most 32 frames
        Family("animatediff", ("t2v",), 8, 16, 1, 1, 2, 32, "B C F H W", ("independent", "codenoise", "freenoise")),
        # Stable Video Diffusion, latents (B, F, C, H/8, W/8)
        Family("svd", ("i2v",), 8, 16, 1, 1, 2, None, "B F C H W", ("independent", "outpaint")),
        # Wan 2.x DiT, causal 4× temporal VAE: latents (B, C, 1+(F-1)/4, H/8, W/8); patch 2 → size multiple 16
        Family("wan", ("t2v", "i2v"), 16, 16, 4, 4, 5, None, "B C F H W", ("independent", "codenoise", "outpaint")),
        # CogVideoX DiT: latents (B, 1+(F-1)/4, C, H/8, W/8); its VAE decodes latent frames in pairs,
        # so exactly F frames come back only for F = 8k+1
        Family("cogvideox", ("t2v", "i2v"), 16, 16, 4, 8, 9, None, "B F C H W", ("independent", "outpaint")),
    )
}

# window.weighting -> diffusers' FreeNoise weighting_scheme, for the weightings FreeNoise has
FREENOISE_WEIGHTINGS = {"flat": "flat", "linear": "pyramid"}
