"""Shared fixtures: one local Ray cluster and one Prefect test server per session,
and small real inputs (images drawn with Pillow, manifests written to tmp dirs)."""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

# Before Prefect or Ray are imported anywhere: offline, project-local state.
_STATE = Path(tempfile.mkdtemp(prefix="framefold-test-"))
os.environ.setdefault("PREFECT_HOME", str(_STATE / "prefect"))
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import yaml  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402


@pytest.fixture
def one_ray_cluster_at_a_time():
    """Held by the tests that start Ray clusters of their own (`ray start` heads and nodes,
    `ray.cluster_utils`, an autoscaler): such tests in other test processes on this machine
    wait until it is free. Two at once on two cores starve each other's node starts, and every
    head on a machine hands its drivers Ray Client server ports from the same range. Those
    tests time only their own body (`timeout(..., func_only=True)`), not this wait; a holder
    that overruns its timeout fails or is killed, and so lets go."""
    import fcntl

    with open(Path(tempfile.gettempdir()) / "framefold-tests-ray-clusters.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        yield


@pytest.fixture(scope="session")
def ray_cluster():
    """A local Ray with 2 CPUs, shared by every test that needs one."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def prefect_server():
    from prefect.testing import utilities

    def seeded_mkdtemp() -> str:  # the harness's database folder, its database already migrated
        folder = tempfile.mkdtemp()
        shutil.copyfile(migrated_prefect_db(), Path(folder) / "prefect-test.db")
        return folder

    with mock.patch.object(utilities, "mkdtemp", seeded_mkdtemp), \
            utilities.prefect_test_harness(server_startup_timeout=90):
        yield


def prefect_home(path: Path) -> Path:
    """``path`` as a PREFECT_HOME whose database is already migrated: a Prefect server started
    on it (a run's temporary one, `prefect server start`) skips the migrations a new database
    takes (12 s of CPU, each time). A user's first run migrates once; tests/flows/test_rerun.py
    keeps that path."""
    path.mkdir(parents=True, exist_ok=True)
    if not (path / "prefect.db").exists():
        shutil.copyfile(migrated_prefect_db(), path / "prefect.db")
    return path


@functools.cache
def migrated_prefect_db() -> Path:
    """A Prefect database migrated to this Prefect's schema, made once per machine and version
    (under a lock: test processes run side by side) with `prefect server database upgrade`."""
    import fcntl
    import sqlite3
    import subprocess
    import sys

    import prefect

    target = Path(tempfile.gettempdir()) / f"framefold-test-prefect-{prefect.__version__}.db"
    with open(f"{target}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not target.exists():
            staging = Path(tempfile.mkdtemp(prefix="framefold-prefect-db-"))
            env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
            env.update(PREFECT_HOME=str(staging), PREFECT_SERVER_ANALYTICS_ENABLED="false")
            subprocess.run([sys.executable, "-m", "prefect", "server", "database", "upgrade", "-y"], env=env,
                           check=True, capture_output=True, timeout=600)
            part = target.with_name(f"{target.name}.{os.getpid()}.part")
            with closing(sqlite3.connect(staging / "prefect.db")) as src, closing(sqlite3.connect(part)) as dst:
                src.backup(dst)  # one file, whatever the write-ahead log still held
            os.replace(part, target)
            shutil.rmtree(staging, ignore_errors=True)
    return target


@dataclass(frozen=True)
class Shared:
    """Addresses of the session's Prefect API and Ray GCS, for child runs to join."""

    prefect_api_url: str
    ray_address: str


@pytest.fixture(scope="session")
def shared(ray_cluster, prefect_server) -> Shared:
    from prefect.settings import PREFECT_API_URL

    return Shared(PREFECT_API_URL.value(), ray_cluster.get_runtime_context().gcs_address)


def draw_image(path: Path, size=(96, 80), *, seed: int = 0, mode: str = "RGB") -> Path:
    """A small synthetic photo-like still: gradient, shapes and texture."""
    rng = np.random.default_rng(seed)
    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x / w, y / h, 0.5 + 0.5 * np.sin(x / 7 + y / 11)], -1)
    base += rng.normal(0, 0.04, base.shape)
    im = Image.fromarray((np.clip(base, 0, 1) * 255).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(im)
    d.ellipse((w // 4, h // 4, 3 * w // 4, 3 * h // 4), fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    d.rectangle((w // 8, h // 2, w // 3, h - 4), fill=(240, 240, 240))
    path.parent.mkdir(parents=True, exist_ok=True)
    im.convert(mode).save(path)
    return path


def write_manifest(folder: Path, doc: dict, name: str = "job.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture
def small_job(tmp_path):
    """A 3-item manifest (64×64, 24 frames, ×2 upscale) with real PNG/JPEG inputs."""
    draw_image(tmp_path / "img" / "a.png", seed=1)
    draw_image(tmp_path / "img" / "b.jpg", seed=2)
    draw_image(tmp_path / "img" / "c.png", (64, 64), seed=3)
    doc = {
        "version": 1,
        "name": "small",
        "output": "out",
        "defaults": {
            "backend": "motion",
            "seed": 3,
            "fps": 12,
            "frames": 24,
            "size": [64, 64],
            "loop": True,
            "window": {"length": 8, "overlap": 2, "weighting": "cosine"},
            "upscale": {"factor": 2, "method": "lanczos"},
            "motion": {"amplitude": 0.03},
        },
        "items": [
            {"id": "a", "image": "img/a.png"},
            {"id": "b", "image": "img/b.jpg", "loop": False, "window": {"weighting": "linear"}},
            {"id": "c", "image": "img/c.png", "motion": {"zoom": 0.05}},
        ],
    }
    return write_manifest(tmp_path, doc)


def bar_loop(frames=48, size=32):
    """A bright bar circling the frame once per clip: every step alike, the wrap too."""
    t = np.arange(frames)[:, None, None]
    x = np.arange(size)[None, None, :]
    bar = (np.abs(((x - t * size / frames) + size / 2) % size - size / 2) < 4) * 200 + 30
    return np.repeat(np.broadcast_to(bar, (frames, size, size))[..., None], 3, axis=3).astype(np.uint8)


def encode_clip(path, frames, *, loop):
    """``frames`` (T, H, W, 3) uint8 as an mp4 at 24 fps, written in five chunks (``loop``:
    encoded as framefold encodes loops)."""
    from tasks.encode import VideoEncoder

    height, width = frames.shape[1:3]
    with VideoEncoder(path, width=width, height=height, fps=24, loop_frames=len(frames) if loop else None) as enc:
        for chunk in np.array_split(frames, 5):
            enc.write(chunk)
    return path
