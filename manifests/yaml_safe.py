"""Reading a manifest file safely: a regular file of bounded size, UTF-8, and YAML parsed
by a SafeLoader that refuses anchors/aliases (billion laughs), duplicate keys and nesting
deeper than ``MAX_YAML_DEPTH``. Failures come back as a file-level ``Problem``.
"""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import yaml

from .problems import Problem

MAX_MANIFEST_BYTES = 4 * 1024 * 1024  # inline items are for hand-written jobs; bulk goes in a catalog
MAX_YAML_DEPTH = 64


def read_bytes(path: Path | str) -> tuple[bytes, Problem | None]:
    if isinstance(path, str):
        return _read_url(path)
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            return b"", Problem("", f"not a regular file: {path}")
        if info.st_size > MAX_MANIFEST_BYTES:
            return b"", Problem("", f"manifest is {info.st_size} bytes; the limit is {MAX_MANIFEST_BYTES}")
        with open(path, "rb") as file:
            content = file.read(MAX_MANIFEST_BYTES + 1)
        if len(content) > MAX_MANIFEST_BYTES:  # grew since stat()
            return b"", Problem("", f"manifest is over {MAX_MANIFEST_BYTES} bytes, the limit")
        return content, None
    except FileNotFoundError:
        return b"", Problem("", f"manifest not found: {path}")
    except (OSError, ValueError) as error:
        return b"", Problem("", f"cannot read manifest {path}: {getattr(error, 'strerror', None) or error}")


def _read_url(url: str) -> tuple[bytes, Problem | None]:
    """A manifest in a store: at most MAX_MANIFEST_BYTES, read with the store's retries."""
    from . import locations

    problem = locations.url_problem(url)
    if problem is not None:
        return b"", Problem("", problem)
    try:
        fs, path = locations.filesystem(url)
        content = locations.retrying("read", url, lambda: fs.cat_file(path, start=0, end=MAX_MANIFEST_BYTES + 1))
    except FileNotFoundError:
        return b"", Problem("", f"manifest not found: {url}")
    except (locations.StoreError, OSError, ValueError) as error:
        return b"", Problem("", f"cannot read manifest {url}: {error}")
    if len(content) > MAX_MANIFEST_BYTES:
        return b"", Problem("", f"manifest is over {MAX_MANIFEST_BYTES} bytes, the limit")
    return content, None


class _ManifestYamlLoader(yaml.SafeLoader):
    """SafeLoader that refuses anchors/aliases (billion laughs), duplicate keys and deep nesting."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise yaml.composer.ComposerError(
                None, None, "YAML anchors/aliases are not allowed in manifests", event.start_mark
            )
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"nesting deeper than {MAX_YAML_DEPTH} levels", event.start_mark
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # '<<': flattened by SafeLoader
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                    seen.add(key)
                except TypeError:  # unhashable key: SafeLoader reports it below
                    continue
                if duplicate:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r}", key_node.start_mark
                    )
        return super().construct_mapping(node, deep=deep)


def parse_yaml(content: bytes) -> tuple[Any, Problem | None]:
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as error:
        return None, Problem("", f"not UTF-8 text (byte {content[error.start]:#04x} at offset {error.start})")
    loader = None
    try:
        loader = _ManifestYamlLoader(text)  # the reader rejects control characters right here
        return loader.get_single_data(), None
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        return None, Problem("", f"invalid YAML{where}: {error.problem or error.context}")
    except yaml.reader.ReaderError as error:
        return None, Problem("", f"not YAML text: character {error.character!r} at position {error.position} is not allowed")
    except (yaml.YAMLError, RecursionError, ValueError, TypeError, OverflowError) as error:
        return None, Problem("", f"invalid YAML: {error}")
    finally:
        if loader is not None:
            loader.dispose()

