"""A report that cannot be written is one warning line naming the cause, not a traceback
(a finished run's outputs stand; the traceback is there at debug level)."""

from __future__ import annotations

import logging

import flows.run
from tasks.store import StoreError


def test_an_unwritable_report_is_one_warning_line(tmp_path, monkeypatch, caplog):
    def refuse(output, summary):
        raise StoreError("cannot write s3://assets/out/report.html: connection refused (after 4 attempts; "
                         "check that the store is reachable, then run again)")

    monkeypatch.setattr(flows.run, "write_report", refuse)
    with caplog.at_level(logging.DEBUG, logger="framefold"):
        assert flows.run._report(tmp_path, {"items": []}) is None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in warnings] == [
        "could not write the batch report: cannot write s3://assets/out/report.html: connection refused "
        "(after 4 attempts; check that the store is reachable, then run again)"]
    assert warnings[0].exc_info is None  # no traceback at warning level
    assert any(r.levelno == logging.DEBUG and r.exc_info for r in caplog.records)
