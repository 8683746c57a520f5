"""Figure 8: the thin driver.

(a) Driver cost per item over many items: one ``framefold run`` of N small motion items
(8 frames of 32², one window each) in a subprocess; a progress reporter inside the
driver notes, as each item finishes, the driver's RSS and its CPU seconds
(``time.process_time``: every thread of the process). Finishing runs on Ray workers, so
the driver's RSS should stay flat in N and its CPU seconds per item constant.

(b) Finishing throughput with 1 and 2 worker nodes: a local Ray cluster
(``ray.cluster_utils.Cluster``: a head with no CPUs for work, then worker nodes of one
CPU each, each node's processes pinned to a core of its own, all in their own temporary
folder and stopped by the bench), and the same
batch of items (64 frames of 128², ×2 Lanczos upscale, mp4 + webm) run against it with
``FRAMEFOLD_RAY_ADDRESS``: windows and finishing tasks land on the worker nodes, so
items per second should grow with the nodes (on this 2-core machine, up to the second
core).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

from bench.common import ROOT, draw_still, pyplot, table

PROBE = r"""
import json, os, sys, time
from flows import progress

marks, starts = [], []

class Probe:
    def item_started(self, item_id, frames): starts.append(time.perf_counter())
    def frames_done(self, item_id, n): pass
    def item_finished(self, item_id, status):
        rss = int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        marks.append([time.perf_counter(), time.process_time(), rss, status])

from flows.cli import main
real_install = progress.install
progress.install = lambda r: real_install(Probe())  # the CLI's rich display replaced by the probe
tick = time.perf_counter()
code = main(["run", sys.argv[1], "--json"])
# VmHWM: this process's own high-water mark (ru_maxrss would also carry the forking parent's)
peak = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print("PROBE " + json.dumps({"exit": code, "start": tick, "marks": marks, "first_start": min(starts, default=tick),
                             "peak_rss": peak}))
"""


def _manifest(folder: Path, n: int, *, frames: int, side: int, factor: int, formats: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    draw_still(folder / "still.png", (side, side), seed=1)
    doc = {"version": 1, "name": f"thin-{n}", "output": "out",
           "defaults": {"backend": "motion", "seed": 1, "fps": 24, "frames": frames, "size": [side, side],
                        "window": {"length": min(frames, 16), "overlap": 4 if frames > 16 else 0},
                        "upscale": {"factor": factor}, "formats": formats},
           "items": [{"id": f"item-{k:05d}", "image": "still.png", "seed": k} for k in range(n)]}
    path = folder / "job.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _probe(manifest: Path, env: dict) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE, str(manifest)], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=7200)
    lines = [x for x in done.stdout.splitlines() if x.startswith("PROBE ")]
    if not lines:
        raise RuntimeError(f"probe run of {manifest} failed:\n{done.stderr[-3000:]}")
    out = json.loads(lines[-1][len("PROBE "):])
    if out["exit"] != 0:
        raise RuntimeError(f"probe run of {manifest} exited {out['exit']}:\n{done.stderr[-3000:]}")
    return out


def _per_item(workdir: Path, n: int, env: dict) -> dict:
    folder = workdir / f"thin-{n}"
    out = _probe(_manifest(folder, n, frames=8, side=32, factor=1, formats=["mp4"]), env)
    marks = out["marks"]
    bins = []
    size = max(1, len(marks) // 10)
    for first in range(0, len(marks) - size + 1, size):
        a, b = marks[first - 1] if first else marks[0], marks[first + size - 1]
        count = size if first else size - 1
        if count <= 0:
            continue
        bins.append({"items": first + size, "rss": b[2], "cpu_per_item": (b[1] - a[1]) / count,
                     "wall_per_item": (b[0] - a[0]) / count})
    return {"items": n, "bins": bins, "peak_rss": out["peak_rss"]}


def _throughput(workdir: Path, nodes: int, items: int, env: dict, frames: int, side: int) -> dict:
    import ray
    from ray.cluster_utils import Cluster

    temp = workdir / f"ray-{nodes}"
    temp.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(initialize_head=True, shutdown_at_exit=True,
                      head_node_args={"num_cpus": 0, "temp_dir": str(temp), "include_dashboard": False,
                                      "object_store_memory": 300 << 20})
    try:
        for core in range(nodes):
            _pin(cluster.add_node(num_cpus=1, object_store_memory=300 << 20), core)
        cluster.wait_for_nodes()
        folder = workdir / f"finishing-{nodes}"
        manifest = _manifest(folder, items, frames=frames, side=side, factor=2, formats=["mp4", "webm"])
        tick = time.perf_counter()
        out = _probe(manifest, {**env, "FRAMEFOLD_RAY_ADDRESS": cluster.address})
        wall = time.perf_counter() - tick
        span = out["marks"][-1][0] - out["first_start"]  # first item started → last item finished
        return {"nodes": nodes, "items": items, "wall_s": wall, "items_per_s": len(out["marks"]) / span}
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()


def _pin(node, core: int) -> None:
    """Keep a worker node on one core: its raylet and everything it starts (the workers
    that render windows and finish items inherit the affinity). Finishing tasks reserve no
    CPU slot, so without this a "1-CPU" node would spread its work over every core."""
    import psutil
    from ray._private import ray_constants

    cores = os.sched_getaffinity(0)
    core = sorted(cores)[core % len(cores)]
    for info in node.all_processes[ray_constants.PROCESS_TYPE_RAYLET]:
        raylet = psutil.Process(info.process.pid)
        for process in [raylet, *raylet.children(recursive=True)]:
            process.cpu_affinity([core])


def run(quick: bool, workdir: Path, env: dict) -> dict:
    env = {**env, "RAY_AUTH_MODE": "disabled"}
    os.environ["RAY_AUTH_MODE"] = "disabled"  # the bench's own cluster (b)
    n = 40 if quick else 1000
    per_item = _per_item(workdir, n, {k: v for k, v in env.items() if k != "FRAMEFOLD_RAY_ADDRESS"})
    items, frames, side = (6, 32, 96) if quick else (24, 64, 128)
    finishing = [_throughput(workdir, k, items, env, frames, side) for k in (1, 2)]
    return {"per_item": per_item, "finishing": finishing, "frames": frames, "side": side}


def section(data: dict) -> str:
    p = data["per_item"]
    bins = p["bins"]
    first, last = bins[0], bins[-1]
    rows = [[b["items"], f"{b['rss'] / 2**20:.0f}", f"{1e3 * b['cpu_per_item']:.1f}", f"{1e3 * b['wall_per_item']:.0f}"]
            for b in bins]
    f = data["finishing"]
    speedup = f[1]["items_per_s"] / f[0]["items_per_s"] if f[0]["items_per_s"] else float("nan")
    return (
        f"Driver over {p['items']} items: RSS {first['rss'] / 2**20:.0f} → {last['rss'] / 2**20:.0f} MiB "
        f"({last['rss'] / first['rss']:.2f}×), CPU per item {1e3 * first['cpu_per_item']:.1f} → "
        f"{1e3 * last['cpu_per_item']:.1f} ms (peak RSS {p['peak_rss'] / 2**20:.0f} MiB).\n\n"
        + table(["items finished", "driver RSS MiB", "driver CPU ms per item", "wall ms per item"], rows)
        + f"\n\nFinishing throughput ({f[0]['items']} items of {data['frames']} frames at {data['side']}², ×2, "
        f"mp4 + webm): 1 node {f[0]['items_per_s']:.2f} items/s, 2 nodes {f[1]['items_per_s']:.2f} items/s "
        f"({speedup:.2f}×).\n\n"
        + table(["worker nodes (1 CPU each)", "items", "wall s", "items/s"],
                [[r["nodes"], r["items"], f"{r['wall_s']:.1f}", f"{r['items_per_s']:.2f}"] for r in f])
    )


def plot(data: dict, out_dir: Path) -> list[str]:
    plt = pyplot()
    bins = data["per_item"]["bins"]
    fig, (a, b, c) = plt.subplots(1, 3, figsize=(13, 3.8))
    a.plot([x["items"] for x in bins], [x["rss"] / 2**20 for x in bins], "o-")
    a.set_xlabel("items finished")
    a.set_ylabel("driver RSS (MiB)")
    a.set_ylim(bottom=0)
    a.set_title("driver memory")
    b.plot([x["items"] for x in bins], [1e3 * x["cpu_per_item"] for x in bins], "o-")
    b.set_xlabel("items finished")
    b.set_ylabel("driver CPU ms per item")
    b.set_ylim(bottom=0)
    b.set_title("driver CPU per item")
    f = data["finishing"]
    c.bar([str(r["nodes"]) for r in f], [r["items_per_s"] for r in f])
    c.set_xlabel("worker nodes")
    c.set_ylabel("items/s")
    c.set_title("finishing throughput")
    fig.tight_layout()
    name = "fig8_thin_driver.png"
    fig.savefig(out_dir / name, dpi=110)
    plt.close(fig)
    return [name]


if __name__ == "__main__":  # python -m bench.thin_driver [--quick]: this figure alone
    import tempfile

    from bench.common import child_env

    with tempfile.TemporaryDirectory(prefix="framefold-bench-") as tmp:
        result = run("--quick" in sys.argv, Path(tmp), child_env(Path(tmp)))
        print(section(result))
        print(json.dumps(result, default=str)[:2000])
