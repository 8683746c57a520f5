"""Deployments against a real Prefect server (a subprocess on 127.0.0.1, SQLite in a tmp
dir): `framefold deploy MANIFEST --name N --cron C` registers one deployment per call (two
manifests, two crons, UTC unless told); `framefold serve` registers one with its timezone and
a CANCEL_NEW concurrency limit and runs a flow run triggered through the REST API (its own
local Ray, in the served process tree); a second, overlapping run is cancelled. A run with a
failed item ends FAILED on the server, with its summary and contact sheet as artifacts.

The session fixtures `ray_cluster` / `prefect_server` are deliberately not used: every
Prefect and Ray process here is a subprocess, stopped (and checked gone) at the end.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from flows.deploy import DEFAULT_TIMEZONE, deployment
from tests.conftest import draw_image, prefect_home, write_manifest

FLOW = "framefold-run"
README = Path(__file__).resolve().parents[2] / "README.md"
README_PORT = "4200"  # the recipe's port; the tests substitute a free one
SERVER_START_TIMEOUT = 120  # healthy after ~18 s on an idle 2-core machine
SERVE_START_TIMEOUT = 120  # imports Prefect, Ray, torch; registers the deployment
RUN_TIMEOUT = 240
STOP_GRACE = 40  # a Prefect process may take ~35 s to honour SIGTERM


# -- the declaration itself (no server) --------------------------------------------------


def test_a_deployment_runs_one_manifest_on_its_cron_in_utc_by_default(tmp_path):
    d = deployment(tmp_path / "spring.yaml", name="spring-loops", cron="0 5 * * 1")
    assert DEFAULT_TIMEZONE == "UTC"
    assert (d.name, d.entrypoint) == ("spring-loops", "flows.run.run_manifest")
    assert [(s.schedule.cron, s.schedule.timezone) for s in d.schedules] == [("0 5 * * 1", "UTC")]
    assert d.parameters == {"manifest": str(tmp_path / "spring.yaml")}
    assert (d.concurrency_limit, d.concurrency_options.collision_strategy.value) == (1, "CANCEL_NEW")


def test_without_cron_a_deployment_is_on_demand_and_paths_become_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    d = deployment("n.yaml", name="catalog", output="out/x", timezone="Europe/Berlin")
    assert d.schedules == []
    assert d.parameters == {"manifest": str(tmp_path / "n.yaml"), "output": str(tmp_path / "out" / "x")}
    assert deployment("s3://bucket/job.yaml", name="b").parameters == {"manifest": "s3://bucket/job.yaml"}


# -- the command line on bad input --------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["serve", "job.yaml", "--name", "n", "--timezone", "Mars/Olympus"], "--timezone: expected an IANA timezone name"),
        (["serve", "job.yaml", "--name", "n", "--cron", "every night"], "--cron: expected a cron expression"),
        (["deploy", "job.yaml", "--name", "n", "--cron", "0 25 * * *"], "--cron: expected a cron expression"),
        (["deploy", "job.yaml", "--name", "a b", "--cron", "0 2 * * *"], "--name: expected letters, digits"),
        (["serve", "missing.yaml", "--name", "n"], "missing.yaml: manifest not found"),
    ],
    ids=["timezone", "cron", "deploy-cron", "name", "missing-manifest"],
)
def test_bad_schedule_arguments_exit_2_before_contacting_prefect(tmp_path, monkeypatch, capsys, args, message):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.cli import main

    monkeypatch.chdir(tmp_path)
    _tiny_manifest(tmp_path)
    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}):  # nothing listens there
        assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "api_url", "message"),
    [
        (["serve", "job.yaml", "--name", "n"], None, "PREFECT_API_URL is not set"),
        (["deploy", "job.yaml", "--name", "n"], None, "PREFECT_API_URL is not set"),
        (["serve", "job.yaml", "--name", "n"], "http://127.0.0.1:9/api",
         "no Prefect server answers at PREFECT_API_URL=http://127.0.0.1:9/api"),
    ],
    ids=["serve-no-api-url", "deploy-no-api-url", "no-server"],
)
def test_serve_needs_a_reachable_prefect_server(tmp_path, args, api_url, message):
    # A subprocess: in this process a Prefect test harness may have set an API URL.
    _tiny_manifest(tmp_path)
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
    # the README's command (Schedules), on a free port
    (start, *_) = _readme_schedules_commands()
    assert start[start.index("--port") + 1] == README_PORT
    start[start.index("--port") + 1] = str(port)
    log = root / "server.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(_command(start, env), env=env, cwd=root, stdout=sink, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
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
    cmd = _framefold("serve", str(manifest), "--name", "nightly", "--timezone", "America/New_York",
                     "--cron", "0 2 1 1 *")
    with log.open("wb") as sink:
        serve = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=sink, stderr=subprocess.STDOUT,
                                 start_new_session=True)
    try:
        # 1. The deployment as registered on the server.
        name_url = f"{server}/deployments/name/{FLOW}/nightly"
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
def test_deploy_registers_one_deployment_per_manifest_with_its_cron(server, tmp_path, monkeypatch, capsys):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.cli import main

    spring, catalog = _tiny_manifest(tmp_path / "spring"), _tiny_manifest(tmp_path / "catalog")
    monkeypatch.setenv("FRAMEFOLD_ITEMS_IN_FLIGHT", "3")
    with temporary_settings({PREFECT_API_URL: server}):
        # a pool named on purpose must exist; the default one is created
        assert main(["deploy", str(spring), "--name", "spring", "--pool", "no-such-pool"]) == 2
        err = capsys.readouterr().err
        assert "prefect work-pool create no-such-pool --type process" in err and "Traceback" not in err

        assert main(["deploy", str(spring), "--name", "spring-loops", "--cron", "0 5 * * 1"]) == 0
        assert main(["deploy", "--cron", "30 1 * * *", str(catalog), "--name", "catalog-nightly",
                     "--timezone", "Europe/Berlin", "--out", str(tmp_path / "night-out")]) == 0
    printed = capsys.readouterr().out
    assert "framefold-run/spring-loops" in printed and "0 5 * * 1 (UTC)" in printed

    pool = _get(f"{server}/work_pools/framefold")
    assert pool["type"] == "process"
    expected = {
        "spring-loops": ("0 5 * * 1", "UTC", {"manifest": str(spring)}),
        "catalog-nightly": ("30 1 * * *", "Europe/Berlin",
                            {"manifest": str(catalog), "output": str(tmp_path / "night-out")}),
    }
    for name, (cron, tz, parameters) in expected.items():
        dep = _get(f"{server}/deployments/name/{FLOW}/{name}")
        assert [(s["schedule"]["cron"], s["schedule"]["timezone"], s["active"]) for s in dep["schedules"]] == [
            (cron, tz, True)]
        assert dep["parameters"] == parameters
        assert dep["work_pool_name"] == "framefold"
        assert dep["entrypoint"] == "flows.run.run_manifest"
        assert dep["job_variables"] == {"env": {"PREFECT_TASKS_RUNNER_THREAD_POOL_MAX_WORKERS": "3"}}
    # nothing else was scheduled: no example manifests, no implicit deployments
    listed = _post(f"{server}/deployments/filter", {"flows": {"name": {"any_": [FLOW]}}})
    names = {d["name"] for d in listed}
    assert {"spring-loops", "catalog-nightly"} <= names <= {"spring-loops", "catalog-nightly", "nightly", "catalog"}


@pytest.mark.slow
def test_a_run_with_a_failed_item_ends_failed_on_the_server(server, tmp_path):
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from prefect.settings import PREFECT_API_URL, temporary_settings

    # The README's notification recipe, with a webhook block that posts to this test.
    received: list[str] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            received.append(self.rfile.read(int(self.headers["Content-Length"])).decode())
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    hook = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    with temporary_settings({PREFECT_API_URL: server}):
        block_id = CustomWebhookNotificationBlock(
            name="test-hook", url=f"http://127.0.0.1:{hook.server_port}/hook",
            json_data={"subject": "{{subject}}", "body": "{{body}}"},
        ).save("framefold-test-hook", overwrite=True)
    recipe = (Path(__file__).parents[2] / "infra" / "automation-failed-run.yaml").read_text()
    (tmp_path / "automation.yaml").write_text(recipe.replace("BLOCK_ID", str(block_id)))
    env = _env(tmp_path / "home", PREFECT_API_URL=server)
    created = subprocess.run([sys.executable, "-m", "prefect", "automation", "create", "--from-file",
                              str(tmp_path / "automation.yaml")], env=env, capture_output=True, text=True, timeout=120)
    assert created.returncode == 0, created.stdout + created.stderr

    manifest = _tiny_manifest(tmp_path / "job")
    blocked = tmp_path / "job" / "out" / "b.mp4"  # a folder where b's video goes: b fails at run time, a does not
    (blocked / "keep").mkdir(parents=True)
    proc = subprocess.run(_framefold("run", str(manifest), "--json"), env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=RUN_TIMEOUT + 60)
    assert proc.returncode == 1, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["counts"] == {"done": 1, "skipped": 0, "failed": 1}
    assert (tmp_path / "job" / "out" / "a.mp4").stat().st_size > 0  # the other item's output is kept

    run = _get(f"{server}/flow_runs/{summary['flow_run_id']}")
    assert run["state"]["type"] == "FAILED"
    assert run["state"]["message"] == "1 of 2 item(s) failed: b"
    artifacts = {a["key"]: a for a in _post(f"{server}/artifacts/filter",
                                            {"artifacts": {"flow_run_id": {"any_": [summary["flow_run_id"]]}}})}
    assert {"framefold-summary", "framefold-items", "framefold-contact-sheet"} <= set(artifacts)
    assert "failed **1**" in artifacts["framefold-summary"]["data"] and "`b`" in artifacts["framefold-summary"]["data"]
    assert "](data:image/jpeg;base64," in artifacts["framefold-contact-sheet"]["data"]  # the image itself

    # the automation fired: the webhook got the notification, with the state's message
    deadline = time.monotonic() + 120
    while not received and time.monotonic() < deadline:
        time.sleep(1)
    hook.shutdown()
    assert received, "no notification within 120 s"
    note = json.loads(received[0])
    assert "failed" in note["subject"] and "1 of 2 item(s) failed: b" in note["body"]


@pytest.mark.slow
def test_the_readme_schedules_recipe_as_written(server, tmp_path):
    """README, Schedules: its command lines run as written (the port and the output folder
    substituted): three deployments, a worker on the `framefold` pool, a run on demand."""
    start, export, *rest = _readme_schedules_commands()
    assert start[-4:] == ["--host", "127.0.0.1", "--port", README_PORT]  # the server fixture started this
    assert export == ["export", f"PREFECT_API_URL=http://127.0.0.1:{README_PORT}/api"]
    home = tmp_path / "home"
    env = _env(home, PREFECT_API_URL=server, PREFECT_WORKER_QUERY_SECONDS="2")  # polls every 2 s, not 10
    deploys = [w for w in rest if w[:2] == ["framefold", "deploy"]]
    (worker_cmd,) = [w for w in rest if w[:3] == ["prefect", "worker", "start"]]
    (run_cmd,) = [w for w in rest if w[:3] == ["prefect", "deployment", "run"]]
    assert len(rest) == len(deploys) + 2 and len(deploys) == 3

    # the manifests the recipe names, and its output folder moved under this test's tmp
    outputs = {}
    for words in deploys:
        _tiny_manifest(tmp_path / Path(words[2]).parent, Path(words[2]).name)
        if "--out" in words:
            i = words.index("--out") + 1
            outputs[words[words.index("--name") + 1]] = words[i] = str(tmp_path / words[i].lstrip("/"))
        done = subprocess.run(_command(words, env), env=env, cwd=tmp_path, capture_output=True, text=True,
                              timeout=180)  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr

    # as the recipe's comments say: 02:00 UTC, Mondays 05:00 in Berlin, the catalog on demand
    schedules = {name: [(s["schedule"]["cron"], s["schedule"]["timezone"]) for s in
                        _get(f"{server}/deployments/name/{FLOW}/{name}")["schedules"]]
                 for name in ("nightly", "spring-loops", "catalog")}  # fmt: skip
    assert schedules == {"nightly": [("0 2 * * *", "UTC")], "spring-loops": [("0 5 * * 1", "Europe/Berlin")],
                         "catalog": []}

    log = tmp_path / "worker.log"
    with log.open("wb") as sink:
        worker = subprocess.Popen(_command(worker_cmd, env), env=env, cwd=tmp_path, stdout=sink,
                                  stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        asked = subprocess.run(_command(run_cmd, env), env=env, cwd=tmp_path, capture_output=True, text=True,
                               timeout=120)  # fmt: skip
        assert asked.returncode == 0, asked.stdout + asked.stderr
        (run_id,) = re.findall(r"UUID:\s*([0-9a-f-]{36})", asked.stdout)
        state = {}

        def finished() -> bool:
            state.update(_get(f"{server}/flow_runs/{run_id}")["state"])
            return state["type"] in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}

        _wait(finished, RUN_TIMEOUT, "the catalog run on the worker", worker, log)
        assert state["type"] == "COMPLETED", _tail(log)
        out = Path(outputs["catalog"])
        assert sorted(p.name for p in out.glob("*.mp4")) == ["a.mp4", "b.mp4"]
        assert json.loads((out / "b.json").read_text())["item"]["id"] == "b"
        # the flow run's process (and the Ray it started) ends with the run
        _wait(lambda: not _descendants(worker.pid), 60, "the flow run process to exit", worker, log)
    finally:
        stopped = _stop(worker, home)
    # nothing of the run or the worker is left; how fast Prefect's worker honours SIGTERM is
    # Prefect's (in a full suite on two cores it has taken over 90 s, and is then killed)
    assert stopped[1] == [] and stopped[0] in ("terminated", "killed"), (stopped, _tail(log))


# -- helpers -------------------------------------------------------------------------------


def _tiny_manifest(folder: Path, name: str = "job.yaml") -> Path:
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
    return write_manifest(folder, doc, name).resolve()


def _framefold(*args: str) -> list[str]:
    return [sys.executable, "-m", "flows.cli", *args]


def _readme_schedules_commands() -> list[list[str]]:
    """The command lines of the README's Schedules recipe (its first sh block), split as
    a shell would, comments dropped."""
    text = README.read_text()
    section = text[text.index("### 3. Schedules") : text.index("## Reference")]
    block = re.findall(r"```sh\n(.*?)```", section, re.S)[0]
    return [words for line in block.splitlines() if (words := shlex.split(line, comments=True))]


def _command(words: list[str], env: dict[str, str]) -> list[str]:
    """A README command line as an argument list for this interpreter: leading
    ``NAME=value`` words go into ``env``; ``framefold`` and ``prefect`` become
    ``python -m flows.cli`` / ``python -m prefect``."""
    words = list(words)
    while "=" in words[0] and not words[0].startswith("-"):
        name, value = words.pop(0).split("=", 1)
        env[name] = value
    program = {"framefold": "flows.cli", "prefect": "prefect"}[words[0]]
    return [sys.executable, "-m", program, *words[1:]]


def _env(home: Path, **settings: str | None) -> dict[str, str]:
    """This environment minus any Prefect or Ray configuration of the test process,
    plus a private PREFECT_HOME, one local Ray CPU and the given settings."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PREFECT_") and k not in {"RAY_ADDRESS", "FRAMEFOLD_RAY_ADDRESS"}}
    env.update(
        PREFECT_HOME=str(prefect_home(home)),
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
    # What the group kill reached may take a moment to exit (a big process unmapping its
    # memory is neither running nor yet a zombie); a leftover is what is still alive after.
    _, alive = psutil.wait_procs([p for p in [*family, *_carrying(home)] if _alive(p)], timeout=10)
    leftovers = {p.pid: p for p in alive if _alive(p)}
    for p in leftovers.values():
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(list(leftovers.values()), timeout=30)
    assert not alive, f"could not stop {alive}"
    return outcome, [" ".join(_cmdline(p)[:3]) for p in leftovers.values()]


def _alive(p: psutil.Process) -> bool:
    """Still running: not gone, and not a zombie (it has exited; its parent has yet to reap it)."""
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


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
