"""Runtime settings: limits and cluster knobs that belong to the machine, not the manifest.

A manifest says *what* to make; these say *where and how big it may get*. They come from
the environment (prefix ``FRAMEFOLD_``, e.g. ``FRAMEFOLD_MAX_FRAMES=100``) so that an
operator can tighten a limit or point at a Ray cluster without editing any manifest.

>>> Settings(max_frames=100).max_frames
100
"""

from __future__ import annotations

from pathlib import Path

from typing import Annotated

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .fields import DEFAULT_SIGNING_ALG, SIGNING_ALGORITHMS
from .locations import split_roots

__all__ = ["Settings"]


class Settings(BaseSettings):
    """Limits and cluster settings read from ``FRAMEFOLD_*`` environment variables."""

    model_config = SettingsConfigDict(
        env_prefix="FRAMEFOLD_",
        extra="forbid",
        frozen=True,
        validate_by_name=True,
        validate_by_alias=True,
    )

    max_frames: int = Field(
        20_000,
        ge=1,
        le=10_000_000,
        description="Largest number of frames one item may ask for (frames, or duration × fps).",
    )
    max_side: int = Field(
        4096,
        ge=16,
        le=65_536,
        description="Largest generation width or height in pixels (item `size`).",
    )
    max_output_side: int = Field(
        8192,
        ge=16,
        le=131_072,
        description="Largest output width or height in pixels after upscaling.",
    )
    max_image_pixels: int = Field(
        64_000_000,
        ge=1,
        le=4_000_000_000,
        description="Decompression-bomb guard: largest width × height accepted when an input image is decoded.",
    )
    ray_address: str | None = Field(
        None,
        min_length=1,
        validation_alias=AliasChoices("FRAMEFOLD_RAY_ADDRESS", "RAY_ADDRESS", "ray_address"),
        description=(
            "Address of a running Ray cluster (e.g. 'ray://head:10001' or 'auto'); "
            "None starts a local Ray. Read from FRAMEFOLD_RAY_ADDRESS, else RAY_ADDRESS."
        ),
    )
    items_in_flight: int = Field(
        0,
        ge=0,
        le=1024,
        description="How many items are generated at the same time; 0 = auto: one per window slot of the cluster "
        "(its GPUs, or its CPUs without GPUs) plus one, at least 2.",
    )
    windows_in_flight: int = Field(
        0,
        ge=0,
        le=65_536,
        description="How many windows of one item may be pending on Ray at once (bounds memory); 0 = auto: twice the windows the cluster can run at once.",
    )
    ray_num_cpus: int | None = Field(
        None,
        ge=1,
        le=4096,
        description="num_cpus passed to a local ray.init(); None lets Ray use every CPU.",
    )
    ray_num_gpus: int | None = Field(
        None,
        ge=0,
        le=4096,
        description="num_gpus passed to a local ray.init(); None lets Ray detect GPUs. Declaring GPUs a machine lacks tests GPU scheduling on CPU.",
    )
    cluster_gpus: float | None = Field(
        None,
        ge=0,
        le=1_000_000,
        description="GPUs the Ray cluster can have, where neither its nodes nor its autoscaler's node types say "
        "(e.g. KubeRay's GPU group at 0 replicas): `gpus: auto` then asks for GPUs and the autoscaler adds nodes; "
        "0 declares a CPU-only cluster. None: GPUs present, else the autoscaler's node types.",
    )
    gpu_wait_s: float = Field(
        600.0,
        gt=0,
        le=86_400,
        description="Seconds work that needs GPUs waits for the autoscaler to bring a GPU node up before its items fail.",
    )
    allow_pickle: bool = Field(
        False,
        description="Allow loading pickled (non-safetensors) model weights. Off by default: pickle runs code.",
    )
    actors: int = Field(
        0,
        ge=0,
        le=4096,
        description="Model actors per model (resident pipelines); 0 = one per GPU the windows can use, or one on CPU.",
    )
    model_root: Path | None = Field(
        None,
        description="Folder that manifests' model.path values are relative to (and must stay inside); "
        "default: the manifest's folder.",
    )
    cache_dir: Path | None = Field(
        None,
        description="Window cache folder (resume of killed runs); default: OUTPUT/.framefold-cache/windows. Safe to delete.",
    )
    window_cache_bytes: int = Field(
        4 << 30,
        ge=0,
        description="Size cap of the window cache in bytes (oldest windows evicted first); 0 disables it.",
    )
    input_roots: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Folders and store prefixes (comma-separated paths or URLs, e.g. '/data/stills,s3://assets/stills') "
        "that manifests may read stills, masks and catalogs from, beside the manifest's own folder. Nothing outside "
        "them is read: symlinks are followed before the check, '..' and URL tricks are refused.",
    )
    output_roots: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Folders and store prefixes (comma-separated) a manifest's `output` may name, beside the "
        "manifest's own folder (`framefold run --out` is the operator's explicit choice and needs none).",
    )
    store_retries: int = Field(
        4, ge=1, le=100,
        description="Attempts per object-store request when the store is unreachable, answers 5xx or throttles; "
        "then the item fails with a reason naming the URI.",
    )
    store_backoff: float = Field(
        0.5, ge=0, le=60, description="Seconds before the second attempt of a store request; doubles per attempt (at most 8 s).",
    )
    c2pa_cert: Path | None = Field(
        None,
        description="C2PA signing certificate chain (PEM: end-entity, then intermediates) used when a manifest has no "
        "provenance.c2pa; set with FRAMEFOLD_C2PA_KEY to sign every run's outputs.",
    )
    c2pa_key: Path | None = Field(None, description="Private key (PEM) of FRAMEFOLD_C2PA_CERT; keep it outside manifest folders.")
    c2pa_alg: str = Field(
        DEFAULT_SIGNING_ALG, description=f"Signature algorithm of FRAMEFOLD_C2PA_KEY ({', '.join(SIGNING_ALGORITHMS)})."
    )
    c2pa_tsa_url: str | None = Field(None, description="Time-stamp authority URL for signing; none: no time-stamp.")
    @field_validator("input_roots", "output_roots", mode="before")
    @classmethod
    def _split_roots(cls, value: object) -> list[str]:
        return split_roots(value)

    c2pa_trust_anchors: Path | None = Field(
        None,
        description="PEM file of root certificates `framefold inspect` trusts when validating C2PA credentials.",
    )
