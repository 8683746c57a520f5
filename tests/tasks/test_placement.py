"""Finishing tasks take no CPU slot, so Ray's spreading cannot balance them; the driver's
Placement does: on a real local cluster (a head without CPUs and two 1-CPU worker nodes,
in a subprocess so it is not the session's Ray), tasks held at once go to the worker
nodes in turn, never to the driver's node, and run where they were placed."""

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
                  head_node_args={"num_cpus": 0, "include_dashboard": False, "object_store_memory": 100 << 20,
                                  "temp_dir": sys.argv[1]})
try:
    workers = [cluster.add_node(num_cpus=1, object_store_memory=100 << 20).node_id for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)

    @ray.remote(num_cpus=0)
    def where():
        return ray.get_runtime_context().get_node_id()

    placement = Placement()
    held, nodes, ran = [], [], []
    for item in ["a", "b", "c", "d", "e"]:  # five items in flight at once
        cm = placement.strategy(item)
        strategy = cm.__enter__()
        held.append(cm)
        nodes.append(strategy.node_id)
        ran.append(ray.get(where.options(scheduling_strategy=strategy).remote()))
    for cm in held[:3]:  # three finish; the next two go where fewest still run
        cm.__exit__(None, None, None)
    after = []
    for item in ["f", "g"]:
        with placement.strategy(item) as strategy:
            after.append(strategy.node_id)
    print(json.dumps({"head": ray.get_runtime_context().get_node_id(), "workers": workers, "nodes": nodes,
                      "ran": ran, "after": after, "running": {k: v for k, v in placement._running.items() if v}}))
finally:
    ray.shutdown()
    cluster.shutdown()
"""


@pytest.mark.slow
def test_finishing_tasks_go_to_the_least_busy_worker_node():
    root = Path(__file__).resolve().parents[2]
    with tempfile.TemporaryDirectory(prefix="ff-ray-", dir="/tmp") as temp:  # Ray's socket paths must be short
        done = subprocess.run([sys.executable, "-c", SCRIPT, temp], cwd=root, capture_output=True, text=True,
                              timeout=300, env={**os.environ, "RAY_AUTH_MODE": "disabled"})  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    a, b = out["workers"]
    assert out["head"] not in out["nodes"]
    assert sorted(out["nodes"].count(n) for n in (a, b)) == [2, 3]  # five at once: balanced over both
    assert out["ran"] == out["nodes"]  # pinned: each ran where it was placed
    # the first three released (whichever nodes they were on): f and g go to the emptier node first
    still = {n: out["nodes"][3:].count(n) for n in (a, b)}
    emptier = min((a, b), key=lambda n: still[n])
    assert out["after"][0] == emptier or still[a] == still[b]
    assert out["running"] == {n: c for n, c in still.items() if c}
