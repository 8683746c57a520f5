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
import errno
import glob
import hashlib
import io
import json
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

from tasks.errors import ItemError

Location = str | Path
T = TypeVar("T")

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


# --- locations: local paths and URLs --------------------------------------------------

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
LOCAL_SCHEMES = {"file", "local"}


def scheme(location: Location) -> str | None:
    """The URL scheme of ``location`` (``"s3"``, ``"file"``, …), None for a plain path."""
    if isinstance(location, Path):
        return None
    match = _SCHEME.match(location)
    return match.group(1).lower() if match else None


def is_url(location: Location) -> bool:
    """Whether ``location`` is a remote URL (``file://`` is a local path)."""
    s = scheme(location)
    return s is not None and s not in LOCAL_SCHEMES


def local_or_url(location: Location) -> Location:
    """A local :class:`Path` (plain paths and ``file://`` URLs), or the remote URL as a string.

    >>> local_or_url("file:///srv/stills/a%20b.png"), local_or_url("s3://bucket/x/")
    (PosixPath('/srv/stills/a b.png'), 's3://bucket/x')
    """
    if isinstance(location, Path):
        return location
    s = scheme(location)
    if s is None:
        return Path(location)
    if s in LOCAL_SCHEMES:
        parts = urlsplit(location)
        if parts.netloc not in ("", "localhost"):
            raise ValueError(f"{location!r}: a file:// URL names a local path (file:///abs/path), not host {parts.netloc!r}")
        return Path(unquote(parts.path))
    return location.rstrip("/") if location.rstrip("/") != f"{s}:/" else location


def join(base: Location, *names: str) -> Location:
    """``base / name …`` for a path, ``base/name/…`` for a URL."""
    base = local_or_url(base)
    if isinstance(base, Path):
        return base.joinpath(*names)
    return "/".join([base.rstrip("/"), *(n.strip("/") for n in names)])


def name_of(location: Location) -> str:
    """The last component of a path or URL."""
    location = local_or_url(location)
    return location.name if isinstance(location, Path) else location.rstrip("/").rsplit("/", 1)[-1]


def parent_of(location: Location) -> Location:
    location = local_or_url(location)
    if isinstance(location, Path):
        return location.parent
    head, _, _ = location.rstrip("/").rpartition("/")
    return head if not head.endswith(":/") else head + "/"


# Credentials and endpoints come from the environment of the process asking, so one
# filesystem object is kept per (scheme, relevant environment) and thread-safe to share.
_ENV_PREFIXES = ("AWS_", "FSSPEC_", "GOOGLE_", "GCSFS_", "AZURE_", "ADLFS_")
_filesystems: dict[tuple, Any] = {}
_filesystems_lock = threading.Lock()


def filesystem(url: str) -> tuple[Any, str]:
    """The fsspec filesystem for ``url`` and the path inside it. Listings are never cached
    (another run or node may have written meanwhile)."""
    import fsspec

    s = scheme(url) or "file"
    env = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(_ENV_PREFIXES)))
    key = (s, env)
    with _filesystems_lock:
        fs = _filesystems.get(key)
        if fs is None:
            try:
                cls = fsspec.get_filesystem_class(s)
            except (ImportError, ValueError) as error:
                raise StoreError(f"{url}: no filesystem for {s}:// ({error}); install the matching fsspec package "
                                 f"(s3fs, gcsfs, adlfs)") from None
            fs = cls(**_options(s), skip_instance_cache=True, use_listings_cache=False)
            if hasattr(fs, "retries"):
                fs.retries = 1  # s3fs' own retry loop: :func:`retrying` owns the policy
            _filesystems[key] = fs
    return fs, fs._strip_protocol(url)


def _options(s: str) -> dict:
    """Store options beyond its standard environment: for S3, the endpoint of an S3-compatible
    store (AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL) and a short request retry budget inside
    botocore, since :func:`retrying` owns the retry policy."""
    if s not in ("s3", "s3a"):
        return {}
    options: dict[str, Any] = {}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        options["endpoint_url"] = endpoint
    config: dict[str, Any] = {"connect_timeout": 10, "read_timeout": 60}
    if not os.environ.get("AWS_MAX_ATTEMPTS") and not os.environ.get("AWS_RETRY_MODE"):
        config["retries"] = {"total_max_attempts": 1, "mode": "standard"}
    options["config_kwargs"] = config
    return options


def _metadata_kwargs(fs: Any, metadata: dict[str, str] | None) -> dict:
    if not metadata:
        return {}
    protocols = {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)
    if protocols & {"s3", "s3a"}:
        return {"Metadata": metadata}
    if protocols & {"gs", "gcs", "az", "abfs", "abfss"}:
        return {"metadata": metadata}
    return {}  # other stores: the sidecar alone carries the keys


# --- retries ----------------------------------------------------------------------------


class StoreError(ItemError):
    """A store request failed for good (after retries, or at once when retrying cannot help).
    The message names the URI and the cause."""


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4
    backoff: float = 0.5  # seconds before the 2nd attempt; doubles, capped at 8 s

    @classmethod
    def from_env(cls) -> RetryPolicy:
        """FRAMEFOLD_STORE_RETRIES (attempts, ≥ 1) and FRAMEFOLD_STORE_BACKOFF (seconds, ≥ 0)."""
        try:
            attempts = int(os.environ.get("FRAMEFOLD_STORE_RETRIES", cls.attempts))
            backoff = float(os.environ.get("FRAMEFOLD_STORE_BACKOFF", cls.backoff))
        except ValueError:
            return cls()
        return cls(max(1, attempts), max(0.0, backoff))


_TRANSIENT_CODES = {
    "SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequests",
    "TooManyRequestsException", "RequestThrottled", "InternalError", "ServiceUnavailable", "RequestTimeout",
    "RequestTimeoutException", "BandwidthLimitExceeded", "ServerBusy", "OperationTimedOut",
}
_TRANSIENT_ERRNOS = {errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.ETIMEDOUT, errno.EHOSTUNREACH,
                     errno.ENETUNREACH, errno.EPIPE, errno.EAGAIN, errno.EBUSY}
_TRANSIENT_NAMES = {"EndpointConnectionError", "ConnectionClosedError", "ReadTimeoutError", "ConnectTimeoutError",
                    "ConnectionError", "ClientConnectorError", "ServerDisconnectedError", "ClientOSError",
                    "ServerTimeoutError", "ClientPayloadError", "IncompleteRead", "ResponseStreamingError",
                    "FSTimeoutError", "ProxyConnectionError", "HTTPClientError"}


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def _http_status(error: BaseException) -> tuple[int | None, str | None]:
    response = getattr(error, "response", None)
    if isinstance(response, dict):
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = response.get("Error", {}).get("Code")
        return status, code
    status = getattr(error, "code", None) or getattr(error, "status", None)
    return (status if isinstance(status, int) else None), None


def transient(error: BaseException) -> bool:
    """Whether retrying may help: the store unreachable, a 5xx answer, or throttling."""
    for e in _chain(error):
        if isinstance(e, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)) and e is error:
            return False
        status, code = _http_status(e)
        if status is not None and (status >= 500 or status in (408, 429)):
            return True
        if code in _TRANSIENT_CODES or (code is not None and code.isdigit() and int(code) >= 500):
            return True
        if isinstance(e, (ConnectionError, TimeoutError)):
            return True
        if isinstance(e, OSError) and e.errno in _TRANSIENT_ERRNOS:
            return True
        if type(e).__name__ in _TRANSIENT_NAMES or any(c.__name__ in _TRANSIENT_NAMES for c in type(e).__mro__):
            return True
        if any(p in str(e) for p in ("SlowDown", "reduce your request rate", "Connection refused")):
            return True
    return False


def describe(error: BaseException) -> str:
    """A one-line cause: ``connection refused``, ``HTTP 503 SlowDown``, …"""
    for e in _chain(error):
        status, code = _http_status(e)
        if status is not None or code is not None:
            return " ".join(str(x) for x in (f"HTTP {status}" if status else None, code) if x)
        if isinstance(e, ConnectionRefusedError) or (isinstance(e, OSError) and e.errno == errno.ECONNREFUSED):
            return "connection refused"
        if "Connection refused" in str(e):
            return "connection refused"
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def retrying(action: str, uri: str, fn: Callable[[], T], *, policy: RetryPolicy | None = None,
             sleep: Callable[[float], None] = time.sleep) -> T:
    """``fn()``, retried with backoff while the store fails transiently; then a :class:`StoreError`
    ``"<action> <uri>: <cause> (after N attempts)"``. A missing object or a refused permission is
    raised at once as is (FileNotFoundError, PermissionError): the caller decides."""
    policy = policy or RetryPolicy.from_env()
    delay = policy.backoff
    for attempt in range(1, policy.attempts + 1):
        try:
            return fn()
        except (FileNotFoundError, PermissionError):
            raise
        except Exception as error:  # noqa: BLE001 - classified below
            if not transient(error):
                raise StoreError(f"cannot {action} {uri}: {describe(error)}") from error
            if attempt == policy.attempts:
                raise StoreError(f"cannot {action} {uri}: {describe(error)} (after {policy.attempts} attempts; "
                                 "check that the store is reachable, then run again)") from error
            sleep(delay)
            delay = min(delay * 2, 8.0)
    raise AssertionError("unreachable")


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
                return Stat(int(out["ContentLength"]), {k.lower(): v for k, v in (out.get("Metadata") or {}).items()})
            info = fs.info(path)
        except FileNotFoundError:
            return None
        if info.get("type") != "file":
            return None
        return Stat(int(info.get("size") or 0), {k.lower(): str(v) for k, v in (info.get("metadata") or {}).items()})

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


def _is_s3(fs: Any) -> bool:
    protocols = {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)
    return bool(protocols & {"s3", "s3a"}) and hasattr(fs, "call_s3")
