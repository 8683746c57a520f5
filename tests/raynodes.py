"""Processes a cluster test owns: `ray start` nodes and framefold runs, each started in a
session of its own so that teardown can kill everything it spawned (never `ray stop`, which
would stop every Ray on the machine)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import prefect_home

REPO = Path(__file__).resolve().parents[1]
RAY = Path(sys.executable).with_name("ray")
NODE_START_TIMEOUT = 120  # s, per node, on a busy 2-core machine


# --- processes a test owns ------------------------------------------------------------
class Owned:
    """A child process started in a new session: it and everything it spawns share the
    session id (Ray workers change their process group, not their session)."""

    def __init__(self, args: list[str], *, env: dict[str, str], log: Path, cwd: Path = REPO) -> None:
        self.args, self.env, self.cwd = args, env, cwd
        self.log = log  # stdout; stderr goes to LOG.err
        self.err = log.with_name(log.name + ".err")
        self.attempts = 1
        self._start()

    def _start(self) -> None:
        self._files = [open(self.log, "wb"), open(self.err, "wb")]  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            self.args, env=self.env, cwd=self.cwd, stdin=subprocess.DEVNULL, stdout=self._files[0],
            stderr=self._files[1], start_new_session=True,
        )
        self.sid = self.proc.pid  # start_new_session: the child is its session's leader

    def restart(self) -> None:
        """Stop the session and run the same command again (the earlier attempt's logs kept as
        LOG.N and LOG.err.N)."""
        self.stop()
        for path in (self.log, self.err):
            path.rename(path.with_name(f"{path.name}.{self.attempts}"))
        self.attempts += 1
        self._start()

    def start_timed_out(self) -> bool:
        """Whether this `ray start` exited because its raylet missed Ray's 30 s registration
        wait (see RAY_START_TIMED_OUT): worth starting again, unlike any other failure."""
        return self.proc.poll() not in (None, 0) and RAY_START_TIMED_OUT in self.tail()

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
        return live(p for p in psutil.process_iter() if sid(p.pid) == self.sid)

    def stop(self) -> None:
        """SIGKILL the session: Ray drains for 30 s on SIGTERM, and a test cluster has nothing to save."""
        deadline = time.monotonic() + 15
        while (left := self.processes()) and time.monotonic() < deadline:  # a worker may fork meanwhile
            for process in left:
                kill(process)
            time.sleep(0.2)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        for file in self._files:
            file.close()


def sid(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except OSError:
        return None


def live(processes) -> list[psutil.Process]:
    alive = []
    for process in processes:
        try:
            if process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
        except psutil.Error:
            pass
    return alive


def kill(process: psutil.Process) -> None:
    try:
        process.send_signal(signal.SIGKILL)
    except psutil.Error:
        pass


def free_ports(count: int) -> list[int]:
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


def head_command(temp_dir: Path, *, gcs: int, client: int, dashboard: int, ports: list[int],
                 resources: list[str]) -> list[str]:
    """`ray start --head` on 127.0.0.1 with every port it opens chosen (``ports``: six free
    ones), its own ``temp_dir``, no dashboard, blocking; ``resources``: --num-cpus and the like."""
    p = ports
    return [str(RAY), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={gcs}",
            f"--ray-client-server-port={client}", f"--dashboard-port={dashboard}", "--include-dashboard=false",
            *resources, f"--temp-dir={temp_dir}", "--disable-usage-stats", "--block",
            f"--node-manager-port={p[0]}", f"--object-manager-port={p[1]}", f"--metrics-export-port={p[2]}",
            f"--dashboard-agent-listen-port={p[3]}", f"--dashboard-agent-grpc-port={p[4]}",
            f"--runtime-env-agent-port={p[5]}"]  # fmt: skip


def base_env(tmp: Path) -> dict[str, str]:
    """The environment of every child: no token auth (consistently), offline Prefect under tmp."""
    env = dict(os.environ)
    for name in ("RAY_ADDRESS", "PREFECT_API_URL", "FRAMEFOLD_RAY_ADDRESS", "FRAMEFOLD_RAY_NUM_CPUS",
                 "FRAMEFOLD_RAY_NUM_GPUS", "FRAMEFOLD_WINDOWS_IN_FLIGHT", "FRAMEFOLD_ITEMS_IN_FLIGHT"):
        env.pop(name, None)
    env.update({
        "RAY_AUTH_MODE": "disabled",
        "RAY_USAGE_STATS_ENABLED": "0",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_HOME": str(prefect_home(tmp / "prefect")),
        "PYTHONPATH": str(REPO),
    })
    return env


# `ray start` gives up when its raylet has not registered with the GCS within 30 s (a constant in
# ray/_private/node.py), which a 2-core machine running other tests can exceed: started again.
RAY_START_TIMED_OUT = "The current node timed out during startup"
START_ATTEMPTS = 3


def wait_started(node: Owned, what: str) -> None:
    for attempt in range(1, START_ATTEMPTS + 1):
        deadline = time.monotonic() + NODE_START_TIMEOUT
        while time.monotonic() < deadline:
            if "Ray runtime started" in node.tail(50_000):
                return
            if node.proc.poll() is not None:
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"{what} did not start in {NODE_START_TIMEOUT} s:\n{node.tail()}")
        if not node.start_timed_out() or attempt == START_ATTEMPTS:
            pytest.fail(f"{what} exited with {node.proc.returncode}:\n{node.tail()}")
        print(f"{what}: Ray's 30 s registration wait ran out (attempt {attempt}); starting it again")
        node.restart()


def names(process: psutil.Process, text: str) -> bool:
    try:
        return any(text in arg for arg in process.cmdline())
    except psutil.Error:
        return False


def survivors(owned: list[Owned], temp_dir: str, wait: float = 10.0) -> list[psutil.Process]:
    deadline = time.monotonic() + wait
    while True:
        left = [p for o in owned for p in o.processes()]
        left += live(p for p in psutil.process_iter() if names(p, temp_dir) and p not in left)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def teardown(owned: list[Owned], temp_dir: Path) -> list[psutil.Process]:
    """Stop every process of ``owned`` (last started first) and any other naming ``temp_dir``,
    remove ``temp_dir``, and return the processes that still survive (a test asserts none)."""
    for process in reversed(owned):
        process.stop()
    strays = live(p for p in psutil.process_iter() if names(p, str(temp_dir)))
    for process in strays:
        kill(process)
    left = survivors(owned, str(temp_dir))
    shutil.rmtree(temp_dir, ignore_errors=True)
    return strays + left


def log_tails(temp_dir: Path, pattern: str = "ray_client_server*", lines: int = 30) -> str:
    """The last ``lines`` of each of the head's Ray logs matching ``pattern`` (for a failure message)."""
    out = []
    for path in sorted((Path(temp_dir) / "session_latest" / "logs").glob(pattern)):
        text = path.read_text(errors="replace").splitlines()[-lines:]
        if text:
            out.append(f"--- {path.name}\n" + "\n".join(text))
    return "\n".join(out)

