"""Writing outputs safely: temporary names in the target folder, fsync, atomic rename.

A killed process leaves at most a ``.<name>.<random>.part`` file behind, never a
partial file under a final name; :func:`remove_stale_parts` clears those on the next run.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path

PART_SUFFIX = ".part"


def part_path(final: Path) -> Path:
    """A fresh temporary name next to ``final`` (same filesystem, so rename is atomic)."""
    return final.with_name(f".{final.name}.{secrets.token_hex(4)}{PART_SUFFIX}")


def commit(tmp: Path, final: Path, *, durable: bool = True) -> None:
    """Rename ``tmp`` over ``final``; ``durable``: fsync the file before and the folder after."""
    if durable:
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
    os.replace(tmp, final)
    if durable:
        fsync_dir(final.parent)


@contextlib.contextmanager
def atomic_path(final: Path, *, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path; on success it becomes ``final``, on error it is removed."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = part_path(final)
    try:
        yield tmp
        commit(tmp, final, durable=durable)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(final: Path, data: bytes, *, durable: bool = True) -> None:
    with atomic_path(final, durable=durable) as tmp:
        tmp.write_bytes(data)


def write_json(final: Path, record: dict) -> None:
    write_bytes(final, (json.dumps(record, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode())


def sha256_file(path: Path, *, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def remove_stale_parts(final: Path) -> int:
    """Delete temporary files a killed run left for ``final``; returns how many."""
    if not final.parent.is_dir():
        return 0
    removed = 0
    for p in final.parent.glob(f".{glob.escape(final.name)}.*{PART_SUFFIX}"):
        if _PART_RE.fullmatch(p.name[len(final.name) + 2 :]):
            p.unlink(missing_ok=True)
            removed += 1
    for p in final.parent.glob(f"..{glob.escape(final.name)}.*{PART_SUFFIX}.*.signing"):  # a signing copy of a part
        p.unlink(missing_ok=True)
        removed += 1
    return removed


_PART_RE = re.compile(r"[0-9a-f]{8}\.part")


def fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
