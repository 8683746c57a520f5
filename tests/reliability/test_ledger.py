"""The ledger under concurrent writers and readers: a reader never fails and never misses a row
while another run appends part files and compacts them (parts are deleted after the merged file
is renamed into place), and killed writes (.part leftovers) are never read as rows."""

from __future__ import annotations

import threading
from pathlib import Path

from tasks import provenance


def _row(run_id: str, item_id: str) -> dict:
    return provenance.ledger_row(run_id=run_id, job="j", item_id=item_id, status="done", reason="new")


def test_reader_sees_every_row_while_runs_append_and_compact(tmp_path: Path) -> None:
    items = [f"i{n}" for n in range(5)]
    stop = threading.Event()
    written: list[int] = [0]  # rows whose run has been compacted (all visible from then on)
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            run = 0
            while not stop.is_set() and run < 40:
                run_id = f"r{run:03d}"
                for item in items:
                    provenance.append_rows(tmp_path, run_id, item, [_row(run_id, item)])
                provenance.compact(tmp_path, run_id)
                written[0] = (run + 1) * len(items)
                run += 1
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)
        finally:
            stop.set()

    thread = threading.Thread(target=writer)
    thread.start()
    reads, seen = 0, 0
    try:
        while not stop.is_set() or thread.is_alive():
            floor = written[0]
            table = provenance.read_ledger(tmp_path)  # must not raise while files come and go
            ids = table.column("row_id").to_pylist()
            assert len(ids) == len(set(ids))
            assert len(ids) >= max(floor, seen), f"a read lost rows: {len(ids)} < {max(floor, seen)}"
            seen = len(ids)
            reads += 1
    finally:
        stop.set()
        thread.join()
    assert not errors, errors
    assert reads > 20 and provenance.read_ledger(tmp_path).num_rows == written[0] == 200


def test_leftover_part_files_are_not_rows(tmp_path: Path) -> None:
    provenance.append_rows(tmp_path, "r1", "a", [_row("r1", "a")])
    folder = tmp_path / provenance.LEDGER_DIR
    (folder / ".part-r1-b.parquet.0badc0de.part").write_bytes(b"PAR1 half a file")
    (folder / ".run-r1.parquet.0badc0de.part").write_bytes(b"")
    assert provenance.read_ledger(tmp_path).column("item_id").to_pylist() == ["a"]
    provenance.compact(tmp_path, "r1")
    assert provenance.read_ledger(tmp_path).column("item_id").to_pylist() == ["a"]


def test_a_part_added_to_a_merged_run_joins_it(tmp_path: Path) -> None:
    """A row that reaches the ledger after its run was merged (kept while the store was down)
    is merged with the run's rows, not over them."""
    for item in "ab":
        provenance.append_rows(tmp_path, "r1", item, [_row("r1", item)])
    provenance.compact(tmp_path, "r1")
    provenance.append_rows(tmp_path, "r1", "c", [_row("r1", "c")])
    provenance.compact(tmp_path, "r1")
    folder = tmp_path / provenance.LEDGER_DIR
    assert [p.name for p in folder.iterdir()] == ["run-r1.parquet"]
    assert sorted(provenance.read_ledger(tmp_path).column("item_id").to_pylist()) == ["a", "b", "c"]


def test_compaction_is_idempotent_and_survives_a_crash_before_deleting_parts(tmp_path: Path) -> None:
    for item in "abc":
        provenance.append_rows(tmp_path, "r1", item, [_row("r1", item)])
    folder = tmp_path / provenance.LEDGER_DIR
    parts = {p.name: p.read_bytes() for p in folder.glob("part-*.parquet")}
    provenance.compact(tmp_path, "r1")
    for name, data in parts.items():  # as if killed after the merged file, before the deletes
        (folder / name).write_bytes(data)
    assert sorted(provenance.read_ledger(tmp_path).column("item_id").to_pylist()) == ["a", "b", "c"]
    provenance.compact(tmp_path, "r1")
    assert [p.name for p in folder.iterdir()] == ["run-r1.parquet"]
    assert sorted(provenance.read_ledger(tmp_path).column("item_id").to_pylist()) == ["a", "b", "c"]
