"""Model weights: a digest that names exactly which weights made a video.

sha256 over every weights (safetensors, or pickle where allowed), JSON and text file of
a model directory, symlinked folders included (relative path and bytes, in path order). Hashing gigabytes takes a while, so the result is
cached per file list with sizes and mtimes, in ``~/.cache/framefold/digests/``
(``FRAMEFOLD_DIGEST_CACHE`` to move it).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from manifests.paths import PICKLE_SUFFIXES, model_files
from tasks import store

HASHED = (".safetensors", ".json", ".txt", ".model", *PICKLE_SUFFIXES)


def weights_digest(path: Path) -> str:
    files = [p for p in model_files(path) if p.suffix.lower() in HASHED and not p.name.startswith(".")]
    stamp = [(str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    key = hashlib.sha256(json.dumps([str(path.resolve()), stamp]).encode()).hexdigest()
    cache = Path(os.environ.get("FRAMEFOLD_DIGEST_CACHE") or Path.home() / ".cache" / "framefold" / "digests") / key
    try:
        return cache.read_text().strip()
    except OSError:
        pass
    h = hashlib.sha256()
    for p in files:
        h.update(str(p.relative_to(path)).encode() + b"\0")
        with open(p, "rb") as fh:
            while block := fh.read(1 << 20):
                h.update(block)
    digest = "sha256:" + h.hexdigest()
    try:
        store.write_bytes(cache, digest.encode(), durable=False)
    except OSError:
        pass  # a read-only home only costs a re-hash next time
    return digest
