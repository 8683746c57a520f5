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
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from tests.conftest import draw_image, write_manifest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

REPO = Path(__file__).resolve().parents[2]
RAY = Path(sys.executable).with_name("ray")
NODE_START_TIMEOUT = 120  # s, per node, on a busy 2-core machine
RUN_TIMEOUT = 240  # s, per framefold run (a temporary Prefect server starts in each)


# --- processes this test owns ------------------------------------------------------------
class Owned:
    """A child process started in a new session: it and everything it spawns share the
    session id (Ray workers change their process group, not their session)."""

    def __init__(self, args: list[str], *, env: dict[str, str], log: Path, cwd: Path = REPO) -> None:
        self.args = args
        self.log = log  # stdout; stderr goes to LOG.err
        self.err = log.with_name(log.name + ".err")
        self._files = [open(log, "wb"), open(self.err, "wb")]  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            args, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=self._files[0],
            stderr=self._files[1], start_new_session=True,
        )
        self.sid = self.proc.pid  # start_new_session: the child is its session's leader

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def tail(self, chars: int = 3000) -> str:
        """The end of stderr and stdout, for failure messages."""
        parts = []
        for path in (self.err, self.log):
            try:
                parts.append(path.read_text(errors="replace")[-chars:])
            except OSError:
                pass
        return "\n".join(parts)

    def wait(self, timeout: float) -> int:
        """Exit code; on timeout the whole session is killed and the test fails."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            pytest.fail(f"{' '.join(self.args[:4])} … did not finish in {timeout} s:\n{self.tail()}")

    def processes(self) -> list[psutil.Process]:
        """Live processes of this session (the leader included)."""
        return _live(p for p in psutil.process_iter() if _sid(p.pid) == self.sid)

    def stop(self) -> None:
        """SIGKILL the session: Ray drains for 30 s on SIGTERM, and a test cluster has nothing to save."""
        deadline = time.monotonic() + 15
        while (left := self.processes()) and time.monotonic() < deadline:  # a worker may fork meanwhile
            for process in left:
                _kill(process)
            time.sleep(0.2)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        for file in self._files:
            file.close()


def _sid(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except OSError:
        return None


def _live(processes) -> list[psutil.Process]:
    alive = []
    for process in processes:
        try:
            if process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
        except psutil.Error:
            pass
    return alive


def _kill(process: psutil.Process) -> None:
    try:
        process.send_signal(signal.SIGKILL)
    except psutil.Error:
        pass


def _free_ports(count: int) -> list[int]:
    """`count` distinct ports free right now on 127.0.0.1 (held together, then released)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _base_env(tmp: Path) -> dict[str, str]:
    """The environment of every child: no token auth (consistently), offline Prefect under tmp."""
    env = dict(os.environ)
    for name in ("RAY_ADDRESS", "PREFECT_API_URL", "FRAMEFOLD_RAY_ADDRESS", "FRAMEFOLD_RAY_NUM_CPUS",
                 "FRAMEFOLD_RAY_NUM_GPUS", "FRAMEFOLD_WINDOWS_IN_FLIGHT", "FRAMEFOLD_ITEMS_IN_FLIGHT"):
        env.pop(name, None)
    env.update({
        "RAY_AUTH_MODE": "disabled",
        "RAY_USAGE_STATS_ENABLED": "0",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_HOME": str(tmp / "prefect"),
        "PYTHONPATH": str(REPO),
    })
    return env


# --- the cluster -----------------------------------------------------------------------------
@dataclass(frozen=True)
class TwoNodes:
    address: str  # 127.0.0.1:PORT of the head's GCS
    head_id: str
    gpu_node_id: str
    env: dict[str, str]  # for a driver of this cluster (RAY_ADDRESS set)


def _wait_started(node: Owned, what: str) -> None:
    deadline = time.monotonic() + NODE_START_TIMEOUT
    while time.monotonic() < deadline:
        if "Ray runtime started" in node.tail(50_000):
            return
        if node.proc.poll() is not None:
            pytest.fail(f"{what} exited with {node.proc.returncode}:\n{node.tail()}")
        time.sleep(0.5)
    pytest.fail(f"{what} did not start in {NODE_START_TIMEOUT} s:\n{node.tail()}")


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
    env = _base_env(tmp_path)
    owned: list[Owned] = []
    failure: BaseException | None = None
    gcs, dashboard, *node_ports = _free_ports(2 + 2 * 6)

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
        _wait_started(head, "the head node")
        address = f"127.0.0.1:{gcs}"
        gpu_node = Owned(
            [str(RAY), "start", f"--address={address}", "--num-cpus=2", "--num-gpus=2", '--resources={"node2": 1}',
             "--memory=2000000000", "--object-store-memory=200000000", *ports(1), *common],
            env=env, log=tmp_path / "node2.log",
        )
        owned.append(gpu_node)
        _wait_started(gpu_node, "the GPU node")

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
        for process in reversed(owned):
            process.stop()
        # Belt and braces: anything still naming our temp dir is ours too.
        strays = _live(p for p in psutil.process_iter() if _names(p, str(temp_dir)))
        for process in strays:
            _kill(process)
        survivors = _survivors(owned, str(temp_dir))
        shutil.rmtree(temp_dir, ignore_errors=True)
        if strays or survivors:
            message = f"processes survived the cluster's teardown: {strays + survivors}"
            if failure is not None:
                failure.add_note(message)
            else:
                pytest.fail(message)


def _names(process: psutil.Process, text: str) -> bool:
    try:
        return any(text in arg for arg in process.cmdline())
    except psutil.Error:
        return False


def _survivors(owned: list[Owned], temp_dir: str, wait: float = 10.0) -> list[psutil.Process]:
    deadline = time.monotonic() + wait
    while True:
        left = [p for o in owned for p in o.processes()]
        left += _live(p for p in psutil.process_iter() if _names(p, temp_dir) and p not in left)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


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
    local_env = {**_base_env(tmp_path / "local"), "FRAMEFOLD_RAY_NUM_GPUS": "2", "FRAMEFOLD_RAY_NUM_CPUS": "2"}
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
