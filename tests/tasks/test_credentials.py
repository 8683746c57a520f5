"""C2PA content credentials with the real c2pa library, a throwaway certificate chain and
tiny real media (8 frames of 32², made by framefold's own encoder). No network: no TSA."""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

import c2pa
import numpy as np
import pytest
from PIL import Image

from tasks.credentials import SUPPORTED, CredentialError, SignerConfig, check, read, sign
from tasks.encode import VideoEncoder, remux
from tests.c2pa_chain import ChainPaths, make_chain

GENERATED = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
# Arrays of numbers on purpose: c2pa's Reader.json() garbles them (see tasks.credentials._record).
RECORD = {"schema": "framefold.provenance/1", "item": "a", "seed": 3,
          "params": {"fps": 8.0, "size": [32, 32], "weights": [0.25, 0.75], "offsets": [-1, 2, 300]}}


@pytest.fixture(scope="module")
def chain(tmp_path_factory) -> ChainPaths:
    return make_chain(tmp_path_factory.mktemp("chain"))


@pytest.fixture(scope="module")
def signer(chain) -> SignerConfig:
    return SignerConfig(cert=chain.cert_chain_pem, key=chain.key_pem)


@pytest.fixture(scope="module")
def anchors(chain) -> str:
    return chain.root_pem.read_text()


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    """Unsigned originals: mp4 (faststart + framefold tag, as the pipeline writes it), webm,
    gif, jpg, and input photos in several formats plus one corrupt "png"."""
    folder = tmp_path_factory.mktemp("media")
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:32, 0:32]
    frames = np.stack([np.stack([(x * 8 + t * 16) % 256, y * 8, np.full_like(x, 40 * t)], -1)
                       for t in range(8)]).astype(np.uint8)
    for fmt in ("mp4", "webm", "gif"):
        with VideoEncoder(folder / f"raw.{fmt}", width=32, height=32, fps=8, format=fmt) as enc:
            enc.write(frames)
    remux(folder / "raw.mp4", folder / "clip.mp4", tags={"framefold": json.dumps(RECORD)})
    photo = Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8))
    out = {"mp4": folder / "clip.mp4", "webm": folder / "raw.webm", "gif": folder / "raw.gif",
           "jpg": folder / "still.jpg"}
    photo.save(out["jpg"], quality=90)
    for ext in ("png", "jpg", "webp", "tiff", "bmp"):
        out[f"input.{ext}"] = folder / f"input.{ext}"
        photo.save(out[f"input.{ext}"])
    out["corrupt.png"] = folder / "corrupt.png"
    out["corrupt.png"].write_bytes(b"\x89PNG-not-really" + rng.bytes(200))
    return out


def copy(src: Path, folder: Path, name: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(src, folder / (name or src.name)))


def top_level_boxes(data: bytes) -> dict[str, tuple[int, int, int]]:
    """First occurrence of each top-level MP4 box: type -> (offset, size, header length)."""
    boxes, pos = {}, 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        header = 8
        if size == 1:
            size, header = struct.unpack(">Q", data[pos + 8:pos + 16])[0], 16
        elif size == 0:
            size = len(data) - pos
        boxes.setdefault(kind.decode("latin-1"), (pos, size, header))
        pos += size
    return boxes


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def active_manifest(path: Path, anchors: str) -> dict:
    """The raw reader JSON of the active manifest, read with c2pa directly."""
    with c2pa.Context.from_dict({"trust": {"user_anchors": anchors},
                                 "verify": {"remote_manifest_fetch": False}}) as ctx, \
            c2pa.Reader(str(path), context=ctx) as reader:
        store = json.loads(reader.json())
    return store["manifests"][store["active_manifest"]]


# -- signing and reading back ----------------------------------------------------------------


def test_signed_mp4_is_trusted_with_the_root(tmp_path, media, signer, anchors):
    video = copy(media["mp4"], tmp_path)
    ingredient = media["input.png"]
    result = sign(video, signer=signer, title="clip.mp4", source_type=GENERATED, record=RECORD, ingredient=ingredient)
    assert result["state"] == "signed" and result["alg"] == "es256" and result["source_type"] == GENERATED
    assert result["manifest_label"].startswith("urn:c2pa:")

    got = read(video, trust_anchors=anchors)
    assert got == {"state": "trusted", "tampered": False, "digital_source_type": GENERATED,
                   "signer": "framefold test signer", "title": "clip.mp4",
                   "manifest_label": result["manifest_label"], "framefold": RECORD, "errors": []}

    manifest = active_manifest(video, anchors)
    assert manifest["claim_generator_info"][0]["name"] == "framefold"
    assert manifest["claim_generator_info"][0]["version"]
    [ingredient_entry] = manifest["ingredients"]
    assert ingredient_entry["title"] == "input.png"
    assert ingredient_entry["format"] == "image/png"
    assert ingredient_entry["relationship"] == "inputTo"
    assert "thumbnail" in ingredient_entry  # c2pa parsed the photo itself
    assertions = {a["label"]: a["data"] for a in manifest["assertions"]}
    [created] = assertions["c2pa.actions.v2"]["actions"]
    assert created["action"] == "c2pa.created"
    assert created["softwareAgent"]["name"] == "framefold"
    assert created["parameters"]["ingredients"][0]["url"].endswith("c2pa.ingredient.v3")
    entries = assertions["cawg.training-mining"]["entries"]
    assert set(entries) == {"cawg.ai_training", "cawg.ai_generative_training", "cawg.data_mining",
                            "cawg.ai_inference"}
    assert {e["use"] for e in entries.values()} == {"notAllowed"}


def test_a_signed_loop_still_starts_at_frame_0(tmp_path, signer, anchors):
    """A loop's mp4 hides its last frame before the start (an edit list); remuxing with the
    provenance tag and signing keep it hidden: the same N frames, frame 0 first."""
    from tasks.encode import decode

    y, x = np.mgrid[0:32, 0:32]
    frames = np.stack([np.stack([(x * 8 + t * 32) % 256, y * 8, np.full_like(x, 20 * t)], -1)
                       for t in range(12)]).astype(np.uint8)  # fmt: skip
    with VideoEncoder(tmp_path / "raw.mp4", width=32, height=32, fps=8, loop_frames=12) as enc:
        enc.write(frames)
    video = tmp_path / "loop.mp4"
    remux(tmp_path / "raw.mp4", video, tags={"framefold": json.dumps(RECORD)})
    sign(video, signer=signer, title="loop.mp4", source_type=GENERATED, record=RECORD)
    assert read(video, trust_anchors=anchors)["state"] == "trusted"
    decoded = np.stack(list(decode(video, width=32, height=32))).astype(int)
    assert len(decoded) == 12
    assert np.abs(decoded[0] - frames[0]).mean() < np.abs(decoded[0] - frames[-1]).mean() / 4


def test_without_anchors_the_manifest_is_valid_not_trusted(tmp_path, media, signer):
    video = copy(media["mp4"], tmp_path)
    sign(video, signer=signer, title="clip.mp4", source_type=GENERATED, record=RECORD)
    got = read(video)
    assert got["state"] == "valid"
    assert got["tampered"] is False
    assert got["framefold"] == RECORD
    assert [e.split(":")[0] for e in got["errors"]] == ["signingCredential.untrusted"]


def test_one_byte_in_mdat_makes_it_invalid_and_tampered(tmp_path, media, signer, anchors):
    video = copy(media["mp4"], tmp_path)
    sign(video, signer=signer, title="clip.mp4", source_type=GENERATED, record=RECORD)
    offset, size, header = top_level_boxes(video.read_bytes())["mdat"]
    flip(video, offset + header + (size - header) // 2)

    got = read(video, trust_anchors=anchors)
    assert got["state"] == "invalid"
    assert got["tampered"] is True
    assert any(e.startswith("assertion.bmffHash.mismatch") for e in got["errors"])
    assert got["digital_source_type"] == GENERATED  # the claim itself is still readable


def test_unsigned_mp4_is_absent(media, anchors):
    got = read(media["mp4"], trust_anchors=anchors)
    assert got["state"] == "absent"
    assert got["tampered"] is False and got["manifest_label"] is None and got["errors"] == []


def test_webm_cannot_carry_credentials(tmp_path, media, signer):
    video = copy(media["webm"], tmp_path)
    before = video.read_bytes()
    with pytest.raises(CredentialError, match=r"\.webm cannot carry C2PA credentials; supported: \.mp4"):
        sign(video, signer=signer, title="raw.webm", source_type=GENERATED, record=RECORD)
    assert video.read_bytes() == before
    assert read(video)["state"] == "unsupported"


@pytest.mark.parametrize("kind", ["gif", "jpg"])
def test_gif_and_jpeg_sign_validate_and_detect_tampering(tmp_path, media, signer, anchors, kind):
    still = copy(media[kind], tmp_path)
    sign(still, signer=signer, title=still.name, source_type=GENERATED, record=RECORD, ingredient=media["input.jpg"])
    got = read(still, trust_anchors=anchors)
    assert (got["state"], got["tampered"], got["framefold"]) == ("trusted", False, RECORD)

    flip(still, len(still.read_bytes()) - 20)  # inside the image data, past the manifest
    got = read(still, trust_anchors=anchors)
    assert (got["state"], got["tampered"]) == ("invalid", True)
    assert any(e.startswith("assertion.dataHash.mismatch") for e in got["errors"])


def test_supported_formats_are_ones_c2pa_can_sign():
    assert SUPPORTED == {".mp4": "video/mp4", ".gif": "image/gif", ".jpg": "image/jpeg"}
    assert set(SUPPORTED.values()) <= set(c2pa.Builder.get_supported_mime_types())


@pytest.mark.parametrize("name", ["input.jpg", "input.webp", "input.tiff", "input.bmp", "corrupt.png"])
def test_any_input_image_becomes_an_ingredient(tmp_path, media, signer, anchors, name):
    video = copy(media["mp4"], tmp_path)
    sign(video, signer=signer, title="clip.mp4", source_type=GENERATED, record=RECORD, ingredient=media[name])
    assert read(video, trust_anchors=anchors)["state"] == "trusted"
    [entry] = active_manifest(video, anchors)["ingredients"]
    assert entry["title"] == name and entry["relationship"] == "inputTo"
    assert len(entry["metadata"]["org.framefold.sha256"]) == 64
    if name == "corrupt.png":  # c2pa cannot parse it: described, not read
        assert entry["format"] == "image/png" and "thumbnail" not in entry


def test_signing_keeps_the_file_mode(tmp_path, media, signer):
    video = copy(media["mp4"], tmp_path)
    video.chmod(0o640)
    sign(video, signer=signer, title="clip.mp4", source_type=GENERATED, record=RECORD)
    assert video.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


def test_a_failed_signing_leaves_the_file_untouched(tmp_path, media, chain):
    video = copy(media["mp4"], tmp_path)
    before = video.read_bytes()
    wrong_key = SignerConfig(cert=chain.cert_chain_pem, key=chain.other_key_pem)
    with pytest.raises(CredentialError, match="does not match the first certificate"):
        sign(video, signer=wrong_key, title="clip.mp4", source_type=GENERATED, record=RECORD)
    assert video.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]  # no temp file left behind


# -- arguments and signer checks -------------------------------------------------------------


def test_sign_rejects_bad_arguments(tmp_path, media, signer):
    video = copy(media["mp4"], tmp_path)
    with pytest.raises(ValueError, match="source_type must be an IPTC"):
        sign(video, signer=signer, title="t", source_type="trainedAlgorithmicMedia", record=RECORD)
    with pytest.raises(ValueError, match="record must be plain JSON"):
        sign(video, signer=signer, title="t", source_type=GENERATED, record={"x": float("nan")})
    with pytest.raises(CredentialError, match="does not exist"):
        sign(tmp_path / "missing.mp4", signer=signer, title="t", source_type=GENERATED, record=RECORD)
    with pytest.raises(ValueError, match="trust_anchors must be the PEM text"):
        read(video, trust_anchors="root.pem")


def test_check_accepts_the_test_chain(signer):
    assert check(signer) == []


def test_check_names_what_to_fix(tmp_path, chain):
    self_signed = check(SignerConfig(cert=chain.self_signed_pem, key=chain.key_pem))
    assert len(self_signed) == 1 and "is self-signed" in self_signed[0]

    wrong_key = check(SignerConfig(cert=chain.cert_chain_pem, key=chain.other_key_pem))
    assert len(wrong_key) == 1 and "does not match the first certificate" in wrong_key[0]

    leaf_only = tmp_path / "leaf.pem"
    pem = chain.cert_chain_pem.read_text()
    leaf_only.write_text(pem[: pem.index("-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----\n")])
    [problem] = check(SignerConfig(cert=leaf_only, key=chain.key_pem))
    assert "append its intermediate" in problem

    intermediate_as_signer = tmp_path / "intermediate.pem"
    intermediate_as_signer.write_text(pem[pem.index("-----END CERTIFICATE-----") + 26:])
    problems = check(SignerConfig(cert=intermediate_as_signer, key=chain.key_pem))
    assert any("is a CA" in p for p in problems) and any("does not match" in p for p in problems)

    [rsa_alg] = check(SignerConfig(cert=chain.cert_chain_pem, key=chain.key_pem, alg="ps256"))
    assert rsa_alg == "alg: ps256 needs an RSA key, the key is EC secp256r1"

    missing = check(SignerConfig(cert=tmp_path / "nope.pem", key=tmp_path / "nope.key"))
    assert [p.split(":")[0] for p in missing] == ["cert", "key"]
    assert all("does not exist" in p for p in missing)

    garbage = tmp_path / "garbage.pem"
    garbage.write_text("hello")
    [cert_problem, key_problem] = check(SignerConfig(cert=garbage, key=garbage))
    assert "no PEM certificate" in cert_problem and "not a PEM private key" in key_problem


def test_signer_config_validates_alg_and_tsa(chain):
    allowed = "es256, es384, es512, ps256, ps384, ps512, ed25519"
    with pytest.raises(ValueError, match=f"alg must be one of {allowed}, got 'ES256'"):
        SignerConfig(cert=chain.cert_chain_pem, key=chain.key_pem, alg="ES256")
    with pytest.raises(ValueError, match="tsa_url must be an http"):
        SignerConfig(cert=chain.cert_chain_pem, key=chain.key_pem, tsa_url="timestamp.example")
    assert isinstance(SignerConfig(cert=str(chain.cert_chain_pem), key=str(chain.key_pem)).cert, Path)


def test_self_signed_signs_but_is_never_trusted(tmp_path, media, chain, anchors):
    video = copy(media["mp4"], tmp_path)
    sign(video, signer=SignerConfig(cert=chain.self_signed_pem, key=chain.key_pem), title="clip.mp4",
         source_type=GENERATED, record=RECORD)
    got = read(video, trust_anchors=anchors)
    assert (got["state"], got["tampered"]) == ("valid", False)
    assert os.path.getsize(video) > os.path.getsize(media["mp4"])
