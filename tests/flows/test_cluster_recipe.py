"""docs/cluster.md's "Try it on one machine", run as written: the commands are read from
the doc's code block, so the doc and this test cannot drift apart.

What the test changes, and only that: the well-known ports (6379, 10001, 8265) become free
ones; every `ray start` gets its own --temp-dir and free ports for the node's other
services (other Rays run on this machine); HOME is a temporary folder (the doc's token
lands there, not in the user's ~/.ray). Everything it starts runs in sessions of its own
and is killed by session at the end (never `ray stop`).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import prefect_home
from tests.raynodes import START_ATTEMPTS, Owned, free_ports, teardown

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "cluster.md"
MARKER = "tests/flows/test_cluster_recipe.py"
START_TIMEOUT = 120  # s per `ray start` on a busy 2-core machine
RUN_TIMEOUT = 300  # s per framefold command (a temporary Prefect server starts in each)
ITEMS = ("coffee", "chelsea", "rocket", "rocket-wide")


def recipe_commands(doc: Path = DOC) -> list[str]:
    """The commands of the fenced block that follows the comment naming this test."""
    text = doc.read_text()
    at = text.index(MARKER)
    block = re.search(r"```bash\n(.*?)```", text[at:], re.S)
    assert block, f"{doc}: no ```bash block after the comment naming {MARKER}"
    joined = block.group(1).replace("\\\n", " ")
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]


def test_the_doc_block_is_the_recipe_this_test_runs():
    commands = recipe_commands()
    assert [c.split()[:3] for c in commands if c.startswith("ray start")] == [
        ["ray", "start", "--head"], ["ray", "start", "--address=127.0.0.1:6379"]]
    assert any(c.startswith("RAY_ADDRESS=ray://127.0.0.1:10001 framefold run ") for c in commands)
    assert any(c.startswith("framefold submit ") for c in commands)


def _environment(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "FRAMEFOLD_", "PREFECT_"))}
    env.update({
        "HOME": str(tmp / "home"),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        "RAY_USAGE_STATS_ENABLED": "0",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_HOME": str(prefect_home(tmp / "prefect")),
        "PYTHONPATH": str(REPO),
    })
    (tmp / "home").mkdir(parents=True)
    return env


@pytest.mark.slow  # and it starts Ray nodes of its own (the doc-block check above does neither)
@pytest.mark.timeout(600, func_only=True)
@pytest.mark.usefixtures("one_ray_cluster_at_a_time")
def test_cluster_recipe_runs_a_job_both_ways(tmp_path: Path) -> None:
    work = tmp_path / "work"  # the doc's "repository root": its manifest and images, outputs under out/
    shutil.copytree(REPO / "manifests" / "examples", work / "manifests" / "examples",
                    ignore=shutil.ignore_patterns("out", "*.parquet"))
    env = _environment(tmp_path)
    temp_dir = Path(tempfile.mkdtemp(prefix="ffrc-", dir="/tmp"))  # short: Ray's socket paths
    gcs, client, dashboard, *spare = free_ports(3 + 2 * 6)
    ports = {"6379": gcs, "10001": client, "8265": dashboard}
    owned: list[Owned] = []
    nodes = 0
    runs: dict[str, tuple[int, str, str, float]] = {}

    def node_flags() -> list[str]:
        p = spare[nodes * 6 : nodes * 6 + 6]
        return [f"--temp-dir={temp_dir}", f"--node-manager-port={p[0]}", f"--object-manager-port={p[1]}",
                f"--metrics-export-port={p[2]}", f"--dashboard-agent-listen-port={p[3]}",
                f"--dashboard-agent-grpc-port={p[4]}", f"--runtime-env-agent-port={p[5]}"]

    try:
        for n, command in enumerate(recipe_commands()):
            for well_known, port in ports.items():
                command = re.sub(rf"(?<=[:=]){well_known}\b", str(port), command)
            if command.startswith("export "):
                name, value = command.removeprefix("export ").split("=", 1)
                env[name] = shlex.split(value)[0]
                continue
            if command.startswith("ray start"):
                command = f"{command} {shlex.join(node_flags())}"
                nodes += 1
            proc = Owned(["bash", "-c", command], env=env, log=tmp_path / f"cmd{n}.log", cwd=work)
            owned.append(proc)  # `ray start` returns; the node's processes keep its session
            t0 = time.monotonic()
            code = proc.wait(timeout=RUN_TIMEOUT if "framefold" in command else START_TIMEOUT)
            for _ in range(START_ATTEMPTS - 1):  # Ray's own 30 s wait for the node to register ran out
                if not (command.startswith("ray start") and proc.start_timed_out()):
                    break
                proc.restart()
                code = proc.wait(timeout=START_TIMEOUT)
            runs[command] = (code, proc.output(), proc.err.read_text(errors="replace"), time.monotonic() - t0)
            assert code == 0, f"`{command}` exited with {code}:\n{proc.tail()}"

        (run_cmd,) = [c for c in runs if " framefold run " in f" {c}"]
        (submit_cmd,) = [c for c in runs if c.startswith("framefold submit")]
        for command, out in ((run_cmd, "out/cluster-client"), (submit_cmd, "out/cluster-job")):
            folder = work / out
            for item in ITEMS:
                record = json.loads((folder / f"{item}.json").read_text())
                assert (folder / f"{item}.mp4").stat().st_size > 0
                assert record["video"]["frames"] == 12 and record["device"]["nodes"], record["device"]
                assert record["device"]["gpu_source"] == "none" and record["device"]["cpu_fallback"] is True
            assert "done 4, skipped 0, failed 0" in runs[command][1], runs[command][1][-2000:]
        assert f"on Ray ray://127.0.0.1:{client} →" in runs[run_cmd][1], runs[run_cmd][1][-2000:]  # which cluster
        assert runs[run_cmd][2].count("error") == 0, runs[run_cmd][2][-2000:]
        assert "Ray job " in runs[submit_cmd][2] and "Running entrypoint" in runs[submit_cmd][2]

        # the same cluster with a wrong token: one line naming the cause, from both commands, in seconds
        wrong = {**env, "RAY_AUTH_TOKEN": "0" * 64}
        for name, command in (("run", f"RAY_ADDRESS=ray://127.0.0.1:{client} framefold run "
                                      "manifests/examples/cluster.yaml --out out/never"),
                              ("submit", f"framefold submit manifests/examples/cluster.yaml "
                                         f"--address http://127.0.0.1:{dashboard} --out out/never")):
            proc = Owned(["bash", "-c", command], env=wrong, log=tmp_path / f"wrong-{name}.log", cwd=work)
            owned.append(proc)
            assert proc.wait(timeout=120) == 1, proc.tail()
            error = proc.err.read_text()
            assert "refused this client's token" in error and "ray get-auth-token" in error, error
        # the other kind of port in each address form: one line naming the mix-up, in seconds (Ray: 20-30 s)
        for address, says in ((f"ray://127.0.0.1:{gcs}", "is the head's GCS port, not its Ray client server"),
                              (f"127.0.0.1:{client}", "is a Ray client server, not the head's GCS port")):
            proc = Owned(["bash", "-c", f"RAY_ADDRESS={address} framefold run manifests/examples/cluster.yaml "
                                        "--out out/never"], env=env, log=tmp_path / "kind.log", cwd=work)
            owned.append(proc)
            t0 = time.monotonic()
            assert proc.wait(timeout=120) == 1, proc.tail()
            error = proc.err.read_text()
            assert says in error and "Traceback" not in error, error
            runs[f"wrong kind {address}"] = (1, "", error, time.monotonic() - t0)
        assert not (work / "out" / "never").exists()
    finally:
        leftover = teardown(owned, temp_dir)
        print({c[:60]: round(r[3], 1) for c, r in runs.items()})
    assert not leftover, f"processes survived the teardown: {leftover}"
