"""Progress display hooks: the CLI installs a rich display; library use gets none."""

from __future__ import annotations

import threading
from typing import Protocol


class Reporter(Protocol):
    def item_started(self, item_id: str, frames: int) -> None: ...
    def frames_done(self, item_id: str, n: int) -> None: ...
    def item_finished(self, item_id: str, status: str) -> None: ...
    def note(self, text: str) -> None: ...


class _Silent:
    def item_started(self, item_id: str, frames: int) -> None:
        pass

    def frames_done(self, item_id: str, n: int) -> None:
        pass

    def item_finished(self, item_id: str, status: str) -> None:
        pass

    def note(self, text: str) -> None:
        pass


_lock = threading.Lock()
_reporter: Reporter = _Silent()


def reporter() -> Reporter:
    return _reporter


def install(r: Reporter | None) -> None:
    global _reporter
    with _lock:
        _reporter = r or _Silent()


class RichReporter:
    """One overall bar (items) and a bar per item in flight (frames)."""

    def __init__(self, total_items: int) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(  # on stderr: stdout carries results (--json)
            TextColumn("{task.description}", markup=False),  # item ids are printed as written
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self.overall = self.progress.add_task("items", total=total_items)
        self.tasks: dict[str, int] = {}
        self.lock = threading.Lock()

    def __enter__(self) -> RichReporter:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def item_started(self, item_id: str, frames: int) -> None:
        with self.lock:
            self.tasks[item_id] = self.progress.add_task(f"  {item_id}", total=frames)

    def frames_done(self, item_id: str, n: int) -> None:
        with self.lock:
            if item_id in self.tasks:
                self.progress.advance(self.tasks[item_id], n)

    def item_finished(self, item_id: str, status: str) -> None:
        with self.lock:
            task = self.tasks.pop(item_id, None)
            if task is not None:
                self.progress.remove_task(task)
            self.progress.advance(self.overall, 1)

    def note(self, text: str) -> None:
        """A line above the bars (e.g. "waiting for GPU nodes")."""
        with self.lock:
            self.progress.console.print(text, markup=False, highlight=False)
