"""Paths a manifest names, checked without loading anything: inside their root, of the
right kind, and (for weights) safetensors whose framing is intact. Each check returns
``(resolved path or None, problem message or None)``.

Stills, masks, catalogs and the output may also be store URLs (``s3://``, ``gs://``,
``az://``) and local paths outside the manifest folder, under the configured roots
(``FRAMEFOLD_INPUT_ROOTS``, ``FRAMEFOLD_OUTPUT_ROOTS``); see :mod:`manifests.locations`.
Model weights are local files.
"""

from __future__ import annotations

import functools
import json
import os
import stat
from pathlib import Path

from . import locations
from .locations import Location
from .problems import Problem
from .settings import Settings

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def _inside_model_root(raw: str, settings: Settings, manifest_root: Location) -> tuple[Path | None, str | None]:
    """`raw` resolved inside FRAMEFOLD_MODEL_ROOT if set, else inside the manifest folder; a local path."""
    if settings.model_root is None:
        if not isinstance(manifest_root, Path):
            return None, f"{raw!r}: a manifest read from a store names model weights under FRAMEFOLD_MODEL_ROOT (a local folder)"
        resolved, message = inside(raw, manifest_root)
        if message is not None and resolved is None and "escapes" in message:
            message = (message.split("; to allow it")[0] + "; model weights are read inside the manifest folder, or "
                       "inside FRAMEFOLD_MODEL_ROOT when it is set: set it to a folder that holds the model")
    else:
        resolved, message = inside(raw, settings.model_root.resolve())
        if message is not None and resolved is None and "escapes" in message:
            message = (message.split("; to allow it")[0].replace("manifest folder", "model root (FRAMEFOLD_MODEL_ROOT)")
                       + "; move the model inside it, or set FRAMEFOLD_MODEL_ROOT to a folder that holds it")
    if resolved is not None and not isinstance(resolved, Path):
        return None, f"{raw!r}: model weights are read from local files; copy them to a folder on this machine"
    return resolved, message


def model_files(root: Path) -> list[Path]:
    """Every file under a model directory, in path order, through symlinked folders too (a
    component linked from a shared folder is part of the model); each real folder once."""
    seen: set[str] = set()
    files: list[Path] = []
    for folder, dirs, names in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:  # a link back up the tree
            dirs[:] = []
            continue
        seen.add(real)
        files += [Path(folder, n) for n in names if os.path.isfile(os.path.join(folder, n))]
    return sorted(files)


def model_dir(raw: str, settings: Settings, manifest_root: Location) -> tuple[Path | None, str | None]:
    resolved, message = _inside_model_root(raw, settings, manifest_root)
    if resolved is None:
        return None, message
    if not resolved.is_dir():
        return resolved, f"model directory not found: {resolved}"
    if not (resolved / "model_index.json").is_file():
        return resolved, f"{resolved} is not a diffusers model directory (no model_index.json); save it with save_pretrained"
    missing = missing_components(resolved) + missing_shards(resolved)
    if missing:
        return resolved, (f"{resolved} is incomplete: {'; '.join(missing)}; save the whole pipeline again with "
                          "save_pretrained (or copy what is missing)")
    files = model_files(resolved)
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


def model_index(root: Path) -> dict:
    """A model directory's model_index.json ({} when unreadable), read once per version of the
    file: the per-item rules of a catalog's items that share a model do not re-read it."""
    try:
        stamp = (root / "model_index.json").stat().st_mtime_ns
    except OSError:
        return {}
    return _model_index(str(root), stamp)


@functools.lru_cache(maxsize=64)
def _model_index(root: str, stamp: int) -> dict:
    try:
        index = json.loads((Path(root) / "model_index.json").read_text())
    except (OSError, ValueError):
        return {}
    return index if isinstance(index, dict) else {}


def _components(index: dict) -> list[tuple[str, list]]:
    """The components a model_index lists (``name: [library, class]``), not its settings
    (boundary_ratio, …) nor absent ones ([null, null])."""
    return [(k, v) for k, v in index.items()
            if not k.startswith("_") and isinstance(v, list) and len(v) == 2 and all(v)]


def missing_components(root: Path) -> list[str]:
    """Components model_index.json lists (``name: [library, class]``) with no folder holding a
    config (``name/``, or ``name/*.json`` for a scheduler or tokenizer)."""
    missing = []
    for name, value in _components(model_index(root)):
        folder = root / name
        if not folder.is_dir() or not any(folder.glob("*.json")):
            missing.append(f"no {name}/ ({value[1]}, listed in model_index.json)")
    return missing


def missing_shards(root: Path) -> list[str]:
    """Weight shards a ``*.safetensors.index.json`` maps tensors to that are not there (a copy
    cut short), and configs that are not JSON: ``folder/file (why)``."""
    missing = []
    for index in sorted(root.glob("*/*.safetensors.index.json")):
        try:
            shards = set(json.loads(index.read_text())["weight_map"].values())
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            missing.append(f"{index.relative_to(root)} is not a shard index")
            continue
        missing += [f"no {index.parent.name}/{s} (a shard {index.name} names)" for s in sorted(shards)
                    if not (index.parent / s).is_file()]
    for config in sorted([*root.glob("*/config.json"), *root.glob("*/scheduler_config.json")]):
        try:
            json.loads(config.read_text())
        except (OSError, ValueError):
            missing.append(f"{config.relative_to(root)} is not JSON")
    return missing


FAMILY_PIPELINES = {"animatediff": "AnimateDiff", "svd": "StableVideoDiffusion", "wan": "Wan",
                    "cogvideox": "CogVideoX"}  # fmt: skip  # family -> its pipelines' class name prefix


def pipeline_family(root: Path) -> tuple[str, str] | None:
    """``(family, pipeline class)`` a model directory's model_index.json names, or None when
    its class is none of the families'."""
    name = model_index(root).get("_class_name")
    if not isinstance(name, str):
        return None
    for family, prefix in FAMILY_PIPELINES.items():
        if name.startswith(prefix):
            return family, name
    return None


def variant_only(root: Path) -> dict[str, str]:
    """Components of a model directory whose safetensors are all of one variant
    (``diffusion_pytorch_model.fp16.safetensors``, sharded or not) with no plain file: name -> variant.
    Listed once per directory and state of its component folders (a catalog's items share one model;
    a file added or removed changes its folder's mtime)."""
    names = tuple(name for name, _ in _components(model_index(root)))
    try:
        stamp = tuple((root / name).stat().st_mtime_ns for name in names)
    except OSError:  # a component folder is missing (missing_components names it): list, do not keep
        return dict(_variants(root, names))
    return dict(_kept_variants(str(root), names, stamp))


@functools.lru_cache(maxsize=64)
def _kept_variants(root: str, names: tuple[str, ...], stamp: tuple[int, ...]) -> tuple[tuple[str, str], ...]:
    return _variants(Path(root), names)


def _variants(root: Path, names: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    import re

    found = []
    for name in names:
        variants = set()
        for file in (root / name).glob("*.safetensors"):
            parts = re.sub(r"-\d{5}-of-\d{5}(?=\.safetensors$)", "", file.name).split(".")
            variants.add(parts[-2] if len(parts) >= 3 else None)
        if len(variants) == 1 and None not in variants:
            found.append((name, variants.pop()))
    return tuple(found)


def two_experts(root: Path) -> bool:
    """Whether a model switches between two denoisers (wan 2.2 A14B: ``transformer_2``)."""
    value = model_index(root).get("transformer_2")
    return isinstance(value, list) and len(value) == 2 and all(value)


def model_tasks(path: Path, family: str) -> tuple[tuple[str, ...], str] | None:
    """What a wan or cogvideox model directory can do, read off its configs: ``(tasks, why)``
    with tasks ``("t2v",)``, ``("i2v",)`` or both, or None when its configs do not tell. A
    text-to-video transformer takes the VAE's latent channels; an image-to-video one takes
    the image's latents too (wan 2.1: latents + 4 mask + image latents; cogvideox: twice the
    latents); wan 2.2's TI2V (``expand_timesteps``) does both with the latent channels alone."""
    if family not in ("wan", "cogvideox"):
        return None
    try:  # read once per directory and version of its configs (a catalog's items share one model)
        stamp = tuple((path / n).stat().st_mtime_ns for n in ("model_index.json", "transformer/config.json"))
    except OSError:
        return None
    return _model_tasks(str(path), family, stamp)


@functools.lru_cache(maxsize=64)
def _model_tasks(root: str, family: str, stamp: tuple[int, ...]) -> tuple[tuple[str, ...], str] | None:
    path = Path(root)

    def config(name: str) -> dict:
        try:
            data = json.loads((path / name).read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    channels = config("transformer/config.json").get("in_channels")
    vae = config("vae/config.json")
    latent = vae.get("z_dim" if family == "wan" else "latent_channels")
    if not isinstance(channels, int) or not isinstance(latent, int):
        return None
    why = f"its transformer takes {channels} input channels, its VAE makes {latent}"
    if channels == latent:
        both = family == "wan" and config("model_index.json").get("expand_timesteps") is True
        return (("t2v", "i2v") if both else ("t2v",)), why
    if channels == (2 * latent + 4 if family == "wan" else 2 * latent):
        return ("i2v",), why
    return None


def upscaler_file(raw: str, settings: Settings, manifest_root: Location) -> tuple[Path | None, str | None]:
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


def inside(raw: str, root: Location, roots: tuple[str, ...] = (), *,
           setting: str = "FRAMEFOLD_INPUT_ROOTS") -> tuple[Location | None, str | None]:
    """`raw` resolved against `root` (symlinks followed) if it stays inside root or one of `roots`."""
    return locations.resolve(raw, root, roots, setting=setting)


def input_file(raw: str, root: Location, roots: tuple[str, ...] = (), *, local: bool = False,
               listings: dict | None = None) -> tuple[Location | None, str | None]:
    """An input file: inside root (or one of `roots`), and an existing regular file or object.
    ``local``: it must be a local file. ``listings``: a cache of store folder listings, so that
    thousands of catalog rows cost one listing per folder, not one request per still."""
    resolved, message = inside(raw, root, roots)
    if resolved is None:
        return None, message
    if not isinstance(resolved, Path):
        if local:
            return None, f"{raw!r} must be a local file, not a store URL"
        return resolved, _remote_file_problem(resolved, {} if listings is None else listings)
    try:
        info = resolved.stat()
    except FileNotFoundError:
        return resolved, f"file not found: {resolved}"
    except OSError as error:
        return resolved, f"cannot read {resolved}: {error.strerror or error}"
    if not stat.S_ISREG(info.st_mode):
        return resolved, f"not a regular file: {resolved}"
    return resolved, None


def _remote_file_problem(url: str, listings: dict) -> str | None:
    """Whether a store object exists, from one listing of its folder (cached in ``listings``)."""
    folder, name = locations.parent_of(url), locations.name_of(url)
    found = listings.get(folder)
    if found is None:
        try:
            fs, path = locations.filesystem(folder)
            entries = locations.retrying("list", folder, lambda: fs.ls(path, detail=True))
            found = {e["name"].rstrip("/").rsplit("/", 1)[-1]: e.get("type") for e in entries}
        except FileNotFoundError:
            found = {}
        except (locations.StoreError, OSError) as error:
            return str(error)
        listings[folder] = found
    if name not in found:
        return f"file not found: {url}"
    if found[name] != "file":
        return f"not a file: {url}"
    return None


# --- 7. Output root --------------------------------------------------------------------
def output_root(
    raw: object, invalid: bool, override: Location | None, root: Location, roots: tuple[str, ...] = ()
) -> tuple[Location | None, Problem | None]:
    if override is not None and locations.is_url(str(override)):
        problem = locations.url_problem(str(override))
        return (None, Problem("output", f"output override: {problem}")) if problem else (str(override).rstrip("/"), None)
    if override is not None:
        try:
            resolved = Path(locations.local_or_url(override)).resolve()
        except (OSError, RuntimeError, ValueError, TypeError) as error:
            return None, Problem("output", f"cannot resolve output override {override!r}: {error}")
        where = "output (override)"
    elif invalid or not isinstance(raw, str):
        return None, None  # already reported by validation
    else:
        resolved, message = inside(raw, root, roots, setting="FRAMEFOLD_OUTPUT_ROOTS")
        if resolved is None:
            return None, Problem("output", message or "unusable path")
        if not isinstance(resolved, Path):
            return resolved, None  # a store prefix: nothing to create
        where = "output"
    if os.path.lexists(resolved) and not resolved.is_dir():
        return None, Problem("output", f"{where} {resolved} exists and is not a directory")
    for parent in resolved.parents:  # the nearest existing ancestor must be a folder to create it in
        if os.path.lexists(parent):
            if not parent.is_dir():
                return None, Problem("output", f"{where} {resolved} cannot be created: {parent} is a file, not a directory")
            break
    return resolved, None
