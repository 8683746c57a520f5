"""Locations: local paths and fsspec URLs, the one way framefold names a file or an object.

A location is a local path or a URL (``s3://bucket/key``, ``gs://``, ``az://``; ``file://``
names a local path). This module is pure naming and policy — which filesystem serves a
URL (credentials and endpoints from each store's standard environment), how requests are
retried, and whether a location stays inside its allowed roots. Reading and writing live
in ``tasks.store``; manifests use it to read a manifest or catalog from a store.
"""

from __future__ import annotations

import errno
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

Location = str | Path
T = TypeVar("T")


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


# --- retries ----------------------------------------------------------------------------


UNREACHABLE = "check that the store is reachable, then run again"


def unreachable(message: str) -> bool:
    """Whether a problem or error message is a store that did not answer through every retry
    (running again later may succeed), not something wrong with what was asked."""
    return UNREACHABLE in message


class StoreError(Exception):
    """A store request failed for good (after retries, or at once when retrying cannot help).
    The message names the URI and the cause."""

    @property
    def unreachable(self) -> bool:
        return unreachable(str(self))


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
             sleep: Callable[[float], None] = time.sleep, error: type[Exception] = StoreError) -> T:
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
        except Exception as failure:  # noqa: BLE001 - classified below
            if not transient(failure):
                raise error(f"cannot {action} {uri}: {describe(failure)}") from failure
            if attempt == policy.attempts:
                raise error(f"cannot {action} {uri}: {describe(failure)} (after {policy.attempts} attempts; "
                            f"{UNREACHABLE})") from failure
            sleep(delay)
            delay = min(delay * 2, 8.0)
    raise AssertionError("unreachable")


# --- roots: where a manifest may read and write ------------------------------------------

_DOT_SEGMENT = re.compile(r"(^|/)\.{1,2}(/|$)")


def redacted(location: str) -> str:
    """``location`` with the credentials of a URL's ``user:secret@`` replaced by ``***@``, so
    that a message never prints a secret.

    >>> redacted("s3://key:secret@bucket/jobs/a.yaml"), redacted("s3://bucket/a@b.yaml")
    ('s3://***@bucket/jobs/a.yaml', 's3://bucket/a@b.yaml')
    """
    head, sep, rest = location.partition("://")
    if not sep:
        return location
    netloc, slash, path = rest.partition("/")
    return f"{head}://***@{netloc.rsplit('@', 1)[1]}{slash}{path}" if "@" in netloc else location


def url_problem(url: str) -> str | None:
    """Why a store URL is refused, or None: credentials, a query or fragment, ``.``/``..``
    segments (also percent-encoded), backslashes, empty segments or control characters —
    anything that could make a URL name another key than it seems to."""
    parts = urlsplit(url)
    if any(ord(c) < 32 or c == "\x7f" for c in url):
        return f"{url!r} contains control characters"
    if "\\" in url:
        return f"{url!r} contains a backslash"
    if "@" in parts.netloc or parts.username or parts.password:
        return (f"{redacted(url)!r} carries credentials (not repeated here); put them in the environment "
                f"(e.g. AWS_ACCESS_KEY_ID), not in the URL")
    if parts.query or parts.fragment or "?" in url or "#" in url:
        return f"{url!r} has a query or fragment; a store location is scheme://bucket/key"
    if not parts.netloc:
        return f"{url!r} names no bucket or container"
    path = unquote(parts.path)
    if _DOT_SEGMENT.search(path) or _DOT_SEGMENT.search(parts.path):
        return f"{url!r} contains '.' or '..' segments"
    if "//" in parts.path.strip("/") or "%" in path:
        return f"{url!r} contains an empty or percent-encoded segment"
    return None


def _normal_root(root: Location) -> Location:
    root = local_or_url(root)
    if isinstance(root, Path):
        try:
            return root.expanduser().resolve()
        except (OSError, RuntimeError, ValueError):
            return root
    return root.rstrip("/")


def within(location: Location, root: Location) -> bool:
    """Whether ``location`` (resolved) is ``root`` or inside it. Paths and URLs never mix."""
    location, root = local_or_url(location), _normal_root(root)
    if isinstance(location, Path) or isinstance(root, Path):
        return isinstance(location, Path) and isinstance(root, Path) and location.is_relative_to(root)
    a, b = urlsplit(location), urlsplit(root)
    if (a.scheme.lower(), a.netloc) != (b.scheme.lower(), b.netloc):
        return False
    inner, outer = a.path.strip("/"), b.path.strip("/")
    return not outer or inner == outer or inner.startswith(outer + "/")


def resolve(raw: str, base: Location, roots: Sequence[Location] = (), *, setting: str = "FRAMEFOLD_INPUT_ROOTS",
            what: str = "manifest folder") -> tuple[Location | None, str | None]:
    """``raw`` — a path relative to ``base`` (the manifest's folder, local or a URL), an absolute
    path, a ``file://`` URL or a store URL — resolved (symlinks followed), if it stays inside
    ``base`` or one of ``roots``: (location, None); else (None, why)."""
    s = scheme(raw)
    base = local_or_url(base)
    try:
        if s is not None and s not in LOCAL_SCHEMES:
            problem = url_problem(raw)
            if problem is not None:
                return None, problem
            resolved: Location = raw.rstrip("/")
        elif s is not None:
            resolved = local_or_url(raw).resolve()
        elif isinstance(base, Path) or Path(raw).is_absolute():
            resolved = (base / raw).resolve() if isinstance(base, Path) else Path(raw).resolve()
        else:  # relative to a manifest in a store: a key under its folder
            resolved = join(base, raw)
            problem = url_problem(resolved)
            if problem is not None:
                return None, problem
    except (OSError, RuntimeError, ValueError) as error:
        return None, f"cannot resolve {raw!r}: {error}"
    if any(within(resolved, root) for root in (base, *roots)):
        return resolved, None
    if roots:
        return None, f"{raw!r} escapes the {what} {base} and the roots in {setting} (resolves to {resolved})"
    return None, f"{raw!r} escapes the {what} {base} (resolves to {resolved}); to allow it, add its folder to {setting}"


def split_roots(value: object) -> list[str]:
    """FRAMEFOLD_*_ROOTS: comma-separated paths or URLs (a JSON list works too)."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            import json

            value = json.loads(text)
        else:
            return [part.strip() for part in text.split(",") if part.strip()]
    return [str(v) for v in value]  # type: ignore[union-attr]
