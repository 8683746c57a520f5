"""Resident models: a pool of Ray actors per model, each loading the pipeline once.

One actor per GPU (``gpus`` per actor, from the manifest), or one on a CPU-only
cluster; ``FRAMEFOLD_ACTORS`` caps the count. Windows of every item that shares a
model go to the same pool, spread over its actors in turn.
Ray restarts an actor whose process dies and re-runs the windows it held
(``max_restarts``/``max_task_retries``). A run owns its pools (:class:`Pools`) and
leases them to its items; each is released after its last item.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import ray
import torch

from tasks.backends import Conditioning, WindowRequest, load
from tasks.errors import ItemError
from tasks.generate import Cluster, Rendered, computed_on, render, worker_device

ACTOR_RESTARTS = 2


# "coordinator": a codenoise item's pipeline runs in its own thread of the actor, so the
# window predictions it sends to the pool (this actor included) run beside it.
@ray.remote(max_restarts=ACTOR_RESTARTS, max_task_retries=ACTOR_RESTARTS, concurrency_groups={"coordinator": 1})
class ModelActor:
    """Holds one loaded backend; renders windows as 8-bit pixels (L, H, W, 3)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.device = worker_device()
        try:
            self._backend, self._failed = load(spec, self.device), None
        except ItemError as error:  # a model that cannot be loaded: each call says why, in one line, and
            self._backend, self._failed = None, error  # Ray does not restart the actor to load it again in vain

    @property
    def backend(self):
        if self._failed is not None:
            raise self._failed
        return self._backend

    def render(self, window: WindowRequest, conditioning: Conditioning) -> Rendered:
        return render(self.backend, window, conditioning)

    def upscale(self, sr: dict[str, Any], frames) -> Rendered:
        """Frames (k, H, W, 3) uint8 through the super-resolution model ``sr`` (path, tile,
        tile_overlap), loaded once by this actor beside its generator."""
        from tasks.superres import loaded

        t0 = time.perf_counter()
        model = loaded(sr["path"], sr["tile"], sr["tile_overlap"], self.device)
        out = model(frames)
        # not a window: no device or dtype, which device.compute_* report for the generator's windows
        return Rendered(out, ray.get_runtime_context().get_node_id(), time.perf_counter() - t0)

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

    @ray.method(concurrency_group="coordinator", num_returns="streaming")
    def codenoise(self, params: dict, conditioning: Conditioning, peers: list):
        """Coordinate one codenoise item (``tasks.codenoise.codenoise_chunks``) with this actor's
        loaded components, the window predictions spread over ``peers`` (the pool's actors) in
        turn: yields the clip as uint8 chunks (k, H, W, 3) in order, then the stats (a dict)."""
        from kernels.pixels import to_uint8
        from tasks.codenoise import codenoise_chunks

        turn = iter(range(1 << 62))

        def submit(key, x, shared, own):
            return peers[next(turn) % len(peers)].denoise.remote(key, x, shared, own)

        stats: dict = {}
        for chunk in codenoise_chunks(self.backend.pipe, self.backend.spec, params, conditioning, submit=submit,
                                      stats=stats):
            yield to_uint8(chunk).numpy()
        yield stats | {"computed_on": ray.get([peer.computed_on.remote() for peer in peers])}

    def computed_on(self) -> tuple[str | None, str | None]:
        """(device type, dtype) this actor's backend computes in."""
        return computed_on(self.backend)

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

    def codenoise(self, params: dict, conditioning: Conditioning):
        """A codenoise item coordinated by the next actor in turn: a stream of refs of uint8
        chunks (k, H, W, 3), then of the stats."""
        return self._take().codenoise.remote(params, conditioning, self.actors)

    def _take(self):
        with self._lock:
            actor = self.actors[self._next % len(self.actors)]
            self._next += 1
        return actor

    def close(self) -> None:
        for actor in self.actors:
            ray.kill(actor)
        self.actors = []

    def __getstate__(self) -> dict:  # sent to an item's finishing task: the handles, not the lock
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


def uses_pool(item) -> bool:
    """Whether a resolved item runs on a model pool: model backends, and any backend whose
    output goes through a super-resolution model (loaded by the same actors)."""
    return item.backend != "motion" or item.upscale.method == "model"


class Pools:
    """The model pools of one run, leased to its items.

    The run declares its items up front (:meth:`expect`); an item takes a :meth:`lease`
    for as long as it is produced and asks it for its model's pool, which is started on
    first use (one actor per GPU the windows can use, or ``actors``). When the last
    item of a model hands its lease back, that pool's actors are killed, so several
    models in one run do not starve each other of GPUs. :meth:`close` kills the rest."""

    def __init__(self, cluster: Cluster, *, actors: int = 0) -> None:
        self.cluster = cluster
        self.actors = actors  # per pool; 0: one per GPU slot (or one on CPU)
        self._pools: dict[str, ActorPool] = {}
        self._users: dict[str, int] = {}
        self._lock = threading.Lock()

    def expect(self, items) -> None:
        """Declare the run's items (resolved ``ItemSpec``s); those on a model pool are counted."""
        from tasks.backends import spec_of

        with self._lock:
            for item in items:
                if uses_pool(item):
                    key = _key(spec_of(item))
                    self._users[key] = self._users.get(key, 0) + 1

    @contextlib.contextmanager
    def lease(self, item) -> Iterator[Lease]:
        """The item's access to its model's pool while it is produced (done, skipped or failed)."""
        from tasks.backends import spec_of

        lease = Lease(self, spec_of(item) if uses_pool(item) else None)
        try:
            yield lease
        finally:
            if lease.spec is not None:
                self._returned(_key(lease.spec))

    def _get(self, spec: dict[str, Any], gpus: float) -> ActorPool:
        """The pool for ``spec``, started on first use. CPU actors share the cluster's CPUs
        when more actors are asked for than there are CPUs, so they can all start."""
        size = self.actors or (self.cluster.slots(gpus) if gpus > 0 else 1)
        key = _key(spec)
        with self._lock:
            if key not in self._pools:
                cpus = 1.0 if size <= self.cluster.cpus else max(self.cluster.cpus, 0.01) / size
                self._pools[key] = ActorPool(spec, size=size, gpus=gpus, cpus=cpus)
            return self._pools[key]

    def _returned(self, key: str) -> None:
        with self._lock:
            self._users[key] = self._users.get(key, 1) - 1
            if self._users[key] > 0:
                return
            self._users.pop(key)
            pool = self._pools.pop(key, None)
        if pool is not None:
            pool.close()

    def close(self) -> None:
        """Kill every actor of the run's pools."""
        with self._lock:
            pools, self._pools, self._users = list(self._pools.values()), {}, {}
        for pool in pools:
            pool.close()


class Lease:
    """One item's hold on the run's pool for its model (``spec`` None: the item needs none)."""

    def __init__(self, pools: Pools, spec: dict[str, Any] | None) -> None:
        self.pools, self.spec = pools, spec

    def pool(self, gpus: float) -> ActorPool:
        if self.spec is None:
            raise RuntimeError("this item runs on no model pool")
        return self.pools._get(self.spec, gpus)


def _key(spec: dict[str, Any]) -> str:
    return json.dumps(spec, sort_keys=True)
