"""One item, start to finish: key → inputs → plan → generate → stitch → upscale → encode → provenance.

This process orchestrates only: it keys and plans the item, leases its model's pool
and hands the rest — generate → stitch → upscale → encode → sign → write — to a
finishing task on a Ray worker (``tasks.finish``), fed by the window results in Ray's
object store, following the frames it encodes for the progress display. It loads no
model, holds no frames and decodes no video. One Prefect task per item (frames never
pass through Prefect); each stage's time is measured and recorded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Failed, State

from flows.progress import reporter
from manifests import ItemSpec
from tasks import freshness, provenance, store
from tasks.backends import Conditioning
from tasks.errors import ClusterLost, ItemError
from tasks.finish import (FINISH_RETRIES, PLACEMENT, Finished, Finishing, Keyed, driver_limits, finish, finish_whole,
                          follow_whole, output_names, record_outputs)
from tasks.generate import Cluster
from tasks.media import load_image
from tasks.plan import plan_item
from tasks.pool import Lease, Pools
from tasks.renditions import plan_renditions


@dataclass(frozen=True)
class RunContext:
    """What every item of a run shares (small: it travels as a Prefect task parameter)."""

    run_id: str
    job: str
    manifest_path: Path | str  # a local path, or a store URL
    manifest_sha256: str
    root: Path | str
    output: Path | str  # a folder, or a store URL: finished files are uploaded whole, each in one request
    force: bool
    cluster: Cluster
    windows_in_flight: int
    max_image_pixels: int
    started_at: str
    cache_dir: Path
    cache_bytes: int
    signer: Any = None  # tasks.credentials.SignerConfig: sign outputs with C2PA content credentials
    leftovers: dict = field(default_factory=dict)  # store.stale_parts of the output's staging folder at the start


@dataclass
class ItemResult:
    id: str
    status: str  # done | skipped | failed
    reason: str
    outputs: list[str] = field(default_factory=list)
    seconds: float = 0.0
    frames: int = 0
    content_key: str | None = None
    windows_reused: int = 0
    metrics: dict = field(default_factory=dict)
    gpu_seconds: float = 0.0  # window compute time × GPUs per window


@task(task_run_name="item-{item.id}", cache_policy=NO_CACHE)
def produce_item(item: ItemSpec, ctx: RunContext, pools: Pools) -> ItemResult | State:
    """Produce one item, on the model pool ``pools`` leases it. A failure ends in a Failed
    task state whose data is the :class:`ItemResult` with the reason (no retry: Ray already
    retried lost workers)."""
    t0 = time.perf_counter()
    try:
        if ctx.run_id in LOST:  # the cluster is gone: fail at once, without a Ray call (Ray's client would reconnect)
            raise ClusterLost(f"not started: {LOST[ctx.run_id]}")
        with _item_lock(store.staging(ctx.output), item.id), pools.lease(item) as lease:
            result = _produce(item, ctx, lease)
    except Exception as e:  # one bad item never sinks the batch
        if not isinstance(e, ClusterLost) and (gone := _lost(ctx)) is not None:
            e = ClusterLost(gone)  # whatever Ray raised (or wrapped) once its head was gone
        if isinstance(e, ItemError):
            reason = str(e)
            get_run_logger().error("item %s failed: %s", item.id, reason)
        else:
            reason = f"internal error: {type(e).__name__}: {e}"
            get_run_logger().exception("item %s failed", item.id)
        result = ItemResult(item.id, "failed", reason, seconds=time.perf_counter() - t0)
        try:
            provenance.append_rows(ctx.output, ctx.run_id, item.id, _rows(ctx, item, result))
        except store.StoreError as error:  # the store is down: the run's summary still carries the reason
            get_run_logger().error("item %s: ledger row kept on this machine until the store is back: %s", item.id, error)
        reporter().item_finished(item.id, "failed")
        return Failed(message=reason, data=result)
    reporter().item_finished(item.id, result.status)
    return result


LOST: dict[str, str] = {}  # run id -> why its cluster is gone (set once, by the first item to find out)


def _lost(ctx: RunContext) -> str | None:
    """The reason for items of a run whose cluster is gone, or None while it answers."""
    if ctx.run_id not in LOST:
        gone = ctx.cluster.gone()
        if gone is None:
            return None
        LOST.setdefault(ctx.run_id, f"lost the Ray cluster at {ctx.cluster.address} ({gone}); the items done are "
                                    "kept: run again once the cluster is back")
    return LOST[ctx.run_id]


def _produce(item: ItemSpec, ctx: RunContext, lease: Lease) -> ItemResult:
    t0 = time.perf_counter()
    started_at = provenance.now()
    timings: dict[str, float] = {}

    # 1. Check the output: the content key; skip when an output made from the same inputs,
    #    parameters and model is intact.
    tick = time.perf_counter()
    keyed = _check_output(item, ctx)
    if keyed.why is None:
        return _skipped(item, ctx, keyed)
    timings["key"] = time.perf_counter() - tick
    reporter().item_started(item.id, item.frames)

    # 2. Prepare the inputs: the still (and mask) fitted to the generation size.
    tick = time.perf_counter()
    conditioning, infos = _prepare_inputs(item, ctx, keyed)
    timings["inputs"] = time.perf_counter() - tick

    # 3. Plan the windows, and lease the model's pool (started on first use).
    tick = time.perf_counter()
    plan = plan_item(item)
    gpus = ctx.cluster.gpus_per_window(item.gpus)
    ctx.cluster.wait_for_gpus(gpus, note=getattr(reporter(), "note", None))  # GPU nodes may come up from zero
    pool = lease.pool(gpus) if lease.spec is not None else None
    timings["plan"] = time.perf_counter() - tick

    # 4-8. Finish on a worker: generate → stitch → upscale → encode → sign → write, fed by the
    #      window results in Ray's object store; this process only follows the frames encoded.
    job = Finishing(item, ctx, dataclasses.replace(keyed, data={}), infos, plan, gpus, pool, timings, started_at,
                    **driver_limits())
    if ray.util.client.ray.is_connected():  # Ray Client takes no streaming task: progress through a queue
        from ray.util.queue import Queue

        progress = Queue(actor_options={"num_cpus": 0})
        try:
            with PLACEMENT.strategy(item.id) as where:
                ref = finish_whole.options(scheduling_strategy=where).remote(job, conditioning, progress)
                finished = _follow(item, follow_whole(ref, progress))
        finally:
            with contextlib.suppress(Exception):  # the queue is only for progress: never hide the item's own error
                progress.shutdown(force=True)
    else:
        with PLACEMENT.strategy(item.id) as where:
            finished = _follow(item, finish.options(scheduling_strategy=where).remote(job, conditioning))

    # 9. Record the run: the sidecar beside the committed outputs, then one ledger row per output.
    record_outputs(item, ctx, keyed, finished)
    why = keyed.why
    if finished.windows_reused:
        why = f"{why}; resumed: {finished.windows_reused} of {len(plan.windows)} windows reused"
    record = finished.record
    metrics = {k: v for k, v in record["metrics"].items() if k != "colour_drift"}
    metrics["colour_drift"] = record["metrics"].get("colour_drift", {}).get("max_mean_spread")
    result = ItemResult(item.id, "done", why, [o["path"] for o in finished.outputs], time.perf_counter() - t0,
                        item.frames, keyed.key, finished.windows_reused, metrics, round(finished.busy * gpus, 4))
    provenance.append_rows(ctx.output, ctx.run_id, item.id, _rows(ctx, item, result, record))
    return result


def _follow(item: ItemSpec, stream) -> Finished:
    """Report the frames a finishing task encodes as it goes; return its :class:`Finished`
    (its error is raised here, an ItemError where the item's inputs or model are at fault)."""
    for ref in stream:
        if isinstance(ref, int):  # a frame count already fetched (Ray Client's progress queue)
            reporter().frames_done(item.id, ref)
            continue
        try:
            value = ray.get(ref)
        except ray.exceptions.RayTaskError as e:
            cause = e.cause if isinstance(e.cause, Exception) else None
            if cause is None:
                raise
            raise cause from None
        except ray.exceptions.RayError as e:
            raise ItemError(f"finishing failed after {FINISH_RETRIES} retries: {e}") from e
        if isinstance(value, Finished):
            return value
        reporter().frames_done(item.id, value)
    raise RuntimeError("the finishing task ended without a result")


def _check_output(item: ItemSpec, ctx: RunContext) -> Keyed:
    sidecar = store.join(ctx.output, f"{item.id}.json")
    previous = provenance.read_sidecar(sidecar)
    # a killed run's temporaries (the item lock is ours: no live writer)
    finals = [r.name(item.id) for r in plan_renditions(item.output_size, item.aspects, item.formats)]
    for name in {*finals, *output_names(previous), store.name_of(sidecar)}:
        store.remove_stale_parts(store.staging(ctx.output) / name, ctx.leftovers)
    fresh = freshness.check(item, ctx.output, force=ctx.force, signing=ctx.signer is not None, keep_inputs=True)
    return Keyed(fresh.key, fresh.why, fresh.inputs, fresh.data, fresh.params, fresh.backend, fresh.previous)


def _skipped(item: ItemSpec, ctx: RunContext, keyed: Keyed) -> ItemResult:
    fresh = freshness.Freshness(keyed.key, None, keyed.previous, keyed.inputs, keyed.backend, keyed.params)
    freshness.record_skip(ctx.output, fresh, run_id=ctx.run_id, job=ctx.job, item=item,
                          manifest=str(ctx.manifest_path), manifest_sha256=ctx.manifest_sha256)
    return ItemResult(item.id, "skipped", "unchanged", fresh.outputs, frames=item.frames, content_key=keyed.key)


def _prepare_inputs(item: ItemSpec, ctx: RunContext, keyed: Keyed) -> tuple[Conditioning, dict]:
    """The conditioning of every window, and what was read (input name → image info or None),
    decoded from the bytes read (and hashed) when the item was keyed."""
    image = mask = None
    infos = {"image": None, "mask": None}
    if item.image is not None:
        image, infos["image"] = load_image(
            item.image, size=item.size, fit=item.fit, background=item.background, max_pixels=ctx.max_image_pixels,
            data=keyed.data["image"],
        )
    if item.mask is not None:
        mask, infos["mask"] = load_image(
            item.mask, size=item.size, fit=item.fit, max_pixels=ctx.max_image_pixels, grayscale=True,
            data=keyed.data["mask"],
        )
        mask = mask[0]
    return Conditioning(item_id=item.id, seed=item.seed, image=image, mask=mask, params=keyed.params), infos


def _rows(ctx: RunContext, item: ItemSpec, result: ItemResult, record: dict | None = None) -> list[dict]:
    """One ledger row per output file of ``record`` (one without output for a failed item)."""
    return provenance.output_rows(
        record,
        run_id=ctx.run_id,
        job=ctx.job,
        item_id=item.id,
        status=result.status,
        reason=result.reason,
        content_key=result.content_key,
        backend=item.backend,
        model_digest=(record or {}).get("backend", {}).get("weights_digest"),
        manifest=str(ctx.manifest_path),
        manifest_sha256=ctx.manifest_sha256,
        framefold_version=provenance.version(),
        seconds=round(result.seconds, 4),
        gpu_seconds=result.gpu_seconds if result.status == "done" else None,
    )


@contextlib.contextmanager
def _item_lock(output: Path, item_id: str) -> Iterator[None]:
    """Hold ``OUTPUT/.locks/ITEM.lock`` while the item is produced: another run writing the same
    output waits here, then finds the output current and skips it (so each output is written once
    and no run removes another's .part files). The kernel releases the lock if the process dies."""
    folder = output / ".locks"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{item_id}.lock", "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        yield
