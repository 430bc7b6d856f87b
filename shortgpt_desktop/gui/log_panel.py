"""A read-only log view fed by Python's logging, from any thread."""

from __future__ import annotations

import contextlib
import logging

from PySide6.QtCore import QObject, Signal, Slot
from PySide6.QtGui import QFontDatabase, QTextCursor
from PySide6.QtWidgets import QHBoxLayout, QPlainTextEdit, QPushButton, QVBoxLayout, QWidget


class _Bridge(QObject):
    """Carries records to the GUI thread: a signal emitted from a worker thread is queued to the receiver."""

    line = Signal(str, int)


class QtLogHandler(logging.Handler):
    """A logging handler that forwards formatted records to the log panel through a Qt signal."""

    def __init__(self, level: int = logging.INFO) -> None:
        super().__init__(level)
        self.bridge = _Bridge()
        self.setFormatter(logging.Formatter("%(asctime)s  %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:  # a broken record must never take the window down
            return
        with contextlib.suppress(RuntimeError):  # the panel is gone (window closed): nothing to show it in
            self.bridge.line.emit(text, record.levelno)


class LogPanel(QWidget):
    """The log as text, newest at the bottom; it keeps the last few thousand lines."""

    MAX_LINES = 3000

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.view = QPlainTextEdit(self)
        self.view.setReadOnly(True)
        self.view.setMaximumBlockCount(self.MAX_LINES)
        self.view.setLineWrapMode(QPlainTextEdit.LineWrapMode.WidgetWidth)  # no sideways scrolling
        self.view.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.view.setPlaceholderText("Messages from loading, scoring and saving appear here.")
        clear = QPushButton("Clear", self)
        clear.clicked.connect(self.view.clear)
        clear.setToolTip("Empty this view of the messages")
        bar = QHBoxLayout()
        bar.addStretch(1)
        bar.addWidget(clear)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.view)
        layout.addLayout(bar)
        self.handler = QtLogHandler()
        self.handler.bridge.line.connect(self.append)
        self._attached: list[logging.Logger] = []

    def attach(self, name: str, level: int | None = None) -> None:
        """Show records of logger ``name``; ``level`` lowers that logger's own level (our package: INFO)."""
        logger = logging.getLogger(name)
        logger.addHandler(self.handler)
        if level is not None and (logger.level == logging.NOTSET or logger.level > level):
            logger.setLevel(level)
        self._attached.append(logger)

    def detach(self) -> None:
        """Stop listening; called when the window closes so no record reaches a deleted widget."""
        for logger in self._attached:
            logger.removeHandler(self.handler)
        self._attached.clear()

    @Slot(str, int)
    def append(self, text: str, level: int = logging.INFO) -> None:
        if level >= logging.ERROR:
            # A traceback is many lines; keep the first and the last so the panel stays readable.
            lines = text.splitlines()
            if len(lines) > 12:
                text = "\n".join([*lines[:3], "  …", *lines[-6:]])
        self.view.appendPlainText(text)
        self.view.moveCursor(QTextCursor.MoveOperation.End)

    def note(self, message: str, level: int = logging.ERROR, name: str = "shortgpt_desktop.gui") -> None:
        """A line from the window itself (a dialog's sentence, not a logging record), in the columns of the
        records around it: time, level, source (a dialog's line had the time alone)."""
        record = logging.LogRecord(name, level, "", 0, message, None, None)
        self.append(self.handler.format(record), level)
