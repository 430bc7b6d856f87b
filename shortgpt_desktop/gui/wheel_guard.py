"""The wheel over a control that does not have the focus scrolls what holds it, not the control's value."""

from __future__ import annotations

from PySide6.QtCore import QEvent, QObject, Qt
from PySide6.QtWidgets import QWidget


class WheelGuard(QObject):
    """A wheel turned over an unfocused box or slider scrolls the panel instead of silently changing the value: a
    wheel scrolling the chart and plan past the slider moved the plan from 7 layers to 6 and marked the check's
    figures stale."""

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if event.type() == QEvent.Type.Wheel and isinstance(watched, QWidget) and not watched.hasFocus():
            event.ignore()
            return True
        return False

    def guard(self, *widgets: QWidget) -> None:
        """Watch ``widgets``; each takes the focus from a click or Tab only (the wheel then changes it)."""
        for widget in widgets:
            widget.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
            widget.installEventFilter(self)
