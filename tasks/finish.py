"""Finishing: one item's windows become its outputs, on a Ray worker.

``finish`` runs the item's stream — generate → stitch → upscale → encode → sign →
write — as Ray work on a worker node's CPU, fed by the window results in Ray's
object store (window tasks or the model pool's actors; for codenoise, the clip the
pool's coordinator streams), so the process that reads the manifest only orchestrates:
it loads no model, holds no frames and decodes no video, and finishing scales with the
cluster. Frames leave the stitcher as soon as they are final and are piped into ffmpeg,
so no stage holds the whole video in memory (a loop that starts at its smoothest step is
spooled to disk until its last frame is in: ``tasks.loopcut``). Outputs are written atomically through the
rendition writer and ``tasks.store``; the task reports the frames it has encoded as it
goes (a Ray streaming generator) and ends with a :class:`Finished`.

Placement: a finishing task asks Ray for no CPU slot, so it can never hold the CPUs
that windows or model actors wait for (on a CPU-only cluster that is a deadlock); it
is pinned (softly) to a node that offers CPUs, the one running the fewest of this
driver's finishing tasks, away from the driver's node when there is any other
(:class:`Placement`). A worker lost mid-item re-runs the
task elsewhere (``max_retries``); temporaries of the lost attempt never reach a final
name.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import resource
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch
from torch import Tensor

from kernels.metrics import StreamingClipStats
from manifests import ItemSpec
from tasks import provenance, store
from tasks.backends import Conditioning, spec_of
from tasks.cache import WindowCache
from tasks.errors import ItemError
from tasks.generate import Rendered, generate_windows, outpaint_windows, task_submitter
from tasks.loopcut import LoopCut, cut_loop
from tasks.malloc import return_large_buffers
from tasks.plan import ItemPlan
from tasks.pool import ActorPool
from tasks.renditions import RenditionWriter, make_preview, preview_name, thumb_path, thumb_strip
from tasks.stitch import stitch
from tasks.upscale import model_upscale, upscale

log = logging.getLogger("framefold")

# Re-runs of a finishing task whose worker process or node died (its exceptions are final).
FINISH_RETRIES = 2


@dataclass(frozen=True)
class Keyed:
    """An item's content key and why it runs (``why`` None: its output is current)."""

    key: str
    why: str | None
    inputs: dict  # input name → sha256 (None: no such input)
    data: dict  # input name → its bytes, read once by the driver (not sent to finishing: empty there)
    params: dict
    backend: dict
    previous: dict | None  # the sidecar record of the output there now


@dataclass(frozen=True)
class Finishing:
    """What an item's finishing task is given (small: frames travel as Ray objects)."""

    item: ItemSpec
    ctx: Any  # flows.item.RunContext
    keyed: Keyed
    infos: dict  # input name → tasks.media image info (None: no such input)
    plan: ItemPlan
    gpus: float  # per window
    pool: ActorPool | None  # the item's model pool, or None (windows as Ray tasks)
    timings: dict  # seconds of the stages before finishing
    started_at: str
    env: dict = field(default_factory=dict)  # the driver's settings (FORWARDED)
    fsize: int | None = None  # the driver's file-size limit (ulimit -f), None: unlimited


# The driver's environment that follows its items to the workers that finish them: framefold's
# settings (FRAMEFOLD_FFMPEG, store retries, …) and the stores' standard ones (endpoint, credentials),
# so a worker encodes and writes as the driver would.
FORWARDED = ("FRAMEFOLD_", "AWS_", "AZURE_STORAGE_", "GOOGLE_APPLICATION_CREDENTIALS")


def driver_limits() -> dict:
    """What of the driver's process follows its items to the workers that finish them: the
    settings in ``FORWARDED`` and its file-size limit (ulimit -f)."""
    soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    return {"env": {k: v for k, v in os.environ.items() if k.startswith(FORWARDED)},
            "fsize": None if soft == resource.RLIM_INFINITY else soft}


@contextlib.contextmanager
def _as_driver(job: Finishing) -> Iterator[None]:
    """This worker process with the driver's settings and file-size limit, while the item is finished
    (a worker runs one task at a time; both are restored after), and glibc returning large
    buffers as they are freed (:func:`tasks.malloc.return_large_buffers`)."""
    return_large_buffers()
    saved_env = {k: os.environ.get(k) for k in {*job.env, *(k for k in os.environ if k.startswith(FORWARDED))}}
    saved_fsize = resource.getrlimit(resource.RLIMIT_FSIZE)
    os.environ.update(job.env)
    for k in saved_env:
        if k not in job.env:
            os.environ.pop(k, None)
    if job.fsize is not None:
        hard = saved_fsize[1]
        resource.setrlimit(resource.RLIMIT_FSIZE, (job.fsize if hard == resource.RLIM_INFINITY else min(job.fsize, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, saved_fsize)
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@dataclass(frozen=True)
class Finished:
    record: dict
    outputs: list[dict]
    windows_reused: int
    busy: float  # seconds of window compute on the workers


@ray.remote(num_cpus=0, num_returns="streaming", max_retries=FINISH_RETRIES, retry_exceptions=False)
def finish(job: Finishing, conditioning: Conditioning):
    """Produce ``job``'s outputs; yields the number of frames encoded after each chunk,
    then the :class:`Finished` item."""
    with _as_driver(job):
        yield from _finish(job, conditioning)


@ray.remote(num_cpus=0, max_retries=FINISH_RETRIES, retry_exceptions=False)
def finish_whole(job: Finishing, conditioning: Conditioning, progress=None) -> Finished:
    """:func:`finish` as one result, for a driver on Ray Client (which cannot take a
    streaming task); the running total of frames encoded goes to ``progress`` (a
    ``ray.util.queue.Queue``) as they are made, for the driver to poll. Progress is
    best effort: a queue that is gone never fails the item."""
    total = 0
    with _as_driver(job):
        for value in _finish(job, conditioning):
            if isinstance(value, Finished):
                return value
            total += value
            if progress is not None:
                with contextlib.suppress(ray.exceptions.RayError):
                    progress.put_nowait(total)
    raise RuntimeError("finishing ended without a result")


def follow_whole(ref, progress, *, every: float = 0.5) -> Iterator:
    """What :func:`finish` streams, for a :func:`finish_whole` task ``ref`` reporting to
    ``progress``: the frames encoded since the last poll (every ``every`` seconds; a
    retried task's totals start again from 0 and count once it passes the old one), then
    ``ref`` itself (its value is the :class:`Finished`)."""
    shown = 0
    while True:
        done, _ = ray.wait([ref], timeout=every)
        with contextlib.suppress(ray.exceptions.RayError):
            while not progress.empty():
                total = progress.get_nowait()
                if total > shown:
                    yield total - shown
                    shown = total
        if done:
            yield ref
            return


def _finish(job: Finishing, conditioning: Conditioning):
    item, ctx, keyed, plan = job.item, job.ctx, job.keyed, job.plan
    # files are made in the output folder, or (output in a store) a local staging folder they are uploaded from
    writer = RenditionWriter(store.staging(ctx.output), item.id, size=item.output_size, fps=item.fps,
                             frames=item.frames, aspects=item.aspects, formats=item.formats, loop=item.loop)
    clock, tally = StageClock(), Tally()
    cache = WindowCache(ctx.cache_dir, max_bytes=ctx.cache_bytes)
    timings = dict(job.timings)
    try:
        # 4. Generate the windows (Ray tasks, or the model pool's actors), streamed as they finish.
        # 5. Stitch them into final frames, in order.
        codenoise_stats: dict = {}
        if item.window.mode == "codenoise":  # one full-length latent, co-denoised by the pool's coordinator
            frames = clock.wrap("generate", _codenoise(item, keyed.params, conditioning, job.pool, codenoise_stats,
                                                       tally))
        else:
            windows = clock.wrap("generate", tally.pixels(
                _generate(item, ctx, keyed.key, plan, conditioning, job.pool, job.gpus, cache)))
            frames = clock.wrap("stitch", stitch(windows, plan.windows, num_frames=plan.num_frames,
                                                 weighting=plan.weighting))

        # 5b. A loop's file starts where its wrap is quietest (loop_start), once every frame is in.
        cut = LoopCut(item.loop_start_rule or "first")
        if item.loop:
            frames = clock.wrap("loop_start", cut_loop(frames, writer.output, cut))

        # 6. Upscale to the output size (resampling, or the super-resolution model on the pool).
        before_upscale = None
        if item.upscale.method == "model" or tuple(item.output_size) != tuple(item.size):
            before_upscale = StreamingClipStats()  # the frames before upscaling, for the flicker metric
            frames = _measured(frames, before_upscale)
        frames = clock.wrap("upscale", _upscale(item, keyed.backend, frames, job.pool, tally))

        # 7. Encode every rendition, frames piped to ffmpeg.
        frame_hash, stats = hashlib.sha256(), StreamingClipStats()  # on the 8-bit frames as encoded (0..255)
        with writer:
            for chunk in frames:
                tick = time.perf_counter()
                pixels = chunk.numpy()
                frame_hash.update(pixels.tobytes())
                stats.update(chunk)
                writer.write(pixels)
                clock.add("encode", time.perf_counter() - tick)
                yield len(pixels)
            tick = time.perf_counter()
        clock.add("encode", time.perf_counter() - tick)
        if writer.frames != item.frames:
            raise RuntimeError(f"encoded {writer.frames} frames, expected {item.frames}")
        timings.update(clock.exclusive())
        # GPU time: each window's compute on its worker (codenoise: the pool's actors over the generate stage)
        busy = timings.get("generate", 0.0) * len(job.pool.actors) if item.window.mode == "codenoise" \
            else tally.seconds

        # 8. Record provenance: embed the record, sign and commit the outputs (the driver writes the sidecar).
        record = _record(item, ctx, keyed, job.infos, plan, writer, _Encoded(frame_hash.hexdigest(), stats),
                         before_upscale, tally, job.gpus, busy, codenoise_stats, timings, job.started_at, cut)
        outputs = _write(item, ctx, keyed, writer, record)
    finally:
        writer.close()
    cache.drop(keyed.key)
    yield Finished(record, outputs, tally.reused, busy)


class Placement:
    """Where finishing tasks run. They ask Ray for no CPU slot, so Ray's own spreading
    cannot see them: each is pinned (softly) to one of the alive nodes that offer CPUs,
    other than this process's node when there are others, the one with the fewest of this
    process's finishing tasks running (ties broken by the item id). The node list is read
    at most every ``refresh_s`` seconds (nodes come and go with the autoscaler)."""

    def __init__(self, refresh_s: float = 5.0):
        self.refresh_s = refresh_s
        self._lock = threading.Lock()
        self._running: Counter[str] = Counter()
        self._nodes: list[str] = []
        self._read_at = -math.inf

    def _candidates(self) -> list[str]:
        if time.monotonic() - self._read_at > self.refresh_s:
            here = ray.get_runtime_context().get_node_id()
            nodes = sorted(n["NodeID"] for n in ray.nodes()
                           if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) > 0)  # fmt: skip
            self._nodes = [n for n in nodes if n != here] or nodes
            self._read_at = time.monotonic()
        return self._nodes

    @contextlib.contextmanager
    def strategy(self, item_id: str) -> Iterator[Any]:
        """The scheduling strategy of ``item_id``'s finishing task, held while it runs."""
        with self._lock:
            nodes = self._candidates()
            if not nodes:
                node = None
            else:
                first = zlib.crc32(item_id.encode()) % len(nodes)
                order = nodes[first:] + nodes[:first]
                node = min(order, key=lambda n: self._running[n])
                self._running[node] += 1
        try:
            if node is None:
                yield "DEFAULT"
            else:
                from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

                yield NodeAffinitySchedulingStrategy(node, soft=True)
        finally:
            if node is not None:
                with self._lock:
                    self._running[node] -= 1


PLACEMENT = Placement()


def _generate(item: ItemSpec, ctx, key: str, plan, conditioning: Conditioning, pool: ActorPool | None,
              gpus: float, cache: WindowCache) -> Iterator[tuple[int, Rendered]]:
    """The item's windows as they finish; windows cached by a killed run are read back, not rendered
    (but with ``--force``, which regenerates everything)."""
    submit = pool.submit if pool is not None else task_submitter(spec_of(item), gpus=gpus)

    def cached(index: int):
        if ctx.force:
            return None
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


def _codenoise(item: ItemSpec, params: dict, conditioning: Conditioning, pool: ActorPool,
               stats: dict, tally: Tally) -> Iterator[Tensor]:
    """The clip as uint8 chunks from the pool's coordinator (it runs in one of the actors); its
    stats are put in ``stats`` at the end, where the pool's actors computed in ``tally``."""
    for ref in pool.codenoise(params, conditioning):
        try:
            value = ray.get(ref)
        except ray.exceptions.RayTaskError as e:
            cause = e.cause if isinstance(e.cause, Exception) else e
            if isinstance(cause, ItemError):
                raise cause from None
            raise ItemError(f"codenoise failed: {type(cause).__name__}: {cause}") from cause
        if isinstance(value, dict):
            for device, dtype in value.pop("computed_on", []):
                tally.computed(device, dtype)
            stats.update(value)
        else:
            yield torch.from_numpy(np.require(value, requirements="W"))  # Ray hands out read-only arrays


def _upscale(item: ItemSpec, backend: dict, frames: Iterator[Tensor], pool: ActorPool | None,
             tally: Tally) -> Iterator[Tensor]:
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


def _record(item: ItemSpec, ctx, keyed: Keyed, infos: dict, plan, writer: RenditionWriter,
            encoded: _Encoded, before_upscale: StreamingClipStats | None, tally: Tally, gpus: float, busy: float,
            codenoise_stats: dict, timings: dict, started_at: str, cut: LoopCut) -> dict:
    """The provenance record of a produced item (sidecar, embedded tag, signed assertion)."""
    width, height = item.output_size
    # the windows where the delivered frames have them (a loop's file may start at another frame)
    shown = [w._replace(start=(w.start - cut.start) % plan.num_frames) for w in plan.windows]
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
            {"codenoise": codenoise_stats} if codenoise_stats else {}), **(
            {"loop_start": cut.as_dict()} if item.loop else {})},
        "upscale": _upscale_record(item, ctx, keyed.backend, (width, height)),
        "video": {
            "format": "mp4", "codec": "h264", "pix_fmt": "yuv420p",
            "frames": writer.frames, "fps": item.fps, "width": width, "height": height,
            "frames_sha256": encoded.frames_sha256,
        },
        "metrics": {**_metrics(encoded.stats, item.loop, shown, before_upscale),
                    **_file_metrics(writer, item.loop, shown)},
        "device": {
            "ray": ctx.cluster.address, "gpus_per_window": gpus, "cluster_gpus": ctx.cluster.gpus,
            "window_seconds": round(busy, 4), "gpu_seconds": round(busy * gpus, 4),
            "nodes": sorted(tally.nodes), "node_resources": ctx.cluster.describe(tally.nodes),
            "gpu_source": ctx.cluster.gpu_source, "cpu_fallback": ctx.cluster.fallback(item.gpus),
            **_computed(tally),
        },
        "libraries": provenance.library_versions(),
        "timings_s": {k: round(v, 4) for k, v in timings.items()},
        "started_at": started_at,
        "finished_at": provenance.now(),
    }


def _write(item: ItemSpec, ctx, keyed: Keyed, writer: RenditionWriter, record: dict) -> list[dict]:
    """Embed the record, sign and commit the outputs (published to the store when the output is one); the
    driver then writes the sidecar (:func:`record_outputs`)."""
    record["renditions"] = [r.as_dict() | {"path": r.name(item.id)} for r in writer.renditions]
    outputs = writer.finish(provenance.embed_tag(record), _signing(ctx, item, record))
    record["outputs"] = outputs
    record["output"] = outputs[0]
    sidecar = store.join(ctx.output, f"{item.id}.json")
    store.write_bytes(thumb_path(ctx.output, item.id), thumb_strip(writer.sample_frames), durable=False)
    _preview(ctx.output, item, keyed, writer)
    store.delete(sidecar)  # killed before the new one is written: no sidecar describes another video
    writer.commit()  # renamed into place (in the output folder, or the staging folder of a store)
    _publish(ctx.output, writer, outputs, keyed.key)
    return outputs


def _preview(output, item: ItemSpec, keyed: Keyed, writer: RenditionWriter) -> None:
    """The batch report's animated preview of the item, made here on the worker (not by the
    driver at the end of the run): none when a GIF is among its formats (the GIF is its preview)."""
    source = writer.preview_source()
    if "gif" not in item.formats and source is not None:
        make_preview(output, item.id, keyed.key, source)


def record_outputs(item: ItemSpec, ctx, keyed: Keyed, finished: Finished) -> None:
    """After the outputs are committed: their sidecar, and renditions no longer asked for removed
    (the driver's part of step 8)."""
    store.write_json(store.join(ctx.output, f"{item.id}.json"), finished.record,
                     metadata={"framefold-content-key": keyed.key})
    for name in set(output_names(keyed.previous)) - {o["path"] for o in finished.outputs}:
        store.delete(store.join(ctx.output, name))
    previous = (keyed.previous or {}).get("content_key")
    if previous and previous != keyed.key:  # the earlier version's report preview (cosmetic: never fails the item)
        try:
            store.delete(store.join(ctx.output, preview_name(item.id, previous)))
        except store.StoreError as e:
            log.warning("%s: the earlier preview stays (%s)", item.id, e)


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


def _computed(tally: Tally) -> dict:
    """Where and in what precision this run computed the item's windows, as its workers said: a
    worker given a GPU that torch cannot use computes on its CPU, and a model's windows on a CPU
    compute in float32 whatever its dtype (tasks.backends.diffusers_backend). ``compute_dtype``:
    one name, a list where workers differed, None where nothing said one (the motion backend, or
    every window read back from the cache)."""
    dtypes = sorted(tally.dtypes)
    return {"compute_devices": sorted(tally.devices),
            "compute_dtype": (dtypes[0] if len(dtypes) == 1 else dtypes) if dtypes else None}


@dataclass
class Tally:
    """What came back from the workers: the nodes, their compute seconds, windows read from the cache."""

    nodes: set[str] = field(default_factory=set)
    seconds: float = 0.0
    reused: int = 0
    devices: set[str] = field(default_factory=set)  # device types the workers computed on
    dtypes: set[str] = field(default_factory=set)  # and in what precision

    def add(self, rendered: Rendered) -> None:
        if rendered.reused:
            self.reused += 1
        else:
            self.nodes.add(rendered.node)
            self.seconds += rendered.seconds
            self.computed(rendered.device, rendered.dtype)

    def computed(self, device: str | None, dtype: str | None) -> None:
        self.devices.update([device] if device else [])
        self.dtypes.update([dtype] if dtype else [])

    def pixels(self, stream: Iterable[tuple[int, Rendered]]) -> Iterator[tuple[int, Any]]:
        for index, rendered in stream:
            self.add(rendered)
            yield index, rendered.pixels


def _signing(ctx, item: ItemSpec, record: dict) -> Callable[[Path, str], str] | None:
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


def _upscale_record(item: ItemSpec, ctx, backend: dict, size: tuple[int, int]) -> dict:
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
    summary = stats.summary([(w.start, w.length) for w in windows] if len(windows) > 1 else (), loop=loop)
    out = {"median_step": None if summary["median_step"] is None else round(summary["median_step"] / 255, 6)}
    before = before_upscale.mean_step() if before_upscale is not None else None
    after = stats.mean_step()
    if before is not None and after is not None:
        out["flicker"] = {"before_upscale": round(before / 255, 6), "after_upscale": round(after / 255, 6),
                          "ratio": round(after / before, 4) if before > 0 else (1.0 if after == 0 else None)}
    if loop and summary["loop_closure_ratio"] is not None:
        out["loop_closure_ratio"] = round(summary["loop_closure_ratio"], 4)
        out["largest_step_ratio"] = round(summary["largest_step_ratio"], 4)
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


def _local(path: Path | str | None) -> Path | None:
    """A local input as is; None for one in a store (C2PA names no ingredient it cannot read here)."""
    return path if isinstance(path, Path) else None


def _rel(path: Path | str, root: Path | str) -> str:
    if isinstance(path, Path) and isinstance(root, Path):
        return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
    prefix = str(root).rstrip("/") + "/"
    return str(path)[len(prefix):] if str(path).startswith(prefix) else str(path)


def output_names(record: dict | None) -> list[str]:
    """File names (in the output folder) of the outputs a sidecar record describes."""
    return [Path(o["path"]).name for o in provenance.outputs_of(record)]


class StageClock:
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
