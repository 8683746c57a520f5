"""A report or contact sheet that cannot be written is one warning line naming the cause, not
a traceback (a finished run's outputs stand; the traceback is there at debug level), and the
run's summary says what was not written and why."""

from __future__ import annotations

import logging

import tasks.report
from flows.cli import _print_summary
from tasks.store import StoreError

REFUSED = ("cannot write s3://assets/out/report.html: connection refused (after 4 attempts; "
           "check that the store is reachable, then run again)")


def test_an_unwritable_report_is_one_warning_line_and_named_in_the_summary(tmp_path, monkeypatch, caplog, capsys):
    def refuse(output, summary):
        raise StoreError(REFUSED)

    monkeypatch.setattr(tasks.report, "write_report", refuse)
    summary = {"run_id": "r1", "job": "j", "output": str(tmp_path), "seconds": 1.0, "gpu_seconds": 0.0,
               "counts": {"done": 0, "skipped": 0, "failed": 0}, "items": []}  # fmt: skip
    with caplog.at_level(logging.DEBUG, logger="framefold"):
        tasks.report.publish(tmp_path, summary)
    assert summary["report"] is None and summary["not_written"] == {"report": REFUSED}
    assert summary["contact_sheet"] == str(tmp_path / "contact-sheet.jpg")  # the sheet was written
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in warnings] == [f"could not write the batch report: {REFUSED}"]
    assert warnings[0].exc_info is None  # no traceback at warning level
    assert any(r.levelno == logging.DEBUG and r.exc_info for r in caplog.records)
    _print_summary(summary)
    last = capsys.readouterr().out.replace("\n", "").split("done 0, skipped 0, failed 0")[-1]
    assert f"; report not written ({REFUSED})" in last, last
