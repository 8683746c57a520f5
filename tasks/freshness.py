"""Is an item's output current? Content keys against sidecars, before any Ray start.

An item is *current* when its sidecar records the content key the item has now (same input
bytes, parameters and model) and every output file it lists is there with its recorded
size (and signed, when the run signs). :func:`check` answers that with the reason a run
would make the item again — ``new``, ``output without provenance record`` (its sidecar
gone or unreadable, an output there), ``input changed``, ``parameters changed``, ``model
changed``, ``upscaler changed``, ``output missing or damaged``, ``content credentials
missing``, ``forced`` — or None when it is current. It reads input digests and the sidecar
only: no model, no Ray, no Prefect. The flow checks every item this way before it starts
Ray (a run with nothing to do starts none), the item task checks again under the item's
lock (another run may have made it meanwhile), and ``framefold plan`` shows the answers.

:func:`estimate_gpu_seconds` predicts an item's GPU-seconds from the ledger's history of
items made with the same backend and model.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from manifests import ItemSpec
from tasks import provenance, store
from tasks.errors import ItemError

__all__ = ["Freshness", "History", "check", "estimate_gpu_seconds", "record_skip"]

log = logging.getLogger("framefold")


@dataclass(frozen=True)
class Freshness:
    """What a run would do with an item: ``why`` it runs, or None when its output is current."""

    key: str
    why: str | None
    previous: dict | None
    inputs: dict[str, str | None]
    backend: dict[str, Any]
    params: dict[str, Any]
    data: dict[str, bytes | None] = field(default_factory=dict, repr=False, compare=False)  # with keep_inputs

    @property
    def current(self) -> bool:
        return self.why is None

    @property
    def outputs(self) -> list[str]:
        """File names of the current outputs (relative to the output root)."""
        return [Path(o["path"]).name for o in provenance.outputs_of(self.previous)]


def check(item: ItemSpec, output: store.Location, *, force: bool = False, signing: bool = False,
          keep_inputs: bool = False) -> Freshness:
    """The item's content key and why a run would make it (None: current). Raises ItemError
    when an input or the model cannot be read (the item then fails with that reason).
    ``keep_inputs``: keep the inputs' bytes (``data``), read once and hashed while streaming, for
    the item to decode (a store is then not asked twice)."""
    from tasks.backends import identify, spec_of  # imports torch: not at module import

    read = {name: _read(path, keep_inputs) for name, path in (("image", item.image), ("mask", item.mask))}
    inputs = {name: None if r is None else r[1] for name, r in read.items()}
    data = {name: None if r is None else r[0] for name, r in read.items()}
    backend = identify(spec_of(item))
    if item.upscale.method == "model":  # the upscaler's weights decide pixels as much as the generator's
        from tasks.superres import UpscalerError, describe

        try:
            backend = {**backend, "upscaler": describe(item.upscale.path).as_dict()}
        except UpscalerError as error:  # changed or removed since validation
            raise ItemError(f"upscale.path: {error}") from None
    params = item.params()
    key = provenance.content_key(params=params, inputs=inputs, backend=backend)
    previous = provenance.read_sidecar(store.join(output, f"{item.id}.json"))
    why = provenance.why_run(previous, key=key, inputs=inputs, params=params, backend=backend, force=force)
    if previous is None and not force:
        why = _why_new(item, output)
    if why is None and signing and not all(o.get("c2pa") for o in provenance.outputs_of(previous)):
        why = "content credentials missing"  # signing was turned on since: make the outputs again, signed
    if why is None and not _intact(previous, output, key):
        why = "output missing or damaged"
    return Freshness(key, why, previous, inputs, backend, params, data)


def _why_new(item: ItemSpec, output: store.Location) -> str:
    """Why an item without a provenance record is made: ``new``, or, when its first output
    is there all the same (its record deleted, or a run ended between the two), that. One
    look-up per item, the first rendition's: a new catalog's plan asks a store twice per
    item, not once per rendition."""
    from tasks.renditions import plan_renditions

    first = plan_renditions(item.output_size, item.aspects, item.formats)[0].name(item.id)
    return "output without provenance record" if store.exists(store.join(output, first)) else "new"


@contextlib.contextmanager
def unless_busy(output: store.Location, item_id: str) -> Iterator[bool]:
    """Try the item's lock (``OUTPUT/.locks/ITEM.lock``, the one ``flows.item`` holds while it
    makes the item) without waiting: yields True when held — no run is writing the item, so
    a killed run's ``.part`` leftovers can go — and False when another run holds it (the item
    is then left to its task, which waits for the lock). An output in an object store has no
    local leftovers and no lock: True."""
    local = store.local_or_url(output)
    if not isinstance(local, Path):
        yield True
        return
    folder = local / ".locks"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{item_id}.lock", "a") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True


def remove_leftovers(output: store.Location, item: ItemSpec, fresh: Freshness,
                     index: dict[str, list[Path]] | None = None) -> None:
    """Delete what a killed run left of the item (``.part`` files of its outputs and sidecar);
    call it holding the item's lock. ``index``: :func:`store.stale_parts` of the output
    folder, listed once for all items."""
    local = store.local_or_url(output)
    if isinstance(local, Path):
        for name in {*fresh.outputs, f"{item.id}.json"}:
            store.remove_stale_parts(local / name, index)


def _leftovers_index(output: store.Location) -> dict[str, list[Path]] | None:
    local = store.local_or_url(output)
    return store.stale_parts(local) if isinstance(local, Path) else None


def record_skip(output: store.Location, fresh: Freshness, *, run_id: str, job: str, item: ItemSpec,
                manifest: str, manifest_sha256: str) -> None:
    """Append the ledger rows of a current item skipped by run ``run_id`` (one per output file).
    When the run that made the outputs was killed before writing its own rows, those come first."""
    previous = fresh.previous or {}
    made_by = previous.get("run_id")
    if made_by and not provenance.has_rows(output, made_by, item.id):
        provenance.append_rows(output, made_by, item.id, provenance.rows_from_record(previous))
    rows = provenance.output_rows(
        fresh.previous, run_id=run_id, job=job, item_id=item.id, status="skipped", reason="unchanged",
        content_key=fresh.key, backend=item.backend, model_digest=fresh.backend.get("weights_digest"),
        manifest=manifest, manifest_sha256=manifest_sha256, framefold_version=provenance.version(), seconds=0.0,
    )
    provenance.append_rows(output, run_id, item.id, rows)


@dataclass(frozen=True)
class History:
    """GPU-seconds per generated pixel-frame, by (backend, model digest), from a ledger."""

    rates: dict[tuple[str | None, str | None], float]

    @classmethod
    def of(cls, output: store.Location) -> History:
        try:
            table = provenance.read_ledger(output)
        except Exception:  # noqa: BLE001 - an unreadable ledger only costs the estimate
            return cls({})
        totals: dict[tuple, list[float]] = {}
        seen: set[tuple] = set()
        for row in table.to_pylist():
            if row["status"] != "done" or not row.get("frames") or not row.get("width") or row.get("gpu_seconds") is None:
                continue
            once = (row["run_id"], row["item_id"])  # one output per item: renditions share the compute
            if once in seen:
                continue
            seen.add(once)
            t = totals.setdefault((row["backend"], row["model_digest"]), [0.0, 0.0])
            t[0] += row["gpu_seconds"]
            t[1] += row["frames"] * row["width"] * row["height"]
        return cls({k: g / p for k, (g, p) in totals.items() if p > 0})


def estimate_gpu_seconds(item: ItemSpec, fresh: Freshness | None, history: History) -> float | None:
    """Predicted GPU-seconds of making ``item``: 0 when current, else the history's rate for its
    backend and model times its frames × output pixels; None without history."""
    if fresh is not None and fresh.current:
        return 0.0
    digest = (fresh.backend.get("weights_digest") if fresh else None)
    rate = history.rates.get((item.backend, digest))
    if rate is None:
        return None
    width, height = item.output_size
    return rate * item.frames * width * height


def _read(path: store.Location | None, keep: bool) -> tuple[bytes | None, str] | None:
    """(bytes or None, sha256) of an input, streamed once; None without one."""
    if path is None:
        return None
    try:
        if keep:
            return store.read_hashed(path)
        return None, store.sha256_file(path)
    except FileNotFoundError:
        raise ItemError(f"cannot read {path}: not found; restore it or fix the manifest") from None
    except OSError as e:
        raise ItemError(f"cannot read {path}: {e.strerror or e}") from None


def _intact(record: dict | None, output: store.Location, key: str) -> bool:
    """Every output the sidecar describes exists with its recorded size (and, in a store that keeps
    object metadata, the content key: an object replaced by another tool, which writes none, is not
    framefold's output): one HEAD request per object, never a download."""
    outputs = provenance.outputs_of(record)
    if not outputs:
        return False
    for o in outputs:
        info = store.stat(store.join(output, Path(o["path"]).name))
        if info is None or info.size != o.get("bytes"):
            return False
        if info.keeps_metadata and info.metadata.get("framefold-content-key") != key:
            return False
    return True


def skip_current(job, items: list[ItemSpec], *, run_id: str, force: bool) -> tuple[dict[str, dict], list[ItemSpec]]:
    """Check ``items`` of ``job`` (a loaded manifest); record the current ones as skipped by run
    ``run_id`` in the ledger. Returns ``({item id: result}, items to make)``; a result has the
    fields of ``flows.item.ItemResult``. An item whose check fails (an unreadable input) is left
    to make: its own task fails it with the reason."""
    skipped: dict[str, dict] = {}
    todo: list[ItemSpec] = []
    index = _leftovers_index(job.output)
    for item in items:
        try:
            fresh = check(item, job.output, force=force, signing=job.signer is not None)
        except ItemError:
            fresh = None
        if fresh is None or not fresh.current:
            todo.append(item)
            continue
        with unless_busy(job.output, item.id) as free:
            if not free:  # another run is making it now: its task waits, then decides
                todo.append(item)
                continue
            remove_leftovers(job.output, item, fresh, index)
            record_skip(job.output, fresh, run_id=run_id, job=job.name, item=item,
                        manifest=str(job.manifest_path), manifest_sha256=job.manifest_sha256)
        skipped[item.id] = {"id": item.id, "status": "skipped", "reason": "unchanged", "outputs": fresh.outputs,
                            "seconds": 0.0, "frames": item.frames, "content_key": fresh.key, "windows_reused": 0,
                            "metrics": {}, "gpu_seconds": 0.0}
    return skipped, todo


def settle_if_current(job, items: list[ItemSpec]) -> dict | None:
    """When every item of ``items`` is current: record them as skipped by a new run (ledger
    rows, report.html) and return that run's summary, with no Ray and no Prefect. None as soon
    as one item has something to do (nothing is recorded then)."""
    import time

    t0 = time.perf_counter()
    checked = []
    for item in items:
        try:
            fresh = check(item, job.output, signing=job.signer is not None)
        except ItemError:
            return None
        if not fresh.current:
            return None
        checked.append((item, fresh))
    try:  # ledger rows an earlier run kept on this machine while the store was down
        provenance.flush_pending(job.output)
    except store.StoreError as e:
        log.warning("ledger rows kept while the store was down are not added yet: %s", e)
    run_id = provenance.new_run_id()
    with contextlib.ExitStack() as locks:
        if not all(locks.enter_context(unless_busy(job.output, item.id)) for item, _ in checked):
            return None  # another run is making one of them: a full run waits for it
        index = _leftovers_index(job.output)
        for item, fresh in checked:
            remove_leftovers(job.output, item, fresh, index)
            record_skip(job.output, fresh, run_id=run_id, job=job.name, item=item,
                        manifest=str(job.manifest_path), manifest_sha256=job.manifest_sha256)
    provenance.compact(job.output, run_id)
    summary = {
        "run_id": run_id, "flow_run_id": None, "job": job.name, "output": str(job.output), "ray": None,
        "seconds": 0.0, "gpu_seconds": 0.0, "counts": {"done": 0, "skipped": len(checked), "failed": 0},
        "items": [{"id": item.id, "status": "skipped", "reason": "unchanged", "outputs": fresh.outputs,
                   "seconds": 0.0, "frames": item.frames, "content_key": fresh.key, "windows_reused": 0,
                   "metrics": _summary_metrics(fresh.previous), "gpu_seconds": 0.0, "prompt": item.prompt}
                  for item, fresh in checked],
    }
    from tasks.report import publish

    publish(job.output, summary)
    summary["seconds"] = round(time.perf_counter() - t0, 3)
    return summary


def _summary_metrics(record: dict | None) -> dict:
    metrics = dict((record or {}).get("metrics") or {})
    drift = metrics.pop("colour_drift", None)
    metrics["colour_drift"] = drift.get("max_mean_spread") if isinstance(drift, dict) else None
    return metrics


def plan_reason(item: ItemSpec, output: store.Location, history: History, *, force: bool = False,
                signing: bool = False) -> tuple[str, float | None]:
    """What ``framefold plan`` shows for an item: why a run would make it (``current`` when it
    would skip it) and the estimated GPU-seconds. An item with no sidecar is ``new`` (or
    ``output without provenance record``) without reading its inputs; one whose inputs
    cannot be read says so."""
    if not force and provenance.read_sidecar(store.join(output, f"{item.id}.json")) is None:
        return _why_new(item, output), estimate_gpu_seconds(item, None, history)
    try:
        fresh = check(item, output, force=force, signing=signing)
    except ItemError as e:
        return f"fails: {e}", None
    return fresh.why or "current", estimate_gpu_seconds(item, fresh, history)
