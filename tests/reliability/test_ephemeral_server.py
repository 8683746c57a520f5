"""Prefect's temporary server does not outlive a killed run (flows/ephemeral.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from flows.ephemeral import MARKER, TOKEN_VAR
from tests.conftest import draw_image, write_manifest
from tests.reliability.conftest import child_env

REPO = Path(__file__).resolve().parents[2]


def _sleeper(*extra: str, token: str | None = None) -> subprocess.Popen:
    env = dict(os.environ) | ({TOKEN_VAR: token} if token else {})
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", *extra], env=env)


def test_the_watchdog_stops_its_runs_server_once_its_pipe_closes_and_nothing_else():
    server = _sleeper(MARKER, token="t1")  # a stand-in: the server's command line, the run's token
    other_run = _sleeper(MARKER, token="t2")  # another run's server
    not_a_server = _sleeper("some.other.program", token="t1")  # the run's token, another program
    procs = (server, other_run, not_a_server)
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
        assert server.wait(timeout=10) == -signal.SIGTERM
        assert other_run.poll() is None and not_a_server.poll() is None
    finally:
        for p in (*procs, dog):
            p.kill()
            p.wait()


@pytest.mark.slow
def test_a_killed_run_leaves_no_prefect_server(tmp_path, shared):
    for n in range(3):
        draw_image(tmp_path / "img" / f"{n}.png", (64, 48), seed=n)
    doc = {"version": 1, "name": "killed", "output": "out",
           "defaults": {"frames": 240, "fps": 12, "size": [64, 64], "window": {"length": 8, "overlap": 2}},
           "items": [{"id": f"i{n}", "image": f"img/{n}.png"} for n in range(3)]}  # fmt: skip
    manifest = write_manifest(tmp_path, doc)
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


_EARLY = """
import os, sys
from flows.ephemeral import TOKEN_VAR, servers, start_early, tie
from prefect.client.orchestration import get_client
from prefect.server.api.server import SubprocessASGIServer

tie()
start_early().join()
started = SubprocessASGIServer().api_url
with get_client(sync_client=True) as client:  # what a flow run's first API call does
    client.hello().raise_for_status()
    used = str(client.api_url).rstrip("/")
ours = []  # servers this process started (a server's own short-lived forks carry its token too)
for pid in servers(os.environ[TOKEN_VAR]):
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
