"""Generate: windows fan out over the Ray cluster and stream back as they finish.

Each window is one Ray task that loads the item's backend (cached per worker process)
and renders the window's absolute frames. A bounded number of windows per item is in
flight, so memory is set by the window size and the in-flight count, not by the video
length. Ray owns window retries: a worker or node that dies mid-window has its window
re-run elsewhere (``max_retries``); exceptions raised by the backend are not retried.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray
import torch

from kernels.pixels import from_uint8, to_uint8
from tasks.backends import Conditioning, WindowRequest, load
from tasks.cluster import Cluster, connect  # noqa: F401 - where callers have always found them
from tasks.errors import ItemError

log = logging.getLogger(__name__)

# Ray retries a window whose worker process or node died; backend exceptions are final.
WINDOW_RETRIES = 3


@dataclass(frozen=True)
class Rendered:
    """One window (or one super-resolution request) as it came back from its worker."""

    pixels: np.ndarray  # (L, H, W, 3) uint8
    node: str | None  # id of the Ray node that made it; None: read back from the window cache
    seconds: float  # compute time on that worker
    device: str | None = None  # where the worker computed it: "cpu", "cuda"
    dtype: str | None = None  # in what precision: "float16", … (None: a backend without one)

    @property
    def reused(self) -> bool:
        return self.node is None


def computed_on(model: Any) -> tuple[str | None, str | None]:
    """(device type, dtype name) that a loaded backend computes in, as it says itself (None for
    what it does not say: the motion backend has no dtype)."""
    device = getattr(model, "device", None)
    dtype = getattr(model, "dtype", None)
    return (torch.device(device).type if device is not None else None,
            str(dtype).removeprefix("torch.") if dtype is not None else None)


def worker_device() -> str:
    """``cuda`` where Ray gave this worker a GPU (and torch can use it), else ``cpu``."""
    return "cuda" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu"


def render(backend, window: WindowRequest, conditioning: Conditioning) -> Rendered:
    """One window through a loaded backend, as 8-bit pixels (L, H, W, 3): the one render
    path of Ray window tasks and model actors.

    Windows travel as the 8-bit pixels the video will hold (a quarter of float32's
    bytes). Stitching then averages exact integers, so a frame that every covering
    window renders alike comes out bit-identical whatever the window plan."""
    t0 = time.perf_counter()
    with torch.inference_mode():
        pixels = to_uint8(backend.generate(window, conditioning)).numpy()
    return Rendered(pixels, ray.get_runtime_context().get_node_id(), time.perf_counter() - t0, *computed_on(backend))


# max_calls=0: keep workers (and their loaded backends) alive; GPU tasks would
# otherwise default to a fresh worker process per call.
@ray.remote(max_retries=WINDOW_RETRIES, retry_exceptions=False, max_calls=0)
def render_window(spec: dict, window: WindowRequest, conditioning: Conditioning) -> Rendered:
    """One window on one worker (the backend is loaded once per worker process)."""
    return render(load(spec, worker_device()), window, conditioning)


def task_submitter(spec: dict, *, gpus: float) -> Callable[[WindowRequest, ray.ObjectRef], ray.ObjectRef]:
    """Windows as stateless Ray tasks (for weight-free backends: any worker, no pool)."""
    remote = render_window.options(num_gpus=gpus, num_cpus=1)
    return lambda window, cond_ref: remote.remote(spec, window, cond_ref)


def generate_windows(
    submit: Callable[[WindowRequest, ray.ObjectRef], ray.ObjectRef],
    conditioning: Conditioning,
    requests: Sequence[WindowRequest],
    order: Sequence[int],
    *,
    in_flight: int,
    cached: Callable[[int], np.ndarray | None] | None = None,
    finished: Callable[[int, np.ndarray], None] | None = None,
) -> Iterator[tuple[int, Rendered]]:
    """Yield ``(window index, Rendered)`` as windows finish (each sent with ``submit``: a
    Ray task, or an actor of a model pool), submitting in ``order`` with at most
    ``in_flight`` outstanding. A window that ``cached(index)`` returns is not rendered
    again (it comes back with ``node=None``); each rendered window's pixels are handed to
    ``finished(index, pixels)`` (to cache it). Pending windows are cancelled if the
    consumer stops early."""
    if in_flight < 1:
        raise ValueError(f"in_flight must be >= 1, got {in_flight}")
    cond_ref = ray.put(conditioning)
    queue = iter(order)
    pending: dict[ray.ObjectRef, int] = {}
    try:
        while True:
            for index in queue:
                hit = cached(index) if cached is not None else None
                if hit is not None:
                    yield index, Rendered(hit, None, 0.0)
                    continue
                pending[submit(requests[index], cond_ref)] = index
                if len(pending) >= in_flight:
                    break
            if not pending:
                return
            (ready,), _ = ray.wait(list(pending), num_returns=1)
            index = pending.pop(ready)
            try:
                rendered: Rendered = ray.get(ready)
            except ray.exceptions.RayTaskError as e:
                cause = e.cause if isinstance(e.cause, Exception) else e
                if isinstance(cause, ItemError):
                    raise cause from None
                raise ItemError(f"window {index} failed: {type(cause).__name__}: {cause}") from cause
            except ray.exceptions.RayError as e:
                raise ItemError(f"window {index} failed after {WINDOW_RETRIES} retries: {e}") from e
            if finished is not None:
                finished(index, rendered.pixels)
            yield index, rendered
    finally:
        for ref in pending:
            ray.cancel(ref)


def outpaint_windows(
    submit: Callable[[WindowRequest, ray.ObjectRef], ray.ObjectRef],
    conditioning: Conditioning,
    requests: Sequence[WindowRequest],
    starts: Sequence[int],
    **kwargs,
) -> Iterator[tuple[int, Rendered]]:
    """Temporal outpainting: windows one after another in time, each conditioned (through
    the image input of an image-to-video model) on the frame the previous window rendered
    where this one starts, so the new window continues the last instead of restarting from
    the item's still. Window 0 is conditioned on the item's image. Sequential within an item;
    items still run side by side. ``kwargs`` as for :func:`generate_windows` (the cache)."""
    previous: tuple[int, np.ndarray] | None = None
    for index in sorted(range(len(requests)), key=lambda i: starts[i]):
        cond = conditioning
        if previous is not None:
            start, frames = previous
            offset = min(starts[index] - start, len(frames) - 1)
            image = from_uint8(torch.from_numpy(np.array(frames[offset])))  # a copy: Ray arrays are read-only
            cond = dataclasses.replace(conditioning, image=image)
        for got, rendered in generate_windows(submit, cond, requests, [index], in_flight=1, **kwargs):
            previous = (starts[got], rendered.pixels)
            yield got, rendered
