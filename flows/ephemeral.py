"""What a run starts, tied to the run: Prefect's temporary server and the run's own Ray.

Without ``PREFECT_API_URL`` a run reports to a temporary Prefect server: a child process
(uvicorn) that Prefect stops at exit. Without a cluster address it starts a Ray node of its
own, whose GCS and raylet die with the run but whose agents (the dashboard and runtime-env
agents) wait a minute or more to notice. A run that is killed (``kill -9``, the OOM killer, a
lost session) never reaches its exit handlers. :func:`tie` marks this process's environment
with a token, which everything the run starts inherits, and starts a watchdog: a small child
process that waits for end-of-file on a pipe only the run holds — the kernel closes it
however the run ends — and then stops every Prefect server and Ray process that carries the
token. A Ray agent renames itself, which overwrites the environment /proc shows, so while the
run lives the watchdog looks every second and keeps what it found (an agent by its parent,
the run's raylet). A cluster the run joined is not its descendant and never carries it.

    python -m flows.ephemeral TOKEN   # the watchdog

The server takes seconds to start; :func:`start_early` starts it on a thread, so a run
starts its Ray meanwhile instead of after it.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

MARKER = "prefect.server.api.server"  # in the server's command line: never signal another program
# Not a FRAMEFOLD_* setting, so never forwarded to workers or Ray Jobs (tasks.finish, flows.submit)
TOKEN_VAR = "_FRAMEFOLD_RUN_TOKEN"
_watchdog: subprocess.Popen | None = None
_token: str | None = None


@functools.cache
def _ray_package() -> str | None:
    """Ray's package folder, with a trailing separator (found without importing Ray)."""
    spec = importlib.util.find_spec("ray")
    folders = list(spec.submodule_search_locations or []) if spec else []
    return os.path.join(folders[0], "") if folders else None


def _tied_program(argv: list[str]) -> bool:
    """Whether a command line is a Prefect server or a Ray process: Ray's binaries and scripts
    (GCS, raylet, agents, workers) run from its package folder; a Ray worker or agent renames
    itself ``ray::…``."""
    ray = _ray_package()
    return any(MARKER in arg or arg.startswith("ray::") or (ray is not None and arg.startswith(ray))
               for arg in argv)


def _parent_and_start(proc: Path) -> tuple[int, int]:
    """A /proc entry's parent pid and start time (clock ticks since boot: a pid reused later differs)."""
    fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[1]), int(fields[19])


def tied_processes(token: str, seen: dict[int, int] | None = None) -> list[int]:
    """Pids of Prefect server and Ray processes whose environment carries ``token``, whose
    parent was found (in this scan or, through ``seen``, {pid: start time}, an earlier one), or
    which were found before and are still the same process. A Ray agent renames itself
    ``ray::…``, which overwrites the environment /proc shows, so the watchdog knows it by its
    parent (the run's raylet) while the run lives; ``seen`` is updated in place."""
    seen = {} if seen is None else seen
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
            if not _tied_program(argv):
                continue
            pid, (parent, start) = int(proc.name), _parent_and_start(proc)
            if (seen.get(pid) == start or parent in seen
                    or f"{TOKEN_VAR}={token}".encode() in (proc / "environ").read_bytes().split(b"\0")):
                seen[pid] = start
                found.append(pid)
        except (OSError, ValueError, IndexError):  # gone meanwhile, or not ours to read
            continue
    return found


def stop(token: str, grace_s: float = 5.0, seen: dict[int, int] | None = None) -> list[int]:
    """SIGTERM the processes of ``token`` (and ``seen``: :func:`tied_processes`), SIGKILL those
    still there after ``grace_s``; their pids."""
    seen = {} if seen is None else seen
    pids = tied_processes(token, seen)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):  # gone since the scan (e.g. a Ctrl-C reached it too)
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and tied_processes(token, seen):
        time.sleep(0.1)
    for pid in tied_processes(token, seen):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return pids


def tie() -> subprocess.Popen | None:
    """Tie the temporary server this process's Prefect will start, and the Ray node it will
    start, to this process's life: what it starts from now on carries its token (once per
    process, its own even under a parent run's; call it before either starts). None where there
    is no ``/proc`` to find them by (not Linux): there a killed run's server stays, as Prefect
    leaves it, and Ray's agents end when they notice."""
    global _watchdog, _token
    if not Path("/proc/self/environ").exists():
        return None
    if _watchdog is None or _watchdog.poll() is not None:
        _token = secrets.token_hex(8)
        _watchdog = subprocess.Popen(
            [sys.executable, "-m", "flows.ephemeral", _token],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C to the run's terminal does not stop the watchdog first
            cwd=Path(__file__).resolve().parents[1],
        )  # fmt: skip
    os.environ[TOKEN_VAR] = _token
    return _watchdog


@contextlib.contextmanager
def tied() -> Iterator[None]:
    """:func:`tie` for the block: what this process starts after it (a `ray start` a notebook
    runs, say) no longer carries the token. What the block started keeps it, and is stopped
    when this process ends."""
    tie()
    try:
        yield
    finally:
        os.environ.pop(TOKEN_VAR, None)


def start_early() -> threading.Thread:
    """Start Prefect's temporary server on a thread: the one Prefect's client starts and
    uses (its instance for no port), so the run's first API call finds it up. Join the
    thread before the flow starts. A server that fails to start here is started again,
    and its error reported, by Prefect's own call."""

    def start() -> None:
        from prefect.server.api.server import SubprocessASGIServer

        with contextlib.suppress(Exception):  # Prefect's own start reports it (see above)
            SubprocessASGIServer().start()

    thread = threading.Thread(target=start, name="prefect-server-start", daemon=True)
    thread.start()
    return thread


def main(argv: list[str] | None = None, every_s: float = 1.0) -> int:
    import select

    token = (argv if argv is not None else sys.argv[1:])[0]
    seen: dict[int, int] = {}  # what the run started, found while it lives (its agents by their parent)
    while True:
        readable, _, _ = select.select([sys.stdin.buffer], [], [], every_s)
        if readable and not sys.stdin.buffer.read1(65536):  # end of file: the run's end of the pipe closed
            break
        tied_processes(token, seen)
    stop(token, seen=seen)
    return 0


if __name__ == "__main__":
    sys.exit(main())
