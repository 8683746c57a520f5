"""The flow: one Prefect flow run per manifest, one task run per item."""

from __future__ import annotations

import json
import logging
import time
from collections import Counter

from prefect import flow, get_run_logger
from prefect.futures import as_completed
from prefect import runtime as prefect_runtime
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.states import Failed, State
from prefect.task_runners import ThreadPoolTaskRunner

from flows.item import ItemResult, RunContext, produce_item
from flows.progress import reporter
from manifests import ItemSpec, Job, Settings, load_manifest
from tasks import freshness, provenance, store
from tasks.report import publish
from tasks.generate import connect
from tasks.backends import spec_of
from tasks.pool import Pools, uses_pool
from tasks.preflight import preflight


def run_job(job: Job, *, force: bool = False, only: list[str] | None = None, settings: Settings | None = None) -> dict:
    """Run a loaded manifest; returns the run summary (see :func:`run_manifest`)."""
    settings = settings or Settings()
    runner = ThreadPoolTaskRunner(max_workers=item_threads(settings))
    state = run_manifest.with_options(flow_run_name=f"{job.name}", task_runner=runner)(
        str(job.manifest_path), output=str(job.output), force=force, only=only, return_state=True
    )
    result = state.result(raise_on_failure=False)  # Failed when items failed: its data is still the summary
    if isinstance(result, BaseException):  # the run itself failed (no cluster, …): no summary to return
        raise result
    return result


def connect_cluster(settings: Settings):
    """Connect to Ray as ``settings`` say (local unless RAY_ADDRESS / FRAMEFOLD_RAY_ADDRESS
    is set); once per process, later calls return the same cluster."""
    return connect(address=settings.ray_address, num_cpus=settings.ray_num_cpus, num_gpus=settings.ray_num_gpus,
                   declared_gpus=settings.cluster_gpus, gpu_wait_s=settings.gpu_wait_s)


# Threads for items in flight when their number follows the cluster (each mostly waits on its
# finishing task; the run submits no more items than the cluster has slots for).
ITEM_THREADS = 256


def item_threads(settings: Settings) -> int:
    """Threads of a run's task runner: FRAMEFOLD_ITEMS_IN_FLIGHT, or enough for any cluster (0 = auto)."""
    return settings.items_in_flight or ITEM_THREADS


def items_in_flight(settings: Settings, cluster) -> int:
    """Items produced at once: FRAMEFOLD_ITEMS_IN_FLIGHT, or (auto) one per window slot of the
    cluster — its GPUs, or its CPUs on a cluster without GPUs — plus one, at least 2: finishing
    runs on the workers, so the driver keeps every slot fed whatever the cluster's size."""
    if settings.items_in_flight:
        return settings.items_in_flight
    return max(2, cluster.slots(1.0 if cluster.gpus >= 1 else 0.0) + 1)


def _items_in_flight() -> int:
    """Task-runner threads for runs started by a deployment (read when the flow module is
    imported by the serving or worker process); a bad FRAMEFOLD_ITEMS_IN_FLIGHT falls back to
    auto here and is reported by the run's own settings check."""
    try:
        return item_threads(Settings())
    except ValueError:
        return ITEM_THREADS


@flow(name="framefold-run", log_prints=False, task_runner=ThreadPoolTaskRunner(max_workers=_items_in_flight()))
def run_manifest(
    manifest: str, output: str | None = None, force: bool = False, only: list[str] | None = None
) -> dict | State:
    """Run every item of ``manifest``: returns ``{run_id, job, output, counts, items}``.

    Items end done, skipped or failed (with a reason); a failed item never stops the others.
    When an item failed the flow run ends Failed (so Prefect automations fire), with the
    same summary as its result and in its artifacts; the other items' outputs are kept.
    """
    t0 = time.perf_counter()
    logger = get_run_logger()
    settings = Settings()

    # 1. Validate (again: a scheduled run reads the manifest as it is now).
    job = load_manifest(manifest, output=output or None, settings=settings, only=only or None)
    job = preflight(job, settings=settings)  # the checks that load a model or a key
    store.check_writable(job.output)  # a missing or read-only bucket fails the run here, not each item
    try:  # ledger rows an earlier run kept on this machine while the store was down
        if flushed := provenance.flush_pending(job.output):
            logger.info("ledger: added the rows kept here while the store was down (run %s)", ", ".join(flushed))
    except store.StoreError as error:
        logger.warning("ledger rows kept while the store was down are not added yet: %s", error)
    items = [i for i in job.items if not only or i.id in set(only)]

    # 2. Freshness, before any Ray start: items whose outputs are current are recorded as skipped.
    run_id = provenance.new_run_id()
    skipped, todo = freshness.skip_current(job, items, run_id=run_id, force=force)
    logger.info("%d item(s) current, %d to make", len(skipped), len(todo))
    results: dict[str, ItemResult] = {key: ItemResult(**value) for key, value in skipped.items()}
    for key in skipped:
        reporter().item_finished(key, "skipped")
    ray_address = None
    if todo:
        made, ray_address = _make(job, todo, run_id=run_id, force=force, settings=settings)
        results.update(made)
    results = [results[i.id] for i in items]
    try:
        provenance.compact(job.output, run_id)
    except store.StoreError as error:  # the parts stay; a later run's reader takes them as they are
        logger.warning("ledger not compacted: %s", error)

    # 3. Report: contact sheet and report.html next to the outputs, Prefect artifacts.
    counts = Counter(r.status for r in results)
    summary = {
        "run_id": run_id,
        "flow_run_id": str(prefect_runtime.flow_run.id) if prefect_runtime.flow_run.id else None,
        "job": job.name,
        "output": str(job.output),
        "ray": ray_address,  # None: nothing to make, Ray was not started
        "seconds": round(time.perf_counter() - t0, 3),
        "gpu_seconds": round(sum(r.gpu_seconds for r in results), 3),
        "counts": {s: counts.get(s, 0) for s in ("done", "skipped", "failed")},
        "items": [{**r.__dict__, "prompt": item.prompt} for item, r in zip(items, results)],
    }
    publish(job.output, summary)
    _artifacts(summary)
    if counts.get("failed"):
        failed = [r.id for r in results if r.status == "failed"]
        message = f"{len(failed)} of {len(results)} item(s) failed: {', '.join(failed[:10])}" + (" …" if len(failed) > 10 else "")
        logger.error("%s", message)
        return Failed(message=message, data=summary)
    return summary


def _make(job: Job, items: list[ItemSpec], *, run_id: str, force: bool,
          settings: Settings) -> tuple[dict[str, ItemResult], str]:
    """Make ``items`` on Ray: one task run per item; returns their results by item id and the
    Ray address."""
    logger = get_run_logger()
    cluster = connect_cluster(settings)
    logger.info("ray: %s (%g CPU, %g GPU now, %g GPU possible: %s); %d item(s)", cluster.address, cluster.cpus,
                cluster.gpus_now or 0, cluster.gpus, cluster.gpu_source, len(items))
    cluster.check((i.id, i.gpus) for i in items)  # work no node can ever take would wait forever: refuse it now

    # Fan out: one task run per item.
    ctx = RunContext(
        run_id=run_id,
        job=job.name,
        manifest_path=job.manifest_path,
        manifest_sha256=job.manifest_sha256,
        root=job.root,
        output=job.output,
        force=force,
        cluster=cluster,
        windows_in_flight=settings.windows_in_flight,
        max_image_pixels=settings.max_image_pixels,
        started_at=provenance.now(),
        cache_dir=settings.cache_dir or store.local_cache(job.output) / "windows",
        cache_bytes=settings.window_cache_bytes,
        signer=job.signer,
        leftovers=store.stale_parts(store.staging(job.output)),  # one listing, not one per item
    )
    store.ensure_folder(job.output)
    # Items sharing a model run back to back, and each model's actors are released
    # after its last item, so several models in one run do not starve each other of GPUs.
    pools = Pools(cluster, actors=settings.actors)
    pools.expect(items)
    # a spec's items on a pool run before those sent as Ray tasks (motion items without a model upscaler):
    # tasks waiting for resources a pool holds would otherwise sit between the pool and its last user
    order = sorted(range(len(items)), key=lambda n: (json.dumps(spec_of(items[n]), sort_keys=True), not uses_pool(items[n])))
    limit = items_in_flight(settings, cluster)
    logger.info("items in flight: %d", limit)
    results: dict[str, ItemResult] = {}
    try:
        submitted, running = {}, []
        for n in order:  # no more items at once than the cluster has slots for
            while len(running) >= limit:
                running.remove(next(as_completed(running)))
            submitted[n] = running_item = produce_item.submit(items[n], ctx, pools)
            running.append(running_item)

        # Gather: a failed item's state carries its result. Then release the model actors.
        for n, item in enumerate(items):
            value = submitted[n].result(raise_on_failure=False)
            if not isinstance(value, ItemResult):
                value = ItemResult(item.id, "failed", f"internal error: {type(value).__name__}: {value}")
            results[item.id] = value
    finally:
        pools.close()
    return results, cluster.address


ARTIFACT_TABLE_ROWS = 2000  # ~170 bytes a row: a table artifact's event stays well under Prefect's 1.5 MB
ARTIFACT_FAILURES = 200  # failures listed in the summary artifact (reasons cut at 500 characters)


def _artifacts(summary: dict) -> None:
    try:
        items = sorted(summary["items"], key=lambda r: r["status"] != "failed")  # failures first, else in order
        shown = items[:ARTIFACT_TABLE_ROWS]
        create_table_artifact(
            key="framefold-items",
            table=[
                {"item": r["id"], "status": r["status"], "reason": r["reason"], "seconds": round(r["seconds"], 2),
                 "gpu_seconds": r["gpu_seconds"], "seam_ratio": (r.get("metrics") or {}).get("seam_ratio"),
                 "flicker_ratio": ((r.get("metrics") or {}).get("flicker") or {}).get("ratio"),
                 "outputs": ", ".join(r["outputs"])}
                for r in shown
            ],
            description=f"Items of run {summary['run_id']} ({summary['job']})" + (
                f": the first {len(shown)} of {len(items)}, failures first (all of them: the run's report.html "
                f"and ledger)" if len(shown) < len(items) else ""),
        )
        c = summary["counts"]
        failed = [r for r in summary["items"] if r["status"] == "failed"]
        failures = "\n".join(f"- `{r['id']}`: {(r['reason'] or '')[:500]}" for r in failed[:ARTIFACT_FAILURES]) + (
            f"\n- … and {len(failed) - ARTIFACT_FAILURES} more (the items table, report.html)"
            if len(failed) > ARTIFACT_FAILURES else "")
        sheet = summary["contact_sheet"]
        report = summary.get("report")
        create_markdown_artifact(
            key="framefold-summary",
            markdown=(
                f"# {summary['job']} — run {summary['run_id']}\n\n"
                f"done **{c['done']}**, skipped **{c['skipped']}**, failed **{c['failed']}** "
                f"in {summary['seconds']:.1f} s, {summary['gpu_seconds']:.1f} GPU-seconds; "
                f"outputs in `{summary['output']}`"
                + (f"; batch report `{report}` (open it from the output folder or bucket)" if report else "") + "\n\n"
                + (f"## Failures\n{failures}\n" if failures else "")
            ),
            description=f"Summary of run {summary['run_id']} ({summary['job']})",
        )
        if sheet:  # the image itself, inline: the UI shows it wherever the outputs are
            create_markdown_artifact(
                key="framefold-contact-sheet",
                markdown=f"![contact sheet of run {summary['run_id']}]({_data_uri(sheet)})\n\n"
                f"First, middle and last frame of each item; the full-size sheet is `{sheet}`.",
                description=f"Contact sheet of run {summary['run_id']} ({summary['job']})",
            )
    except Exception:  # noqa: BLE001 - reporting must never fail a finished run
        logging.getLogger("framefold").warning("could not write Prefect artifacts", exc_info=True)


ARTIFACT_IMAGE_BYTES = 512 * 1024  # Prefect drops events over 1.5 MB (an artifact's event carries its markdown)


def _data_uri(image: store.Location, max_width: int = 1024, max_bytes: int = ARTIFACT_IMAGE_BYTES) -> str:
    """A JPEG ``data:`` URI of ``image``, at most ``max_width`` wide and ``max_bytes`` of JPEG
    (a tall contact sheet is scaled down until it fits), so the artifact stays small."""
    import base64
    import io

    from PIL import Image

    with Image.open(io.BytesIO(store.read_bytes(image))) as im:
        im = im.convert("RGB")
        scale = min(1.0, max_width / im.width)
        while True:
            size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
            buf = io.BytesIO()
            (im.resize(size, Image.LANCZOS) if size != im.size else im).save(buf, "JPEG", quality=80)
            if buf.tell() <= max_bytes or max(size) <= 64:
                break
            scale *= max(0.5, min(0.9, (max_bytes / buf.tell()) ** 0.5))  # bytes grow with the area
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()
