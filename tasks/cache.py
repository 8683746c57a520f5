"""Window cache: finished windows of unfinished items, so a killed run resumes.

Content-addressed: ``<root>/<item content key>/<start>-<length>.npy`` holds a window's
8-bit pixels (L, H, W, 3). A different key (any change of input, parameter or model)
never sees another key's windows. An item's windows are dropped once its output is
committed; the whole folder is safe to delete at any time, and its size is capped
(least recently written windows go first).
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np

from tasks import store


class WindowCache:
    def __init__(self, root: Path, *, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes

    def _path(self, key: str, start: int, length: int) -> Path:
        return self.root / key / f"{start}-{length}.npy"

    def get(self, key: str, start: int, length: int) -> np.ndarray | None:
        path = self._path(key, start, length)
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError):  # absent, or damaged: regenerate
            return None

    def put(self, key: str, start: int, length: int, pixels: np.ndarray) -> None:
        if self.max_bytes <= 0:
            return
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(pixels), allow_pickle=False)
        self._evict(len(buffer.getbuffer()))
        store.write_bytes(self._path(key, start, length), buffer.getvalue(), durable=False)

    def drop(self, key: str) -> None:
        shutil.rmtree(self.root / key, ignore_errors=True)

    def _evict(self, incoming: int) -> None:
        files = sorted(
            (p for p in self.root.glob("*/*.npy")), key=lambda p: p.stat().st_mtime if p.exists() else 0
        ) if self.root.is_dir() else []
        total = sum(p.stat().st_size for p in files if p.exists())
        for p in files:
            if total + incoming <= self.max_bytes:
                break
            try:
                total -= p.stat().st_size
                p.unlink()
            except OSError:
                pass
