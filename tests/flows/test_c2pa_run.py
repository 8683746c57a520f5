"""Signed outputs from a real run: every mp4, gif and poster carries C2PA credentials that
`framefold inspect` validates against a throwaway root; webm keeps the sidecar and says so
in the ledger; a one-byte change is reported as tampered."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest

from flows.cli import main
from tasks import credentials, store
from tasks.provenance import read_ledger
from tests.c2pa_chain import make_chain
from tests.conftest import draw_image, write_manifest

MOTION = "http://cv.iptc.org/newscodes/digitalsourcetype/algorithmicMedia"


def _mdat_offset(path: Path) -> int:
    """Offset of the first byte inside the mp4's media data box."""
    data = path.read_bytes()
    at = 0
    while at + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[at:at + 8])
        header = 8
        if size == 1:
            size, header = struct.unpack(">Q", data[at + 8:at + 16])[0], 16
        if kind == b"mdat":
            return at + header
        at += size
    raise AssertionError(f"{path} has no mdat box")


def _signing_job(tmp_path: Path):
    """A throwaway chain under tmp_path/keys, and a job folder whose signing/ holds copies of its files."""
    chain = make_chain(tmp_path / "keys")
    job = tmp_path / "job"
    (job / "signing").mkdir(parents=True)
    for name, source in (("chain.pem", chain.cert_chain_pem), ("signer.key", chain.key_pem),
                         ("self.pem", chain.self_signed_pem), ("other.key", chain.other_key_pem)):
        shutil.copy(source, job / "signing" / name)
    return chain, job


def _inspect(path: Path, capsys) -> tuple[int, dict]:
    code = main(["inspect", str(path), "--json"])
    return code, json.loads(capsys.readouterr().out)


@pytest.mark.usefixtures("ray_cluster", "prefect_server")
def test_run_signs_outputs_and_inspect_detects_tampering(tmp_path, capsys, monkeypatch):
    chain, job = _signing_job(tmp_path)
    draw_image(job / "img" / "a.png", (48, 32), seed=2)
    doc = {"version": 1, "name": "signed", "output": "out",
           "provenance": {"c2pa": {"cert": "signing/chain.pem", "key": "signing/signer.key", "alg": "es256"}},
           "defaults": {"fps": 8, "frames": 8, "size": [48, 32], "window": {"length": 6, "overlap": 2}},
           "items": [{"id": "a", "image": "img/a.png", "formats": ["mp4", "webm", "gif", "poster"]}]}
    manifest = write_manifest(job, doc)
    assert main(["run", str(manifest), "--json"]) == 0
    capsys.readouterr()
    out = job / "out"

    record = json.loads((out / "a.json").read_text())
    states = {o["path"]: o["c2pa"] for o in record["outputs"]}
    assert states == {"a.mp4": "signed", "a.webm": "unsupported", "a.gif": "signed", "a.poster.jpg": "signed"}
    for o in record["outputs"]:  # the sidecar's hashes are of the signed files
        assert store.sha256_file(out / o["path"]) == o["sha256"]
    ledger = {r["output"]: r["c2pa"] for r in read_ledger(out).to_pylist()}
    assert ledger == states

    monkeypatch.setenv("FRAMEFOLD_C2PA_TRUST_ANCHORS", str(chain.root_pem))
    for name in ("a.mp4", "a.gif", "a.poster.jpg"):
        code, shown = _inspect(out / name, capsys)
        assert code == 0, name
        assert shown["c2pa"]["state"] == "trusted" and shown["c2pa"]["tampered"] is False, name
        assert shown["c2pa"]["digital_source_type"] == MOTION == shown["digital_source_type"]
        assert shown["item"]["id"] == "a" and shown["content_key"] == record["content_key"]
    code, shown = _inspect(out / "a.webm", capsys)
    assert code == 0 and shown["c2pa"]["state"] == "unsupported"
    # the record signed into the mp4 is the sidecar's (less the outputs' own hashes)
    signed = credentials.read(out / "a.mp4")["framefold"]
    assert signed == {k: v for k, v in record.items() if k not in ("output", "outputs")}

    monkeypatch.delenv("FRAMEFOLD_C2PA_TRUST_ANCHORS")
    code, shown = _inspect(out / "a.mp4", capsys)
    assert code == 0 and shown["c2pa"]["state"] == "valid"  # intact, signer not checked
    other = make_chain(tmp_path / "other")  # anchors that do not include our root: untrusted, exit 1
    monkeypatch.setenv("FRAMEFOLD_C2PA_TRUST_ANCHORS", str(other.root_pem))
    assert main(["inspect", str(out / "a.mp4")]) == 1
    assert "UNTRUSTED" in capsys.readouterr().out

    # one byte of the media data changed: tampered, exit 1
    monkeypatch.setenv("FRAMEFOLD_C2PA_TRUST_ANCHORS", str(chain.root_pem))
    tampered = out / "copy.mp4"
    data = bytearray((out / "a.mp4").read_bytes())
    data[_mdat_offset(out / "a.mp4") + 20] ^= 0x01
    tampered.write_bytes(bytes(data))
    code, shown = _inspect(tampered, capsys)
    assert code == 1 and shown["c2pa"]["state"] == "invalid" and shown["c2pa"]["tampered"] is True
    assert main(["inspect", str(tampered)]) == 1
    assert "TAMPERED" in capsys.readouterr().out

    # a re-run finds the signed outputs current
    assert main(["run", str(manifest), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["items"][0]["status"] == "skipped"


@pytest.mark.usefixtures("ray_cluster", "prefect_server")
def test_signer_from_settings_signs_outputs_made_before_signing_was_on(tmp_path, capsys, monkeypatch):
    chain = make_chain(tmp_path / "keys")  # outside the manifest folder: keys stay out of manifests
    job = tmp_path / "job"
    draw_image(job / "img" / "a.png", (48, 32), seed=3)
    doc = {"version": 1, "name": "later", "output": "out",
           "defaults": {"fps": 8, "frames": 8, "size": [48, 32], "window": {"length": 6, "overlap": 2}},
           "items": [{"id": "a", "image": "img/a.png"}]}
    manifest = write_manifest(job, doc)
    assert main(["run", str(manifest), "--json"]) == 0
    capsys.readouterr()
    assert credentials.read(job / "out" / "a.mp4")["state"] == "absent"

    monkeypatch.setenv("FRAMEFOLD_C2PA_CERT", str(chain.cert_chain_pem))
    monkeypatch.setenv("FRAMEFOLD_C2PA_KEY", str(chain.key_pem))
    assert main(["run", str(manifest), "--json"]) == 0
    item = json.loads(capsys.readouterr().out)["items"][0]
    assert (item["status"], item["reason"]) == ("done", "content credentials missing")
    read = credentials.read(job / "out" / "a.mp4", trust_anchors=chain.root_pem.read_text())
    assert read["state"] == "trusted" and read["digital_source_type"] == MOTION


def test_unusable_signers_are_refused_at_validation(tmp_path, capsys, monkeypatch):
    chain, job = _signing_job(tmp_path)
    draw_image(job / "a.png", (48, 32))
    base = {"version": 1, "name": "bad", "output": "out", "items": [{"id": "a", "image": "a.png"}]}
    cases = {
        "self-signed": ({"cert": "signing/self.pem", "key": "signing/other.key"}, "provenance.c2pa.cert", "self-signed"),
        "wrong key": ({"cert": "signing/chain.pem", "key": "signing/other.key"}, "provenance.c2pa.key", "does not match"),
        "missing": ({"cert": "signing/nope.pem", "key": "signing/other.key"}, "provenance.c2pa.cert", "not found"),
        "escape": ({"cert": "../keys/chain.pem", "key": "signing/other.key"}, "provenance.c2pa.cert", "escapes"),
        "alg": ({"cert": "signing/chain.pem", "key": "signing/other.key", "alg": "md5"}, "provenance.c2pa.alg", "es256"),
        "alg for key": ({"cert": "signing/chain.pem", "key": "signing/signer.key", "alg": "ps256"},
                        "provenance.c2pa.alg", "RSA"),
    }
    for name, (c2pa, field, words) in cases.items():
        manifest = write_manifest(job, {**base, "provenance": {"c2pa": c2pa}}, f"{name.replace(' ', '-')}.yaml")
        assert main(["validate", str(manifest)]) == 2, name
        err = capsys.readouterr().err
        assert field in err and words in err, (name, err)
    monkeypatch.setenv("FRAMEFOLD_C2PA_CERT", str(chain.cert_chain_pem))
    manifest = write_manifest(job, base, "settings.yaml")
    assert main(["validate", str(manifest)]) == 2
    assert "FRAMEFOLD_C2PA_KEY" in capsys.readouterr().err
