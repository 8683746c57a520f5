"""After a Ray head is lost, gRPC's channel watcher thread raises "Channel closed!": that
traceback stays off the terminal (the items already name the lost cluster), and every other
thread exception is still printed."""

from __future__ import annotations

import threading

import pytest

from tasks import cluster


def _raise_in_thread(code: str, filename: str) -> None:
    namespace: dict = {}
    exec(compile(code, filename, "exec"), namespace)  # a frame from that file, as gRPC's would be
    thread = threading.Thread(target=namespace["run"])
    thread.start()
    thread.join()


@pytest.fixture
def hook(monkeypatch):
    monkeypatch.setattr(threading, "excepthook", threading.__excepthook__)
    cluster._quiet_closed_channels()
    installed = threading.excepthook
    cluster._quiet_closed_channels()  # twice: installed once
    assert threading.excepthook is installed and installed is not threading.__excepthook__
    return installed


def test_closed_channel_from_grpc_is_quiet(hook, capsys):
    _raise_in_thread('def run():\n    raise ValueError("Cannot monitor channel state: Channel closed!")\n',
                     "/venv/lib/python3.11/site-packages/grpc/_channel.py")
    assert capsys.readouterr().err == ""
    assert getattr(hook, "quiets_closed_channels", False)


@pytest.mark.parametrize("message, filename", [
    ("Cannot monitor channel state: Channel closed!", "/app/mine.py"),  # the same words from other code
    ("something else", "/venv/lib/python3.11/site-packages/grpc/_channel.py"),  # another gRPC error
    ("Cannot invoke RPC: Channel closed!", "/venv/lib/python3.11/site-packages/grpc/_channel.py"),  # a call's own
])  # fmt: skip
def test_other_thread_errors_still_print(hook, capsys, message, filename):
    _raise_in_thread(f"def run():\n    raise ValueError({message!r})\n", filename)
    err = capsys.readouterr().err
    assert "Traceback" in err and message in err, err
