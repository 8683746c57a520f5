"""What the figures share: the environment of child processes, machine facts, a process
tree memory sampler, one Prefect server for every ``framefold run``, Markdown tables and
small synthetic stills."""

from __future__ import annotations

import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def child_env(state: Path, **extra: str) -> dict[str, str]:
    """Environment for child processes: offline, quiet, project-local Prefect state, and
    the repository on the path (Ray workers import ``bench`` and ``tasks`` from it).
    Settings that would change what is measured — a remote Ray or Prefect, framefold's
    own FRAMEFOLD_* tuning — are dropped: every figure runs on this machine as shipped."""
    drop = ("RAY_ADDRESS", "PREFECT_API_URL", "FRAMEFOLD_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(
        PREFECT_HOME=str(state / "prefect"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_LOGGING_LEVEL="WARNING",
        RAY_USAGE_STATS_ENABLED="0",
        HF_HUB_OFFLINE="1",
        PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p),
    )
    env.update(extra)
    return env


def machine_facts() -> dict:
    """CPU, memory, load and library versions of this machine, and the date (UTC)."""
    import numpy
    import ray
    import torch

    model = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.processor() or "unknown",
    ) if Path("/proc/cpuinfo").exists() else platform.processor()
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout)
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = "unknown", False
    return {
        "date_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_model": model,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "ray": ray.__version__,
        "numpy": numpy.__version__,
        "prefect": _version("prefect"),
        "diffusers": _version("diffusers"),
        "platform": platform.platform(),
        "git": commit + (" (with uncommitted changes)" if dirty else ""),
    }


def _version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


class TreeSampler:
    """Samples the RSS of a process and all its descendants every ``interval`` seconds.

    ``peak_tree`` is the largest sum over the tree seen at one sample (shared pages,
    such as Ray's object store, count once per process that maps them); ``peak_root``
    the largest RSS of the root process alone."""

    def __init__(self, pid: int, interval: float = 0.1):
        self.root = psutil.Process(pid)
        self.interval = interval
        self.peak_tree = 0
        self.peak_root = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "TreeSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:
                return
            total = 0
            for p in procs:
                try:
                    rss = p.memory_info().rss
                except psutil.Error:
                    continue
                total += rss
                if p.pid == self.root.pid:
                    self.peak_root = max(self.peak_root, rss)
            self.peak_tree = max(self.peak_tree, total)
            self.samples += 1
            self._stop.wait(self.interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrefectServer:
    """One Prefect server on a free loopback port for every ``framefold run`` of the
    suite (as in production: README, ``PREFECT_API_URL``), so each run starts only Ray.
    Entering starts it; ``url()`` waits until it is healthy; leaving stops it and its
    children (by pid)."""

    def __init__(self, state: Path, timeout: float = 180.0):
        self.state, self.timeout = state, timeout

    def __enter__(self) -> "PrefectServer":
        port = free_port()
        self.log = open(self.state / "prefect-server.log", "w")
        self.proc = subprocess.Popen(
            [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=child_env(self.state), stdout=self.log, stderr=subprocess.STDOUT,
        )
        self.api = f"http://127.0.0.1:{port}/api"
        self.started = time.monotonic()
        return self

    def url(self) -> str:
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prefect server exited ({self.proc.returncode}); see {self.log.name}")
            try:
                with urllib.request.urlopen(f"{self.api}/health", timeout=2) as r:
                    if r.status == 200:
                        return self.api
            except OSError:
                pass
            if time.monotonic() - self.started > self.timeout:
                raise RuntimeError(f"prefect server not healthy after {self.timeout:.0f} s; see {self.log.name}")
            time.sleep(0.5)

    def __exit__(self, *exc) -> None:
        stop_tree(self.proc.pid)
        self.log.close()


def stop_tree(pid: int, timeout: float = 30.0) -> None:
    """Terminate a process we started and its descendants, each by pid (kill after ``timeout``)."""
    try:
        root = psutil.Process(pid)
        procs = [*root.children(recursive=True), root]
    except psutil.NoSuchProcess:
        return
    for p in procs:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass


def run_framefold(manifest: Path, out: Path, env: dict[str, str], *, extra: tuple[str, ...] = ()) -> dict:
    """``framefold run MANIFEST --out OUT --json`` in a subprocess, its process tree's
    memory sampled. Returns the summary, wall seconds, the start time (epoch seconds)
    and the peak RSS of the tree and of the framefold process (bytes)."""
    cmd = [str(BIN / "framefold"), "run", str(manifest), "--out", str(out), "--json", *extra]
    started = time.time()
    tick = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with TreeSampler(proc.pid) as mem:
        stdout, stderr = proc.communicate()
    wall = time.perf_counter() - tick
    if proc.returncode != 0:
        raise RuntimeError(f"framefold run {manifest} exited {proc.returncode}:\n{stderr[-3000:]}")
    summary = json.loads(stdout[stdout.index("{\n"):])  # the progress bar may precede the JSON
    return {"summary": summary, "wall_s": wall, "started": started, "peak_tree": mem.peak_tree,
            "peak_driver": mem.peak_root, "samples": mem.samples}


def median(values) -> float:
    return statistics.median(values)


def table(headers: list[str], rows: list[list]) -> str:
    """A Markdown table; floats are printed as given (format them first)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def mib(n: float) -> str:
    return f"{n / 2**20:,.0f}"


def draw_still(path: Path, size: tuple[int, int], seed: int) -> Path:
    """A small photo-like still (gradient, a disc, a box, noise), drawn with Pillow
    (the idea of tests/conftest.py ``draw_image``)."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x / w, y / h, 0.5 + 0.5 * np.sin(x / 7 + y / 11 + seed)], -1) + rng.normal(0, 0.04, (h, w, 3))
    im = Image.fromarray((np.clip(base, 0, 1) * 255).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(im)
    d.ellipse((w // 4, h // 4, 3 * w // 4, 3 * h // 4), fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    d.rectangle((w // 8, h // 2, w // 3, h - 4), fill=(240, 240, 240))
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)
    return path


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, out_dir: Path, name: str) -> str:
    """Lay out, write `out_dir/name` (PNG) and close `fig`; returns `name`."""
    fig.tight_layout()
    fig.savefig(out_dir / name, dpi=110)
    pyplot().close(fig)
    return name
