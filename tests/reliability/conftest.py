"""Helpers for the reliability suite: subprocess runs (`python -m flows.cli run`) that share
the session's Prefect server and Ray cluster (or start their own Ray), and checks of the
invariants every output folder must keep whatever happened to the run that wrote it."""

from __future__ import annotations

import hashlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tasks.provenance import read_ledger
from tests.conftest import Shared, prefect_home

REPO = Path(__file__).resolve().parents[2]


class Zygote:
    """Starts `framefold run` processes forked from a pre-imported parent (see zygote.py): the
    same process a `framefold run` is, without paying the imports again for each one."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.logs = logs
        self.count = 0
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.reliability.zygote"], env=env, cwd=REPO,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        assert self.lines.get(timeout=120) == "ready"

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.strip())

    def start(self, argv: list[str], *, fsize: int | None = None, env: dict[str, str | None] | None = None) -> int:
        """Start `framefold <argv>`; returns its pid (also its process group)."""
        self.count += 1
        self.stdout, self.stderr = self.logs / f"run-{self.count}.out", self.logs / f"run-{self.count}.err"
        request = {"argv": argv, "stdout": str(self.stdout), "stderr": str(self.stderr), "fsize": fsize, "env": env}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        word, pid = self.lines.get(timeout=60).split()
        assert word == "pid"
        return int(pid)

    def wait(self, timeout: float | None = None) -> int | None:
        """The exit code of the running child (negative: a signal), or None if still running."""
        try:
            word, code = self.lines.get(timeout=timeout).split()
        except queue.Empty:
            return None
        assert word == "exit"
        return int(code)

    def kill(self, pid: int) -> int:
        """SIGKILL the child and everything in its session (ffmpeg); its exit code."""
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return self.wait(60)

    def run(self, argv: list[str], *, fsize: int | None = None, timeout: float = 300,
            env: dict[str, str | None] | None = None) -> tuple[int, str, str]:
        pid = self.start(argv, fsize=fsize, env=env)
        code = self.wait(timeout)
        if code is None:
            self.kill(pid)
            raise TimeoutError(f"framefold {argv} ran over {timeout} s")
        return code, self.stdout.read_text(), self.stderr.read_text()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(30)


@pytest.fixture(scope="session")
def zygote(shared, tmp_path_factory):
    home = tmp_path_factory.mktemp("zygote")
    z = Zygote(child_env(home, shared=shared), home)
    yield z
    z.close()


def child_env(home: Path, *, shared: Shared | None = None, **extra: str) -> dict[str, str]:
    """Environment of a child `framefold run`: offline Prefect under ``home``; with ``shared``,
    the session's Prefect server and Ray cluster (no per-child server or Ray start)."""
    env = dict(os.environ)
    for name in list(env):
        if name.startswith(("PREFECT_", "FRAMEFOLD_")) or name in ("RAY_ADDRESS",):
            env.pop(name)
    env.update({
        "PREFECT_HOME": str(prefect_home(home / "prefect")),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "RAY_USAGE_STATS_ENABLED": "0",
        "PYTHONPATH": str(REPO),
    })
    if shared is not None:
        env["PREFECT_API_URL"] = shared.prefect_api_url
        env["RAY_ADDRESS"] = shared.ray_address
    env.update(extra)
    return env


def run_cmd(manifest: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "flows.cli", "run", str(manifest), "--json", *args]


def summary_of(stdout: str) -> dict:
    return json.loads(stdout[stdout.index("{"):])


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_consistent(out: Path, item_ids: list[str], *, complete: bool = True) -> dict:
    """The invariants of an output folder: no partial file under a final name (every mp4 has a
    sidecar whose sha256 and size match it, every sidecar an mp4), the ledger readable with
    one row per (run, item), and with ``complete`` every item present. Returns the sidecars."""
    records = {}
    for video in out.glob("*.mp4"):
        sidecar = video.with_suffix(".json")
        if not complete and not sidecar.exists():
            continue  # killed between committing the video and its sidecar: redone next run
        record = json.loads(sidecar.read_text())
        assert record["output"]["sha256"] == sha256(video), video
        assert record["output"]["bytes"] == video.stat().st_size, video
        records[video.stem] = record
    for sidecar in out.glob("*.json"):
        assert (out / f"{sidecar.stem}.mp4").is_file() or not complete, sidecar
    rows = read_ledger(out).to_pylist()
    keys = [(r["run_id"], r["item_id"]) for r in rows]
    assert len(keys) == len(set(keys)), "an item has two ledger rows in one run"
    if complete:
        assert sorted(records) == sorted(item_ids)
    return records
