"""``framefold submit``: the driver on the cluster, as a Ray Job.

A thin wrapper over Ray's job submission SDK: the job's entrypoint is ``framefold run
MANIFEST --json`` (framefold installed on the cluster, as in infra/Dockerfile's image),
or ``python -m flows.cli run`` inside an uploaded ``--working-dir`` (a checkout of this
project beside the manifest). The job's logs stream here as it runs; when it ends, its
run summary is printed as ``framefold run`` prints it, and the exit code is the run's.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

DASHBOARD_PORT = 8265
# Settings the job's driver should see as the submitting shell has them.
FORWARDED = ("PREFECT_API_URL", "PREFECT_API_KEY", "HF_HUB_OFFLINE")


class SubmitError(Exception):
    """The job could not be submitted or followed; the message names the cause and the fix."""


def job_server(address: str | None) -> str:
    """The URL of the cluster's job server (the dashboard): ``address``, else
    ``RAY_API_SERVER_ADDRESS``, else derived from ``RAY_ADDRESS`` (its host, port 8265),
    else ``http://127.0.0.1:8265``."""
    if address:
        return address if "://" in address else f"http://{address}"
    if os.environ.get("RAY_API_SERVER_ADDRESS"):
        return os.environ["RAY_API_SERVER_ADDRESS"]
    ray_address = os.environ.get("FRAMEFOLD_RAY_ADDRESS") or os.environ.get("RAY_ADDRESS")
    if ray_address and ray_address not in ("auto", "local"):
        if ray_address.startswith(("http://", "https://")):
            return ray_address
        host = urlsplit(ray_address if "://" in ray_address else f"gcs://{ray_address}").hostname
        if host:
            return f"http://{host}:{DASHBOARD_PORT}"
    return f"http://127.0.0.1:{DASHBOARD_PORT}"


@dataclass(frozen=True)
class Job:
    entrypoint: str
    runtime_env: dict


def job_for(manifest: str | Path, *, out: str | Path | None = None, force: bool = False,
            only: list[str] | None = None, working_dir: Path | None = None) -> Job:
    """The Ray Job that runs ``manifest``. Without ``working_dir`` the cluster must see
    the manifest at its absolute path (shared storage) or its store URL, and have framefold
    installed; with it, the folder is uploaded and the manifest named relative to it.
    Store URLs (``s3://…``) pass through as written."""
    from manifests.locations import is_url

    remote = is_url(str(manifest))
    if remote and working_dir is not None:
        raise SubmitError(f"--working-dir {working_dir}: the manifest {manifest} is a store URL, not a file in it; "
                          f"drop --working-dir or give the manifest's path inside the folder")
    manifest = str(manifest) if remote else Path(manifest).resolve()
    env = {k: v for k, v in os.environ.items()
           if (k.startswith("FRAMEFOLD_") and k != "FRAMEFOLD_RAY_ADDRESS") or k in FORWARDED}
    runtime_env: dict = {"env_vars": env} if env else {}
    command = ["framefold", "run"]
    target = str(manifest)
    if working_dir is not None:
        working_dir = working_dir.resolve()
        try:
            target = str(manifest.relative_to(working_dir))
        except ValueError:
            raise SubmitError(f"--working-dir {working_dir}: the manifest {manifest} is not inside it") from None
        runtime_env["working_dir"] = str(working_dir)
        if (working_dir / "flows" / "cli.py").is_file():  # a checkout: run its code, not an installed copy
            command = ["python", "-m", "flows.cli", "run"]
    args = [*command, target, "--json"]
    if out is not None and is_url(str(out)):
        args += ["--out", str(out)]
    elif out is not None:
        out = Path(out)
        args += ["--out", str(out if working_dir is not None and not out.is_absolute() else out.resolve())]
    if force:
        args.append("--force")
    if only:
        args += ["--only", *only]
    return Job(shlex.join(args), runtime_env)


def _reachable(url: str) -> None:
    parts = urlsplit(url)
    host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    if not host:
        raise SubmitError(f"--address {url}: not a URL; give the head's job server, e.g. http://HEAD:{DASHBOARD_PORT}")
    try:
        socket.create_connection((host, port), timeout=10).close()
    except OSError as e:
        what = "connection refused" if isinstance(e, ConnectionRefusedError) else (e.strerror or type(e).__name__)
        raise SubmitError(
            f"cannot reach the Ray job server at {url}: {what}; start the cluster with `ray start --head` "
            f"(ray[default] on the head serves jobs on its dashboard port, {DASHBOARD_PORT} by default), or pass "
            f"--address http://HEAD:PORT (or set RAY_API_SERVER_ADDRESS)"
        ) from None


def client(url: str):
    """A JobSubmissionClient for ``url``, with Ray's failures explained."""
    try:
        from ray.job_submission import JobSubmissionClient
    except ImportError as e:  # ray without the default extra
        raise SubmitError(f"Ray's job submission SDK is missing ({e}); install framefold with its dependencies "
                          f"(`pip install -c constraints.txt .`, which brings ray[default,client])") from None
    _reachable(url)
    import logging

    logging.getLogger("ray.dashboard.modules.job.sdk").setLevel(logging.WARNING)  # its "WebSocket closed" notes
    try:
        return JobSubmissionClient(url)
    except Exception as e:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError, ValueError…
        raise SubmitError(explain(e, url)) from None


def explain(e: BaseException, url: str) -> str:
    text = str(e).strip()
    first = (text.splitlines() or [type(e).__name__])[0]
    lowered = text.lower()
    if "authentication" in lowered or "token" in lowered or " 401" in text or " 403" in text:
        return (f"the Ray job server at {url} refused this client's token (missing or wrong); copy the head's "
                f"token (`ray get-auth-token` on the head) into RAY_AUTH_TOKEN or ~/.ray/auth_token")
    return f"the Ray job server at {url} failed: {first}"


def follow(client, job_id: str, echo) -> tuple[str, dict | None]:
    """Stream the job's logs through ``echo`` (holding back its closing JSON summary)
    until it ends; returns ``(all log text, the summary or None)``."""
    text: list[str] = []
    held: list[str] = []
    pending = ""

    async def tail() -> None:
        nonlocal pending
        async for chunk in client.tail_job_logs(job_id):
            text.append(chunk)
            pending += chunk
            *lines, pending = pending.split("\n")
            for line in lines:
                if held or line == "{":  # `run --json` prints the summary last, from a line "{"
                    held.append(line)
                else:
                    echo(line)

    asyncio.run(tail())
    if pending:
        if held:
            held.append(pending)
        else:
            echo(pending)
    summary = None
    ends = [n for n, line in enumerate(held) if line == "}"]
    if ends:
        try:
            summary = json.loads("\n".join(held[: ends[-1] + 1]))
            held = held[ends[-1] + 1 :]
        except ValueError:
            pass
    for line in held:
        echo(line)
    return "".join(text), summary
