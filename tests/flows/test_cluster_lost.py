"""A Ray head lost in the middle of a `RAY_ADDRESS=ray://… framefold run`: the run ends
soon after Ray's client gives up reconnecting, each item fails with one reason naming the
cluster (the items not yet started without touching Ray again), failures that share a
reason share a line, and the items done before the loss are kept and recorded."""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from tasks import provenance
from tests.raynodes import REPO, Owned, base_env, free_ports, head_command, kill, teardown, wait_started

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600, func_only=True),
              pytest.mark.usefixtures("one_ray_cluster_at_a_time")]

ITEMS = 10
RECONNECT_S = 30  # Ray's client waits this long for a lost head before giving up (its own grace period)


def test_a_head_lost_mid_run_fails_the_rest_with_one_reason(tmp_path: Path) -> None:
    temp_dir = Path(tempfile.mkdtemp(prefix="fflost-", dir="/tmp"))  # short: Ray's socket paths
    gcs, client, dashboard, *ports = free_ports(9)
    env = base_env(tmp_path)
    head = Owned(head_command(temp_dir, gcs=gcs, client=client, dashboard=dashboard, ports=ports,
                              resources=["--num-cpus=2"]), env=env, log=tmp_path / "head.log")  # fmt: skip
    owned = [head]
    shutil.copy(REPO / "manifests" / "examples" / "images" / "coffee.jpg", tmp_path / "coffee.jpg")
    doc = {"version": 1, "name": "lose", "output": "out",
           "defaults": {"backend": "motion", "frames": 96, "fps": 12, "size": [128, 128],
                        "window": {"length": 8, "overlap": 2}},
           "items": [{"id": f"i{n}", "image": "coffee.jpg", "seed": n} for n in range(ITEMS)]}  # fmt: skip
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(doc))
    address = f"ray://127.0.0.1:{client}"
    try:
        wait_started(head, "ray start --head")
        run = Owned([str(Path(sys.executable).with_name("framefold")), "run", str(tmp_path / "job.yaml")],
                    env={**env, "RAY_ADDRESS": address}, log=tmp_path / "run.log")  # fmt: skip
        owned.append(run)
        deadline = time.monotonic() + 240
        # an item is done once its sidecar is written (by the driver, after the worker committed its
        # files): an mp4 alone may be a finished encode whose result the head never passes back
        while not list((tmp_path / "out").glob("i*.json")) and run.proc.poll() is None:
            assert time.monotonic() < deadline, run.tail()
            time.sleep(0.2)
        assert run.proc.poll() is None, f"the run ended before the head was lost:\n{run.tail()}"
        for process in head.processes():  # the head dies: GCS, raylet, client server, workers
            kill(process)  # one that has just exited (a worker) is already gone
        t0 = time.monotonic()
        assert run.wait(timeout=RECONNECT_S + 120) == 1, run.tail()
        after = time.monotonic() - t0
        out, err = run.output(), run.err.read_text()
    finally:
        leftover = teardown(owned, temp_dir)
    assert not leftover, f"processes survived the teardown: {leftover}"

    ledger = provenance.read_ledger(tmp_path / "out").to_pylist()
    status = {r["item_id"]: r["status"] for r in ledger}
    assert set(status) == {f"i{n}" for n in range(ITEMS)}, status  # every item recorded, once
    failed = {i for i, s in status.items() if s == "failed"}

    lost = f"lost the Ray cluster at {address} (connection refused on 127.0.0.1:{client}); the items done are kept"
    lines = [line.strip() for line in out.replace("\n    ", " ").splitlines()]
    shared = [line for line in lines if lost in line]
    assert 1 <= len(shared) <= 2, out  # one line per reason: items failing in flight, items not started
    assert any(": not started: " + lost in line for line in shared), out  # items after the loss: no Ray call
    named = {i.strip() for line in shared for i in re.sub(r" \(\d+\)$", "", line.split(": ", 1)[0]).split(",")}
    assert named == failed, f"every failed item gives the lost cluster as its reason: {named} vs {failed}\n{out}"
    assert "Traceback" not in out + err and "internal error" not in out, out + err
    assert after < RECONNECT_S + 60, f"the run took {after:.0f} s to end after the head was lost"
    done = [i for i, s in status.items() if s == "done"]
    assert done and all((tmp_path / "out" / f"{i}.mp4").stat().st_size > 0 for i in done), status
    assert f"done {len(done)}, skipped 0, failed {ITEMS - len(done)}" in out, out
