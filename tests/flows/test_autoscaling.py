"""GPUs from zero: a Ray head with no CPUs or GPUs for work and an autoscaler whose one
node type is {CPU: 1, GPU: 1} (fake GPUs), min 0 / max 2. A `gpus: auto` run must ask for
GPUs (nothing is up that has one), the autoscaler must add nodes, and every window and
model actor must run on such a node: nothing on a CPU fallback.

This is the mechanism under `ray.cluster_utils.AutoscalingCluster` without that class
(its config file is missing from the 2.60 wheel and it runs `ray stop --force`): Ray's
fake multi-node provider, started by `ray start --head --autoscaling-config` with
RAY_FAKE_CLUSTER=1. The provider starts the GPU nodes as raylets from the head's monitor,
so they are in the head's session: the test kills that session (never `ray stop`).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import draw_image, write_manifest
from tests.raynodes import Owned, base_env, free_ports, head_command, teardown, wait_started
from tests.tasks.test_superres import save_model

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600, func_only=True),
              pytest.mark.usefixtures("one_ray_cluster_at_a_time")]

RUN_TIMEOUT = 360  # s: Prefect's temporary server, two fake nodes starting, four CPU-bound windows each


def _autoscaling_config(gcs: int) -> dict:
    empty: list = []
    return {
        "cluster_name": "framefold-fake-gpus",
        "max_workers": 2,
        "idle_timeout_minutes": 5,
        "upscaling_speed": 1.0,
        "provider": {
            "type": "fake_multinode",
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
            "gcs_address": f"127.0.0.1:{gcs}",  # the provider's default is this machine's IP, port 6379
        },
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 0, "GPU": 0}, "node_config": {}, "max_workers": 0},
            "gpu": {"resources": {"CPU": 1, "GPU": 1, "object_store_memory": 100_000_000},
                    "node_config": {}, "min_workers": 0, "max_workers": 2},
        },
        "head_node_type": "ray.head.default",
        "auth": {"ssh_user": "ubuntu"},
        "docker": {},
        "file_mounts": {},
        "cluster_synced_files": empty,
        "file_mounts_sync_continuously": False,
        "initialization_commands": empty,
        "setup_commands": empty,
        "head_setup_commands": empty,
        "worker_setup_commands": empty,
        "head_start_ray_commands": empty,
        "worker_start_ray_commands": empty,
    }


def _job(folder: Path) -> Path:
    """Two `gpus: auto` items: windows as Ray tasks (motion, Lanczos), and windows plus a
    learned upscaler on a model actor."""
    draw_image(folder / "a.png", (48, 32), seed=1)
    save_model(folder / "models" / "x2.safetensors", "SRVGGNetCompact")
    return write_manifest(folder, {
        "version": 1, "name": "gpus-from-zero", "output": "out",
        "defaults": {"backend": "motion", "seed": 4, "fps": 8, "frames": 12, "size": [48, 32],
                     "window": {"length": 6, "overlap": 2}, "gpus": "auto"},
        "items": [
            {"id": "tasks", "image": "a.png", "upscale": {"factor": 2, "method": "lanczos"}},
            {"id": "actors", "image": "a.png",
             "upscale": {"method": "model", "path": "models/x2.safetensors", "factor": 2}},
        ],
    })


def test_gpu_demand_scales_gpu_nodes_up_from_zero(tmp_path: Path) -> None:
    manifest = _job(tmp_path / "job")
    temp_dir = Path(tempfile.mkdtemp(prefix="ffas-", dir="/tmp"))
    gcs, client, dashboard, *p = free_ports(3 + 6)
    config = tmp_path / "autoscaling.json"
    config.write_text(json.dumps(_autoscaling_config(gcs)))
    env = {**base_env(tmp_path), "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"}
    owned: list[Owned] = []
    try:
        head = Owned(
            head_command(temp_dir, gcs=gcs, client=client, dashboard=dashboard, ports=p,
                         resources=["--num-cpus=0", "--num-gpus=0", "--memory=1000000000",
                                    "--object-store-memory=100000000", f"--autoscaling-config={config}"]),
            env=env, log=tmp_path / "head.log",
        )
        owned.append(head)
        wait_started(head, "the autoscaling head")

        run_env = {**env, "RAY_ADDRESS": f"127.0.0.1:{gcs}", "FRAMEFOLD_ACTORS": "1", "FRAMEFOLD_GPU_WAIT_S": "240"}
        t0 = time.monotonic()
        run = Owned([sys.executable, "-m", "flows.cli", "run", str(manifest), "--json"], env=run_env,
                    log=tmp_path / "run.log")
        owned.append(run)
        code = run.wait(timeout=RUN_TIMEOUT)
        seconds = time.monotonic() - t0
        assert code == 0, f"framefold run exited with {code}:\n{run.tail()}"
        lines = run.output().splitlines()
        summary = json.loads("\n".join(lines[lines.index("{"):]))
        assert summary["counts"] == {"done": 2, "skipped": 0, "failed": 0}, summary
        assert "waiting for GPU nodes" in run.err.read_text()

        gpu_nodes: set[str] = set()
        for item in ("tasks", "actors"):
            device = json.loads((tmp_path / "job" / "out" / f"{item}.json").read_text())["device"]
            assert device["gpus_per_window"] == 1.0 and device["cpu_fallback"] is False, device
            assert device["gpu_source"] == "autoscaler" and device["cluster_gpus"] == 2.0, device
            assert device["nodes"] and set(device["nodes"]) == set(device["node_resources"]), device
            for node, resources in device["node_resources"].items():  # windows, actor and upscaler: GPU nodes only
                assert resources.get("GPU") == 1.0 and resources.get("CPU") == 1.0, (item, node, resources)
            gpu_nodes |= set(device["nodes"])
        assert 1 <= len(gpu_nodes) <= 2, gpu_nodes
        print(f"gpus-from-zero run: {seconds:.0f} s, GPU nodes used: {len(gpu_nodes)}")

        # a request no node type can ever satisfy: refused before any work, one line, exit 1
        doc = json.loads(json.dumps(__import__("yaml").safe_load(manifest.read_text())))
        doc["defaults"]["gpus"] = 2
        doc["output"] = "out-never"
        impossible = write_manifest(tmp_path / "job", doc, "impossible.yaml")
        never = Owned([sys.executable, "-m", "flows.cli", "run", str(impossible)], env=run_env,
                      log=tmp_path / "never.log")
        owned.append(never)
        assert never.wait(timeout=RUN_TIMEOUT) == 1, never.tail()
        errors = [line for line in never.err.read_text().splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "gpus: 2 per window" in errors[0] and "more than 1 GPU" in errors[0], errors
        assert not (tmp_path / "job" / "out-never").exists() or not any((tmp_path / "job" / "out-never").glob("*.mp4"))
    finally:
        leftover = teardown(owned, temp_dir)
    assert not leftover, f"processes survived the teardown: {leftover}"
