"""Hostile and unusual input stills. Broken files (truncated, not an image, empty, too many
pixels) are opened and decoded by validation: the manifest is refused (exit 2) listing each at
its item, naming the file, before anything is written. Odd but valid formats, each one item of
one batch beside a good item, go through the real flow (session Ray and Prefect) and are decoded
as the README promises
(EXIF orientation applied, transparency composited over `background`, first frame of animated
and multi-page files, 16-bit/gray/palette/CMYK to 8-bit RGB, a 1×1 still fitted)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flows.cli import main
from tasks.encode import decode
from tasks.provenance import read_ledger
from tests.conftest import draw_image, write_manifest

pytestmark = pytest.mark.usefixtures("ray_cluster", "prefect_server")

MAX_PIXELS = 5000  # FRAMEFOLD_MAX_IMAGE_PIXELS for the batch: every still but "huge" is under it
RED, GREEN, BLUE, CYAN = (255, 0, 0), (0, 255, 0), (0, 0, 255), (0, 255, 255)


def _make_inputs(img: Path) -> dict[str, dict]:
    """Write the stills; returns item id -> item fields (beyond the defaults)."""
    img.mkdir(parents=True)
    items: dict[str, dict] = {}
    draw_image(img / "good.png", (48, 40), seed=5)
    items["good"] = {"image": "img/good.png"}

    # --- broken: each must fail alone ---
    solid = Image.new("RGB", (48, 40), (200, 30, 30))
    solid.save(img / "whole.png")
    draw_image(img / "whole.jpg", (48, 40), seed=6)
    data = (img / "whole.png").read_bytes()
    (img / "truncated.png").write_bytes(data[: len(data) // 2])
    data = (img / "whole.jpg").read_bytes()
    (img / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (img / "words.png").write_text("this is a text file, not a PNG\n")
    (img / "empty.png").write_bytes(b"")
    Image.new("RGB", (100, 100), (1, 2, 3)).save(img / "huge.png")  # 10,000 px > MAX_PIXELS
    Image.fromarray(np.full((40, 48), 300.0, np.float32)).save(img / "float300.tif")  # mode F, past 0–255
    Image.fromarray(np.full((40, 48), 4_000_000, np.int32)).save(img / "int32.tif")  # mode I, past 16 bits
    for name in ("truncated.png", "truncated.jpg", "words.png", "empty.png", "huge.png", "float300.tif",
                 "int32.tif"):
        items["bad-" + name.replace(".", "-")] = {"image": f"img/{name}"}

    # --- unusual but valid ---
    Image.new("RGB", (1, 1), (10, 200, 10)).save(img / "one.png")
    items["one-pixel"] = {"image": "img/one.png"}
    Image.fromarray(np.full((40, 48), 32768, np.uint16)).save(img / "sixteen.png")  # mode I;16, mid-grey
    items["sixteen-bit"] = {"image": "img/sixteen.png"}
    Image.fromarray(np.full((40, 48), 0.25, np.float32)).save(img / "float.tif")  # mode F: 0–1
    items["float"] = {"image": "img/float.tif"}
    Image.fromarray(np.full((40, 48), 200.0, np.float32)).save(img / "float255.tif")  # mode F: 0–255
    items["float-255"] = {"image": "img/float255.tif"}
    Image.fromarray(np.full((40, 48), 49152, np.int32)).save(img / "wide.tif")  # mode I with 16-bit values
    items["thirty-two-bit"] = {"image": "img/wide.tif"}
    Image.new("L", (48, 40), 77).save(img / "gray.png")
    items["grayscale"] = {"image": "img/gray.png"}
    Image.new("RGB", (48, 40), (10, 20, 250)).convert("P").save(img / "palette.png")
    items["palette"] = {"image": "img/palette.png"}
    rgba = Image.new("RGBA", (48, 40), (0, 0, 0, 0))  # left half fully transparent, right half opaque red
    rgba.paste(Image.new("RGBA", (24, 40), (*RED, 255)), (24, 0))
    rgba.save(img / "alpha.png")
    items["transparent"] = {"image": "img/alpha.png", "background": "#00ff00", "fit": "stretch"}
    Image.new("CMYK", (48, 40), (255, 0, 0, 0)).save(img / "cmyk.jpg")  # pure cyan ink
    items["cmyk"] = {"image": "img/cmyk.jpg"}
    # stored 64 wide × 32 high, red marker top-left; EXIF 6 = displayed rotated 90° clockwise,
    # i.e. 32 wide × 64 high with the marker top-right
    stored = Image.new("RGB", (64, 32), BLUE)
    stored.paste(Image.new("RGB", (16, 16), RED), (0, 0))
    exif = stored.getexif()
    exif[0x0112] = 6
    stored.save(img / "rotated.jpg", exif=exif, quality=95)
    items["exif-rotated"] = {"image": "img/rotated.jpg", "size": [32, 64], "fit": "stretch"}
    frames = [Image.new("RGB", (48, 40), c) for c in (RED, BLUE, GREEN)]
    frames[0].save(img / "animated.gif", save_all=True, append_images=frames[1:], duration=80, loop=0)
    items["animated-gif"] = {"image": "img/animated.gif"}
    frames[0].save(img / "pages.tif", save_all=True, append_images=frames[1:])
    items["multipage-tiff"] = {"image": "img/pages.tif"}
    return items


def _manifest(root: Path, items: dict[str, dict]) -> Path:
    doc = {
        "version": 1, "name": "media", "output": "out",
        "defaults": {"frames": 4, "fps": 8, "size": [32, 32], "window": {"length": 4, "overlap": 0},
                     "motion": {"amplitude": 0.0}},  # no motion: frames show the fitted still
        "items": [{"id": item_id, **fields} for item_id, fields in items.items()],
    }
    return write_manifest(root, doc)


BROKEN = [
    ("bad-truncated-png", "truncated.png", "truncated"),
    ("bad-truncated-jpg", "truncated.jpg", "truncated"),
    ("bad-words-png", "words.png", "not a readable image"),
    ("bad-empty-png", "empty.png", "not a readable image"),
    ("bad-huge-png", "huge.png", "FRAMEFOLD_MAX_IMAGE_PIXELS"),
    ("bad-float300-tif", "float300.tif", "a floating-point image with values from 300 to 300, outside 0–1 or 0–255"),
    ("bad-int32-tif", "int32.tif", "a 32-bit integer image with values from 4000000 to 4000000, outside 0–255 or 0–65535"),
]


def test_broken_stills_are_refused_by_validation_each_at_its_item(tmp_path, monkeypatch, capsys):
    items = _make_inputs(tmp_path / "img")
    manifest = _manifest(tmp_path, items)
    ids = list(items)
    monkeypatch.setenv("FRAMEFOLD_MAX_IMAGE_PIXELS", str(MAX_PIXELS))
    assert main(["run", str(manifest)]) == 2
    err = capsys.readouterr().err
    assert f"invalid manifest ({len(BROKEN)} problems)" in err and "Traceback" not in err
    for item, file, words in BROKEN:
        line = next(line for line in err.splitlines() if f"items[{ids.index(item)}].image (item '{item}')" in line)
        assert file in line and words in line, line
    assert not (tmp_path / "out").exists()  # nothing written


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """One run of every valid still above (module-scoped: one flow run for all the checks)."""
    root = tmp_path_factory.mktemp("media")
    items = {k: v for k, v in _make_inputs(root / "img").items() if not k.startswith("bad-")}
    manifest = _manifest(root, items)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FRAMEFOLD_MAX_IMAGE_PIXELS", str(MAX_PIXELS))
        code = main(["run", str(manifest), "--json"])
    out = root / "out"
    rows = {r["item_id"]: r for r in read_ledger(out).to_pylist()}
    return code, out, rows, items


def _first_frame(out: Path, item: str) -> np.ndarray:
    record = json.loads((out / f"{item}.json").read_text())
    width, height = record["video"]["width"], record["video"]["height"]
    return next(iter(decode(out / f"{item}.mp4", width=width, height=height))).astype(int)


def _close(pixel, colour, tol=24) -> bool:
    return all(abs(int(a) - b) <= tol for a, b in zip(pixel, colour))


def test_batch_of_valid_stills_exits_0_and_every_item_has_one_row(batch):
    code, out, rows, items = batch
    assert code == 0
    assert sorted(rows) == sorted(items)
    assert rows["good"]["status"] == "done" and (out / "good.mp4").is_file()
    assert not list(out.glob(".*.part"))


@pytest.mark.parametrize("item", ["one-pixel", "sixteen-bit", "float", "float-255", "thirty-two-bit", "grayscale", "palette", "transparent", "cmyk",
                                  "exif-rotated", "animated-gif", "multipage-tiff"])
def test_unusual_still_is_done(batch, item):
    _, out, rows, _ = batch
    assert rows[item]["status"] == "done", rows[item]["reason"]
    record = json.loads((out / f"{item}.json").read_text())
    assert record["output"]["sha256"] == rows[item]["output_sha256"]


@pytest.mark.parametrize(("item", "colour"), [
    ("one-pixel", (10, 200, 10)),  # fitted to 32×32: every pixel the one colour
    ("sixteen-bit", (128, 128, 128)),  # 32768 of 65535 scaled, not clipped to white
    ("float", (64, 64, 64)),  # 0.25 of 0–1, not 0.25 of 255
    ("float-255", (200, 200, 200)),  # values past 1: read as 0–255
    ("thirty-two-bit", (191, 191, 191)),  # 49152 of 65535
    ("grayscale", (77, 77, 77)),
    ("palette", (10, 20, 250)),
    ("cmyk", CYAN),
    ("animated-gif", RED),  # the first frame, not the last
    ("multipage-tiff", RED),
])  # fmt: skip
def test_decoded_colour_of_the_first_frame(batch, item, colour):
    _, out, _, _ = batch
    frame = _first_frame(out, item)
    for y, x in ((4, 4), (16, 16), (27, 27)):
        assert _close(frame[y, x], colour), (item, (y, x), frame[y, x])


def test_transparency_is_composited_over_the_background(batch):
    _, out, _, _ = batch
    frame = _first_frame(out, "transparent")
    assert _close(frame[16, 6], GREEN), frame[16, 6]  # transparent half: the background
    assert _close(frame[16, 26], RED), frame[16, 26]  # opaque half: the image


def test_exif_orientation_is_applied(batch):
    _, out, _, _ = batch
    frame = _first_frame(out, "exif-rotated")  # 64 high, 32 wide, as displayed
    assert frame.shape == (64, 32, 3)
    assert _close(frame[6, 26], RED), frame[6, 26]  # the marker, top right once rotated
    assert _close(frame[6, 6], BLUE), frame[6, 6]  # top left is not the marker
    assert _close(frame[58, 6], BLUE) and _close(frame[58, 26], BLUE)
    record = json.loads((out / "exif-rotated.json").read_text())
    assert record["inputs"]["image"]["image"]["exif_rotated"] is True


@pytest.mark.parametrize(("item", "fmt"), [("animated-gif", "GIF"), ("multipage-tiff", "TIFF")])
def test_first_frame_only_is_recorded(batch, item, fmt):
    _, out, _, _ = batch
    info = json.loads((out / f"{item}.json").read_text())["inputs"]["image"]["image"]
    assert info["format"] == fmt and info["frames"] == 3 and info["first_frame_only"] is True
    single = json.loads((out / "grayscale.json").read_text())["inputs"]["image"]["image"]
    assert single["first_frame_only"] is False and single["frames"] == 1
