"""One bar per layer, filled in live while scoring; removed layers in another colour; click to toggle."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pyqtgraph as pg
from PySide6.QtCore import QEvent, QPoint, QPointF, Qt, Signal
from PySide6.QtGui import QColor, QCursor, QPalette
from PySide6.QtWidgets import QHBoxLayout, QLabel, QToolTip, QVBoxLayout, QWidget

#: Removed layers: a warm red that reads on light and dark backgrounds alike.
REMOVED_COLOR = QColor(224, 83, 61)


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


class ScoreChart(QWidget):
    """A pyqtgraph bar chart of per-layer scores.

    ``set_scores`` may be called many times a second while a job runs (partial scores); it only changes the
    bar heights. ``set_removed`` only recolours. Hovering shows the layer and its score; a left click on a bar
    emits :attr:`layerClicked`.
    """

    layerClicked = Signal(int)
    HINT = "Point at a bar for its score; click it to keep or remove that layer."

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        pg.setConfigOptions(antialias=True)
        self.plot = pg.PlotWidget(self)
        self.plot.setMenuEnabled(False)
        self.plot.hideButtons()
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.setMinimumHeight(180)
        item = self.plot.getPlotItem()
        item.showGrid(x=False, y=True, alpha=0.25)
        item.setLabel("bottom", "Layer")
        item.getAxis("left").enableAutoSIPrefix(False)  # plain 0.05, 0.1, … rather than "(x0.001)" scaling
        self.bars = pg.BarGraphItem(x=[], height=[], width=0.78)
        self.plot.addItem(self.bars)
        self.placeholder = pg.TextItem("Choose a model and press Score: one bar per layer appears here.",
                                       anchor=(0.5, 0.5))
        self.plot.addItem(self.placeholder)
        self.placeholder.setPos(0.5, 0.5)
        item.setXRange(0, 1, padding=0)
        item.setYRange(0, 1, padding=0)

        self.title = QLabel("<b>Layer importance</b> (lower = removed first)", self)
        self.legend = QLabel(self)
        self.hover_label = QLabel(self.HINT, self)
        self.hover_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        head = QHBoxLayout()
        head.addWidget(self.title)
        head.addStretch(1)
        head.addWidget(self.legend)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(head)
        layout.addWidget(self.plot, 1)
        layout.addWidget(self.hover_label)

        self.scores: list[float | None] = []
        self.removed: set[int] = set()
        self.metric_label = "score"
        self.clickable = False
        self._hovered: int | None = None
        self.plot.scene().sigMouseMoved.connect(self._on_mouse_moved)
        self.plot.scene().sigMouseClicked.connect(self._on_mouse_clicked)
        self.apply_palette()

    # ------------------------------------------------------------------------------------------------ data

    @property
    def n_layers(self) -> int:
        return len(self.scores)

    def clear(self, message: str | None = None) -> None:
        self.scores, self.removed = [], set()
        # pyqtgraph 0.14 fails on an empty ``pens`` list; None means one shared pen and brush.
        self.bars.setOpts(x=[], height=[], brushes=None, pens=None)
        if message:
            self.placeholder.setText(message)
        self.placeholder.setVisible(True)
        self.plot.getPlotItem().setXRange(0, 1, padding=0)
        self.plot.getPlotItem().setYRange(0, 1, padding=0)
        self.placeholder.setPos(0.5, 0.5)

    def set_metric(self, label: str) -> None:
        self.metric_label = label
        self.plot.getPlotItem().setLabel("left", label)

    def set_scores(self, scores: Sequence[float | None], removed: Sequence[int] | None = None) -> None:
        """Heights from ``scores`` (None or NaN: not known yet, drawn as an empty slot)."""
        new_count = len(scores) != len(self.scores)
        self.scores = list(scores)
        if removed is not None:
            self.removed = set(removed)
        self.placeholder.setVisible(not self.scores)
        heights = [float(s) if _finite(s) else 0.0 for s in self.scores]
        if not heights:
            self.clear()
            return
        self.bars.setOpts(x=list(range(len(heights))), height=heights, brushes=self._brushes(),
                          pens=self._pens())
        self._fit(new_count)

    def set_removed(self, removed: Sequence[int]) -> None:
        self.removed = set(removed)
        self.bars.setOpts(brushes=self._brushes(), pens=self._pens())
        self._update_hover_text()

    def _fit(self, new_count: bool) -> None:
        item = self.plot.getPlotItem()
        n = len(self.scores)
        if new_count:
            item.setXRange(-0.6, max(n, 1) - 0.4, padding=0)
            step = max(1, math.ceil(n / 32))
            item.getAxis("bottom").setTicks([[(i, str(i)) for i in range(0, n, step)], []])
        known = [float(s) for s in self.scores if _finite(s)]
        if known:
            low, high = min(0.0, min(known)), max(known)
            if high <= low:
                high = low + 1.0
            item.setYRange(low, high + (high - low) * 0.08, padding=0)

    # ----------------------------------------------------------------------------------------------- look

    def _brushes(self) -> list[QColor]:
        pal = self.palette()
        kept = pal.color(QPalette.ColorRole.Highlight)
        unknown = pal.color(QPalette.ColorRole.Mid)
        return [REMOVED_COLOR if i in self.removed else (kept if _finite(s) else unknown)
                for i, s in enumerate(self.scores)]

    def _pens(self) -> list[object]:
        text = self.palette().color(QPalette.ColorRole.WindowText)
        hovered, none = pg.mkPen(text, width=2), pg.mkPen(None)
        return [hovered if i == self._hovered else none for i in range(len(self.scores))]

    def apply_palette(self) -> None:
        """Follow the application's light or dark palette."""
        pal = self.palette()
        background = pal.color(QPalette.ColorRole.Base)
        text = pal.color(QPalette.ColorRole.WindowText)
        self.plot.setBackground(background)
        item = self.plot.getPlotItem()
        for name in ("left", "bottom"):
            axis = item.getAxis(name)
            axis.setPen(pg.mkPen(text))
            axis.setTextPen(pg.mkPen(text))
        self.placeholder.setColor(text)
        kept = pal.color(QPalette.ColorRole.Highlight).name()
        self.legend.setText(
            f'<span style="color:{kept}">■</span> kept &nbsp; '
            f'<span style="color:{REMOVED_COLOR.name()}">■</span> removed'
        )
        if self.scores:
            self.bars.setOpts(brushes=self._brushes(), pens=self._pens())

    def changeEvent(self, event: QEvent) -> None:
        if event.type() in (QEvent.Type.PaletteChange, QEvent.Type.ApplicationPaletteChange):
            self.apply_palette()
        super().changeEvent(event)

    # ------------------------------------------------------------------------------------------ pointer

    def layer_at(self, scene_pos: QPointF) -> int | None:
        """The layer whose bar column is under a scene position, if any."""
        item = self.plot.getPlotItem()
        if not self.scores or not item.sceneBoundingRect().contains(scene_pos):
            return None
        point = item.vb.mapSceneToView(scene_pos)
        index = round(point.x())
        if 0 <= index < len(self.scores) and abs(point.x() - index) <= 0.45:
            return index
        return None

    def bar_position(self, index: int) -> QPoint:
        """Where bar ``index`` is, in the plot widget's coordinates (tests click there)."""
        item = self.plot.getPlotItem()
        view_range = item.vb.viewRange()
        y = view_range[1][0] + (view_range[1][1] - view_range[1][0]) * 0.05
        scene = item.vb.mapViewToScene(QPointF(index, y))
        return self.plot.mapFromScene(scene)

    def hover_text(self, index: int) -> str:
        score = self.scores[index] if 0 <= index < len(self.scores) else None
        value = f"{score:.4g}" if _finite(score) else "not scored yet"
        state = "removed" if index in self.removed else "kept"
        return f"Layer {index}: {self.metric_label} {value} — {state}"

    def _update_hover_text(self) -> None:
        self.hover_label.setText(self.hover_text(self._hovered) if self._hovered is not None else self.HINT)

    def _on_mouse_moved(self, scene_pos: QPointF) -> None:
        index = self.layer_at(scene_pos)
        if index != self._hovered:
            self._hovered = index
            if self.scores:
                self.bars.setOpts(pens=self._pens())
            self._update_hover_text()
            if index is None:
                QToolTip.hideText()
        if index is not None:
            QToolTip.showText(QCursor.pos(), self.hover_text(index), self.plot)

    def _on_mouse_clicked(self, event: object) -> None:
        if not self.clickable or event.button() != Qt.MouseButton.LeftButton:  # type: ignore[attr-defined]
            return
        index = self.layer_at(event.scenePos())  # type: ignore[attr-defined]
        if index is not None:
            self.layerClicked.emit(index)
