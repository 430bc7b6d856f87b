"""Run long work in QThreads without stalling the window, and stop it cleanly.

Pattern (see the project's field notes): a parent-less :class:`Worker` QObject is moved to a fresh
``QThread``; ``thread.started`` runs it and its ``done`` signal quits the thread. Python references to the
pair are kept in :data:`_LIVE` until the thread has ended, because PySide6 crashes when a wrapper is
collected while its C++ object still runs. Both objects are owned by Python and are deleted on the GUI thread
once their thread has ended; ``thread.finished → worker.deleteLater`` (the C++ idiom) made the worker's C++
side die in the worker thread while the GUI thread released its wrapper, a race that crashed in
``Shiboken::Object::destroy`` about once in five test runs.

Signals from the worker thread are delivered to :class:`JobRunner`'s own slots (a QObject living on the GUI
thread), so callbacks always run on the GUI thread. Progress payloads are plain Python values; progress is
throttled here so a fast model cannot flood the event loop. Cancellation is cooperative: the core polls the
worker's flag between batches and raises :class:`~shortgpt_desktop.core.errors.Cancelled`.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QObject, Qt, QThread, Signal, Slot

from ..core.errors import Cancelled, UserError
from .messages import user_message

log = logging.getLogger(__name__)

#: Minimum seconds between two progress signals of one stage (the last step of a stage always goes through).
PROGRESS_INTERVAL = 0.05

JobFunction = Callable[[Callable[[str, int, int, Any], None], Callable[[], bool]], Any]


@dataclass
class Failure:
    """Why a job failed: a sentence for the dialog, and a traceback when it is a bug."""

    message: str
    details: str | None = None  # traceback for bugs; None for the user's own errors
    is_bug: bool = False


class Worker(QObject):
    """Runs ``fn(progress, cancelled)`` once, in the thread it lives in; each signal carries its job id."""

    progress = Signal(int, str, int, int, object)
    succeeded = Signal(int, object)
    failed = Signal(int, object)
    cancelled = Signal(int)
    done = Signal()  # always the last signal

    def __init__(self, fn: JobFunction, name: str, job_id: int) -> None:
        super().__init__()
        self._fn = fn
        self.name = name
        self.job_id = job_id
        self._cancel = threading.Event()
        self._last_emit: dict[str, float] = {}

    def cancel(self) -> None:
        """Ask the job to stop; thread-safe, returns at once."""
        self._cancel.set()

    def is_cancelled(self) -> bool:
        return self._cancel.is_set()

    def _report(self, stage: str, done: int, total: int, partial: Any = None) -> None:
        now = time.monotonic()
        last = self._last_emit.get(stage, 0.0)
        if 0 < done < total and now - last < PROGRESS_INTERVAL:
            return
        self._last_emit[stage] = now
        payload = list(partial) if isinstance(partial, (list, tuple)) else partial
        self.progress.emit(self.job_id, stage, int(done), int(total), payload)

    @Slot()
    def run(self) -> None:
        try:
            result = self._fn(self._report, self.is_cancelled)
        except Cancelled:
            log.info("%s cancelled", self.name)
            self.cancelled.emit(self.job_id)
        except UserError as exc:
            log.warning("%s: %s", self.name, exc)
            self.failed.emit(self.job_id, Failure(user_message(exc)))
        except MemoryError:
            self.failed.emit(self.job_id, Failure(
                "The computer ran out of memory; use a smaller model, dtype or batch size."))
        except BaseException as exc:
            details = traceback.format_exc()
            log.error("%s failed: %s", self.name, details)
            self.failed.emit(self.job_id, Failure(f"{exc.__class__.__name__}: {exc}", details, is_bug=True))
        else:
            self.succeeded.emit(self.job_id, result)
        finally:
            self.done.emit()


#: (thread, worker) pairs whose thread has not finished yet; see the module docstring.
_LIVE: dict[int, tuple[QThread, Worker]] = {}


def live_threads() -> int:
    return len(_LIVE)


def wait_all(timeout_ms: int = 30_000) -> bool:
    """Cancel every running job and wait for its thread (used on application exit)."""
    deadline = time.monotonic() + timeout_ms / 1000
    for _thread, worker in list(_LIVE.values()):
        worker.cancel()
    ok = True
    for thread, _worker in list(_LIVE.values()):
        left = max(0, int((deadline - time.monotonic()) * 1000))
        ok = thread.wait(left) and ok
    return ok


class JobRunner(QObject):
    """Starts jobs and calls their callbacks on the GUI thread; one job at a time unless ``exclusive=False``.

    ``started(name)`` and ``finished(name, outcome)`` (outcome: ``ok``, ``cancelled`` or ``failed``) let the
    window enable and disable its controls; ``finished`` comes after the job's thread has fully stopped.
    """

    started = Signal(str)
    finished = Signal(str, str)
    progressed = Signal(str, str, int, int, object)  # job name, stage, done, total, partial

    _next_id = 0

    def __init__(self, parent: QObject | None = None, exclusive: bool = True) -> None:
        super().__init__(parent)
        self.exclusive = exclusive
        self._jobs: dict[int, dict[str, Any]] = {}

    @property
    def busy(self) -> bool:
        return bool(self._jobs)

    @property
    def current(self) -> str | None:
        return next((e["name"] for e in self._jobs.values()), None)

    def start(self, name: str, fn: JobFunction, on_success: Callable[[Any], None] | None = None,
              on_failure: Callable[[Failure], None] | None = None,
              on_cancel: Callable[[], None] | None = None) -> Worker:
        if self.exclusive and self._jobs:
            raise RuntimeError(f"a job is already running: {self.current}")
        JobRunner._next_id += 1
        job_id = JobRunner._next_id
        worker = Worker(fn, name, job_id)
        thread = QThread()
        thread.setObjectName(f"shortgpt-{name}")
        worker.moveToThread(thread)
        self._jobs[job_id] = {"name": name, "thread": thread, "worker": worker, "outcome": "failed",
                              "success": on_success, "failure": on_failure, "cancel": on_cancel,
                              "result": Failure(f"The {name} job stopped without a result.", is_bug=True)}
        thread.started.connect(worker.run)
        worker.progress.connect(self._on_progress)
        worker.succeeded.connect(self._on_success)
        worker.failed.connect(self._on_failure)
        worker.cancelled.connect(self._on_cancel)
        # Direct: quit from the worker thread itself, so waiting on the thread never needs the GUI loop.
        worker.done.connect(thread.quit, Qt.ConnectionType.DirectConnection)
        thread.finished.connect(self._on_thread_finished)
        _LIVE[job_id] = (thread, worker)
        self.started.emit(name)
        thread.start()
        return worker

    def cancel(self) -> None:
        for entry in self._jobs.values():
            entry["worker"].cancel()

    def wait(self, timeout_ms: int = 30_000) -> bool:
        """Block until every job's thread has stopped (callbacks then run from the event loop)."""
        deadline = time.monotonic() + timeout_ms / 1000
        ok = True
        for entry in list(self._jobs.values()):
            left = max(0, int((deadline - time.monotonic()) * 1000))
            ok = entry["thread"].wait(left) and ok
        return ok

    @Slot(int, str, int, int, object)
    def _on_progress(self, job_id: int, stage: str, done: int, total: int, partial: Any) -> None:
        entry = self._jobs.get(job_id)
        if entry is not None:
            self.progressed.emit(entry["name"], stage, done, total, partial)

    @Slot(int, object)
    def _on_success(self, job_id: int, result: Any) -> None:
        if job_id in self._jobs:
            self._jobs[job_id].update(outcome="ok", result=result)

    @Slot(int, object)
    def _on_failure(self, job_id: int, failure: Failure) -> None:
        if job_id in self._jobs:
            self._jobs[job_id].update(outcome="failed", result=failure)

    @Slot(int)
    def _on_cancel(self, job_id: int) -> None:
        if job_id in self._jobs:
            self._jobs[job_id].update(outcome="cancelled", result=None)

    @Slot()
    def _on_thread_finished(self) -> None:
        """The thread has stopped: drop references, then run the job's callback."""
        thread = self.sender()
        job_id = next((i for i, e in self._jobs.items() if e["thread"] is thread), None)
        if job_id is None:
            return
        entry = self._jobs.pop(job_id)
        entry["thread"].wait()  # ``finished`` is emitted just before the thread ends: let it end
        _LIVE.pop(job_id, None)
        # The last references to the worker and the thread go with ``entry``: Python deletes both here, on the
        # GUI thread, after their thread has ended (see the module docstring for why not deleteLater).
        outcome, result = entry["outcome"], entry["result"]
        try:
            if outcome == "ok" and entry["success"] is not None:
                entry["success"](result)
            elif outcome == "failed" and entry["failure"] is not None:
                entry["failure"](result)
            elif outcome == "cancelled" and entry["cancel"] is not None:
                entry["cancel"]()
        finally:
            self.finished.emit(entry["name"], outcome)
