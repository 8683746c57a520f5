"""Over Ray Client (``ray://``) a finishing task cannot stream, yet the driver still shows
each item's frames as they are encoded: they come through a queue the driver polls."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from tests.raynodes import Owned, base_env, free_ports, head_command, log_tails, teardown, wait_started

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600, func_only=True),
              pytest.mark.usefixtures("one_ray_cluster_at_a_time")]

RUN_TIMEOUT = 300  # s, on a busy 2-core machine

# framefold's CLI with a reporter in place of the display, noting what it is told
PROBE = r"""
import json, sys, time
from flows import progress

events = []

class Probe:
    def item_started(self, item_id, frames): events.append(["start", item_id, frames, time.monotonic()])
    def frames_done(self, item_id, n): events.append(["frames", item_id, n, time.monotonic()])
    def item_finished(self, item_id, status): events.append(["end", item_id, status, time.monotonic()])
    def note(self, text): pass

real_install = progress.install
progress.install = lambda r: real_install(Probe())
from flows.cli import main
code = main(["run", sys.argv[1]])
import ray
print("EVENTS " + json.dumps({"exit": code, "client": ray.util.client.ray.is_connected(), "events": events}))
"""


def test_progress_reaches_a_ray_client_driver_as_frames_are_encoded(small_job, tmp_path):
    # clips long enough that encoding them takes seconds, not the last fraction of one
    doc = yaml.safe_load(small_job.read_text())
    doc["defaults"]["frames"] = 144
    small_job.write_text(yaml.safe_dump(doc, sort_keys=False))
    temp_dir = Path(tempfile.mkdtemp(prefix="ffcp-", dir="/tmp"))  # Ray's socket paths must stay short
    gcs, client, dashboard, *p = free_ports(3 + 6)
    # the head starts a Ray Client server per driver and gives it 30 s by default: on a loaded
    # 2-core machine that start can take longer
    env = {**base_env(tmp_path), "RAY_CLIENT_SERVER_CHECK_CHANNEL_TIMEOUT_S": "180"}
    owned: list[Owned] = []
    try:
        head = Owned(
            head_command(temp_dir, gcs=gcs, client=client, dashboard=dashboard, ports=p,
                         resources=["--num-cpus=2", "--num-gpus=0", "--memory=2000000000",
                                    "--object-store-memory=200000000"]),
            env=env, log=tmp_path / "head.log",
        )  # fmt: skip
        owned.append(head)
        wait_started(head, "the head node")
        run = Owned([sys.executable, "-c", PROBE, str(small_job)],
                    env={**env, "RAY_ADDRESS": f"ray://127.0.0.1:{client}"}, log=tmp_path / "run.log")  # fmt: skip
        owned.append(run)
        assert run.wait(timeout=RUN_TIMEOUT) == 0, run.tail() + log_tails(temp_dir)
        lines = [x for x in run.output().splitlines() if x.startswith("EVENTS ")]
        assert lines, run.tail()
        out = json.loads(lines[-1][len("EVENTS "):])
    finally:
        left = teardown(owned, temp_dir)
    assert not left, f"processes survived the cluster's teardown: {left}"
    assert out["exit"] == 0 and out["client"], run.tail()
    for item_id in ("a", "b", "c"):
        mine = [e for e in out["events"] if e[1] == item_id]
        frames = [e[2] for e in mine if e[0] == "frames"]
        assert mine[0][0] == "start" and mine[-1][:3] == ["end", item_id, "done"]
        assert len(frames) >= 2 and sum(frames) == mine[0][2], mine  # in steps, adding up to the clip
        first = next(e[3] for e in mine if e[0] == "frames")
        assert mine[-1][3] - first > 1.0, mine  # while the item was still being made, not all at its end
