"""Provenance: what made each output, kept three ways.

1. a JSON sidecar next to the video (``ITEM.json``), with the output's sha256;
2. the same record embedded in the video's container metadata (tag ``framefold``),
   so the file alone says where it came from (without its own hash, which it cannot
   contain);
3. one row per item and output in the run ledger: Parquet files under
   ``OUTPUT/ledger/``, each written atomically, read back as one table.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import json
import platform
import re
import secrets
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from tasks import store

SCHEMA = "framefold.provenance/1"
IPTC = "http://cv.iptc.org/newscodes/digitalsourcetype/"
# IPTC digital source type per backend: the motion backend's pixels come from an
# algorithm without a trained model; diffusers backends' from a trained model.
SOURCE_TYPES = {"motion": IPTC + "algorithmicMedia", "diffusers": IPTC + "trainedAlgorithmicMedia"}


def source_type(backend: str, *, has_image: bool) -> str:
    """The IPTC digital source type of an output: a trained model animating a real photo
    makes a composite with trained algorithmic media; from text alone, trained algorithmic
    media; the weight-free motion backend, algorithmic media."""
    if backend != "motion" and has_image:
        return IPTC + "compositeWithTrainedAlgorithmicMedia"
    return SOURCE_TYPES[backend]


def version() -> str:
    try:
        return metadata.version("framefold")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def library_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in ("torch", "diffusers", "ray", "prefect", "pyarrow", "pydantic", "numpy", "pillow"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    try:
        import imageio_ffmpeg

        out["ffmpeg"] = imageio_ffmpeg.get_ffmpeg_version()
    except Exception:  # noqa: BLE001 - a missing ffmpeg is reported by the encoder
        out["ffmpeg"] = None
    out["python"] = platform.python_version()
    return out


def content_key(*, params: dict, inputs: dict[str, str | None], backend: dict) -> str:
    """sha256 over everything that decides the pixels: input bytes (their digests), the
    effective parameters, the backend and model identity, and framefold's pixel version."""
    payload = {"inputs": inputs, "params": params, "backend": backend}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def why_run(previous: dict | None, *, key: str, inputs: dict, params: dict, backend: dict, force: bool) -> str | None:
    """Why an item must run, or None when its output is current."""
    if force:
        return "forced"
    if previous is None:
        return "new"
    if previous.get("content_key") == key:
        return None
    if previous.get("backend") != backend:
        generator = {k: v for k, v in backend.items() if k != "upscaler"}
        return "upscaler changed" if {k: v for k, v in (previous.get("backend") or {}).items() if k != "upscaler"} == generator else "model changed"
    if {k: v.get("sha256") for k, v in previous.get("inputs", {}).items() if v} != {k: v for k, v in inputs.items() if v}:
        return "input changed"
    return "parameters changed"


def read_sidecar(path: store.Location) -> dict | None:
    """The provenance record at ``path`` (a file or an object), None when absent or not one;
    a store that keeps failing raises :class:`tasks.store.StoreError`."""
    record = store.read_json(path)
    return record if isinstance(record, dict) and record.get("schema") == SCHEMA else None


def embedded(record: dict) -> dict:
    """The record as embedded in the video: everything but the outputs' own hashes."""
    return {k: v for k, v in record.items() if k not in ("output", "outputs")}


def embed_tag(record: dict) -> str:
    return json.dumps(embedded(record), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


# --- ledger -----------------------------------------------------------------------

LEDGER_DIR = "ledger"
LEDGER_SCHEMA = pa.schema(
    [
        ("row_id", pa.string()),
        ("run_id", pa.string()),
        ("job", pa.string()),
        ("item_id", pa.string()),
        ("status", pa.string()),  # done | skipped | failed
        ("reason", pa.string()),  # why it ran (new, input changed, …), was skipped, or failed
        ("content_key", pa.string()),
        ("format", pa.string()),
        ("output", pa.string()),  # path relative to the output root
        ("output_sha256", pa.string()),
        ("output_bytes", pa.int64()),
        ("c2pa", pa.string()),  # signed | unsupported (format cannot carry C2PA) | null: signing off
        ("frames", pa.int64()),
        ("fps", pa.float64()),
        ("width", pa.int64()),
        ("height", pa.int64()),
        ("backend", pa.string()),
        ("model_digest", pa.string()),
        ("manifest", pa.string()),
        ("manifest_sha256", pa.string()),
        ("framefold_version", pa.string()),
        ("seconds", pa.float64()),
        ("gpu_seconds", pa.float64()),  # done rows: window compute × GPUs per window (plan's estimates)
        ("finished_at", pa.timestamp("ms", tz="UTC")),
    ]
)


def ledger_row(**fields: Any) -> dict:
    unknown = set(fields) - set(LEDGER_SCHEMA.names)
    if unknown:
        raise ValueError(f"unknown ledger columns: {sorted(unknown)}")
    row = {name: fields.get(name) for name in LEDGER_SCHEMA.names}
    row["row_id"] = f"{row['run_id']}/{row['item_id']}/{row['output'] or '-'}"
    row["finished_at"] = row["finished_at"] or datetime.now(UTC)
    return row


def _parquet(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def append_rows(root: store.Location, run_id: str, item_id: str, rows: list[dict]) -> store.Location:
    """Append an item's rows: one Parquet part file (or object), written atomically (a
    re-append of the same run and item replaces it, so rows are never duplicated).

    When the store refuses the part (it is down: :class:`store.StoreError`), the part is kept
    in this machine's cache for the output (``pending_ledger``) and the error raised: the next
    run that reaches the store adds it to the ledger (:func:`flush_pending`)."""
    name = f"part-{run_id}-{item_id}.parquet"
    data = _parquet(pa.Table.from_pylist(rows, schema=LEDGER_SCHEMA))
    path = store.join(root, LEDGER_DIR, name)
    try:
        store.write_bytes(path, data)
    except store.StoreError:
        if not isinstance(store.local_or_url(root), Path):
            pending = pending_ledger(root)
            pending.mkdir(parents=True, exist_ok=True)
            store.write_bytes(pending / name, data)
        raise
    return path


def pending_ledger(root: store.Location) -> Path:
    """Where ledger parts wait, on this machine, for a store that refused them."""
    return store.local_cache(root) / "ledger-pending"


def flush_pending(root: store.Location) -> list[str]:
    """Add the ledger parts a store refused (:func:`append_rows`) to its ledger, and merge
    each of their runs; returns their run ids. A part leaves the cache only once written."""
    folder = pending_ledger(root) if not isinstance(store.local_or_url(root), Path) else None
    if folder is None or not folder.is_dir():
        return []
    runs: list[str] = []
    for part in sorted(folder.glob("part-*.parquet")):
        try:
            data = part.read_bytes()
        except FileNotFoundError:  # another run on this machine added it meanwhile
            continue
        store.write_bytes(store.join(root, LEDGER_DIR, part.name), data)  # the same bytes twice: one object
        part.unlink(missing_ok=True)
        run = re.match(r"part-(\d{8}T\d{6}Z-[0-9a-f]+)-", part.name)
        if run and run.group(1) not in runs:
            runs.append(run.group(1))
    for run_id in runs:
        compact(root, run_id)
    return runs


def has_rows(root: store.Location, run_id: str, item_id: str) -> bool:
    """Whether the ledger holds ``run_id``'s rows for ``item_id``: its part file, or the run's
    merged file (a run compacts only after every item has its rows)."""
    folder = store.join(root, LEDGER_DIR)
    return store.exists(store.join(folder, f"part-{run_id}-{item_id}.parquet")) or store.exists(
        store.join(folder, f"run-{run_id}.parquet"))


def _read_part(path: store.Location) -> pa.Table:
    path = store.local_or_url(path)
    if isinstance(path, Path):
        return pq.read_table(path, schema=LEDGER_SCHEMA)
    return pq.read_table(io.BytesIO(store.read_bytes(path)), schema=LEDGER_SCHEMA)


def outputs_of(record: dict | None) -> list[dict]:
    """The files a sidecar record describes: ``outputs`` (one per rendition), or the single
    ``output`` mp4 of a record written before renditions."""
    record = record or {}
    if isinstance(record.get("outputs"), list):
        return [o for o in record["outputs"] if isinstance(o, dict) and o.get("path")]
    single = record.get("output")
    return [{"format": "mp4", **record.get("video", {}), **single}] if isinstance(single, dict) and single else []


def output_rows(record: dict | None, **fields: Any) -> list[dict]:
    """Ledger rows for the outputs of ``record`` (one per file; one row without output if
    there is none), with ``fields`` (run, item, status, …) on each."""
    video = (record or {}).get("video", {})
    return [
        ledger_row(
            format=o.get("format"), output=o.get("path"), output_sha256=o.get("sha256"), output_bytes=o.get("bytes"),
            c2pa=o.get("c2pa"),
            frames=o.get("frames", video.get("frames")), fps=video.get("fps"),
            width=o.get("width"), height=o.get("height"), **fields,
        )
        for o in outputs_of(record) or [{}]
    ]


def rows_from_record(record: dict) -> list[dict]:
    """The `done` rows of a record's outputs, rebuilt from its sidecar: for a run killed after
    writing the sidecar and before its ledger rows (the output is current, so it is not redone)."""
    backend, finished = record.get("backend", {}), record.get("finished_at")
    return output_rows(
        record, run_id=record["run_id"], job=record.get("job"), item_id=record["item"]["id"], status="done",
        reason=record.get("reason"), content_key=record.get("content_key"),
        backend=backend.get("backend"), model_digest=backend.get("weights_digest"),
        manifest=record.get("manifest", {}).get("path"), manifest_sha256=record.get("manifest", {}).get("sha256"),
        framefold_version=record.get("framefold_version"),
        finished_at=datetime.fromisoformat(finished) if isinstance(finished, str) else None,
    )


def compact(root: store.Location, run_id: str) -> store.Location | None:
    """Merge a run's part files into ``run-RUN.parquet``, with the rows it holds already
    (readers de-duplicate by row_id, so a crash between writing the merged file and deleting
    the parts loses nothing)."""
    folder = store.join(root, LEDGER_DIR)
    names = store.listdir(folder)
    parts = [store.join(folder, n) for n in names if fnmatch.fnmatchcase(n, f"part-{run_id}-*.parquet")]
    if not parts:
        return None
    merged = store.join(folder, f"run-{run_id}.parquet")
    before = [merged] if f"run-{run_id}.parquet" in names else []  # parts added later to a merged run (flush_pending)
    table = pa.concat_tables([_read_part(p) for p in before + parts])
    store.write_bytes(merged, _parquet(table))
    for p in parts:
        store.delete(p)
    return merged


def read_ledger(root: store.Location) -> pa.Table:
    """Every ledger row under ``root`` (a folder or a store URL), one per row_id, oldest first.
    Safe while runs write: a part file compacted away between listing and reading (its rows are
    in the merged file by then) makes the read list the folder again."""
    folder = store.join(root, LEDGER_DIR)
    for attempt in range(100):
        files = [store.join(folder, n) for n in store.listdir(folder) if n.endswith(".parquet") and not n.startswith(".")]
        if not files:
            return LEDGER_SCHEMA.empty_table()
        try:
            table = pa.concat_tables([_read_part(p) for p in files])
            break
        except FileNotFoundError:
            if attempt == 99:
                raise
    seen: set[str] = set()
    keep = []
    for i, row_id in enumerate(table.column("row_id").to_pylist()):
        if row_id not in seen:
            seen.add(row_id)
            keep.append(i)
    return table.take(keep).sort_by("finished_at")
