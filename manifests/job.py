"""What ``load_manifest`` returns: a ``Job`` (the resolved items and where they came from),
its ``SignerConfig`` when outputs are signed, and the checks it leaves to
``tasks.preflight`` because they need a model or a key loaded (``ModelUpscaler``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .fields import DEFAULT_SIGNING_ALG, SIGNING_ALGORITHMS
from .items import ItemSpec

# Where each signer setting was written, by source; tasks.preflight locates key problems with it.
SIGNER_LOCATIONS = {
    "manifest": {"cert": "provenance.c2pa.cert", "key": "provenance.c2pa.key", "alg": "provenance.c2pa.alg"},
    "settings": {"cert": "FRAMEFOLD_C2PA_CERT", "key": "FRAMEFOLD_C2PA_KEY", "alg": "FRAMEFOLD_C2PA_ALG"},
}


@dataclass(frozen=True)
class SignerConfig:
    """Where the signing identity lives.

    ``cert``: PEM with the end-entity certificate first, then its intermediate(s) — not the
    root. ``key``: the end-entity's unencrypted PEM private key. ``alg`` must suit the key
    (``es256`` for EC P-256, ``ps256`` for RSA, ``ed25519`` for Ed25519). ``tsa_url`` is an
    RFC 3161 timestamp authority, contacted at signing time only when set. The files
    themselves are checked by ``tasks.credentials.check``.
    """

    cert: Path
    key: Path
    alg: str = DEFAULT_SIGNING_ALG
    tsa_url: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "cert", Path(self.cert))
        object.__setattr__(self, "key", Path(self.key))
        if self.alg not in SIGNING_ALGORITHMS:
            raise ValueError(f"alg must be one of {', '.join(SIGNING_ALGORITHMS)}, got {self.alg!r}")
        if self.tsa_url is not None and not self.tsa_url.startswith(("http://", "https://")):
            raise ValueError(f"tsa_url must be an http(s) URL or None, got {self.tsa_url!r}")


@dataclass(frozen=True)
class ModelUpscaler:
    """An item upscaled by a super-resolution model, whose weights ``tasks.preflight`` reads
    (their scale is the factor unless the item sets one)."""

    item_id: str
    prefix: str  # where the item is written: 'items[2]', "catalog row 5 (item 'a')"
    path_at: str  # location of its upscale.path: the item's, or 'defaults.upscale.path'
    factor_at: str | None  # location of its upscale.factor; None: not set, the model's scale is the factor


@dataclass(frozen=True)
class Job:
    """A validated manifest: where it came from and its resolved items, inline items first."""

    manifest_path: Path | str  # resolved; a store URL as given
    manifest_sha256: str  # of the file bytes
    root: Path | str  # resolved manifest folder (a store URL for a manifest in a store)
    name: str
    output: Path | str  # resolved output root, or a store URL
    items: tuple[ItemSpec, ...]
    signer: SignerConfig | None = None  # sign outputs with C2PA content credentials
    signer_from: Literal["manifest", "settings"] | None = None  # a key of SIGNER_LOCATIONS
    upscalers: tuple[ModelUpscaler, ...] = ()  # items whose upscaler tasks.preflight checks
