"""docs/storage.md's worked example, run as written: the manifest is the doc's YAML block,
the environment and the commands are its bash block, and the bucket afterwards holds what
its last listing shows. What the test changes, and only that: the endpoint
(``http://minio.internal:9000``) becomes the test's S3-compatible server on 127.0.0.1."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

from tests.conftest import draw_image
from tests.raynodes import base_env
from tests.storage.conftest import keys
from tests.storage.test_manifest_in_store import catalog_bytes

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

DOC = Path(__file__).resolve().parents[2] / "docs" / "storage.md"
ENDPOINT = "http://minio.internal:9000"


def worked_example(doc: Path = DOC) -> dict:
    """The blocks of the section "A worked example": layout before, manifest, commands, layout after."""
    text = doc.read_text()
    section = text[text.index("## A worked example"):]
    section = section[:section.index("\n## ", 1)]
    blocks = re.findall(r"```(\w*)\n(.*?)```", section, re.S)
    plain = [body for kind, body in blocks if kind == ""]
    (manifest,) = [body for kind, body in blocks if kind == "yaml"]
    (commands,) = [body for kind, body in blocks if kind == "bash"]
    return {"before": plain[0], "manifest": manifest, "commands": commands, "after": plain[-1]}


def _urls(listing: str) -> list[str]:
    return [line.split()[0] for line in listing.splitlines() if line.strip().startswith("s3://")]


def test_the_worked_example_runs_as_written(s3_server, tmp_path, monkeypatch):
    example = worked_example()
    manifest_url = example["manifest"].splitlines()[0].removeprefix("# ").strip()
    assert manifest_url == "s3://assets/jobs/spring.yaml"

    # the commands' environment, as the doc exports it (the endpoint: this test's server)
    env = {**base_env(tmp_path), "HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    commands = []
    for line in example["commands"].splitlines():
        line = line.split("  #")[0].strip()
        if line.startswith("export "):
            for assignment in shlex.split(line.removeprefix("export ")):
                name, value = assignment.split("=", 1)
                env[name] = s3_server.endpoint if value == ENDPOINT else value
        elif line:
            commands.append(shlex.split(line))
    assert env["AWS_ENDPOINT_URL"] == s3_server.endpoint and [c[:2] for c in commands] == [
        ["framefold", "validate"], ["framefold", "run"]]
    for name, value in env.items():  # for boto3 in this process
        if name.startswith("AWS_"):
            monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)

    # the bucket as the doc's first listing shows it: the manifest, its catalog, the stills
    client = boto3.client("s3")
    client.create_bucket(Bucket="assets")
    before = _urls(example["before"])
    assert before == ["s3://assets/jobs/spring.yaml", "s3://assets/jobs/catalog.parquet", "s3://assets/stills/sku-1.png"]
    skus = ["sku-1", "sku-2"]  # "sku-1.png …"
    stills = [f"s3://assets/stills/{sku}.png" for sku in skus]
    for n, (sku, url) in enumerate(zip(skus, stills)):
        client.put_object(Bucket="assets", Key=f"stills/{sku}.png",
                          Body=draw_image(tmp_path / f"{sku}.png", (96, 80), seed=n).read_bytes())  # fmt: skip
    client.put_object(Bucket="assets", Key="jobs/catalog.parquet", Body=catalog_bytes(skus, stills))
    client.put_object(Bucket="assets", Key="jobs/spring.yaml", Body=example["manifest"].encode())

    framefold = str(Path(sys.executable).with_name("framefold"))
    for command in commands:
        done = subprocess.run([framefold, *command[1:]], env=env, cwd=tmp_path, capture_output=True, text=True,
                              timeout=600)  # fmt: skip
        assert done.returncode == 0, f"{shlex.join(command)} exited {done.returncode}:\n{done.stderr[-3000:]}"

    # the bucket afterwards, as the doc's last listing shows it (for every sku)
    objects = set(keys("s3://assets"))
    for url in _urls(example["after"]):
        key = url.removeprefix("s3://assets/")
        for sku in skus if "sku-1" in key else ["sku-1"]:
            # a <placeholder> (a run id, a content hash) stands for any name
            pattern = re.sub(r"<\w+>", r"[\\w-]+", re.escape(key.replace("sku-1", sku)))
            assert [k for k in objects if re.fullmatch(pattern, k)], (key, sku, sorted(objects))
