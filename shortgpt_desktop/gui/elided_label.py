"""A label that never grows its layout: text wraps to at most ``max_lines`` lines, the rest is elided (…),
and the whole text is in the tooltip."""

from __future__ import annotations

from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QResizeEvent, QTextLayout, QTextOption
from PySide6.QtWidgets import QLabel, QSizePolicy, QWidget

_LINE_SEPARATOR = "\u2028"  # what QTextLayout breaks a line at (a plain newline is not a break for it)


class ElidedLabel(QLabel):
    """A plain-text label of bounded size: any width down to one pixel, at most ``max_lines`` lines high.

    :meth:`text` returns the full text; :meth:`shown_text` what is drawn.
    """

    def __init__(self, parent: QWidget | None = None, max_lines: int = 1) -> None:
        super().__init__(parent)
        self.max_lines = max(1, max_lines)
        self._full = ""
        self._details = ""  # a tooltip shown whether or not the text is cut
        self._note = ""  # a tooltip line kept below the (cut) text as the text changes
        self._lines = 1
        self.setTextFormat(Qt.TextFormat.PlainText)
        self.setWordWrap(False)
        self.setMinimumWidth(1)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)

    def text(self) -> str:  # type: ignore[override]
        return self._full

    def shown_text(self) -> str:
        return super().text()

    def is_elided(self) -> bool:
        return self.shown_text().replace("\n", " ").split() != self._full.split()

    def setText(self, text: str) -> None:  # type: ignore[override]
        self._full = text or ""
        self._relayout()

    def set_details(self, details: str) -> None:
        """A tooltip that is always shown (instead of the full text, which it should include)."""
        self._details = details
        self._relayout()

    def set_note(self, note: str) -> None:
        """A line the tooltip keeps below the full text (when cut) whatever the text becomes: the progress line's
        whole-job estimate, which each step's own line replaces."""
        self._note = note
        self._relayout()

    def _wrapped(self, width: int) -> list[str]:
        """The text wrapped to ``width`` pixels, one string per line."""
        text = self._full.replace("\r\n", "\n").replace("\n", _LINE_SEPARATOR)
        layout = QTextLayout(text, self.font())
        option = QTextOption()
        option.setWrapMode(QTextOption.WrapMode.WrapAtWordBoundaryOrAnywhere)
        layout.setTextOption(option)
        lines: list[str] = []
        layout.beginLayout()
        while True:
            line = layout.createLine()
            if not line.isValid():
                break
            line.setLineWidth(width)
            lines.append(text[line.textStart():line.textStart() + line.textLength()])
        layout.endLayout()
        return [s.replace(_LINE_SEPARATOR, "").rstrip() for s in lines] or [""]

    def _relayout(self) -> None:
        width = max(self.contentsRect().width(), 1)
        metrics = self.fontMetrics()
        lines = self._wrapped(width) if self.max_lines > 1 else [self._full.replace("\n", " ")]
        if len(lines) > self.max_lines or metrics.horizontalAdvance(lines[-1]) > width:
            head = lines[:self.max_lines - 1]
            rest = " ".join(lines[self.max_lines - 1:])
            lines = [*head, metrics.elidedText(rest, Qt.TextElideMode.ElideRight, width)]
        super().setText("\n".join(lines))
        self.setToolTip(self._details or "\n\n".join(t for t in (self._full if self.is_elided() else "", self._note)
                                                       if t))
        if len(lines) != self._lines:
            self._lines = len(lines)
            self.updateGeometry()

    def sizeHint(self) -> QSize:
        margins = self.contentsMargins()
        height = self._lines * self.fontMetrics().lineSpacing() + margins.top() + margins.bottom()
        return QSize(self.fontMetrics().horizontalAdvance(self.shown_text().split("\n")[0]) + 2, height)

    def minimumSizeHint(self) -> QSize:
        return QSize(1, self.sizeHint().height())

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        if event.size().width() != event.oldSize().width():
            self._relayout()
