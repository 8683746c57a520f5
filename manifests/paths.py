"""Paths a manifest names, checked without loading anything: inside their root, of the
right kind, and (for weights) safetensors whose framing is intact. Each check returns
``(resolved path or None, problem message or None)``.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from .problems import Problem
from .settings import Settings

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def _inside_model_root(raw: str, settings: Settings, manifest_root: Path) -> tuple[Path | None, str | None]:
    """`raw` resolved inside FRAMEFOLD_MODEL_ROOT if set, else inside the manifest folder."""
    if settings.model_root is None:
        return inside(raw, manifest_root)
    resolved, message = inside(raw, settings.model_root.resolve())
    return resolved, (message or "").replace("manifest folder", "model root (FRAMEFOLD_MODEL_ROOT)") or None


def model_dir(raw: str, settings: Settings, manifest_root: Path) -> tuple[Path | None, str | None]:
    resolved, message = _inside_model_root(raw, settings, manifest_root)
    if resolved is None:
        return None, message
    if not resolved.is_dir():
        return resolved, f"model directory not found: {resolved}"
    if not (resolved / "model_index.json").is_file():
        return resolved, f"{resolved} is not a diffusers model directory (no model_index.json); save it with save_pretrained"
    files = sorted(p for p in resolved.rglob("*") if p.is_file())
    if not settings.allow_pickle:  # suffixes in any case: case-insensitive filesystems open MODEL.BIN as model.bin
        pickles = [str(p.relative_to(resolved)) for p in files if p.suffix.lower() in PICKLE_SUFFIXES]
        if pickles:
            return resolved, (
                f"{resolved} holds pickle weights ({', '.join(pickles[:3])}{' …' if len(pickles) > 3 else ''}), which "
                "can run code when loaded; convert them to safetensors, or set FRAMEFOLD_ALLOW_PICKLE=1 if you trust them"
            )
    for p in files:
        if p.suffix.lower() == ".safetensors":
            damage = safetensors_damage(p)
            if damage is not None:
                return resolved, (
                    f"{p.relative_to(resolved)} in {resolved} is damaged or truncated ({damage}); "
                    "download or save the model again"
                )
    return resolved, None


def upscaler_file(raw: str, settings: Settings, manifest_root: Path) -> tuple[Path | None, str | None]:
    """Super-resolution weights inside the model root, safetensors with an intact framing:
    (path, problem). Whether spandrel reads them is checked by ``tasks.preflight``."""
    resolved, message = _inside_model_root(raw, settings, manifest_root)
    if resolved is None:
        return None, message
    if not resolved.is_file():
        return resolved, f"upscaler weights not found: {resolved}"
    if resolved.suffix.lower() != ".safetensors":
        return resolved, (
            f"{resolved} is not a .safetensors file; upscaler weights are loaded from safetensors only "
            "(pickle files can run code when loaded): convert it with safetensors.torch.save_file"
        )
    damage = safetensors_damage(resolved)
    if damage is not None:
        return resolved, f"{resolved} is damaged or truncated ({damage}); download or save the weights again"
    return resolved, None


def safetensors_damage(path: Path) -> str | None:
    """What is wrong with a .safetensors file's framing, or None. Reads the header only: an
    8-byte little-endian length, a JSON header whose tensors' data_offsets end where the file does."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as file:
            head = file.read(8)
            if len(head) < 8:
                return f"{size} bytes, shorter than a safetensors header"
            length = int.from_bytes(head, "little")
            if length > size - 8:
                return f"the header claims {length:,} bytes but the file has {size:,}"
            header = json.loads(file.read(min(length, 100 << 20)))
        expected = 8 + length + max(
            (int(entry["data_offsets"][1]) for key, entry in header.items() if key != "__metadata__"), default=0
        )
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError) as error:
        return f"unreadable safetensors header: {type(error).__name__}"
    if expected != size:
        return f"{size:,} bytes where its header describes {expected:,}"
    return None


def inside(raw: str, root: Path) -> tuple[Path | None, str | None]:
    """`raw` resolved against `root` (symlinks followed) if it stays inside root."""
    try:
        resolved = (root / raw).resolve()
    except (OSError, RuntimeError, ValueError) as error:
        return None, f"cannot resolve {raw!r}: {error}"
    if not resolved.is_relative_to(root):
        return None, f"{raw!r} escapes the manifest folder {root} (resolves to {resolved})"
    return resolved, None


def input_file(raw: str, root: Path) -> tuple[Path | None, str | None]:
    """An input file path: inside root, and an existing regular file."""
    resolved, message = inside(raw, root)
    if resolved is None:
        return None, message
    try:
        info = resolved.stat()
    except FileNotFoundError:
        return resolved, f"file not found: {resolved}"
    except OSError as error:
        return resolved, f"cannot read {resolved}: {error.strerror or error}"
    if not stat.S_ISREG(info.st_mode):
        return resolved, f"not a regular file: {resolved}"
    return resolved, None


# --- 7. Output root --------------------------------------------------------------------
def output_root(
    raw: object, invalid: bool, override: Path | None, root: Path
) -> tuple[Path | None, Problem | None]:
    if override is not None:
        try:
            resolved = Path(override).resolve()
        except (OSError, RuntimeError, ValueError, TypeError) as error:
            return None, Problem("output", f"cannot resolve output override {override!r}: {error}")
        where = "output (override)"
    elif invalid or not isinstance(raw, str):
        return None, None  # already reported by validation
    else:
        resolved, message = inside(raw, root)
        if resolved is None:
            return None, Problem("output", message or "unusable path")
        where = "output"
    if os.path.lexists(resolved) and not resolved.is_dir():
        return None, Problem("output", f"{where} {resolved} exists and is not a directory")
    for parent in resolved.parents:  # the nearest existing ancestor must be a folder to create it in
        if os.path.lexists(parent):
            if not parent.is_dir():
                return None, Problem("output", f"{where} {resolved} cannot be created: {parent} is a file, not a directory")
            break
    return resolved, None
