"""The Ray framefold starts for itself (no RAY_ADDRESS) serves this machine only: every socket
its processes listen on is on the loopback interface."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

PROBE = """
import json, os, psutil, ray
from tasks.cluster import connect
cluster = connect(num_cpus=1)
ray.get(ray.remote(lambda: 1).remote())  # a worker process too
listening = []
for p in [psutil.Process(), *psutil.Process().children(recursive=True)]:
    try:
        listening += [(p.name(), c.laddr.ip, c.laddr.port) for c in p.net_connections(kind="inet")
                      if c.status == psutil.CONN_LISTEN]
    except psutil.Error:
        pass
print(json.dumps({"address": cluster.address, "listening": listening}))
ray.shutdown()
"""


def test_a_local_ray_listens_on_loopback_only(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "FRAMEFOLD_RAY_ADDRESS")}
    env.update(PYTHONPATH=str(REPO), RAY_USAGE_STATS_ENABLED="0")
    with tempfile.TemporaryDirectory(prefix="fflo", dir="/tmp") as ray_tmp:  # short: Ray's socket paths
        env["RAY_TMPDIR"] = ray_tmp
        proc = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert found["address"].startswith("127.0.0.1:"), found["address"]
    names = {name for name, _, _ in found["listening"]}
    assert {"gcs_server", "raylet"} <= names, found["listening"]  # Ray's servers were seen
    exposed = [(n, ip, port) for n, ip, port in found["listening"] if ip not in ("127.0.0.1", "::ffff:127.0.0.1", "::1")]
    assert not exposed, f"listening beyond this machine: {exposed}"
