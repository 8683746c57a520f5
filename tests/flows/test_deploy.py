"""Deployments against a real Prefect server (a subprocess on 127.0.0.1, SQLite in a tmp
dir): `framefold serve` registers the nightly schedule with its timezone and a
CANCEL_NEW concurrency limit, and runs a flow run triggered through the REST API (its
own local Ray, in the served process tree); a second, overlapping run is cancelled.

The session fixtures `ray_cluster` / `prefect_server` are deliberately not used: every
Prefect and Ray process here is a subprocess, stopped (and checked gone) at the end.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from flows.deploy import CATALOG, LOOPS, LOOPS_CRON, NIGHTLY, NIGHTLY_CRON, deployments
from tests.conftest import draw_image, write_manifest

FLOW = "framefold-run"
SERVER_START_TIMEOUT = 120  # healthy after ~18 s on an idle 2-core machine
SERVE_START_TIMEOUT = 120  # imports Prefect, Ray, torch; registers three deployments
RUN_TIMEOUT = 240
STOP_GRACE = 40  # a Prefect process may take ~35 s to honour SIGTERM


# -- the declaration itself (no server) --------------------------------------------------


def test_deployments_are_declared_once_with_schedules_and_limits(tmp_path):
    nightly, loops_a, loops_b, catalog = (tmp_path / f"{n}.yaml" for n in ("n", "a", "b", "c"))
    deps = {d.name: d for d in deployments(nightly=nightly, loops=[loops_a, loops_b], catalog=catalog)}
    assert list(deps) == [NIGHTLY, LOOPS, CATALOG]
    assert {d.entrypoint for d in deps.values()} == {"flows.run.run_manifest"}

    n = deps[NIGHTLY]
    assert [(s.schedule.cron, s.schedule.timezone) for s in n.schedules] == [(NIGHTLY_CRON, "Europe/Berlin")]
    assert n.parameters == {"manifest": str(nightly)}
    assert (n.concurrency_limit, n.concurrency_options.collision_strategy.value) == (1, "CANCEL_NEW")

    lp = deps[LOOPS]  # one weekly schedule per manifest, each with its own parameters
    assert [(s.schedule.cron, s.parameters) for s in lp.schedules] == [
        (LOOPS_CRON, {"manifest": str(loops_a)}), (LOOPS_CRON, {"manifest": str(loops_b)})
    ]
    assert len({s.slug for s in lp.schedules}) == 2
    assert (lp.concurrency_limit, lp.concurrency_options.collision_strategy.value) == (1, "ENQUEUE")

    assert deps[CATALOG].schedules == [] and deps[CATALOG].parameters == {"manifest": str(catalog)}


def test_relative_manifest_paths_become_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (d,) = [d for d in deployments(nightly="n.yaml", loops=["l.yaml"], catalog="c.yaml") if d.name == NIGHTLY]
    assert d.parameters == {"manifest": str(tmp_path / "n.yaml")}


# -- the command line on bad input --------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["serve", "--timezone", "Mars/Olympus"], "--timezone: expected an IANA timezone name"),
        (["serve", "--nightly-cron", "every night"], "--nightly-cron: expected a cron expression"),
        (["deploy", "--pool", "p", "--loops-cron", "0 25 * * *"], "--loops-cron: expected a cron expression"),
        (["serve", "--nightly", "missing.yaml"], "missing.yaml: manifest not found"),
    ],
    ids=["timezone", "cron", "deploy-cron", "missing-manifest"],
)
def test_bad_schedule_arguments_exit_2_before_contacting_prefect(tmp_path, monkeypatch, capsys, args, message):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.cli import main

    monkeypatch.chdir(tmp_path)
    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}):  # nothing listens there
        assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "api_url", "message"),
    [
        (["serve"], None, "PREFECT_API_URL is not set"),
        (["deploy", "--pool", "p"], None, "PREFECT_API_URL is not set"),
        (["serve"], "http://127.0.0.1:9/api", "no Prefect server answers at PREFECT_API_URL=http://127.0.0.1:9/api"),
    ],
    ids=["serve-no-api-url", "deploy-no-api-url", "no-server"],
)
def test_serve_needs_a_reachable_prefect_server(tmp_path, args, api_url, message):
    # A subprocess: in this process a Prefect test harness may have set an API URL.
    env = _env(tmp_path / "home", PREFECT_API_URL=api_url)
    proc = subprocess.run(_framefold(*args), env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


# -- against a real server -----------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A Prefect server subprocess on a free local port; yields its API URL."""
    root = tmp_path_factory.mktemp("prefect-server")
    port = _free_port()
    env = _env(
        root / "home",
        PREFECT_API_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{root / 'prefect.db'}",
        PREFECT_UI_ENABLED="false",
    )
    log = root / "server.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=env, cwd=root, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}/api"
    try:
        _wait(lambda: _get(f"{url}/health") is not None, SERVER_START_TIMEOUT, "Prefect server health", proc, log)
        yield url
    finally:
        _stop(proc, root / "home")


@pytest.mark.slow
def test_serve_runs_the_nightly_deployment_and_cancels_an_overlapping_run(server, tmp_path):
    manifest = _tiny_manifest(tmp_path / "job")
    log = tmp_path / "serve.log"
    home = tmp_path / "serve-home"
    env = _env(
        home,
        PREFECT_API_URL=server,
        PREFECT_RUNNER_POLL_FREQUENCY="2",  # default 10 s
        PREFECT_LOGGING_LEVEL="INFO",
    )
    # A cron that fires once a year, so no scheduled run can join the two triggered below.
    cmd = _framefold("serve", "--nightly", str(manifest), "--timezone", "America/New_York",
                     "--nightly-cron", "0 2 1 1 *")
    with log.open("wb") as sink:
        serve = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=sink, stderr=subprocess.STDOUT,
                                 start_new_session=True)
    try:
        # 1. The deployment as registered on the server.
        name_url = f"{server}/deployments/name/{FLOW}/{NIGHTLY}"
        _wait(lambda: _get(name_url) is not None, SERVE_START_TIMEOUT, "nightly deployment", serve, log)
        dep = _get(name_url)
        assert [(s["schedule"]["cron"], s["schedule"]["timezone"], s["active"]) for s in dep["schedules"]] == [
            ("0 2 1 1 *", "America/New_York", True)
        ]
        assert dep["global_concurrency_limit"]["limit"] == 1
        assert dep["concurrency_options"]["collision_strategy"] == "CANCEL_NEW"
        assert dep["parameters"] == {"manifest": str(manifest)}
        assert dep["entrypoint"] == "flows.run.run_manifest"
        assert dep["paused"] is False

        # 2. Two runs at once: one runs, the other is refused (cancelled, not queued).
        # (idempotency keys: a request retried after a 503 must not create a third run)
        runs = [_post(f"{server}/deployments/{dep['id']}/create_flow_run", {"idempotency_key": f"overlap-{i}"})["id"]
                for i in range(2)]
        states = {}

        def finished() -> bool:
            for run_id in runs:
                states[run_id] = _get(f"{server}/flow_runs/{run_id}")["state"]
            return all(s["type"] in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"} for s in states.values())

        _wait(finished, RUN_TIMEOUT, "both flow runs to finish", serve, log)
        by_type = {s["type"]: s for s in states.values()}
        assert sorted(s["type"] for s in states.values()) == ["CANCELLED", "COMPLETED"], _tail(log)
        assert "concurrency limit" in by_type["CANCELLED"]["message"]

        # 3. The completed run's outputs: an mp4 and a sidecar per item.
        out = tmp_path / "job" / "out"
        for item in ("a", "b"):
            assert (out / f"{item}.mp4").stat().st_size > 0
            assert json.loads((out / f"{item}.json").read_text())["item"]["id"] == item

        # 4. The flow run's process (and the Ray it started) ends with the run ...
        _wait(lambda: not _descendants(serve.pid), 60, "the flow run process to exit", serve, log)
        # ... and stopped gracefully, serve pauses its schedules (nothing would run them)
        # and leaves no process behind.
        assert _stop(serve, home) == ("terminated", []), _tail(log)
        assert _get(name_url)["paused"] is True
    finally:
        _stop(serve, home)


@pytest.mark.slow
def test_deploy_registers_the_deployments_on_a_process_pool(server, tmp_path, monkeypatch, capsys):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.cli import main

    manifest = _tiny_manifest(tmp_path / "job")
    monkeypatch.setenv("FRAMEFOLD_ITEMS_IN_FLIGHT", "3")
    with temporary_settings({PREFECT_API_URL: server}):
        assert main(["deploy", "--pool", "no-such-pool", "--nightly", str(manifest)]) == 2
        err = capsys.readouterr().err
        assert "prefect work-pool create no-such-pool --type process" in err and "Traceback" not in err

        _post(f"{server}/work_pools/", {"name": "framefold-test", "type": "process"})
        assert main(["deploy", "--pool", "framefold-test", "--nightly", str(manifest)]) == 0

    for name in (NIGHTLY, LOOPS, CATALOG):
        dep = _get(f"{server}/deployments/name/{FLOW}/{name}")
        assert dep["work_pool_name"] == "framefold-test"
        assert dep["entrypoint"] == "flows.run.run_manifest"
        assert dep["job_variables"] == {"env": {"PREFECT_TASKS_RUNNER_THREAD_POOL_MAX_WORKERS": "3"}}
    assert _get(f"{server}/deployments/name/{FLOW}/{NIGHTLY}")["parameters"] == {"manifest": str(manifest)}


# -- helpers -------------------------------------------------------------------------------


def _tiny_manifest(folder: Path) -> Path:
    """2 items, 32×32, 16 frames (built like conftest's small_job)."""
    draw_image(folder / "img" / "a.png", (48, 40), seed=1)
    draw_image(folder / "img" / "b.jpg", (40, 48), seed=2)
    doc = {
        "version": 1,
        "name": "tiny-nightly",
        "output": "out",
        "defaults": {
            "backend": "motion", "seed": 5, "fps": 8, "frames": 16, "size": [32, 32],
            "window": {"length": 8, "overlap": 2}, "motion": {"amplitude": 0.03},
        },
        "items": [{"id": "a", "image": "img/a.png"}, {"id": "b", "image": "img/b.jpg", "loop": True}],
    }
    return write_manifest(folder, doc).resolve()


def _framefold(*args: str) -> list[str]:
    return [sys.executable, "-m", "flows.cli", *args]


def _env(home: Path, **settings: str | None) -> dict[str, str]:
    """This environment minus any Prefect or Ray configuration of the test process,
    plus a private PREFECT_HOME, one local Ray CPU and the given settings."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PREFECT_") and k not in {"RAY_ADDRESS", "FRAMEFOLD_RAY_ADDRESS"}}
    home.mkdir(parents=True, exist_ok=True)
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        RAY_USAGE_STATS_ENABLED="0",
        FRAMEFOLD_RAY_NUM_CPUS="1",
    )
    env.update({k: v for k, v in settings.items() if v is not None})
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> dict | None:
    """The JSON at ``url``, or None while it is not there (404, nothing listening)."""
    try:
        r = _request("GET", url)
    except httpx.TransportError:
        return None
    return None if r.status_code == 404 else r.raise_for_status().json()


def _post(url: str, body: dict) -> dict:
    return _request("POST", url, json=body).raise_for_status().json()


def _request(method: str, url: str, **kwargs) -> httpx.Response:
    """One request, retried while a busy server answers 502/503/504 (SQLite under load);
    connection errors are raised at once (callers poll for a server that is starting)."""
    for delay in (1, 2, 4, 8, 16, 0):
        r = httpx.request(method, url, timeout=30, **kwargs)
        if r.status_code not in {502, 503, 504} or not delay:
            return r
        time.sleep(delay)
    raise AssertionError("unreachable")


def _wait(ready, timeout: float, what: str, proc: subprocess.Popen, log: Path) -> None:
    """Poll ``ready()`` until true; fail early, with the log, if ``proc`` dies."""
    deadline = time.monotonic() + timeout
    while True:
        if ready():
            return
        if proc.poll() is not None:
            pytest.fail(f"{what}: process exited with {proc.returncode}\n{_tail(log)}")
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not ready after {timeout} s\n{_tail(log)}")
        time.sleep(1)


def _tail(log: Path, lines: int = 60) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""


def _stop(proc: subprocess.Popen, home: Path) -> tuple[str, list[str]]:
    """SIGTERM, then SIGKILL after a grace period; then kill whatever it started: its
    process group, descendants seen before the signal, and any process still carrying
    its PREFECT_HOME (a Ray node orphaned by a flow run would). Returns how it ended
    ("terminated" on SIGTERM, "killed", "gone" before) and what had to be killed after."""
    family = _descendants(proc.pid)
    if proc.poll() is not None:
        outcome = "gone"
    else:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_GRACE)
            outcome = "terminated"
        except subprocess.TimeoutExpired:
            outcome = "killed"
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # start_new_session: the group id is the pid
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait(30)
    leftovers = {p.pid: p for p in [*family, *_carrying(home)] if p.is_running()}
    for p in leftovers.values():
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(list(leftovers.values()), timeout=30)
    assert not alive, f"could not stop {alive}"
    return outcome, [" ".join(_cmdline(p)[:3]) for p in leftovers.values()]


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _carrying(home: Path) -> list[psutil.Process]:
    """Processes whose environment has PREFECT_HOME=home (every process a test started)."""
    found = []
    for p in psutil.process_iter():
        try:
            if p.pid != os.getpid() and p.environ().get("PREFECT_HOME") == str(home):
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return found


def _cmdline(p: psutil.Process) -> list[str]:
    try:
        return p.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return [str(p.pid)]
