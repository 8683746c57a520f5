"""A stand-in for ``tasks.generate.render_window`` on fake GPUs (bench only).

Same arguments and result as ``render_window`` — ``(spec, window, conditioning) ->
a ``Rendered`` (pixels (L, H, W, 3) uint8, node id, seconds)`` — but the "model" costs a fixed
``spec["cost_s"]`` of sleep per window, and the pixels are a realistic payload made once
per worker. Declared like ``render_window`` (``max_calls=0``: workers stay alive) and
submitted like ``task_submitter`` does (``num_gpus`` and one CPU per window).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable

import numpy as np
import ray

from tasks.generate import Rendered


@functools.lru_cache(maxsize=4)
def _payload(frames: int, height: int, width: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (frames, height, width, 3), dtype=np.uint8)


@ray.remote(max_retries=0, max_calls=0)
def fake_render(spec: dict, window, conditioning) -> Rendered:
    """Sleep ``spec["cost_s"]``, return the payload for ``len(window.frames)`` frames."""
    time.sleep(spec["cost_s"])
    height, width = spec["size"]
    return Rendered(_payload(len(window.frames), height, width), ray.get_runtime_context().get_node_id(), spec["cost_s"])


def fake_submitter(spec: dict, *, gpus: float) -> Callable:
    """Like ``tasks.generate.task_submitter``, with ``fake_render`` in place of ``render_window``."""
    remote = fake_render.options(num_gpus=gpus, num_cpus=1)
    return lambda window, cond_ref: remote.remote(spec, window, cond_ref)


@ray.remote
class FakeModelActor:
    """A stand-in for ``tasks.pool.ModelActor`` (the GPU path of model backends): a resident
    "model" whose ``render`` sleeps ``cost_s`` and returns the payload, like ``fake_render``."""

    def __init__(self, spec: dict) -> None:
        self.spec = spec

    def render(self, window, conditioning) -> Rendered:
        time.sleep(self.spec["cost_s"])
        height, width = self.spec["size"]
        return Rendered(_payload(len(window.frames), height, width), ray.get_runtime_context().get_node_id(),
                        self.spec["cost_s"])


def fake_pool(spec: dict, *, size: int, gpus: float) -> tuple[list, Callable]:
    """``size`` FakeModelActors and a submit that sends windows to them in turn, like
    ``tasks.pool.ActorPool.submit``."""
    actors = [FakeModelActor.options(num_gpus=gpus, num_cpus=0).remote(spec) for _ in range(size)]
    turn = iter(range(1 << 62))
    return actors, lambda window, cond_ref: actors[next(turn) % size].render.remote(window, cond_ref)
