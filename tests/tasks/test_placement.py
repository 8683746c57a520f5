"""Finishing tasks take no CPU slot, so Ray's spreading cannot balance them; the driver's
Placement does: on a real local cluster (a head with a CPU, where the driver is, and two
1-CPU worker nodes; in a subprocess so it is not the session's Ray), tasks held at once
go to the worker nodes in turn, never to the driver's node, run where they were placed,
and new ones go where the fewest still run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

SCRIPT = r"""
import json, sys
import ray
from ray.cluster_utils import Cluster
from tasks.finish import Placement

cluster = Cluster(initialize_head=True, shutdown_at_exit=True,
                  head_node_args={"num_cpus": 1, "include_dashboard": False, "object_store_memory": 100 << 20,
                                  "temp_dir": sys.argv[1]})
try:
    workers = [cluster.add_node(num_cpus=1, object_store_memory=100 << 20).node_id for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)

    @ray.remote(num_cpus=0)
    def where():
        return ray.get_runtime_context().get_node_id()

    placement = Placement()
    held, nodes, ran = {}, [], []
    for item in ["a", "b", "c", "d"]:  # four items in flight at once
        cm = placement.strategy(item)
        strategy = cm.__enter__()
        held[item] = (cm, strategy.node_id)
        nodes.append(strategy.node_id)
        ran.append(ray.get(where.options(scheduling_strategy=strategy).remote()))
    emptied = nodes[0]
    for cm, node in held.values():  # the items on one node finish; the next two go there
        if node == emptied:
            cm.__exit__(None, None, None)
    after, kept = [], []
    for item in ["e", "f"]:
        kept.append(placement.strategy(item))  # held (a dropped context manager would release its node)
        after.append(kept[-1].__enter__().node_id)
    print(json.dumps({"head": ray.get_runtime_context().get_node_id(), "workers": workers, "nodes": nodes,
                      "ran": ran, "emptied": emptied, "after": after,
                      "running": {k: v for k, v in placement._running.items() if v}}))
finally:
    ray.shutdown()
    cluster.shutdown()
"""


@pytest.mark.slow
@pytest.mark.timeout(600, func_only=True)
@pytest.mark.usefixtures("one_ray_cluster_at_a_time")
def test_finishing_tasks_go_to_the_least_busy_worker_node():
    root = Path(__file__).resolve().parents[2]
    with tempfile.TemporaryDirectory(prefix="ff-ray-", dir="/tmp") as temp:  # Ray's socket paths must be short
        done = subprocess.run([sys.executable, "-c", SCRIPT, temp], cwd=root, capture_output=True, text=True,
                              timeout=300, env={**os.environ, "RAY_AUTH_MODE": "disabled"})  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    a, b = out["workers"]
    assert out["head"] not in out["nodes"] + out["after"]  # the driver's node has a CPU, yet is left alone
    assert sorted(out["nodes"].count(n) for n in (a, b)) == [2, 2]  # four at once: two per worker node
    assert out["ran"] == out["nodes"]  # pinned: each ran where it was placed
    other = b if out["emptied"] == a else a
    assert out["after"] == [out["emptied"], out["emptied"]]  # 0 then 1 running there, 2 on the other
    assert out["running"] == {out["emptied"]: 2, other: 2}
