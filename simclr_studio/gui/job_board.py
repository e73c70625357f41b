"""A tab's background work as the user sees it: one line that names every job still running with its own
progress ("t-SNE of 8,000 points… iteration 250 of 1,000 · Measuring kNN… 40 %"), a progress bar that
follows the newest job, a Cancel button that stops them all, and the line's messages between jobs.
Built on ``Workers`` (newest call of a name wins); no job's figure is ever shown as another's."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtWidgets import QLabel, QProgressBar, QPushButton, QWidget

from simclr_studio.gui.workers import Job, Workers


class JobBoard(Workers):
    """``run`` jobs by name; ``len`` / ``in`` say what runs. ``idle_text()`` is what the line says once
    nothing runs (a summary), unless a message was given since."""

    def __init__(self, parent: QWidget, idle_text: Callable[[], str | None]):
        super().__init__(parent)
        self.idle_text = idle_text
        self.line = QLabel()
        self.line.setObjectName("muted")
        self.bar = QProgressBar()
        self.bar.setMaximumWidth(200)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.stop_all)
        self._labels: dict[str, str] = {}  # what each running job does, in the order started
        self._progress: dict[str, str] = {}  # each running job's progress, in words
        self.refresh()

    def run(self, name: str, fn: Job, on_result: Callable[[Any], Any], label: str, quiet: bool = False,
            on_progress: Callable[[int, int], Any] | None = None) -> None:
        """Run ``fn`` in the background (replacing a call of the same name); ``label`` says what it does.
        ``on_progress`` may describe the progress itself (``describe``); else it reads as a percentage."""
        def over() -> None:
            self._labels.pop(name, None)
            self._progress.pop(name, None)

        def done(result: Any) -> None:
            over()
            self.refresh()  # first: what on_result says (or starts) is not overwritten by the summary
            on_result(result)

        def failed(message: str) -> None:
            over()
            self.refresh()
            self.say(f"{label} failed: {message}", error=True)

        def progress(done: int, total: int) -> None:
            if on_progress is not None:
                on_progress(done, total)
            elif total:
                self._progress[name] = f"{100 * done // total} %"
            if self._labels and next(reversed(self._labels)) == name and total:
                self.bar.setRange(0, total)  # the bar follows the newest job
                self.bar.setValue(done)
            self._show_running()

        self.start(name, fn, on_result=done, on_error=failed, on_progress=progress)
        self._labels.pop(name, None)
        if not quiet:
            self._labels[name] = label
            self.bar.setRange(0, 0)  # busy until the first progress report
        self.refresh()

    def describe(self, name: str, text: str) -> None:
        """The progress of job ``name`` in words (e.g. "iteration 250 of 1,000")."""
        self._progress[name] = text

    def refresh(self) -> None:
        busy = bool(self)
        self.bar.setVisible(busy)
        self.cancel_button.setVisible(busy)
        for name in [n for n in self._labels if n not in self]:  # cancelled meanwhile
            self._labels.pop(name)
        if self._labels:
            self._show_running()
        else:
            text = self.idle_text()
            if text is not None:
                self.say(text)

    def _show_running(self) -> None:
        self.say(" · ".join(f"{label}… {self._progress.get(name, '')}".strip()
                            for name, label in self._labels.items()))

    def stop_all(self) -> None:
        """Cancel: every job stops and delivers nothing."""
        self.cancel_all()
        self._labels.clear()
        self._progress.clear()
        self.refresh()
        self.say("Cancelled")

    def forget(self) -> None:
        """Drop every job quietly (the tab's sources changed)."""
        self.cancel_all()
        self._labels.clear()
        self._progress.clear()
        self.refresh()

    def say(self, text: str, error: bool = False) -> None:
        self.line.setText(text)
        self.line.setObjectName("error" if error else "muted")
        self.line.style().unpolish(self.line)
        self.line.style().polish(self.line)
