"""A pre-imported parent for many short `framefold run` processes (test helper, not product).

Importing framefold (torch, Prefect, Ray) takes 6-12 s here; the fault tests start a run over a
dozen times only to kill it. This process imports once, then for each request forks a child
that is exactly a `framefold run` process: it calls ``flows.cli.main(argv)`` (what the
``framefold`` entry point does) in its own session, with stdout/stderr in files. The parent
replies ``pid N`` at once and ``exit CODE`` when the child ends (negative: killed by a signal).
One child at a time, and no threads here, so forking is safe (Ray is started by the child).

Protocol on stdin, one JSON object a line: {"argv": [...], "stdout": path, "stderr": path,
"fsize": bytes or null, "env": {NAME: value, or null to unset}}. The environment is the one
this process was started with, changed by "env".
"""

from __future__ import annotations

import faulthandler
import json
import os
import resource
import signal
import sys
import traceback


def _child(request: dict) -> None:
    os.setsid()
    for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(handle, fd)
        os.close(handle)
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # stacks on demand, to diagnose a hang
    for name, value in (request.get("env") or {}).items():  # per-run changes to the environment
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    if request.get("fsize"):
        resource.setrlimit(resource.RLIMIT_FSIZE, (request["fsize"], request["fsize"]))
    code = 70
    try:
        from flows.cli import main

        code = main(request["argv"])
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:  # noqa: BLE001 - a traceback is what the test looks for
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def serve() -> None:
    import flows.cli  # noqa: F401 - the point: import everything once, before any fork
    import flows.run  # noqa: F401

    print("ready", flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(request)
        print(f"pid {pid}", flush=True)
        _, status = os.waitpid(pid, 0)
        print(f"exit {os.waitstatus_to_exitcode(status)}", flush=True)


if __name__ == "__main__":
    serve()
