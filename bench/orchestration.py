"""Figure 3: orchestration overhead at scale, with simulated GPUs.

For each N, a fresh local Ray with N fake GPUs (``ray.init(num_gpus=N, num_cpus=N)``)
runs one item of ``windows`` windows (W=16, O=4, 256² pixels) through framefold's own
``tasks.generate.generate_windows`` and ``tasks.stitch.stitch``, exactly as
flows/item.py drives them (in-flight bound 2 × slots), with ``bench.fakegpu`` in place
of the model: each window costs ``cost`` seconds of sleep and returns a realistic
payload (16×256×256×3 uint8, 3 MiB). The ideal wall time is windows × cost ÷ N. Two
ways of reaching the GPUs, as the product has them: Ray tasks asking for a GPU each
(weight-free backends) and a pool of N resident actors, one per GPU, sent windows in
turn (model backends: the GPU path).

Where the time goes: the driver's time in ``submit`` (task submission), inside
``generate_windows`` otherwise (``ray.wait``/``ray.get``: waiting for and fetching
results) and inside ``stitch`` (exclusive); on the workers, Ray's timeline gives each
task's execute time (the sleep plus Python) and its ``store_outputs`` time (putting the
3 MiB result into the object store).
"""

from __future__ import annotations

import logging
import time

import ray
import torch

from bench.common import pyplot, table
from bench.fakegpu import fake_pool, fake_render, fake_submitter
from kernels.windows import emission_order, plan_windows, redundancy
from tasks.backends import Conditioning
from tasks.generate import connect, generate_windows
from tasks.plan import ItemPlan
from tasks.stitch import stitch

LENGTH, OVERLAP, SIDE = 16, 4, 256


def _plan(windows: int) -> ItemPlan:
    frames = LENGTH + (windows - 1) * (LENGTH - OVERLAP)
    plan = plan_windows(frames, length=LENGTH, overlap=OVERLAP)
    assert len(plan) == windows, (len(plan), windows)
    return ItemPlan(frames, tuple(plan), tuple(emission_order(plan, frames)), False, "cosine", redundancy(plan, frames))


class _Timed:
    """Inclusive seconds spent in ``next()`` of an iterator (its upstream included)."""

    def __init__(self, it):
        self.it, self.seconds = iter(it), 0.0

    def __iter__(self):
        while True:
            tick = time.perf_counter()
            try:
                value = next(self.it)
            except StopIteration:
                self.seconds += time.perf_counter() - tick
                return
            self.seconds += time.perf_counter() - tick
            yield value


def _drive(plan: ItemPlan, submit, conditioning, in_flight: int) -> dict:
    submitted = {"seconds": 0.0, "count": 0}

    def timed_submit(window, cond_ref):
        tick = time.perf_counter()
        ref = submit(window, cond_ref)
        submitted["seconds"] += time.perf_counter() - tick
        submitted["count"] += 1
        return ref

    started = time.time()
    tick = time.perf_counter()
    gen = _Timed((i, r.pixels) for i, r in generate_windows(timed_submit, conditioning, plan.requests(24.0), plan.order,
                                                             in_flight=in_flight))
    st = _Timed(stitch(gen, plan.windows, num_frames=plan.num_frames, weighting=plan.weighting))
    frames = sum(len(chunk) for chunk in st)
    wall = time.perf_counter() - tick
    if frames != plan.num_frames:
        raise RuntimeError(f"stitched {frames} frames, expected {plan.num_frames}")
    return {
        "wall_s": wall, "started": started, "frames": frames,
        "submit_s": submitted["seconds"], "generate_s": gen.seconds - submitted["seconds"],
        "stitch_s": st.seconds - gen.seconds,
    }


@ray.remote(num_cpus=0)
def _finish_remote(plan: ItemPlan, spec: dict, gpus: float, actors: list | None, conditioning, in_flight: int) -> dict:
    """The thin driver's path: the item's windows consumed and stitched by a task on a worker
    (as ``tasks.finish.finish`` does), fed by window results in the object store."""
    if actors:
        turn = iter(range(1 << 62))
        submit = lambda window, cond_ref: actors[next(turn) % len(actors)].render.remote(window, cond_ref)  # noqa: E731
    else:
        submit = fake_submitter(spec, gpus=gpus)
    return _drive(plan, submit, conditioning, in_flight)


def _drive_thin(plan: ItemPlan, spec: dict, gpus: float, actors: list | None, conditioning, in_flight: int) -> dict:
    """Run :func:`_finish_remote` and time this process: its CPU seconds while the item runs."""
    cpu, tick = time.process_time(), time.perf_counter()
    r = ray.get(_finish_remote.remote(plan, spec, gpus, actors, conditioning, in_flight))
    return {**r, "wall_s": time.perf_counter() - tick, "driver_cpu_s": time.process_time() - cpu}


def _worker_side(since: float) -> dict:
    """Sums over the fake_render tasks that started after ``since`` (epoch s), from Ray's timeline."""
    time.sleep(2.0)  # task events reach the GCS about once a second
    sums = {"execute": 0.0, "store_outputs": 0.0, "deserialize_arguments": 0.0}
    tasks = 0
    try:
        events = ray.timeline()
    except Exception:  # noqa: BLE001 - the breakdown is optional; the ratio is not
        return {"tasks": 0, **sums}
    for e in events:
        if e.get("ph") != "X" or e.get("ts", 0) / 1e6 < since:
            continue
        cat = e.get("cat", "")
        if cat.startswith("task:") and cat[5:] in sums:
            sums[cat[5:]] += e["dur"] / 1e6
        elif cat in ("task::fake_render", "task::FakeModelActor.render"):
            tasks += 1
    return {"tasks": tasks, **sums}


def _measure(n: int, windows: int, cost: float, *, one_thread_variant: bool) -> list[dict]:
    ray.init(address="local", num_cpus=n, num_gpus=n, include_dashboard=False, logging_level=logging.WARNING,
             log_to_driver=False, object_store_memory=1_000_000_000)
    try:
        cluster = connect()  # framefold's view of the cluster: N GPUs
        gpus = cluster.gpus_per_window("auto")
        slots = cluster.slots(gpus)
        in_flight = 2 * slots  # flows/item.py's default
        plan = _plan(windows)
        conditioning = Conditioning(item_id="bench", seed=0, image=torch.rand(3, SIDE, SIDE), mask=None,
                                    params={"size": [SIDE, SIDE]})
        spec = {"cost_s": cost, "size": [SIDE, SIDE]}
        # Warm: start the N workers and let each import what a window needs, before timing.
        cond_ref = ray.put(conditioning)
        warm = fake_render.options(num_gpus=gpus, num_cpus=1)
        ray.get([warm.remote({**spec, "cost_s": 0.5}, r, cond_ref) for r in plan.requests(24.0)[: 2 * slots]])
        pool: list = []

        def actor_pool():  # made after the task runs: the actors hold every GPU while they live
            actors, submit = fake_pool(spec, size=slots, gpus=gpus)
            ray.get([a.render.remote(r, cond_ref) for a, r in zip(actors, plan.requests(24.0))])  # started, warm
            pool[:] = actors
            return submit

        rows = []
        variants = [("tasks", torch.get_num_threads(), lambda: fake_submitter(spec, gpus=gpus))]
        variants += [("tasks, 1 thread", 1, lambda: fake_submitter(spec, gpus=gpus))] if one_thread_variant else []
        variants += [("tasks, thin driver", 1, None)]
        variants += [("actors", torch.get_num_threads(), actor_pool)]
        variants += [("actors, thin driver", 1, None)]
        small = _plan(4)  # warm: a worker stitches once (kernel compilation) before the timed thin-driver rows
        ray.get(_finish_remote.remote(small, {**spec, "cost_s": 0.0}, gpus, None, conditioning, in_flight))
        for label, threads, make_submit in variants:
            if make_submit is None:  # stitched by a task on a worker, as framefold runs an item now
                r = _drive_thin(plan, spec, gpus, pool if label.startswith("actors") else None, conditioning, in_flight)
                ideal = windows * cost / slots
                rows.append({
                    "gpus": n, "slots": slots, "in_flight": in_flight, "windows": windows, "cost_s": cost,
                    "stitch_threads": threads, "variant": label, "ideal_s": ideal, "ratio": r["wall_s"] / ideal,
                    **r, "workers": _worker_side(time.time() - r["wall_s"] - 0.5),
                })
                continue
            submit = make_submit()
            before = torch.get_num_threads()
            torch.set_num_threads(threads)
            cpu = time.process_time()
            try:
                r = _drive(plan, submit, conditioning, in_flight)
            finally:
                torch.set_num_threads(before)
            r["driver_cpu_s"] = time.process_time() - cpu
            ideal = windows * cost / slots
            rows.append({
                "gpus": n, "slots": slots, "in_flight": in_flight, "windows": windows, "cost_s": cost,
                "stitch_threads": threads, "variant": label, "ideal_s": ideal, "ratio": r["wall_s"] / ideal,
                **r, "workers": _worker_side(r["started"]),
            })
        return rows
    finally:
        ray.shutdown()


def _warm_stitch() -> None:
    """Stitch a few windows without Ray first: the driver's one-time costs (thread pools,
    allocator) are not charged to the first N."""
    plan = _plan(4)
    pixels = torch.randint(0, 256, (LENGTH, SIDE, SIDE, 3), dtype=torch.uint8).numpy()
    for _ in stitch(((i, pixels) for i in plan.order), plan.windows, num_frames=plan.num_frames, weighting="cosine"):
        pass


def run(quick: bool, workdir, *, gpus: tuple[int, ...] | None = None, windows: int | None = None) -> dict:
    gpus = gpus or ((2,) if quick else (1, 2, 4, 8, 16))
    # 100 ms per window: well below a real video-diffusion window on a GPU (seconds), so the
    # fixed per-window cost shows; the table also gives it in ms, which sets the ratio at any cost
    windows, cost = (windows or (32 if quick else 512)), 0.1
    _warm_stitch()
    rows = []
    for n in gpus:
        rows += _measure(n, windows, cost, one_thread_variant=n >= 4 or quick)
    return {"windows": windows, "cost_s": cost, "rows": rows, "payload": [LENGTH, SIDE, SIDE, 3]}


def section(data: dict) -> str:
    rows = []
    for r in data["rows"]:
        w, n = r["workers"], r["windows"]
        overhead = r["wall_s"] - r["ideal_s"]
        busy = n * r["cost_s"] / (r["slots"] * r["wall_s"])
        per = (lambda s: f"{1e3 * s / max(w['tasks'], 1):.1f}") if w["tasks"] else (lambda s: "—")
        rows.append([
            r["gpus"], r["variant"] + f" ({r['stitch_threads']})", f"{r['ideal_s']:.2f}", f"{r['wall_s']:.2f}",
            f"**{r['ratio']:.3f}**", "met" if r["ratio"] <= 1.10 else f"missed by {r['ratio'] - 1.10:.2f}",
            f"{overhead:+.2f}", f"{1e3 * overhead * r['slots'] / n:.1f}",
            f"{r['stitch_s']:.2f} ({r['stitch_s'] / r['wall_s']:.0%})", f"{r['submit_s']:.2f}",
            f"{r['generate_s']:.2f}", per(w["execute"] - n * r["cost_s"]) if w["tasks"] else "—",
            per(w["store_outputs"]), f"{busy:.0%}", f"{1e3 * r.get('driver_cpu_s', float('nan')) / n:.2f}",
        ])
    default = [r for r in data["rows"] if r["variant"] == "tasks"]
    bound = [r for r in default if r["stitch_s"] > 0.5 * r["wall_s"]]
    per_window = [1e3 * r["stitch_s"] / r["windows"] for r in default]
    rates = ", ".join(f"{r['gpus'] / data['cost_s']:.0f}" for r in default)
    note = (
        f"\nThe driver stitches every window in one process: {min(per_window):.0f}–{max(per_window):.0f} ms per "
        f"3 MiB window here (copy out of the object store, average the frames two windows share), so it can absorb "
        f"about {1e3 / max(per_window):.0f}–{1e3 / min(per_window):.0f} windows/s while N fake GPUs deliver "
        f"N ÷ {data['cost_s']:g} s = {rates} windows/s. "
        + (f"From N = {bound[0]['gpus']} on, the stitch takes more than half the wall time: the driver, not "
           "scheduling, is the bottleneck. " if bound else "")
        + (f"Below N = {bound[0]['gpus']}, the" if bound and bound[0]["gpus"] > default[0]["gpus"] else
           "" if bound else "The")
        + (" overhead is the latency between a task finishing and the next one starting (result store, "
           "dispatch), on a machine whose cores also run the driver." if not bound or bound[0]["gpus"] >
           default[0]["gpus"] else "")
    )
    actors = {r["gpus"]: r for r in data["rows"] if r["variant"] == "actors"}
    if actors:
        met = [n for n, r in actors.items() if r["ratio"] <= 1.10]
        note += (
            " With resident actors (the model backends' GPU path) each actor's next window is already queued on it, "
            "so no dispatch separates two windows: wall ÷ ideal "
            + ", ".join(f"N={n}: {r['ratio']:.2f}" for n, r in sorted(actors.items()))
            + (f"; the goal is met at N = {', '.join(map(str, met))}" if met else "")
            + ". Where it is missed at large N, this 2-core machine runs the driver, Ray's daemons and N worker "
            "processes that each copy 3 MiB per window into the object store (the store-result column): the cores, "
            "not the scheduling, set the limit — N fake GPUs share two real cores."
        )
    thin = [r for r in data["rows"] if r["variant"].endswith("thin driver")]
    if thin:
        note += (
            " Thin driver (framefold's path now): the item's windows are consumed and stitched by a task on a worker "
            "(``tasks.finish``), the driver only waits — its own CPU per window: "
            + ", ".join(f"N={r['gpus']} {r['variant'].split(',')[0]}: {1e3 * r['driver_cpu_s'] / r['windows']:.2f} ms"
                        for r in thin)
            + "; wall ÷ ideal " + ", ".join(f"N={r['gpus']} {r['variant'].split(',')[0]}: {r['ratio']:.2f}" for r in thin)
            + ". The stitch columns of these rows are the finishing task's, on its worker."
        )
    return note + "\n\n" + table(
        ["GPUs (N)", "stitch threads", "ideal s", "wall s", "wall ÷ ideal", "goal ≤ 1.10", "overhead s",
         "overhead per window per GPU, ms",
         "driver: stitch s (share of wall)", "driver: submit s", "driver: wait+get s",
         "worker: execute beyond sleep, ms/window", "worker: store result, ms/window", "GPU slots busy",
         "driver CPU ms/window"],
        rows,
    )


def plot(data: dict, out_dir) -> list[str]:
    plt = pyplot()
    rows = [r for r in data["rows"] if r["variant"] == "tasks"]
    actors = [r for r in data["rows"] if r["variant"] == "actors"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    a.plot([r["gpus"] for r in rows], [r["ratio"] for r in rows], "o-", label="Ray tasks (weight-free backends)")
    a.plot([r["gpus"] for r in actors], [r["ratio"] for r in actors], "s-", label="model actors (GPU path)")
    a.axhline(1.10, color="r", ls="--", label="goal 1.10")
    a.set_xscale("log", base=2)
    a.set_xlabel("fake GPUs (N)")
    a.set_ylabel("wall ÷ ideal")
    a.set_title(f"{data['windows']} windows × {data['cost_s'] * 1e3:.0f} ms")
    a.legend()
    labels = [str(r["gpus"]) for r in rows]
    parts = {
        "driver: stitch": [r["stitch_s"] / r["wall_s"] for r in rows],
        "driver: submit": [r["submit_s"] / r["wall_s"] for r in rows],
        "driver: wait + get": [r["generate_s"] / r["wall_s"] for r in rows],
    }
    bottom = [0.0] * len(rows)
    for label, shares in parts.items():
        b.bar(labels, shares, bottom=bottom, label=label)
        bottom = [x + y for x, y in zip(bottom, shares)]
    b.plot(labels, [r["ideal_s"] / r["wall_s"] for r in rows], "k_", markersize=30, mew=2, label="ideal ÷ wall")
    b.set_xlabel("fake GPUs (N)")
    b.set_ylabel("share of the wall time")
    b.set_ylim(0, 1.05)
    b.set_title("where the driver's wall time goes (tasks)")
    b.legend(fontsize=8)
    fig.tight_layout()
    name = "fig3_orchestration.png"
    fig.savefig(out_dir / name, dpi=110)
    plt.close(fig)
    return [name]
