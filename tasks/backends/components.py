"""diffusers components framefold defines itself, loadable with ``from_pretrained``.

``PixelShuffleVAE`` is an exact, weight-free "autoencoder": its latents are the
pixel-unshuffled frames (``factor``² × 3 channels at 1/``factor`` the size), so a
model trained on it learns pixels directly and its decode is lossless. It has the
``AutoencoderKL`` interface an AnimateDiff pipeline uses (``config.block_out_channels``
gives the pipeline's ``vae_scale_factor``, ``config.latent_channels``,
``config.scaling_factor``, ``decode(z).sample``, ``encode(x).latent_dist``).

diffusers resolves a component whose class lives outside its own libraries from
``sys.modules``: import this module before ``from_pretrained`` (the diffusers
backend does).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

__all__ = ["GaussianProcessDenoiser", "PixelShuffleVAE", "build_reference_pipeline"]


@dataclass
class _Decoded:
    sample: torch.Tensor


class _Dist:
    def __init__(self, z: torch.Tensor) -> None:
        self.mean = self.mode_ = z

    def sample(self, generator=None) -> torch.Tensor:
        return self.mean

    def mode(self) -> torch.Tensor:
        return self.mean


@dataclass
class _Encoded:
    latent_dist: _Dist


class PixelShuffleVAE(ModelMixin, ConfigMixin):
    """Latents = ``pixel_unshuffle(frames in [-1, 1], factor)``; decode is the inverse."""

    @register_to_config
    def __init__(self, factor: int = 4, in_channels: int = 3, scaling_factor: float = 1.0,
                 block_out_channels: tuple = (), latent_channels: int | None = None) -> None:  # fmt: skip
        super().__init__()
        levels = max(factor.bit_length() - 1, 0)
        if 2**levels != factor:
            raise ValueError(f"factor must be a power of two, got {factor}")
        # AnimateDiffPipeline derives vae_scale_factor = 2 ** (len(block_out_channels) - 1).
        self.register_to_config(block_out_channels=[in_channels] * (levels + 1),
                                latent_channels=in_channels * factor * factor)  # fmt: skip
        # One saved buffer (the factor), so the component has a weights file like any model.
        self.register_buffer("shuffle_factor", torch.tensor([float(factor)]))

    def encode(self, x: torch.Tensor, return_dict: bool = True):
        z = F.pixel_unshuffle(x, self.config.factor)  # callers scale by config.scaling_factor
        return _Encoded(_Dist(z)) if return_dict else (_Dist(z),)

    def decode(self, z: torch.Tensor, return_dict: bool = True, generator=None):
        x = F.pixel_shuffle(z, self.config.factor)
        return _Decoded(x) if return_dict else (x,)


class GaussianProcessDenoiser(ModelMixin, ConfigMixin):
    """The exact denoiser of a known video distribution, for measuring seams.

    Data: every latent channel and pixel is an independent stationary Gaussian process
    over time, zero mean, autocovariance ``sigma² · exp(-Δ² / (2 · lengthscale²))``
    (``autocovariance(Δ)``). For a window of F ≤ ``window`` frames, x_t = a·x₀ + s·ε
    (a² = ᾱ_t, s² = 1 - ᾱ_t) is Gaussian too, and the optimal prediction is linear:
    E[x₀ | x_t] = a·K (a²K + s²I)⁻¹ x_t with K the F×F Toeplitz covariance, and
    ε̂ = (x_t − a·x̂₀) / s. So a denoiser that sees one window is exactly right for that
    window and knows nothing beyond it (it refuses more than ``window`` frames, as a
    video model's motion modules stop at their reach), and its samples' statistics can
    be compared with the truth: the correlation of frames t and t+k is
    ``autocovariance(k) / sigma²`` wherever t sits.

    Called like an AnimateDiff UNet (``sample`` (B, C, F, H, W), ``timestep``, ignored
    text embeddings), returning ε. Its factors (the autocovariance and the schedule's
    ᾱ) are buffers, saved as safetensors. ``set_free_noise`` makes it fuse sliding
    windows exactly as diffusers' ``FreeNoiseTransformerBlock`` fuses the temporal
    layer of a motion module (same windows, weights and tail handling); for a linear
    model, fusing the temporal layer's output is fusing the prediction.
    """

    # AnimateDiffPipeline.enable_free_noise walks these; this model has no motion modules.
    down_blocks: list = []
    up_blocks: list = []
    mid_block = None

    @register_to_config
    def __init__(self, in_channels: int = 3, sample_size: int = 16, window: int = 16, lengthscale: float = 4.0,
                 sigma: float = 0.3, num_train_timesteps: int = 1000, motion_max_seq_length: int = 32) -> None:  # fmt: skip
        super().__init__()
        lags = torch.arange(window, dtype=torch.float64)
        self.register_buffer("autocovariance", sigma**2 * torch.exp(-(lags**2) / (2 * lengthscale**2)))
        # the scheduler's ᾱ_t, filled by whoever builds the model (saved with the weights)
        self.register_buffer("alphas_cumprod", torch.zeros(num_train_timesteps, dtype=torch.float64))
        self.free_noise: tuple[int, int, str] | None = None

    def set_free_noise(self, context_length: int | None, context_stride: int = 4, weighting: str = "pyramid") -> None:
        self.free_noise = None if context_length is None else (context_length, context_stride, weighting)

    def covariance(self, frames: int) -> torch.Tensor:
        if frames > self.config.window:
            raise ValueError(f"this model sees at most {self.config.window} frames, got {frames}")
        idx = torch.arange(frames)
        return self.autocovariance.to(torch.float64)[(idx[:, None] - idx[None]).abs()]

    def posterior_matrix(self, frames: int, timestep: int) -> torch.Tensor:
        """(F, F) M with E[x₀ | x_t] = M x_t along time, in float64."""
        abar = self.alphas_cumprod[int(timestep)].to(torch.float64)
        k = self.covariance(frames)
        a, s2 = abar.sqrt(), 1 - abar
        return a * torch.linalg.solve(abar * k + s2 * torch.eye(frames, dtype=torch.float64), k).T  # K symmetric

    def _epsilon(self, x: torch.Tensor, timestep: int) -> torch.Tensor:
        frames = x.shape[2]
        abar = float(self.alphas_cumprod[int(timestep)])
        m = self.posterior_matrix(frames, timestep)
        x64 = x.to(torch.float64)
        x0 = torch.einsum("gf,bcfhw->bcghw", m, x64)
        return ((x64 - abar**0.5 * x0) / (1 - abar) ** 0.5).to(x.dtype)

    def _free_noise_epsilon(self, x: torch.Tensor, timestep: int) -> torch.Tensor:
        from types import SimpleNamespace

        from diffusers.models.attention import FreeNoiseTransformerBlock as Block

        length, stride, weighting = self.free_noise
        frames = x.shape[2]
        ns = SimpleNamespace(context_length=length, context_stride=stride)
        indices = Block._get_frame_indices(ns, frames)
        w = torch.tensor(Block._get_frame_weights(ns, length, weighting), dtype=x.dtype).view(1, 1, -1, 1, 1)
        complete = indices[-1][1] == frames
        if not complete:  # as diffusers: one more window flush with the end
            if frames < length:
                raise ValueError(f"Expected {frames=} to be greater or equal than {length=}")
            tail = frames - indices[-1][1]
            indices.append((frames - length, frames))
        acc = torch.zeros_like(x)
        count = torch.zeros(1, 1, frames, 1, 1, dtype=x.dtype)
        for i, (a, b) in enumerate(indices):
            out = self._epsilon(x[:, :, a:b], timestep)
            if i == len(indices) - 1 and not complete:
                acc[:, :, -tail:] += out[:, :, -tail:] * w[:, :, -tail:]
                count[:, :, -tail:] += w[:, :, -tail]  # diffusers 0.42 adds one weight to all tail frames
            else:
                acc[:, :, a:b] += out * w[:, :, : b - a]
                count[:, :, a:b] += w[:, :, : b - a]
        return acc / count

    def forward(self, sample: torch.Tensor, timestep, encoder_hidden_states=None, *args, return_dict: bool = True,
                **kwargs):  # fmt: skip
        t = torch.as_tensor(timestep).flatten()
        outs = []
        for i in range(sample.shape[0]):
            ti = int(t[i] if len(t) > 1 else t[0])
            x = sample[i : i + 1]
            if self.free_noise is not None and x.shape[2] > self.free_noise[0]:
                outs.append(self._free_noise_epsilon(x, ti))
            else:
                outs.append(self._epsilon(x, ti))
        eps = torch.cat(outs)
        return _Decoded(eps) if return_dict else (eps,)


def build_reference_pipeline(path, *, window: int = 16, lengthscale: float = 4.0, sigma: float = 0.3,
                             size: int = 16, num_train_timesteps: int = 1000):  # fmt: skip
    """Save an AnimateDiff-layout pipeline around :class:`GaussianProcessDenoiser` at ``path``
    (a weight-free pixel VAE, so latents are pixels in [-1, 1]; a tiny random CLIP text
    encoder whose output the denoiser ignores; DDIM, ε-prediction, cosine betas with
    trailing spacing so the first step starts from (almost) pure noise). Returns ``path``."""
    import diffusers as d
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    scheduler = d.DDIMScheduler(
        num_train_timesteps=num_train_timesteps, beta_schedule="squaredcos_cap_v2", prediction_type="epsilon",
        clip_sample=False, set_alpha_to_one=True, timestep_spacing="trailing", steps_offset=0,
    )  # fmt: skip
    unet = GaussianProcessDenoiser(in_channels=3, sample_size=size, window=window, lengthscale=lengthscale,
                                   sigma=sigma, num_train_timesteps=num_train_timesteps)  # fmt: skip
    unet.alphas_cumprod.copy_(scheduler.alphas_cumprod.to(torch.float64))
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=8, intermediate_size=8, num_attention_heads=2,
            num_hidden_layers=1, vocab_size=64, max_position_embeddings=8, projection_dim=8,
        )
    ).eval()  # fmt: skip
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in "abcdefghijklmnopqrstuvwxyz":
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=8)
    pipe = d.AnimateDiffPipeline(
        vae=PixelShuffleVAE(factor=1), text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
        motion_adapter=None, scheduler=scheduler, feature_extractor=None, image_encoder=None,
    )  # fmt: skip
    pipe.save_pretrained(path, safe_serialization=True)
    return path
