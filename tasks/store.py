"""Writing outputs safely and reading inputs, in a local folder or an object store.

A location is a local path or an fsspec URL (``s3://``, ``gs://``, ``az://``; ``file://``
is a local path). Local writes go to a temporary name in the target folder, are fsynced
and renamed: a killed process leaves at most a ``.<name>.<random>.part`` file behind,
never a partial file under a final name; :func:`remove_stale_parts` clears those on the
next run. An object store has no rename: a complete object is uploaded under its final key
in one request (S3 makes it visible only when the upload completes; a multipart upload is
aborted on failure), so no object is ever visible half-written.

Every store request is retried a bounded number of times with backoff when the store is
unreachable, answers 5xx or throttles (``FRAMEFOLD_STORE_RETRIES``,
``FRAMEFOLD_STORE_BACKOFF``); then a :class:`StoreError` names the URI and the cause.
Credentials and endpoints come from each store's standard environment (for S3 the
``AWS_*`` variables, including ``AWS_ENDPOINT_URL`` for MinIO and other S3-compatible stores).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from manifests import locations
from manifests.locations import (  # noqa: F401 - the names callers use through the store
    Location,
    RetryPolicy,
    describe,
    filesystem,
    is_url,
    join,
    local_or_url,
    name_of,
    parent_of,
    scheme,
    transient,
)
from tasks.errors import ItemError

T = TypeVar("T")


class StoreError(ItemError, locations.StoreError):
    """A store request failed for good: the item fails with this reason (it names the URI)."""


def retrying(action: str, uri: str, fn: Callable[[], T], **options: Any) -> T:
    """:func:`manifests.locations.retrying`, failing the item with a :class:`StoreError`."""
    return locations.retrying(action, uri, fn, error=StoreError, **options)

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


def write_bytes(final: Location, data: bytes, *, durable: bool = True, metadata: dict[str, str] | None = None) -> None:
    """Write ``data`` as ``final`` atomically: a local temporary file renamed into place, or one
    complete object (with user ``metadata``, where the store keeps it)."""
    final = local_or_url(final)
    if isinstance(final, str):
        fs, path = filesystem(final)
        retrying("write", final, lambda: fs.pipe_file(path, data, **_metadata_kwargs(fs, metadata)))
        return
    with atomic_path(final, durable=durable) as tmp:
        tmp.write_bytes(data)


def write_json(final: Location, record: dict, *, metadata: dict[str, str] | None = None) -> None:
    write_bytes(final, (json.dumps(record, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode(),
                metadata=metadata)


def sha256_file(path: Location, *, chunk: int = 1 << 20) -> str:
    """sha256 of a local file or an object, streamed (never held whole)."""
    path = local_or_url(path)
    h = hashlib.sha256()
    if isinstance(path, str):
        fs, inner = filesystem(path)

        def stream() -> None:
            h.__init__()  # a retried read starts over
            with fs.open(inner, "rb", block_size=chunk, cache_type="none") as fh:
                while block := fh.read(chunk):
                    h.update(block)

        retrying("read", path, stream)
        return h.hexdigest()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def stale_parts(folder: Path) -> dict[str, list[Path]]:
    """Temporary files a killed run left in ``folder`` (``.NAME.<8 hex digits>.part`` and their
    signing copies ``..NAME.<8 hex digits>.part.*.signing``), by the final NAME they were for: one
    listing of the folder, however many names are then looked up."""
    found: dict[str, list[Path]] = {}
    if not folder.is_dir():
        return found
    with os.scandir(folder) as entries:
        for entry in entries:
            match = _SIGNING_RE.fullmatch(entry.name) or _STALE_RE.fullmatch(entry.name)
            if match:
                found.setdefault(match["final"], []).append(Path(entry.path))
    return found


def remove_stale_parts(final: Path, index: dict[str, list[Path]] | None = None) -> int:
    """Delete the temporary files a killed run left for ``final``; returns how many.
    ``index``: :func:`stale_parts` of ``final``'s folder, listed once for many names."""
    paths = (stale_parts(final.parent) if index is None else index).get(final.name, [])
    for p in paths:
        p.unlink(missing_ok=True)
    return len(paths)


_STALE_RE = re.compile(r"\.(?P<final>[^.].*)\.[0-9a-f]{8}\.part")
_SIGNING_RE = re.compile(r"\.\.(?P<final>[^.].*)\.[0-9a-f]{8}\.part\..+\.signing")


def fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# --- store operations on paths and URLs ----------------------------------------------------


def read_bytes(location: Location) -> bytes:
    """The whole file or object. FileNotFoundError when absent; StoreError when the store fails."""
    location = local_or_url(location)
    if isinstance(location, Path):
        return location.read_bytes()
    fs, path = filesystem(location)
    return retrying("read", location, lambda: fs.cat_file(path))


def read_hashed(location: Location, *, limit: int | None = None, chunk: int = 1 << 20) -> tuple[bytes, str]:
    """Read an input once: its bytes and their sha256, computed while streaming. ``limit``:
    refuse (ItemError) inputs larger than that many bytes."""
    location = local_or_url(location)

    def stream(fh) -> tuple[bytes, str]:
        h, buffer = hashlib.sha256(), io.BytesIO()
        while block := fh.read(chunk):
            h.update(block)
            buffer.write(block)
            if limit is not None and buffer.tell() > limit:
                raise ItemError(f"{location}: larger than {limit:,} bytes; use a smaller file")
        return buffer.getvalue(), h.hexdigest()

    if isinstance(location, Path):
        with open(location, "rb") as fh:
            return stream(fh)
    fs, path = filesystem(location)

    def attempt() -> tuple[bytes, str]:
        with fs.open(path, "rb", block_size=chunk, cache_type="none") as fh:
            return stream(fh)

    return retrying("read", location, attempt)


def read_json(location: Location) -> Any | None:
    """A JSON document, None when absent or unparsable; StoreError when the store fails."""
    try:
        return json.loads(read_bytes(location))
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError, ValueError):
        return None
    except OSError as error:
        if isinstance(local_or_url(location), Path):
            return None
        raise StoreError(f"cannot read {location}: {describe(error)}") from error


@dataclass(frozen=True)
class Stat:
    size: int
    metadata: dict[str, str]
    keeps_metadata: bool = False  # the store keeps the user metadata framefold writes (S3, GCS, Azure)


def stat(location: Location) -> Stat | None:
    """Size and user metadata of a file or object without reading it (one HEAD request on S3);
    None when absent."""
    location = local_or_url(location)
    if isinstance(location, Path):
        try:
            info = location.stat()
        except OSError:
            return None
        return Stat(info.st_size, {}) if location.is_file() else None
    fs, path = filesystem(location)

    def head() -> Stat | None:
        try:
            if _is_s3(fs):
                bucket, key, _ = fs.split_path(path)
                out = fs.call_s3("head_object", Bucket=bucket, Key=key)
                return Stat(int(out["ContentLength"]), {k.lower(): v for k, v in (out.get("Metadata") or {}).items()},
                            keeps_metadata=True)
            info = fs.info(path)
        except FileNotFoundError:
            return None
        if info.get("type") != "file":
            return None
        return Stat(int(info.get("size") or 0), {k.lower(): str(v) for k, v in (info.get("metadata") or {}).items()},
                    keeps_metadata=bool(_metadata_kwargs(fs, {"": ""})))

    return retrying("look up", location, head)


def exists(location: Location) -> bool:
    return stat(location) is not None


def delete(location: Location) -> None:
    """Remove a file or object; absent is fine."""
    location = local_or_url(location)
    if isinstance(location, Path):
        location.unlink(missing_ok=True)
        return
    fs, path = filesystem(location)

    def rm() -> None:
        with contextlib.suppress(FileNotFoundError):
            fs.rm_file(path)

    retrying("delete", location, rm)


def listdir(location: Location) -> list[str]:
    """Names of the files directly inside a folder or prefix (empty when absent)."""
    location = local_or_url(location)
    if isinstance(location, Path):
        return sorted(p.name for p in location.iterdir() if p.is_file()) if location.is_dir() else []
    fs, path = filesystem(location)

    def ls() -> list[str]:
        try:
            entries = fs.ls(path, detail=True)
        except FileNotFoundError:
            return []
        return sorted(e["name"].rstrip("/").rsplit("/", 1)[-1] for e in entries if e.get("type") == "file")

    return retrying("list", location, ls)


def put_file(local: Path, final: Location, *, metadata: dict[str, str] | None = None,
             chunksize: int | None = None) -> None:
    """Move a finished local file to ``final``: a rename for a local target (see :func:`commit`),
    an upload of the complete object for a store (then the local file is removed). A large file
    goes up in parts of ``chunksize`` bytes (the store's default when None); a failed multipart
    upload is aborted, so its parts never become an object."""
    final = local_or_url(final)
    if isinstance(final, Path):
        if local != final:
            final.parent.mkdir(parents=True, exist_ok=True)
            commit(local, final)
        return
    fs, path = filesystem(final)
    options = _metadata_kwargs(fs, metadata) | ({"chunksize": chunksize} if chunksize else {})
    retrying("write", final, lambda: fs.put_file(str(local), path, **options))
    local.unlink(missing_ok=True)


def check_writable(output: Location) -> None:
    """Fail now, naming the output root (:class:`StoreError`), when objects cannot be written
    under a store ``output`` — a missing bucket, credentials the store refuses or that may
    not write, an unreachable endpoint — instead of after every item's work. A probe object
    is written and deleted. Local folders are checked where they are made."""
    output = local_or_url(output)
    if isinstance(output, Path):
        return
    probe = join(output, ".framefold-cache", f"write-check-{secrets.token_hex(6)}")
    try:
        write_bytes(probe, b"")
        delete(probe)
    except (FileNotFoundError, PermissionError) as e:
        raise StoreError(f"cannot write to the output {output}: {describe(e)}; check that the bucket exists and "
                         f"that these credentials (AWS_* for S3) may write to it") from None


def ensure_folder(location: Location) -> None:
    """Create a local folder; object stores need none (a bucket must exist already)."""
    location = local_or_url(location)
    if isinstance(location, Path):
        location.mkdir(parents=True, exist_ok=True)


def staging(output: Location) -> Path:
    """The local folder where an item's files are made before they reach ``output``: ``output``
    itself when it is local, else ``staging`` in its :func:`local_cache`."""
    output = local_or_url(output)
    if isinstance(output, Path):
        return output
    folder = local_cache(output) / "staging"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def local_cache(output: Location) -> Path:
    """The local cache folder of runs writing to ``output``: ``OUTPUT/.framefold-cache`` for a local
    output, else one folder per output URL under ``$XDG_CACHE_HOME/framefold`` (``~/.cache``)."""
    output = local_or_url(output)
    if isinstance(output, Path):
        return output / ".framefold-cache"
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "framefold"
    return base / hashlib.sha256(output.encode()).hexdigest()[:16]


def _metadata_kwargs(fs: Any, metadata: dict[str, str] | None) -> dict:
    if not metadata:
        return {}
    protocols = {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)
    if protocols & {"s3", "s3a"}:
        return {"Metadata": metadata}
    if protocols & {"gs", "gcs", "az", "abfs", "abfss"}:
        return {"metadata": metadata}
    return {}  # other stores: the sidecar alone carries the keys


def _is_s3(fs: Any) -> bool:
    protocols = {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)
    return bool(protocols & {"s3", "s3a"}) and hasattr(fs, "call_s3")
