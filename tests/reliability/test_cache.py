"""The window cache under concurrent items and a failing disk: it only saves work, so it never
fails an item — not when another item's thread drops its folder while this one evicts, and not
when its files cannot be written."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from tasks.cache import WindowCache


def test_eviction_races_with_other_items_dropping_their_windows(tmp_path: Path) -> None:
    pixels = np.zeros((2, 8, 8, 3), np.uint8)
    window_bytes = len(pixels.tobytes()) + 128
    errors: list[BaseException] = []
    stop = threading.Event()

    def item(name: str) -> None:  # like produce_item: cache windows, then drop them once done
        cache = WindowCache(tmp_path, max_bytes=6 * window_bytes)  # small: every put evicts
        try:
            n = 0
            while not stop.is_set():
                key = f"{name}-{n}"
                for start in range(0, 8, 2):
                    cache.put(key, start, 2, pixels)
                cache.drop(key)
                n += 1
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)
            stop.set()

    threads = [threading.Thread(target=item, args=(f"t{i}",)) for i in range(3)]
    for t in threads:
        t.start()
    stop.wait(3.0)
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors


def test_a_cache_that_cannot_be_written_is_skipped(tmp_path: Path) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the cache folder should be\n")
    cache = WindowCache(blocked, max_bytes=1 << 20)
    cache.put("key", 0, 2, np.zeros((2, 4, 4, 3), np.uint8))  # must not raise
    assert cache.get("key", 0, 2) is None


def test_cached_windows_round_trip_and_the_cap_holds(tmp_path: Path) -> None:
    cache = WindowCache(tmp_path, max_bytes=3000)
    frames = [np.full((2, 8, 8, 3), n, np.uint8) for n in range(6)]
    for n, f in enumerate(frames):
        cache.put("k", 2 * n, 2, f)
    total = sum(p.stat().st_size for p in tmp_path.rglob("*.npy"))
    assert 0 < total <= 3000
    np.testing.assert_array_equal(cache.get("k", 10, 2), frames[5])  # the newest is kept
