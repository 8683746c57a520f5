"""One item, start to finish: key → inputs → plan → generate → stitch → upscale → encode → provenance.

Generation, stitching, upscaling and encoding are one stream: windows come back
from Ray, frames leave the stitcher as soon as they are final, are upscaled and
piped into ffmpeg, so no stage holds the whole video. The stream runs inside one
Prefect task per item (frames never pass through Prefect); each stage's time is
measured and recorded.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Failed, State
from torch import Tensor

from flows.progress import reporter
from kernels.metrics import StreamingClipStats
from kernels.pixels import to_uint8
from manifests import ItemSpec
from tasks import freshness, provenance, store
from tasks.backends import Conditioning, spec_of
from tasks.cache import WindowCache
from tasks.errors import ItemError
from tasks.generate import Cluster, Rendered, generate_windows, outpaint_windows, task_submitter
from tasks.media import load_image
from tasks.plan import plan_item
from tasks.pool import ActorPool, Lease, Pools
from tasks.renditions import RenditionWriter, thumb_path, thumb_strip
from tasks.stitch import stitch
from tasks.upscale import model_upscale, upscale


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
        with _item_lock(store.staging(ctx.output), item.id), pools.lease(item) as lease:
            result = _produce(item, ctx, lease)
    except Exception as e:  # one bad item never sinks the batch
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
            get_run_logger().error("item %s: no ledger row: %s", item.id, error)
        reporter().item_finished(item.id, "failed")
        return Failed(message=reason, data=result)
    reporter().item_finished(item.id, result.status)
    return result


def _produce(item: ItemSpec, ctx: RunContext, lease: Lease) -> ItemResult:
    t0 = time.perf_counter()
    started_at = provenance.now()
    timings: dict[str, float] = {}
    width, height = item.output_size
    # files are made in the output folder, or (output in a store) a local staging folder they are uploaded from
    writer = RenditionWriter(store.staging(ctx.output), item.id, size=(width, height), fps=item.fps,
                             frames=item.frames, aspects=item.aspects, formats=item.formats)  # starts nothing until entered

    # 1. Check the output: the content key; skip when an output made from the same inputs,
    #    parameters and model is intact.
    tick = time.perf_counter()
    keyed = _check_output(item, ctx, writer)
    if keyed.why is None:
        return _skipped(item, ctx, keyed)
    timings["key"] = time.perf_counter() - tick
    reporter().item_started(item.id, item.frames)

    # 2. Prepare the inputs: the still (and mask) fitted to the generation size.
    tick = time.perf_counter()
    conditioning, infos = _prepare_inputs(item, ctx, keyed)
    timings["inputs"] = time.perf_counter() - tick

    # 3. Plan the windows.
    tick = time.perf_counter()
    plan = plan_item(item)
    gpus = ctx.cluster.gpus_per_window(item.gpus)
    ctx.cluster.wait_for_gpus(gpus, note=getattr(reporter(), "note", None))  # GPU nodes may come up from zero
    timings["plan"] = time.perf_counter() - tick

    clock, tally = _StageClock(), _Tally()
    cache = WindowCache(ctx.cache_dir, max_bytes=ctx.cache_bytes)
    pool = lease.pool(gpus) if lease.spec is not None else None
    try:
        # 4. Generate the windows (Ray tasks, or the model pool's actors), streamed as they finish.
        # 5. Stitch them into final frames, in order.
        codenoise_stats: dict = {}
        if item.window.mode == "codenoise":  # one full-length latent, co-denoised by the pool
            tick = time.perf_counter()
            frames, codenoise_stats = _codenoise(item, keyed.params, conditioning, pool)
            clock.add("generate", time.perf_counter() - tick)
        else:
            windows = clock.wrap("generate", tally.pixels(
                _generate(item, ctx, keyed.key, plan, conditioning, pool, gpus, cache)))
            frames = clock.wrap("stitch", stitch(windows, plan.windows, num_frames=plan.num_frames,
                                                 weighting=plan.weighting))

        # 6. Upscale to the output size (resampling, or the super-resolution model on the pool).
        before_upscale = None
        if item.upscale.method == "model" or (width, height) != tuple(item.size):
            before_upscale = StreamingClipStats()  # the frames before upscaling, for the flicker metric
            frames = _measured(frames, before_upscale)
        frames = clock.wrap("upscale", _upscale(item, keyed.backend, frames, pool, tally))

        # 7. Encode every rendition, frames piped to ffmpeg.
        encoded = _encode(item, frames, writer, clock)
        timings.update(clock.exclusive())
        # GPU time: each window's compute on its worker (codenoise: the pool's actors over the generate stage)
        busy = timings.get("generate", 0.0) * len(pool.actors) if item.window.mode == "codenoise" else tally.seconds

        # 8. Record provenance: embed the record, sign and commit the outputs, then the sidecar, then the
        #    ledger rows.
        record = _record(item, ctx, keyed, infos, plan, writer, encoded, before_upscale, tally, gpus, busy,
                         codenoise_stats, timings, started_at)
        outputs = _write(item, ctx, keyed, writer, record)
    finally:
        writer.close()
    cache.drop(keyed.key)
    why = keyed.why
    if tally.reused:
        why = f"{why}; resumed: {tally.reused} of {len(plan.windows)} windows reused"
    metrics = {k: v for k, v in record["metrics"].items() if k != "colour_drift"}
    metrics["colour_drift"] = record["metrics"].get("colour_drift", {}).get("max_mean_spread")
    result = ItemResult(item.id, "done", why, [o["path"] for o in outputs], time.perf_counter() - t0, item.frames,
                        keyed.key, tally.reused, metrics, round(busy * gpus, 4))
    provenance.append_rows(ctx.output, ctx.run_id, item.id, _rows(ctx, item, result, record))
    return result


@dataclass(frozen=True)
class _Keyed:
    """An item's content key and why it runs (``why`` None: its output is current)."""

    key: str
    why: str | None
    inputs: dict  # input name → sha256 (None: no such input)
    data: dict  # input name → its bytes, read once (hashed while streaming, decoded from memory)
    params: dict
    backend: dict
    previous: dict | None  # the sidecar record of the output there now


def _check_output(item: ItemSpec, ctx: RunContext, writer: RenditionWriter) -> _Keyed:
    sidecar = store.join(ctx.output, f"{item.id}.json")
    previous = provenance.read_sidecar(sidecar)
    # a killed run's temporaries (the item lock is ours: no live writer)
    for name in {*(p.name for p in writer.finals.values()), *_output_names(previous), store.name_of(sidecar)}:
        store.remove_stale_parts(writer.output / name)
    fresh = freshness.check(item, ctx.output, force=ctx.force, signing=ctx.signer is not None, keep_inputs=True)
    return _Keyed(fresh.key, fresh.why, fresh.inputs, fresh.data, fresh.params, fresh.backend, fresh.previous)


def _skipped(item: ItemSpec, ctx: RunContext, keyed: _Keyed) -> ItemResult:
    fresh = freshness.Freshness(keyed.key, None, keyed.previous, keyed.inputs, keyed.backend, keyed.params)
    freshness.record_skip(ctx.output, fresh, run_id=ctx.run_id, job=ctx.job, item=item,
                          manifest=str(ctx.manifest_path), manifest_sha256=ctx.manifest_sha256)
    return ItemResult(item.id, "skipped", "unchanged", fresh.outputs, content_key=keyed.key)


def _prepare_inputs(item: ItemSpec, ctx: RunContext, keyed: _Keyed) -> tuple[Conditioning, dict]:
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


def _generate(item: ItemSpec, ctx: RunContext, key: str, plan, conditioning: Conditioning, pool: ActorPool | None,
              gpus: float, cache: WindowCache) -> Iterator[tuple[int, Rendered]]:
    """The item's windows as they finish; windows cached by a killed run are read back, not rendered."""
    submit = pool.submit if pool is not None else task_submitter(spec_of(item), gpus=gpus)

    def cached(index: int):
        w = plan.windows[index]
        return cache.get(key, w.start, w.length)

    def finished(index: int, pixels) -> None:
        cache.put(key, plan.windows[index].start, plan.windows[index].length, pixels)

    requests = plan.requests(item.fps)
    if item.window.mode == "outpaint":  # each window continues the previous one: in order, one at a time
        return outpaint_windows(submit, conditioning, requests, [w.start for w in plan.windows], cached=cached,
                                finished=finished)
    in_flight = ctx.windows_in_flight or 2 * ctx.cluster.slots(gpus)
    return generate_windows(submit, conditioning, requests, plan.order, in_flight=in_flight, cached=cached,
                            finished=finished)


def _codenoise(item: ItemSpec, params: dict, conditioning: Conditioning, pool: ActorPool) -> tuple[Iterator, dict]:
    """codenoise frames as one uint8 chunk (the whole clip's latent is held anyway), and the run's stats."""
    from tasks.codenoise import codenoise_frames

    frames, stats = codenoise_frames(spec_of(item), params, conditioning, submit=pool.denoise)
    return iter([to_uint8(frames)]), stats


def _upscale(item: ItemSpec, backend: dict, frames: Iterator[Tensor], pool: ActorPool | None,
             tally: _Tally) -> Iterator[Tensor]:
    size = item.output_size
    if item.upscale.method != "model":
        return upscale(frames, size=size, method=item.upscale.method)
    sr = {"path": str(item.upscale.path), "tile": item.upscale.tile, "tile_overlap": item.upscale.tile_overlap}
    return model_upscale(lambda chunk: pool.upscale(sr, chunk), frames, size=size,
                         scale=backend["upscaler"]["scale"], seen=tally.add)


@dataclass
class _Encoded:
    frames_sha256: str
    stats: StreamingClipStats  # on the 8-bit frames as encoded (0..255 scale)


def _encode(item: ItemSpec, frames: Iterator[Tensor], writer: RenditionWriter, clock: _StageClock) -> _Encoded:
    frame_hash = hashlib.sha256()
    stats = StreamingClipStats()
    with writer:
        for chunk in frames:
            tick = time.perf_counter()
            pixels = chunk.numpy()
            frame_hash.update(pixels.tobytes())
            stats.update(chunk)
            writer.write(pixels)
            clock.add("encode", time.perf_counter() - tick)
            reporter().frames_done(item.id, len(pixels))
        tick = time.perf_counter()
    clock.add("encode", time.perf_counter() - tick)
    if writer.frames != item.frames:
        raise RuntimeError(f"encoded {writer.frames} frames, expected {item.frames}")
    return _Encoded(frame_hash.hexdigest(), stats)


def _record(item: ItemSpec, ctx: RunContext, keyed: _Keyed, infos: dict, plan, writer: RenditionWriter,
            encoded: _Encoded, before_upscale: StreamingClipStats | None, tally: _Tally, gpus: float, busy: float,
            codenoise_stats: dict, timings: dict, started_at: str) -> dict:
    """The provenance record of a produced item (sidecar, embedded tag, signed assertion)."""
    width, height = item.output_size
    return {
        "schema": provenance.SCHEMA,
        "framefold_version": provenance.version(),
        "run_id": ctx.run_id,
        "job": ctx.job,
        "manifest": {"path": str(ctx.manifest_path), "sha256": ctx.manifest_sha256},
        "item": {"id": item.id, "source": item.source},
        "inputs": {
            name: None if path is None else {"path": _rel(path, ctx.root), "sha256": keyed.inputs[name],
                                             "image": infos[name].as_dict()}
            for name, path in (("image", item.image), ("mask", item.mask))
        },
        "backend": keyed.backend,
        "digital_source_type": provenance.source_type(item.backend, has_image=item.image is not None),
        "params": keyed.params,
        "seed": item.seed,
        "content_key": keyed.key,
        "reason": keyed.why,
        "plan": {**plan.as_dict(), "mode": item.window.mode, "windows_reused": tally.reused, **(
            {"codenoise": codenoise_stats} if codenoise_stats else {})},
        "upscale": _upscale_record(item, ctx, keyed.backend, (width, height)),
        "video": {
            "format": "mp4", "codec": "h264", "pix_fmt": "yuv420p",
            "frames": writer.frames, "fps": item.fps, "width": width, "height": height,
            "frames_sha256": encoded.frames_sha256,
        },
        "metrics": {**_metrics(encoded.stats, item.loop, plan.windows, before_upscale),
                    **_file_metrics(writer, item.loop, plan.windows)},
        "device": {
            "ray": ctx.cluster.address, "gpus_per_window": gpus, "cluster_gpus": ctx.cluster.gpus,
            "window_seconds": round(busy, 4), "gpu_seconds": round(busy * gpus, 4),
            "nodes": sorted(tally.nodes), "node_resources": ctx.cluster.describe(tally.nodes),
            "gpu_source": ctx.cluster.gpu_source, "cpu_fallback": ctx.cluster.fallback(item.gpus),
        },
        "libraries": provenance.library_versions(),
        "timings_s": {k: round(v, 4) for k, v in timings.items()},
        "started_at": started_at,
        "finished_at": provenance.now(),
    }


def _write(item: ItemSpec, ctx: RunContext, keyed: _Keyed, writer: RenditionWriter, record: dict) -> list[dict]:
    """Embed the record, sign and commit the outputs, then the sidecar; remove renditions no longer asked for."""
    record["renditions"] = [r.as_dict() | {"path": r.name(item.id)} for r in writer.renditions]
    outputs = writer.finish(provenance.embed_tag(record), _signing(ctx, item, record))
    record["outputs"] = outputs
    record["output"] = outputs[0]
    sidecar = store.join(ctx.output, f"{item.id}.json")
    store.write_bytes(thumb_path(ctx.output, item.id), thumb_strip(writer.sample_frames), durable=False)
    store.delete(sidecar)  # killed before the new one is written: no sidecar describes another video
    writer.commit()  # renamed into place (in the output folder, or the staging folder of a store)
    _publish(ctx.output, writer, outputs, keyed.key)
    store.write_json(sidecar, record, metadata={"framefold-content-key": keyed.key})
    for name in set(_output_names(keyed.previous)) - {o["path"] for o in outputs}:  # renditions no longer asked for
        store.delete(store.join(ctx.output, name))
    return outputs


def _publish(output: Path | str, writer: RenditionWriter, outputs: list[dict], key: str) -> None:
    """Outputs in a store: upload each finished file whole under its final key, with its content key and
    sha256 as object metadata (a re-run checks them without downloading the video); the staging copies go."""
    if not store.is_url(output):
        return
    try:
        for o in outputs:
            store.put_file(writer.output / o["path"], store.join(output, o["path"]),
                           metadata={"framefold-content-key": key, "framefold-sha256": o["sha256"]})
    finally:
        for o in outputs:
            (writer.output / o["path"]).unlink(missing_ok=True)


@dataclass
class _Tally:
    """What came back from the workers: the nodes, their compute seconds, windows read from the cache."""

    nodes: set[str] = field(default_factory=set)
    seconds: float = 0.0
    reused: int = 0

    def add(self, rendered: Rendered) -> None:
        if rendered.reused:
            self.reused += 1
        else:
            self.nodes.add(rendered.node)
            self.seconds += rendered.seconds

    def pixels(self, stream: Iterable[tuple[int, Rendered]]) -> Iterator[tuple[int, Any]]:
        for index, rendered in stream:
            self.add(rendered)
            yield index, rendered.pixels


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


def _output_names(record: dict | None) -> list[str]:
    """File names (in the output folder) of the outputs a sidecar record describes."""
    return [Path(o["path"]).name for o in provenance.outputs_of(record)]


def _signing(ctx: RunContext, item: ItemSpec, record: dict) -> Callable[[Path, str], str] | None:
    """The output signer of a run that signs: C2PA credentials with the record as an
    assertion and the input image as ingredient; None when signing is off."""
    if ctx.signer is None:
        return None
    from tasks import credentials

    def sign(part: Path, name: str) -> str:
        suffix = Path(name).suffix
        if suffix.lower() not in credentials.SUPPORTED:
            return "unsupported"  # webm: the sidecar and the embedded tag remain its provenance
        try:
            credentials.sign(part, signer=ctx.signer, title=name, source_type=record["digital_source_type"],
                             record=provenance.embedded(record), ingredient=_local(item.image), suffix=suffix)
        except credentials.CredentialError as error:
            raise ItemError(f"signing {name}: {error}") from None
        return "signed"

    return sign


def _measured(chunks: Iterator[Tensor], stats: StreamingClipStats) -> Iterator[Tensor]:
    for chunk in chunks:
        stats.update(chunk)
        yield chunk


def _upscale_record(item: ItemSpec, ctx: RunContext, backend: dict, size: tuple[int, int]) -> dict:
    out = {"method": item.upscale.method, "factor": item.upscale.factor, "from": list(item.size), "to": list(size)}
    if item.upscale.method == "model":
        out["model"] = {"path": _rel(item.upscale.path, ctx.root), **backend["upscaler"],
                        "tile": item.upscale.tile, "tile_overlap": item.upscale.tile_overlap}
    return out


def _file_metrics(writer: RenditionWriter, loop: bool, windows) -> dict:
    """The metrics of the delivered video decoded back (codec noise included): ``{"file": …}``."""
    from tasks.quality import measure_file

    encoded = writer.encoded()
    if encoded is None:
        return {}
    path, width, height = encoded
    spans = [(w.start, w.length) for w in windows] if len(windows) > 1 else []
    return {"file": measure_file(path, width=width, height=height, windows=spans, loop=loop)}


def _metrics(stats: StreamingClipStats, loop: bool, windows, before_upscale: StreamingClipStats | None) -> dict:
    """Weight-free quality metrics of the frames as encoded (0..1 scale), and, for an
    upscaled item, the flicker (mean frame-to-frame change) before and after upscaling."""
    summary = stats.summary([(w.start, w.length) for w in windows] if len(windows) > 1 else ())
    out = {"median_step": None if summary["median_step"] is None else round(summary["median_step"] / 255, 6)}
    before = before_upscale.mean_step() if before_upscale is not None else None
    after = stats.mean_step()
    if before is not None and after is not None:
        out["flicker"] = {"before_upscale": round(before / 255, 6), "after_upscale": round(after / 255, 6),
                          "ratio": round(after / before, 4) if before > 0 else (1.0 if after == 0 else None)}
    if loop and summary["loop_closure_ratio"] is not None:
        out["loop_closure_ratio"] = round(summary["loop_closure_ratio"], 4)
    if summary.get("seam_ratio") is not None:
        out["seam_ratio"] = round(summary["seam_ratio"], 4)
    if "colour_drift" in summary:
        drift = summary["colour_drift"]
        out["colour_drift"] = {
            "max_mean_spread": round(drift["max_mean_spread"] / 255, 6),
            "windows": [{"start": w["start"], "mean": [round(v / 255, 5) for v in w["mean"]],
                         "std": [round(v / 255, 5) for v in w["std"]]} for w in drift["windows"]],
        }
    return out


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


def _local(path: Path | str | None) -> Path | None:
    """A local input as is; None for one in a store (C2PA names no ingredient it cannot read here)."""
    return path if isinstance(path, Path) else None


def _rel(path: Path | str, root: Path | str) -> str:
    if isinstance(path, Path) and isinstance(root, Path):
        return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
    prefix = str(root).rstrip("/") + "/"
    return str(path)[len(prefix):] if str(path).startswith(prefix) else str(path)


class _StageClock:
    """Time spent inside each stage of a generator chain, excluding its upstream."""

    def __init__(self) -> None:
        self.inclusive: dict[str, float] = {}
        self.chain: list[str] = []

    def wrap(self, name: str, stage: Iterable) -> Iterator:
        self.chain.append(name)  # registered now, in pipeline order (the generator runs later)
        self.inclusive[name] = 0.0
        return self._timed(name, iter(stage))

    def _timed(self, name: str, it: Iterator) -> Iterator:
        while True:
            tick = time.perf_counter()
            try:
                value = next(it)
            except StopIteration:
                self.inclusive[name] += time.perf_counter() - tick
                return
            self.inclusive[name] += time.perf_counter() - tick
            yield value

    def add(self, name: str, seconds: float) -> None:
        self.inclusive[name] = self.inclusive.get(name, 0.0) + seconds

    def exclusive(self) -> dict[str, float]:
        out, upstream = {}, 0.0
        for name in self.chain:
            out[name] = max(0.0, self.inclusive[name] - upstream)
            upstream = self.inclusive[name]
        out.update({k: v for k, v in self.inclusive.items() if k not in self.chain})
        return out
