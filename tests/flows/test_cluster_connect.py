"""Reaching a cluster, fast paths (no Ray started): what an unreachable address, a missing
extra and an impossible GPU request say, and what `framefold submit` sends."""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path

import pytest

from flows.cli import main
from flows.submit import SubmitError, job_for, job_server
from tasks.cluster import Cluster, precheck
from tasks.errors import ClusterError, ItemError
from tests.raynodes import free_ports


def test_nothing_listening_is_named_in_seconds_for_both_address_kinds():
    (port,) = free_ports(1)
    for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
        t0 = time.monotonic()
        with pytest.raises(ClusterError, match=rf"connection refused — nothing answers on 127.0.0.1:{port}; "
                                               r"start the cluster \(`ray start --head`\)"):
            precheck(address)
        assert time.monotonic() - t0 < 30  # Ray itself would retry for minutes


def test_ray_client_without_its_extra_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "grpc", None)  # as in an environment without ray[client]
    with pytest.raises(ClusterError, match=r"needs Ray's client extra \(grpcio\).*pip install -c constraints.txt \."):
        precheck("ray://127.0.0.1:10001")


def test_run_against_a_dead_address_exits_1_with_one_line(small_job, monkeypatch, capsys):
    (port,) = free_ports(1)
    monkeypatch.setenv("RAY_ADDRESS", f"ray://127.0.0.1:{port}")
    t0 = time.monotonic()
    assert main(["run", str(small_job)]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and errors[0].startswith("error: cannot connect to the Ray cluster"), errors
    assert time.monotonic() - t0 < 60  # imports only: before any Prefect server starts or Ray retries for minutes


def test_submit_to_a_dead_job_server_exits_1(small_job, capsys):
    (port,) = free_ports(1)
    assert main(["submit", str(small_job), "--address", f"http://127.0.0.1:{port}"]) == 1
    err = capsys.readouterr().err
    assert f"cannot reach the Ray job server at http://127.0.0.1:{port}: connection refused" in err, err


def test_gpus_are_declared_by_what_the_cluster_can_ever_have():
    none = Cluster(address="a", cpus=2, gpus=0, gpus_per_node=0, gpu_source="none")
    assert none.gpus_per_window("auto") == 0 and none.fallback("auto")
    with pytest.raises(ItemError, match="has no GPU and no autoscaler node type with one"):
        none.gpus_per_window(1)

    # no GPU up now, an autoscaler node type of 1 GPU, at most 2 nodes: GPUs from zero
    scaling = Cluster(address="a", cpus=0, gpus=2, gpus_per_node=1, gpu_source="autoscaler", gpus_now=0)
    assert scaling.gpus_per_window("auto") == 1 and not scaling.fallback("auto")
    assert scaling.slots(1) == 2 and scaling.slots(0.5) == 4
    scaling.check([("a", "auto"), ("b", 1)])
    with pytest.raises(ClusterError, match=r"item 'c': gpus: 2 per window, but .* no node \(autoscaler\) with more "
                                           r"than 1 GPU"):
        scaling.check([("a", 1), ("c", 2)])

    declared = Cluster(address="a", cpus=0, gpus=8, gpus_per_node=None, gpu_source="FRAMEFOLD_CLUSTER_GPUS")
    assert declared.gpus_per_window(4) == 4 and declared.slots(1) == 8


def test_submit_sends_framefold_run_with_the_manifest_and_the_settings(small_job, tmp_path, monkeypatch):
    monkeypatch.setenv("FRAMEFOLD_CLUSTER_GPUS", "4")
    monkeypatch.setenv("FRAMEFOLD_RAY_ADDRESS", "ray://elsewhere:10001")  # the job's own cluster wins there
    job = job_for(small_job, out=tmp_path / "o", only=["a"])
    assert shlex.split(job.entrypoint) == ["framefold", "run", str(small_job.resolve()), "--json",
                                           "--out", str(tmp_path / "o"), "--only", "a"]
    assert job.runtime_env["env_vars"]["FRAMEFOLD_CLUSTER_GPUS"] == "4"
    assert "FRAMEFOLD_RAY_ADDRESS" not in job.runtime_env["env_vars"] and "working_dir" not in job.runtime_env

    uploaded = job_for(small_job, working_dir=small_job.parent)
    assert shlex.split(uploaded.entrypoint)[:3] == ["framefold", "run", small_job.name]
    assert uploaded.runtime_env["working_dir"] == str(small_job.parent.resolve())
    with pytest.raises(SubmitError, match="is not inside it"):
        job_for(small_job, working_dir=tmp_path / "elsewhere")


def test_job_server_address_follows_ray_address(monkeypatch):
    for name in ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS", "FRAMEFOLD_RAY_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    assert job_server(None) == "http://127.0.0.1:8265"
    assert job_server("10.0.0.5:8265") == "http://10.0.0.5:8265"
    monkeypatch.setenv("RAY_ADDRESS", "ray://head.example:10001")
    assert job_server(None) == "http://head.example:8265"
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", "https://jobs.example")
    assert job_server(None) == "https://jobs.example"


@pytest.mark.usefixtures("ray_cluster", "prefect_server")
def test_gpu_nodes_that_never_come_give_up_after_the_setting(small_job, monkeypatch, capsys):
    """A cluster declared to have a GPU (FRAMEFOLD_CLUSTER_GPUS) whose GPU node never joins:
    `gpus: auto` asks for it, waits FRAMEFOLD_GPU_WAIT_S, then the items fail saying so."""
    monkeypatch.setenv("FRAMEFOLD_CLUSTER_GPUS", "1")
    monkeypatch.setenv("FRAMEFOLD_GPU_WAIT_S", "3")
    t0 = time.monotonic()
    assert main(["run", str(small_job), "--json"]) == 1
    captured = capsys.readouterr()
    summary = json.loads(captured.out[captured.out.index("{"):])
    assert summary["counts"]["failed"] == 3
    reasons = {r["reason"] for r in summary["items"]}
    assert len(reasons) == 1, reasons  # one wait for the run, one reason
    (reason,) = reasons
    assert reason.startswith("no node with 1 GPU(s) joined the Ray cluster") and "within 3 s (FRAMEFOLD_GPU_WAIT_S)" in reason
    assert "waiting for GPU nodes" in captured.err
    assert time.monotonic() - t0 < 120


def test_submit_streams_the_job_logs_and_keeps_the_summary_apart():
    """The job's log as Ray's tail_job_logs hands it over (chunks cut anywhere): every line
    but the closing `run --json` summary is echoed; the summary is parsed."""
    from flows.submit import follow

    summary = {"run_id": "r1", "counts": {"done": 3, "skipped": 0, "failed": 1}, "items": [{"id": "a"}]}
    log = ("Running entrypoint for job j: framefold run /m.yaml --json\nframefold: running 'm'\n"
           + json.dumps(summary, indent=2) + "\n")

    class Jobs:  # the one method of ray.job_submission.JobSubmissionClient that follow() uses
        async def tail_job_logs(self, job_id):
            assert job_id == "j"
            for at in range(0, len(log), 7):
                yield log[at : at + 7]

    echoed: list[str] = []
    text, got = follow(Jobs(), "j", echoed.append)
    assert got == summary and text == log
    assert echoed == ["Running entrypoint for job j: framefold run /m.yaml --json", "framefold: running 'm'"]


SERVER_FAILURE = ("Initialization failure from server:\nTraceback (most recent call last):\n  ...\n"
                  "RuntimeError: Starting Ray client server failed. See ray_client_server_23000.err for detailed logs.")


class _Connected(Exception):
    """Raised by the first call connect() makes once Ray is up: the test stops there."""


@pytest.mark.parametrize("failures, ok", [(1, True), (2, True), (3, False)])
def test_a_ray_client_server_that_fails_to_start_is_tried_again(monkeypatch, caplog, failures, ok):
    """Ray Client: the head starts a server process per driver; when that start fails (a
    busy head) the driver tries twice more, then names what failed on the head."""
    import ray

    import tasks.cluster as cluster

    calls = []

    def init(address=None, **kwargs):
        calls.append(("init", address))
        if len([c for c in calls if c[0] == "init"]) <= failures:
            raise ConnectionAbortedError(SERVER_FAILURE)

    def up():
        raise _Connected

    monkeypatch.setattr(cluster, "precheck", lambda address: None)
    monkeypatch.setattr(cluster, "CLIENT_INIT_RETRY_S", (0, 0))
    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "cluster_resources", up)
    monkeypatch.setattr(ray, "shutdown", lambda: calls.append(("shutdown", None)))  # not this process's own Ray
    if ok:
        with pytest.raises(_Connected):
            cluster.connect(address="ray://127.0.0.1:10001")
        # each failed start was cleaned up before the next, and the success ended the loop
        assert [c[0] for c in calls] == ["init", "shutdown"] * failures + ["init"]
        assert "did not start for this driver" in caplog.text and "ray_client_server_23000.err" in caplog.text
    else:
        with pytest.raises(ClusterError) as caught:
            cluster.connect(address="ray://127.0.0.1:10001")
        assert [c[0] for c in calls].count("init") == 3
        assert "could not start this driver's Ray Client server" in str(caught.value)
        assert "ray_client_server_23000.err" in str(caught.value)


@pytest.mark.parametrize(("address", "message"), [
    ("ray://127.0.0.1:10001", "Initialization failure from server:\nRuntime environment doesn't match request one"),
    ("127.0.0.1:6379", "refused"),  # a GCS address: no Ray Client server to start again
])
def test_a_lasting_failure_is_not_tried_again(monkeypatch, address, message):
    import ray

    import tasks.cluster as cluster

    calls = []

    def init(address=None, **kwargs):
        calls.append(address)
        raise ConnectionAbortedError(message)

    monkeypatch.setattr(cluster, "precheck", lambda address: None)
    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    with pytest.raises(ClusterError, match=message.splitlines()[-1][:30]):
        cluster.connect(address=address)
    assert calls == [address]


def test_submit_passes_store_urls_through_as_written():
    from flows.cli import _parser

    args = _parser().parse_args(["submit", "s3://assets/jobs/spring.yaml", "--out", "s3://assets/out/sub"])
    assert (args.manifest, args.out) == ("s3://assets/jobs/spring.yaml", "s3://assets/out/sub")  # not s3:/assets/…
    job = job_for(args.manifest, out=args.out)
    assert shlex.split(job.entrypoint) == ["framefold", "run", "s3://assets/jobs/spring.yaml", "--json",
                                           "--out", "s3://assets/out/sub"]
    with pytest.raises(SubmitError, match="is a store URL"):
        job_for(args.manifest, working_dir=Path("."))


def test_submit_names_a_job_server_lost_mid_job_in_one_line(small_job, monkeypatch, capsys):
    """The head dies while its job's logs stream: Ray's client raises from the log socket
    (as it does: "WebSocket connection closed unexpectedly"); submit says what happened
    and how to find the job, exit 1, no traceback."""
    import flows.submit
    from flows.cli import main

    class Jobs:  # Ray's JobSubmissionClient, as far as submit uses it
        def submit_job(self, **_):
            return "raysubmit_test"

        async def tail_job_logs(self, job_id):
            yield "framefold: running 'small'\n"
            raise RuntimeError("WebSocket connection closed unexpectedly with close code 1006")

        def get_job_info(self, job_id):
            raise AssertionError("not asked after the server is gone")

    monkeypatch.setattr(flows.submit, "client", lambda url: Jobs())
    assert main(["submit", str(small_job), "--address", "http://127.0.0.1:8999"]) == 1
    err = capsys.readouterr().err
    assert "framefold: running 'small'" in err and "Traceback" not in err
    assert "lost the Ray job server at http://127.0.0.1:8999 while following job raysubmit_test" in err
    assert "ray job status raysubmit_test --address http://127.0.0.1:8999" in err
