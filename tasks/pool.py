"""Resident models: a pool of Ray actors per model, each loading the pipeline once.

One actor per GPU (``gpus`` per actor, from the manifest), or one on a CPU-only
cluster; ``FRAMEFOLD_ACTORS`` caps the count. Windows of every item that shares a
model go to the same pool, spread over its actors in turn.
Ray restarts an actor whose process dies and re-runs the windows it held
(``max_restarts``/``max_task_retries``); pools are released at the end of a run.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

import ray
import torch

from kernels.pixels import to_uint8
from tasks.backends import Conditioning, WindowRequest, load

ACTOR_RESTARTS = 2


@ray.remote(max_restarts=ACTOR_RESTARTS, max_task_retries=ACTOR_RESTARTS)
class ModelActor:
    """Holds one loaded backend; renders windows as 8-bit pixels (L, H, W, 3)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.device = "cuda" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu"
        self.backend = load(spec, self.device)

    def render(self, window: WindowRequest, conditioning: Conditioning):
        t0 = time.perf_counter()
        with torch.inference_mode():
            frames = to_uint8(self.backend.generate(window, conditioning)).numpy()
        return ray.get_runtime_context().get_node_id(), time.perf_counter() - t0, frames

    def upscale(self, sr: dict[str, Any], frames):
        """Frames (k, H, W, 3) uint8 through the super-resolution model ``sr`` (path, tile,
        tile_overlap), loaded once by this actor beside its generator."""
        from tasks.superres import loaded

        t0 = time.perf_counter()
        model = loaded(sr["path"], sr["tile"], sr["tile_overlap"], self.device)
        out = model(frames)
        return ray.get_runtime_context().get_node_id(), time.perf_counter() - t0, out

    def upscaler_loads(self) -> int:
        """Super-resolution models loaded by this actor's process."""
        from tasks import superres

        return superres.LOADS

    def denoise(self, key: str, x: torch.Tensor, shared: dict, own: dict):
        """One window's prediction for codenoise: the loaded pipeline's own denoiser on a
        slice of the full latent (``shared``: timestep and the arguments common to all
        windows; ``own``: per-frame arguments sliced for this window)."""
        pipe = self.backend.pipe
        model = getattr(pipe, "unet", None) or pipe.transformer
        with torch.inference_mode():
            out = model(**{key: x.to(model.device, model.dtype)}, **shared, **own, return_dict=False)[0]
        return out.to("cpu")

    def loads(self) -> int:
        """Pipelines loaded by this actor's process (1 unless it was restarted)."""
        from tasks.backends import diffusers_backend

        return diffusers_backend.LOADS

    def pid(self) -> int:
        return os.getpid()


class ActorPool:
    def __init__(self, spec: dict[str, Any], *, size: int, gpus: float, cpus: float = 1.0) -> None:
        """``size`` actors with ``gpus`` GPUs and ``cpus`` CPUs each (Ray waits forever for
        resources that do not exist, so callers size these to the cluster: see :func:`pool_for`)."""
        self.spec = spec
        self.gpus = gpus
        self.actors = [ModelActor.options(num_gpus=gpus, num_cpus=cpus).remote(spec) for _ in range(size)]
        self._next = 0
        self._lock = threading.Lock()

    def submit(self, window: WindowRequest, cond_ref) -> ray.ObjectRef:
        """Send a window to the next actor in turn (windows of a model cost alike)."""
        return self._take().render.remote(window, cond_ref)

    def denoise(self, key: str, x, shared, own) -> ray.ObjectRef:
        """A codenoise window prediction on the next actor in turn."""
        return self._take().denoise.remote(key, x, shared, own)

    def upscale(self, sr: dict[str, Any], frames) -> ray.ObjectRef:
        """Super-resolution of a chunk of frames on the next actor in turn."""
        return self._take().upscale.remote(sr, frames)

    def _take(self):
        with self._lock:
            actor = self.actors[self._next % len(self.actors)]
            self._next += 1
        return actor

    def close(self) -> None:
        for actor in self.actors:
            ray.kill(actor)
        self.actors = []


def uses_pool(item) -> bool:
    """Whether a resolved item runs on a model pool: model backends, and any backend whose
    output goes through a super-resolution model (loaded by the same actors)."""
    return item.backend != "motion" or item.upscale.method == "model"


_pools: dict[tuple[str, str], ActorPool] = {}
_users: dict[tuple[str, str], int] = {}
_pools_lock = threading.Lock()


def _key(run_id: str, spec: dict[str, Any]) -> tuple[str, str]:
    return run_id, json.dumps(spec, sort_keys=True)


def expect(run_id: str, specs: list[dict[str, Any]]) -> None:
    """Declare the run's items that will use model pools (one spec per item), so each
    pool is released as soon as its last item is finished and frees its GPUs."""
    with _pools_lock:
        for spec in specs:
            _users[_key(run_id, spec)] = _users.get(_key(run_id, spec), 0) + 1


def pool_for(run_id: str, spec: dict[str, Any], *, gpus: float, size: int, cluster_cpus: float) -> ActorPool:
    """The run's pool for ``spec``, created on first use. CPU actors share the cluster's
    CPUs when more actors are asked for than there are CPUs, so they can all start."""
    key = _key(run_id, spec)
    with _pools_lock:
        if key not in _pools:
            cpus = 1.0 if size <= cluster_cpus else max(cluster_cpus, 0.01) / size
            _pools[key] = ActorPool(spec, size=size, gpus=gpus, cpus=cpus)
        return _pools[key]


def item_finished(run_id: str, spec: dict[str, Any]) -> None:
    """One item of ``spec`` is finished (done, skipped or failed); the last one releases the pool."""
    key = _key(run_id, spec)
    with _pools_lock:
        _users[key] = _users.get(key, 1) - 1
        if _users[key] <= 0:
            _users.pop(key)
            pool = _pools.pop(key, None)
            if pool is not None:
                pool.close()


def release(run_id: str) -> None:
    """Kill every actor of the run's pools."""
    with _pools_lock:
        for key in [k for k in _pools if k[0] == run_id]:
            _pools.pop(key).close()
        for key in [k for k in _users if k[0] == run_id]:
            _users.pop(key)
