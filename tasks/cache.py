"""Window cache: finished windows of unfinished items, so a killed run resumes.

Content-addressed: ``<root>/<item content key>/<start>-<length>.npy`` holds a window's
8-bit pixels (L, H, W, 3). A different key (any change of input, parameter or model)
never sees another key's windows. An item's windows are dropped once its output is
committed; the whole folder is safe to delete at any time, and its size is capped
(least recently written windows go first).
"""

from __future__ import annotations

import contextlib
import io
import os
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
        """Keep a window; best effort: the cache only saves work, so a full disk or a folder
        removed meanwhile (another item finishing) never fails the item."""
        if self.max_bytes <= 0:
            return
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(pixels), allow_pickle=False)
        try:
            self._evict(len(buffer.getbuffer()))
            store.write_bytes(self._path(key, start, length), buffer.getvalue(), durable=False)
        except OSError:
            pass

    def drop(self, key: str) -> None:
        shutil.rmtree(self.root / key, ignore_errors=True)

    def _evict(self, incoming: int) -> None:
        files = sorted(self._files())  # oldest first
        total = sum(size for _, size, _ in files)
        for _, size, path in files:
            if total + incoming <= self.max_bytes:
                break
            total -= size
            path.unlink(missing_ok=True)

    def _files(self) -> list[tuple[float, int, Path]]:
        """(mtime, size, path) of every cached window. Other items' threads drop their folders
        and evict files concurrently: whatever vanishes while listed is skipped."""
        found = []
        try:
            folders = [entry.path for entry in os.scandir(self.root) if entry.is_dir()]
        except OSError:
            return found
        for folder in folders:
            try:
                with os.scandir(folder) as entries:
                    for entry in entries:
                        if entry.name.endswith(".npy") and not entry.name.startswith("."):
                            with contextlib.suppress(OSError):
                                info = entry.stat()
                                found.append((info.st_mtime, info.st_size, Path(entry.path)))
            except OSError:
                continue
        return found
