"""The app's one background-work vocabulary (gui.workers): Worker, Workers, Throttle, ScanJob."""

from __future__ import annotations

import threading
import time

import pytest

pytest.importorskip("PySide6")
from PySide6.QtCore import QThreadPool

from simclr_studio.gui.workers import Throttle, Worker, Workers, plain


def test_a_worker_delivers_throttled_progress_then_its_result(qtbot):
    def work(progress, should_stop):
        for i in range(2000):
            progress(i + 1, 2000)
            time.sleep(0.0001)
        return threading.get_ident()

    worker = Worker(work)
    seen, results = [], []
    worker.progress.connect(lambda done, total: seen.append(done))
    worker.finished.connect(results.append)
    with qtbot.waitSignal(worker.ended, timeout=10_000):
        worker.start()
    assert results and results[0] != threading.get_ident()  # ran off the GUI thread
    assert 1 <= len(seen) < 100 and seen == sorted(seen)  # ~15 Hz, not 2000 updates
    assert not worker.is_running() and worker.wait(0)


def test_errors_are_one_line_and_a_cancelled_worker_delivers_nothing(qtbot):
    def fail(progress, should_stop):
        raise ValueError("bad input\nmore detail")

    worker = Worker(fail)
    errors = []
    worker.failed.connect(errors.append)
    with qtbot.waitSignal(worker.ended, timeout=5000):
        worker.start()
    assert errors == ["bad input"]

    gate = threading.Event()

    def slow(progress, should_stop):
        gate.wait(5)
        if should_stop():
            raise InterruptedError
        return 1

    worker = Worker(slow)
    got = []
    worker.finished.connect(got.append)
    worker.failed.connect(got.append)
    worker.start()
    worker.cancel()
    gate.set()
    with qtbot.waitSignal(worker.ended, timeout=5000):
        pass
    assert got == [] and worker.cancelled


def test_the_newest_request_of_a_name_wins(qtbot):
    workers = Workers(pool=QThreadPool.globalInstance())
    got = []
    for i in range(5):
        workers.start("preview", plain(lambda i=i: (time.sleep(0.02), i)[1]), on_result=got.append)
    assert "preview" in workers and len(workers) == 1
    qtbot.waitUntil(lambda: not workers, timeout=5000)
    qtbot.wait(100)
    assert got == [4]


def test_queued_calls_cancelled_in_a_pool_never_run(qtbot):
    pool = QThreadPool()
    pool.setMaxThreadCount(1)
    gate = threading.Event()
    ran = []
    workers = Workers(pool=pool)
    busy = threading.Event()
    workers.start("blocker", plain(lambda: (busy.set(), gate.wait(5))))
    # The pool's one thread must be taken before the others are queued: a blocker still in the queue is
    # taken back by cancel_all, and the thread then started one of the others before its cancel came.
    assert busy.wait(5)
    for i in range(10):
        workers.start(i, plain(lambda i=i: ran.append(i)))
    workers.cancel_all()
    assert not workers
    gate.set()
    pool.waitForDone(5000)
    qtbot.wait(50)
    assert ran == []


def test_throttle_and_debounce(qtbot):
    calls = []
    throttle = Throttle(calls.append, 50)
    for i in range(10):
        throttle(i)
    assert calls == [0]  # the first at once
    qtbot.waitUntil(lambda: calls == [0, 9], timeout=1000)  # the last of the burst, one interval later
    qtbot.wait(120)
    assert calls == [0, 9]
    quiet = []
    debounce = Throttle(quiet.append, 30, debounce=True)
    for i in range(5):
        debounce(i)
        qtbot.wait(5)
    assert quiet == []
    qtbot.waitUntil(lambda: quiet == [4], timeout=1000)
    debounce(7)
    debounce.cancel()
    qtbot.wait(60)
    assert quiet == [4]


def test_scan_job(qtbot, image_folder):
    from simclr_studio.gui.workers import ScanJob

    job = ScanJob(image_folder)
    with qtbot.waitSignal(job.finished, timeout=10_000) as done:
        job.start()
    assert len(done.args[0]) == 24 and job.facts[0] > 0 and job.wait(5)


def test_the_job_board_names_each_job_with_its_own_progress(qtbot):
    """Two jobs at once: the line names both, each with its own figure (a finished job's 100 % is never
    shown as another's); when all are done the idle text returns; a failure is said in one line."""
    from PySide6.QtWidgets import QWidget

    from simclr_studio.gui.job_board import JobBoard

    parent = QWidget()
    qtbot.addWidget(parent)
    board = JobBoard(parent, lambda: "idle summary")
    release = threading.Event()
    results = []

    def slow(progress, should_stop):
        progress(1, 4)
        release.wait(10)
        return "slow"

    board.run("slow", slow, results.append, "Slow work")
    qtbot.waitUntil(lambda: "Slow work… 25 %" in board.line.text(), timeout=5000)

    def quick(progress, should_stop):
        progress(4, 4)
        return "quick"

    board.run("quick", quick, results.append, "Quick work", on_progress=lambda d, t: board.describe("quick", "all"))
    qtbot.waitUntil(lambda: results == ["quick"], timeout=5000)
    assert board.line.text() == "Slow work… 25 %" and board.cancel_button.isVisible()
    release.set()
    qtbot.waitUntil(lambda: results == ["quick", "slow"], timeout=5000)
    assert board.line.text() == "idle summary" and not board.bar.isVisible()

    def broken(progress, should_stop):
        raise ValueError("no such thing\nsecond line")

    board.run("broken", broken, results.append, "Broken work")
    qtbot.waitUntil(lambda: "failed" in board.line.text(), timeout=5000)
    assert board.line.text() == "Broken work failed: no such thing"
