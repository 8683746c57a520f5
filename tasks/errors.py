"""Errors that end one item (never the batch)."""

from __future__ import annotations


class ItemError(Exception):
    """An item cannot be produced because of its input (a corrupt image, an unusable
    model directory, …). Never retried: re-running will fail the same way until the
    input changes. The message says what is wrong and what to do."""


class EncodeError(ItemError):
    """ffmpeg is missing or exited non-zero; the message carries its last stderr lines."""


class ClusterError(Exception):
    """Ray cannot be reached or started: no item can run. The message names the address
    and the settings to check."""


class ClusterLost(ItemError):
    """The run's Ray cluster stopped answering mid-run: this item, and every item after it,
    fails with the same reason (the items done are kept)."""
