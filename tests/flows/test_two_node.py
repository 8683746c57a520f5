"""A real two-node Ray cluster on this machine: a CPU-only head and a second node with
two (fake) GPUs. An item asking for ``gpus: 1`` can only have its windows rendered on
the second node; the provenance must say so, and the frames must equal a local run's.

Everything runs in child processes this test owns: the two ``ray start --block`` nodes
(each in a session of its own, with its own ``--temp-dir``) and the framefold CLI runs.
Teardown kills every process of those sessions, plus any process naming the temp dir,
and fails the test if one survives. It never runs ``ray stop`` (that would stop every
Ray on the machine).
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import draw_image, write_manifest
from tests.raynodes import NODE_START_TIMEOUT, RAY, Owned, base_env, free_ports, teardown, wait_started

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420, func_only=True),
              pytest.mark.usefixtures("one_ray_cluster_at_a_time")]

RUN_TIMEOUT = 240  # s, per framefold run (a temporary Prefect server starts in each)


# --- the cluster -----------------------------------------------------------------------------
@dataclass(frozen=True)
class TwoNodes:
    address: str  # 127.0.0.1:PORT of the head's GCS
    head_id: str
    gpu_node_id: str
    env: dict[str, str]  # for a driver of this cluster (RAY_ADDRESS set)


_NODES_SCRIPT = """
import json, sys, time
import ray
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
deadline = time.monotonic() + 60
while True:
    alive = [n for n in ray.nodes() if n["Alive"]]
    if len(alive) >= 2 or time.monotonic() > deadline:
        break
    time.sleep(0.5)
print(json.dumps({n["NodeID"]: n["Resources"] for n in alive}))
"""


@contextmanager
def two_nodes(tmp_path: Path) -> Iterator[TwoNodes]:
    """A head (1 CPU, no GPU) and a second node (2 CPUs, 2 fake GPUs, resource node2) on this machine."""
    # Ray's unix sockets live under --temp-dir and must stay under ~107 bytes: keep it short.
    temp_dir = Path(tempfile.mkdtemp(prefix="ff2n-", dir="/tmp"))
    tmp_path.mkdir(parents=True, exist_ok=True)
    env = base_env(tmp_path)
    owned: list[Owned] = []
    failure: BaseException | None = None
    gcs, dashboard, *node_ports = free_ports(2 + 2 * 6)

    def ports(offset: int) -> list[str]:  # every port a node opens, so that nothing clashes with other Rays here
        p = node_ports[offset * 6 : offset * 6 + 6]
        return [f"--node-manager-port={p[0]}", f"--object-manager-port={p[1]}", f"--metrics-export-port={p[2]}",
                f"--dashboard-agent-listen-port={p[3]}", f"--dashboard-agent-grpc-port={p[4]}",
                f"--runtime-env-agent-port={p[5]}"]

    common = [f"--temp-dir={temp_dir}", "--disable-usage-stats", "--block"]
    try:
        head = Owned(
            [str(RAY), "start", "--head", f"--port={gcs}", "--num-cpus=1", "--num-gpus=0",
             "--memory=1000000000", "--object-store-memory=200000000", "--include-dashboard=false",
             f"--dashboard-port={dashboard}", *ports(0), *common],
            env=env, log=tmp_path / "head.log",
        )
        owned.append(head)
        wait_started(head, "the head node")
        address = f"127.0.0.1:{gcs}"
        gpu_node = Owned(
            [str(RAY), "start", f"--address={address}", "--num-cpus=2", "--num-gpus=2", '--resources={"node2": 1}',
             "--memory=2000000000", "--object-store-memory=200000000", *ports(1), *common],
            env=env, log=tmp_path / "node2.log",
        )
        owned.append(gpu_node)
        wait_started(gpu_node, "the GPU node")

        query = Owned([sys.executable, "-c", _NODES_SCRIPT, address], env=env, log=tmp_path / "nodes.log")
        owned.append(query)
        assert query.wait(timeout=NODE_START_TIMEOUT) == 0, query.tail()
        nodes = json.loads(query.output().strip().splitlines()[-1])
        assert len(nodes) == 2, nodes
        (gpu_node_id,) = [node for node, resources in nodes.items() if resources.get("node2")]
        (head_id,) = [node for node in nodes if node != gpu_node_id]
        assert nodes[gpu_node_id]["GPU"] == 2 and "GPU" not in nodes[head_id], nodes
        yield TwoNodes(address, head_id, gpu_node_id, {**env, "RAY_ADDRESS": address})
    except BaseException as error:
        failure = error
        error.add_note(f"head node log:\n{owned[0].tail() if owned else ''}")
        raise
    finally:
        # anything still naming our temp dir is ours too
        if leftover := teardown(owned, temp_dir):
            message = f"processes survived the cluster's teardown: {leftover}"
            if failure is not None:
                failure.add_note(message)
            else:
                pytest.fail(message)


# --- the test ----------------------------------------------------------------------------------
def _gpu_job(folder: Path) -> Path:
    """Two small items (like tests/conftest.py's small_job) whose windows each ask for one GPU."""
    draw_image(folder / "img" / "a.png", seed=1)
    draw_image(folder / "img" / "b.jpg", seed=2)
    doc = {
        "version": 1,
        "name": "two-node",
        "output": "out",
        "defaults": {
            "backend": "motion", "seed": 3, "fps": 12, "frames": 24, "size": [64, 64], "loop": True,
            "window": {"length": 8, "overlap": 2, "weighting": "cosine"},
            "upscale": {"factor": 2, "method": "lanczos"},
            "motion": {"amplitude": 0.03},
            "gpus": 1,
        },
        "items": [
            {"id": "a", "image": "img/a.png"},
            {"id": "b", "image": "img/b.jpg", "loop": False, "window": {"weighting": "linear"}},
        ],
    }
    return write_manifest(folder, doc)


def _run_cli(manifest: Path, out: Path, env: dict[str, str], log: Path) -> Owned:
    return Owned([sys.executable, "-m", "flows.cli", "run", str(manifest), "--json", "--out", str(out)], env=env, log=log)


def _finish(run: Owned, what: str) -> dict:
    try:
        code = run.wait(timeout=RUN_TIMEOUT)
        assert code == 0, f"{what} exited with {code}:\n{run.tail()}"
        lines = run.output().splitlines()  # a progress line may come first on stdout, then the --json summary
        return json.loads("\n".join(lines[lines.index("{") :]))
    finally:
        run.stop()


def test_gpu_windows_run_on_the_gpu_node_and_frames_match_a_local_run(tmp_path: Path) -> None:
    manifest = _gpu_job(tmp_path / "job")
    # The reference: a local Ray of its own with fake GPUs, started first so it overlaps the cluster start.
    (tmp_path / "local").mkdir()
    local_env = {**base_env(tmp_path / "local"), "FRAMEFOLD_RAY_NUM_GPUS": "2", "FRAMEFOLD_RAY_NUM_CPUS": "2"}
    local = _run_cli(manifest, tmp_path / "local-out", local_env, tmp_path / "local.log")
    try:
        with two_nodes(tmp_path / "cluster") as cluster:
            remote = _run_cli(manifest, tmp_path / "two-node-out", cluster.env, tmp_path / "two-node.log")
            summary = _finish(remote, "framefold run on the two-node cluster")
            assert summary["counts"] == {"done": 2, "skipped": 0, "failed": 0}, summary
            reference = _finish(local, "the local framefold run")
            assert reference["counts"]["done"] == 2, reference

            for item in ("a", "b"):
                got = json.loads((tmp_path / "two-node-out" / f"{item}.json").read_text())
                ref = json.loads((tmp_path / "local-out" / f"{item}.json").read_text())
                device = got["device"]
                assert device["gpus_per_window"] == 1.0 and device["cluster_gpus"] == 2.0, device
                assert device["ray"].endswith(cluster.address.rsplit(":", 1)[1]), device
                assert device["nodes"] == [cluster.gpu_node_id], (device, cluster)
                assert got["video"]["frames_sha256"] == ref["video"]["frames_sha256"], item
                assert got["params"] == ref["params"] and got["params"]["gpus"] == 1.0
    finally:
        local.stop()
        assert not local.processes(), "the local run left processes behind"
