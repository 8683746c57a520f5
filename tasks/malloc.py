"""glibc's allocator told to give large buffers back to the system as they are freed."""

from __future__ import annotations

import sys


def return_large_buffers() -> None:
    """Have glibc map every allocation of 128 KiB or more on its own and unmap it on free.

    Frames stream through short-lived buffers of a few hundred KiB (windows, chunks being
    stitched, upscaled and encoded); with glibc's adaptive threshold these come from the
    heap, where a few small long-lived tensors (per-frame statistics) pin the freed space,
    and a long clip's process grows with its length though it holds only the windows in
    flight (bench Figure 2). Called by the CLI and by every process that finishes items
    (a Ray worker); process-wide and idempotent.
    """
    if sys.platform != "linux":
        return
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):  # not glibc (musl, …): its allocator already behaves
        pass
