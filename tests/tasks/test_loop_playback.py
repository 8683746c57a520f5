"""A loop's mp4 in a browser: the frame hidden before its start (tasks.encode.loop_coding)
is never shown, and the clip lasts exactly its frames."""

from __future__ import annotations

import functools
import http.server
import threading

import numpy as np
import pytest

from tests.conftest import bar_loop, encode_clip
from tests.tasks.test_report import CHROMIUM, FLAGS

pytestmark = pytest.mark.skipif(not CHROMIUM.is_file(), reason="needs /usr/bin/chromium (`make test` installs it)")

PAGE = '<video id=v src="loop.mp4" muted preload=auto></video><canvas id=c width=64 height=64></canvas>'
FIRST_FRAME = """() => new Promise(done => {
  const v = document.getElementById('v');
  const grab = () => { const c = document.getElementById('c').getContext('2d'); c.drawImage(v, 0, 0);
    done({duration: v.duration, time: v.currentTime, pixels: Array.from(c.getImageData(0, 0, 64, 64).data)}); };
  if (v.readyState >= 2) grab(); else v.addEventListener('loadeddata', grab);
})"""


def test_chromium_starts_a_loop_at_frame_0_and_plays_it_for_its_length(tmp_path):
    from playwright.sync_api import sync_playwright

    frames = np.repeat(np.repeat(bar_loop(48), 2, axis=1), 2, axis=2)  # a bar moving 1.3 px per frame, 2 s at 24 fps
    encode_clip(tmp_path / "loop.mp4", frames, loop=True)
    (tmp_path / "index.html").write_text(PAGE)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)  # same origin: the canvas stays readable
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
            try:
                page = browser.new_page()
                page.set_default_timeout(30_000)
                page.goto(f"http://127.0.0.1:{server.server_address[1]}/index.html")
                shown = page.evaluate(FIRST_FRAME)
            finally:
                browser.close()
    finally:
        server.shutdown()
    assert shown["duration"] == pytest.approx(2.0, abs=1e-3) and shown["time"] == 0
    pixels = np.array(shown["pixels"]).reshape(64, 64, 4)[..., :3]
    error = {i: np.abs(pixels - frames[i].astype(int)).mean() for i in (0, 1, 47)}
    assert error[0] < 1.5 and error[0] < error[1] / 3 and error[0] < error[47] / 3, error  # frame 0, not the hidden one
