"""Prefect's temporary server does not outlive a killed run (flows/ephemeral.py)."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from flows.ephemeral import MARKER, TOKEN_VAR, _tied_program, stop, tied_processes
from tests.conftest import draw_image, write_manifest
from tests.reliability.conftest import child_env

REPO = Path(__file__).resolve().parents[2]


def _sleeper(*extra: str, token: str | None = None, name: str | None = None) -> subprocess.Popen:
    """A process that sleeps, with ``extra`` on its command line and ``name`` as its argv[0]."""
    env = dict(os.environ) | ({TOKEN_VAR: token} if token else {})
    return subprocess.Popen([name or sys.executable, "-c", "import time; time.sleep(120)", *extra], env=env,
                            executable=sys.executable)


def test_what_counts_as_a_ray_process():
    ray = str(Path(importlib.util.find_spec("ray").origin).parent)
    assert _tied_program([f"{ray}/core/src/ray/gcs/gcs_server", "--log_dir=/tmp/x"])  # GCS, raylet: binaries
    assert _tied_program([sys.executable, "-u", f"{ray}/dashboard/agent.py", "--node-ip-address=127.0.0.1"])
    assert _tied_program(["ray::RuntimeEnvAgent"])  # an agent or worker once it has renamed itself
    assert not _tied_program([sys.executable, "-c", "import ray"])
    assert not _tied_program([f"{ray}tracer/bin/x"])  # a neighbour whose name starts like Ray's folder


def test_the_watchdog_stops_its_runs_server_once_its_pipe_closes_and_nothing_else():
    server = _sleeper(MARKER, token="t1")  # a stand-in: the server's command line, the run's token
    ray_worker = _sleeper(token="t1", name="ray::IDLE")  # a Ray worker of the run's own node, renamed as Ray does
    other_run = _sleeper(MARKER, token="t2")  # another run's server
    other_ray = _sleeper(token="t2", name="ray::IDLE")
    not_a_server = _sleeper("some.other.program", token="t1")  # the run's token, another program
    procs = (server, ray_worker, other_run, other_ray, not_a_server)
    dog = subprocess.Popen([sys.executable, "-m", "flows.ephemeral", "t1"], stdin=subprocess.PIPE, cwd=REPO)
    try:
        # it waits on its pipe: its stdin read blocks (a watchdog that does not wait would be gone)
        deadline = time.monotonic() + 60
        while "flows.ephemeral" not in " ".join(psutil.Process(dog.pid).cmdline()) or \
                psutil.Process(dog.pid).status() != psutil.STATUS_SLEEPING:
            assert time.monotonic() < deadline and dog.poll() is None, "the watchdog did not wait on its pipe"
            time.sleep(0.1)
        time.sleep(1)
        assert dog.poll() is None and all(p.poll() is None for p in procs)
        dog.stdin.close()  # what the kernel does when the run ends, however it ends
        assert dog.wait(timeout=30) == 0
        assert server.wait(timeout=10) == -signal.SIGTERM and ray_worker.wait(timeout=10) == -signal.SIGTERM
        assert other_run.poll() is None and other_ray.poll() is None and not_a_server.poll() is None
    finally:
        for p in (*procs, dog):
            p.kill()
            p.wait()


def test_an_agent_whose_environment_no_longer_shows_the_token_is_known_by_its_parent():
    """A Ray agent renames itself, which overwrites the environment /proc shows (the token with
    it): the watchdog finds it while the run lives, as a child of the run's raylet, and still
    stops it once the raylet is gone."""
    agent_code = "import time; time.sleep(120)"
    code = (f"import os, subprocess, time; env = {{k: v for k, v in os.environ.items() if k != {TOKEN_VAR!r}}}; "
            f"p = subprocess.Popen(['ray::DashboardAgent', '-c', {agent_code!r}], executable={sys.executable!r}, "
            f"env=env); print(p.pid, flush=True); time.sleep(120)")
    raylet = subprocess.Popen(["ray::raylet", "-c", code], executable=sys.executable, stdout=subprocess.PIPE,
                              env=dict(os.environ) | {TOKEN_VAR: "t9"}, text=True)
    agent = psutil.Process(int(raylet.stdout.readline()))
    try:
        seen: dict[int, int] = {}
        assert sorted(tied_processes("t9", seen)) == sorted([raylet.pid, agent.pid])  # by its parent
        raylet.kill()
        raylet.wait()
        assert tied_processes("t9") == []  # orphaned, without the token: a scan now would miss it
        assert tied_processes("t9", seen) == [agent.pid]  # still the same process the watchdog saw: still tied
        assert stop("t9", grace_s=5, seen=seen) == [agent.pid]
        agent.wait(timeout=10)  # ended (not our child: psutil cannot tell by what)
        assert not agent.is_running()
    finally:
        with contextlib.suppress(psutil.NoSuchProcess):
            agent.kill()
        raylet.kill()
        raylet.wait()


def _manifest(tmp_path: Path) -> Path:
    for n in range(3):
        draw_image(tmp_path / "img" / f"{n}.png", (64, 48), seed=n)
    doc = {"version": 1, "name": "killed", "output": "out",
           "defaults": {"frames": 240, "fps": 12, "size": [64, 64], "window": {"length": 8, "overlap": 2}},
           "items": [{"id": f"i{n}", "image": f"img/{n}.png"} for n in range(3)]}  # fmt: skip
    return write_manifest(tmp_path, doc)


@pytest.mark.slow
def test_a_killed_run_leaves_no_prefect_server(tmp_path, shared):
    manifest = _manifest(tmp_path)
    env = child_env(tmp_path, RAY_ADDRESS=shared.ray_address)  # no PREFECT_API_URL: a temporary server
    run = subprocess.Popen([sys.executable, "-m", "flows.cli", "run", str(manifest)], env=env, cwd=REPO,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    server = None
    try:
        deadline = time.monotonic() + 180
        while server is None and run.poll() is None and time.monotonic() < deadline:
            server = next((c for c in psutil.Process(run.pid).children()
                           if MARKER in " ".join(c.cmdline())), None)  # fmt: skip
            time.sleep(0.2)
        assert server is not None, f"no temporary server seen (run exit {run.poll()})"
        time.sleep(2)  # the run is under way
        assert run.poll() is None, "the run ended before it could be killed"
        os.kill(run.pid, signal.SIGKILL)
        run.wait(timeout=30)
        gone, alive = psutil.wait_procs([server], timeout=30)
        assert not alive, f"the temporary Prefect server (pid {server.pid}) outlived the killed run"
    finally:
        if run.poll() is None:
            run.kill()
        if server is not None and server.is_running():
            server.kill()


_AGENTS = (os.path.join("dashboard", "agent.py"), os.path.join("runtime_env", "agent", "main.py"))


@pytest.mark.slow
def test_a_killed_run_leaves_nothing_of_its_own_ray(tmp_path, shared):
    """A run that started a Ray node of its own (no cluster address; reporting to a Prefect
    server, so no temporary one), killed as that node's agents start: every process the run
    started (its node's GCS, raylet, agents and workers, their ffmpegs, its watchdog) is gone
    within 30 s. Ray's GCS and raylet die with their parent; agents killed while they start took
    75-80 s to notice on their own."""
    env = child_env(tmp_path, PREFECT_API_URL=shared.prefect_api_url)  # no RAY_ADDRESS
    run = subprocess.Popen([sys.executable, "-m", "flows.cli", "run", str(_manifest(tmp_path))], env=env, cwd=REPO,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    started: list[psutil.Process] = []

    def descendants() -> list[psutil.Process]:
        with contextlib.suppress(psutil.NoSuchProcess):
            return psutil.Process(run.pid).children(recursive=True)
        return []

    def agents() -> int:  # the dashboard and runtime-env agents, by their script or by their new name
        count = 0
        for process in started:
            with contextlib.suppress(psutil.Error):
                count += any(a.endswith(_AGENTS) or a.startswith(("ray::DashboardAgent", "ray::RuntimeEnvAgent"))
                             for a in process.cmdline())
        return count

    try:
        deadline = time.monotonic() + 180
        while run.poll() is None and time.monotonic() < deadline and agents() < 2:
            started = descendants()
            time.sleep(0.1)
        assert agents() == 2, f"the run's Ray agents did not start (run exit {run.poll()})"
        time.sleep(2)  # the agents are starting: left alone, they notice their node is gone a minute later
        assert run.poll() is None, f"the run ended (exit {run.poll()}) before it could be killed"
        started = descendants()  # with the workers started meanwhile
        os.kill(run.pid, signal.SIGKILL)
        run.wait(timeout=30)
        gone, alive = psutil.wait_procs(started, timeout=30)
        assert not alive, f"processes of the killed run outlived it: {[p.pid for p in alive]}"
    finally:
        for p in (run, *started):
            with contextlib.suppress(psutil.NoSuchProcess, ProcessLookupError):
                p.kill()


_EARLY = """
import os, sys
from flows.ephemeral import TOKEN_VAR, start_early, tie, tied_processes
from prefect.client.orchestration import get_client
from prefect.server.api.server import SubprocessASGIServer

tie()
start_early().join()
started = SubprocessASGIServer().api_url
with get_client(sync_client=True) as client:  # what a flow run's first API call does
    client.hello().raise_for_status()
    used = str(client.api_url).rstrip("/")
ours = []  # servers this process started (a server's own short-lived forks carry its token too)
for pid in tied_processes(os.environ[TOKEN_VAR]):
    try:
        with open(f"/proc/{pid}/stat") as f:
            if int(f.read().rsplit(")", 1)[1].split()[1]) == os.getpid():
                ours.append(pid)
    except OSError:
        pass
print(started, used, len(ours), SubprocessASGIServer().server_process.pid in ours)
"""


def test_a_server_started_early_is_the_one_prefects_client_uses(tmp_path):
    env = child_env(tmp_path)
    env.pop("PREFECT_API_URL", None)
    out = subprocess.run([sys.executable, "-c", _EARLY], env=env, cwd=REPO, capture_output=True, text=True,
                         timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    started, used, count, same = out.stdout.split()
    assert started == used and count == "1" and same == "True", out.stdout  # one server, up before the client asked


def test_a_runs_token_stays_with_its_own_processes(monkeypatch, tmp_path):
    """The token is not a FRAMEFOLD_* setting: neither the workers that finish a run's items
    (what they start is not the run's to stop) nor a Ray Job take it; and what a process starts
    after its run (a `ray start` in a notebook) does not carry it."""
    from flows.ephemeral import tied
    from flows.submit import job_for
    from tasks.finish import driver_limits

    monkeypatch.setenv("FRAMEFOLD_STORE_RETRIES", "2")
    monkeypatch.delenv(TOKEN_VAR, raising=False)
    with tied():
        token = os.environ[TOKEN_VAR]
        assert driver_limits()["env"].get("FRAMEFOLD_STORE_RETRIES") == "2"
        assert TOKEN_VAR not in driver_limits()["env"]
        job = job_for(write_manifest(tmp_path, {"version": 1, "name": "j", "output": "out", "items": []}))
        assert TOKEN_VAR not in str(job.runtime_env) and token not in str(job.runtime_env)
    assert TOKEN_VAR not in os.environ
    with tied():  # the same watchdog, the same token, for a second run of this process
        assert os.environ[TOKEN_VAR] == token
