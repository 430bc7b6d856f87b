"""``shortgpt-desktop MODEL --calib … --screenshot OUT.png``: open, score, check, render the window, exit."""

from __future__ import annotations

import io
import math
import sys
from pathlib import Path

from PySide6.QtCore import QObject, QTimer, Signal
from PySide6.QtWidgets import QApplication

from ..cli import ProgressBar
from ..core.progress import counts_layers
from .main_window import MainWindow


class ScreenshotRun(QObject):
    """Drives the window through one job after another and emits :attr:`done` with an exit code."""

    done = Signal(int)
    TIMEOUT_MS = 30 * 60 * 1000

    def __init__(self, window: MainWindow, model: str, out: Path, ratio: float | None = None,
                 check: bool = False, size: tuple[int, int] = (1280, 720)) -> None:
        super().__init__(window)
        self.window, self.model, self.out = window, model, out
        self.ratio, self.check, self.size = ratio, check, size
        self.window.jobFinished.connect(self._on_job)
        self.window.errorShown.connect(self._on_error)
        self._failed = False
        self._users_error = False  # the last dialog said a mistake of the input, not a bug: exit 2, as shortgpt does
        # The command line's progress lines on stderr (a long run is not silent): each stage's first and last
        # line at once, others every few seconds when stderr is not a terminal.
        # A windowed program on Windows has no stderr (None): the run goes on without its progress lines.
        self.bar = ProgressBar(sys.stderr or io.StringIO(), quiet=sys.stderr is None,
                               per_layer=lambda stage: counts_layers(stage, window.engine.is_streamed,
                                                                     window.settings_panel.values().get("metric", "")))
        self.window.jobs.started.connect(lambda job: print(f"job: {job}", file=sys.stderr, flush=True))
        self.window.jobs.progressed.connect(lambda job, stage, done, total, partial: self.bar(stage, done, total))

    def start(self) -> None:
        self.window.resize(*self.size)
        QTimer.singleShot(self.TIMEOUT_MS, lambda: self._finish(1, "timed out"))
        self.window.open_model(self.model, then="score")

    def _on_error(self, message: str) -> None:
        self._failed = True
        box = self.window.last_dialog  # a bug's dialog carries its traceback
        self._users_error = box is not None and not box.detailedText()
        print(f"error: {message}", file=sys.stderr)

    def _on_job(self, name: str, outcome: str) -> None:
        try:
            self._next(name, outcome)
        except Exception as exc:  # a slot that raised would leave the run waiting for its 30-minute time-out
            self._finish(1, f"{name}: {exc.__class__.__name__}: {exc}")

    def _next(self, name: str, outcome: str) -> None:
        if outcome != "ok":  # a model not there, text that gives no sample: 2, as the command line exits
            self._finish(2 if outcome == "failed" and self._users_error else 1, f"{name} {outcome}")
            return
        if name == "score":
            if self.ratio is not None:
                n = self.window.engine.n_layers
                count = min(self.window.engine.max_removable, max(0, math.floor(self.ratio * n + 1e-9)))
                self.window.plan_panel.set_count(count, emit=True)
            if self.check and self.window.plan is not None and self.window.plan.removed:
                QTimer.singleShot(0, self.window.check)
                return
            self._shoot_soon()
        elif name == "check":
            self._shoot_soon()

    def _shoot_soon(self) -> None:
        self.window.tabs.setCurrentWidget(self.window.compare_panel if self.check else self.window.log_panel)
        QTimer.singleShot(500, self._shoot)  # let the last repaint and layout settle

    def _shoot(self) -> None:
        try:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            ok = self.window.grab().save(str(self.out))
        except OSError as exc:
            self._finish(1, f"could not write {self.out} ({exc.strerror or exc})")
            return
        message = f"wrote {self.out}" if ok else f"could not write {self.out}"
        self._finish(0 if ok and not self._failed else 1, message)

    def _finish(self, code: int, message: str) -> None:
        print(message, file=sys.stdout if code == 0 else sys.stderr)
        self.done.emit(code)
        for dialog in self.window.dialogs:
            dialog.close()
        self.window.stop_and_close()  # nobody is there to answer a question
        QApplication.quit()
