"""One bar per layer, filled in live while scoring; removed layers in another colour; click to toggle."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pyqtgraph as pg
from PySide6.QtCore import QEvent, QPoint, QPointF, Qt, Signal
from PySide6.QtGui import QColor, QCursor, QFontMetrics, QKeyEvent, QPalette, QTextOption
from PySide6.QtWidgets import QCheckBox, QHBoxLayout, QLabel, QToolTip, QVBoxLayout, QWidget

from .elided_label import ElidedLabel

#: Removed layers: a warm red that reads on light and dark backgrounds alike.
REMOVED_COLOR = QColor(224, 83, 61)
#: Kept layers where the palette's highlight is too close to :data:`REMOVED_COLOR` to tell apart: Okabe–Ito blue.
KEPT_FALLBACK = QColor(0, 114, 178)
#: Hues closer than this (degrees) to the removed red count as too close: Ubuntu's orange highlight is 9° away,
#: Windows' pink accent 45°, its blue 200°.
MIN_HUE_DISTANCE = 50.0
#: The other metrics of the same pass, drawn as lines over the bars (colour-blind-safe Okabe–Ito hues).
EXTRA_COLORS = (QColor(0, 158, 115), QColor(230, 159, 0), QColor(204, 121, 167), QColor(86, 180, 233))
#: A score is an outlier when it lies this many interquartile ranges above the upper quartile.
OUTLIER_IQR = 3.0


def kept_color(palette: QPalette) -> QColor:
    """The kept bars' colour: the palette's highlight, unless its hue is close to the removed layers' red (Ubuntu's
    orange highlight, a red or orange accent colour): then kept and removed bars, and the legend's two squares,
    looked alike, and colour is all that tells them apart."""
    color = palette.color(QPalette.ColorRole.Highlight)
    if color.hslSaturationF() < 0.25:  # a grey highlight stands apart from the red already
        return color
    distance = abs(color.hslHueF() - REMOVED_COLOR.hslHueF()) * 360.0
    return KEPT_FALLBACK if min(distance, 360.0 - distance) < MIN_HUE_DISTANCE else color


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _quantile(sorted_values: list[float], q: float) -> float:
    position = (len(sorted_values) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def outlier_ceiling(values: Sequence[float | None]) -> float | None:
    """The top of a y-range that shows the bulk of ``values``: the highest score that is not an outlier
    (above the upper quartile by more than :data:`OUTLIER_IQR` interquartile ranges). None when nothing stands
    out, or when there are too few scores to say."""
    known = sorted(float(v) for v in values if _finite(v))
    if len(known) < 4:
        return None
    q1, q3 = _quantile(known, 0.25), _quantile(known, 0.75)
    limit = q3 + OUTLIER_IQR * max(q3 - q1, 1e-12)
    inliers = [v for v in known if v <= limit]
    if len(inliers) == len(known) or not inliers:
        return None
    return inliers[-1]


def color_axes(item: pg.PlotItem, color: QColor) -> None:
    """A plot's left and bottom axes, line and labels, in ``color`` (the palette's text: pyqtgraph's own grey)."""
    for name in ("left", "bottom"):
        axis = item.getAxis(name)
        axis.setPen(pg.mkPen(color))
        axis.setTextPen(pg.mkPen(color))


def layer_tick_step(layers: int, pixels: float, label_pixels: float) -> int:
    """Every how many layers a number fits under the bars: 1, 2, 5, 10, 20, 50… the first whose numbers, each
    ``label_pixels`` wide with its gap, fit ``pixels`` of axis (every layer where the width is not known yet)."""
    if pixels <= 0 or layers <= 1:
        return 1
    step = 1
    while step * pixels / layers < label_pixels and step < layers:
        step = next(s * 10 ** e for e in range(8) for s in (1, 2, 5) if s * 10 ** e > step)
    return step


#: The chart's title before anything is scored.
UNSCORED_TITLE = "<b>Layer importance</b> (lower = removed first)"


class ScoreChart(QWidget):
    """A pyqtgraph bar chart of per-layer scores.

    ``set_scores`` may be called many times a second while a job runs (partial scores); it only changes the
    bar heights. ``set_removed`` only recolours. Hovering shows the layer and its score; a left click on a bar
    emits :attr:`layerClicked`.
    """

    layerClicked = Signal(int)
    optionsChanged = Signal(dict)  # {"zoom": bool, "others": bool}, when the user ticks an option
    HINT = "Point at a bar for its score; click it to keep or remove that layer (or the arrow keys and Space)."

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        pg.setConfigOptions(antialias=True)
        self.plot = pg.PlotWidget(self)
        self.plot.setAccessibleName("Layer importance: one bar per layer")
        # From the keyboard: the arrow keys, Home and End move from bar to bar (outlined, its score written below, as
        # the pointer does) and Space or Enter keeps or removes it. The chart took the focus and did nothing.
        self.plot.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.plot.installEventFilter(self)
        self.plot.setMenuEnabled(False)
        self.plot.hideButtons()
        self.plot.setMouseEnabled(x=False, y=False)
        # Low enough that the chart's title, plot and hint fit what the window leaves it at its minimum size (860 ×
        # 600): at 180 the chart was squeezed below its own minimum there and the hint was drawn over the axis.
        self.plot.setMinimumHeight(130)
        item = self.plot.getPlotItem()
        item.showGrid(x=False, y=True, alpha=0.25)
        item.setLabel("bottom", "Layer")
        item.setLabel("left", "score")  # the metric is named in the title
        item.getAxis("left").enableAutoSIPrefix(False)  # plain 0.05, 0.1, … rather than "(x0.001)" scaling
        self.bars = pg.BarGraphItem(x=[], height=[], width=0.78)
        self.plot.addItem(self.bars)
        self.placeholder = pg.TextItem("Choose a model and press Score: one bar per layer appears here.",
                                       anchor=(0.5, 0.5))
        self.plot.addItem(self.placeholder)
        self.placeholder.setPos(0.5, 0.5)
        item.setXRange(0, 1, padding=0)
        item.setYRange(0, 1, padding=0)

        self.bottom_axis = item.getAxis("bottom")
        self.bottom_axis.setTicks([[], []])  # no fractional "layers" on the empty chart
        # a bound method, not a lambda holding self: Qt drops the connection with the chart
        item.getViewBox().sigResized.connect(self._on_plot_resized)
        # The message on the empty chart wraps, centred, to the plot's width: a long one (what a model pruned before
        # lacks) ran off both sides, neither its start nor its end readable (a window walkthrough).
        centred = QTextOption(Qt.AlignmentFlag.AlignHCenter)
        centred.setWrapMode(QTextOption.WrapMode.WordWrap)
        self.placeholder.textItem.document().setDefaultTextOption(centred)
        self.outlier_labels: list[pg.TextItem] = []
        self.extra_curves: list[pg.PlotDataItem] = []

        self.title = QLabel(UNSCORED_TITLE, self)
        self.title.setWordWrap(True)  # two lines in a narrow pane, where one line clipped the legend off the window
        self.zoom_box = QCheckBox("Zoom past outliers", self)
        self.zoom_box.setToolTip("Scale the axis to the bulk of the layers; a bar far above the others (often "
                                 "layer 0) is cut at the top and its score written on it")
        self.others_box = QCheckBox("Other metrics", self)
        self.others_box.setToolTip("Draw the other metrics of the same scoring pass as lines, each scaled to "
                                   "this axis (their own values are in the hover text)")
        for box in (self.zoom_box, self.others_box):
            box.toggled.connect(self._on_option_toggled)
        self.legend = QLabel(self)
        # Wrapped where the pane is narrow: on one line, "Other metrics" made it wider than the window (its right pane
        # has no sideways scroll bar), and cut the chart's last bars and the plan's figures off the edge.
        self.legend.setWordWrap(True)
        # One line, elided where the pane is narrow (the whole line in its tooltip): a plain label's text held the
        # chart, and so the window's right pane, at least as wide as the longest hover text.
        self.hover_label = ElidedLabel(self)
        self.hover_label.setText(self.HINT)
        self.hover_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        # The title on a line of its own, the options and the legend below it: side by side, the title wrapped to
        # four lines at the window's minimum width and the legend still did not fit.
        options = QHBoxLayout()
        options.addWidget(self.zoom_box)
        options.addWidget(self.others_box)
        options.addSpacing(8)
        options.addWidget(self.legend, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.title)
        layout.addLayout(options)
        layout.addWidget(self.plot, 1)
        layout.addWidget(self.hover_label)
        # Tab in the order they stand: the options above the bars came after them (made first, the plot led)
        QWidget.setTabOrder(self.zoom_box, self.others_box)
        QWidget.setTabOrder(self.others_box, self.plot)

        self.scores: list[float | None] = []
        self.extra: dict[str, list[float | None]] = {}  # label → the other metrics' scores, same layers
        self.removed: set[int] = set()
        self.metric_label = "score"
        self.clickable = False
        self._hovered: int | None = None
        self._chosen_by_keys = False  # the bar described came from the arrow keys (kept when the pointer leaves)
        self.plot.scene().sigMouseMoved.connect(self._on_mouse_moved)
        self.plot.scene().sigMouseClicked.connect(self._on_mouse_clicked)
        self.apply_palette()

    # ------------------------------------------------------------------------------------------------ data

    @property
    def n_layers(self) -> int:
        return len(self.scores)

    def clear(self, message: str | None = None) -> None:
        self.scores, self.removed, self.extra = [], set(), {}
        self.title.setText(UNSCORED_TITLE)  # the last model's metric stayed named over a model not scored yet
        self._hovered = None
        # pyqtgraph 0.14 fails on an empty ``pens`` list; None means one shared pen and brush.
        self.bars.setOpts(x=[], height=[], brushes=None, pens=None)
        if message:
            self.placeholder.setText(message)
        self.placeholder.setVisible(True)
        self.plot.getPlotItem().setXRange(0, 1, padding=0)
        self.plot.getPlotItem().setYRange(0, 1, padding=0)
        self.bottom_axis.setTicks([[], []])
        self.placeholder.setPos(0.5, 0.5)
        self._draw_decorations(1.0)
        self._update_hover_text()

    # --------------------------------------------------------------------------------------------- options

    def options(self) -> dict[str, bool]:
        return {"zoom": self.zoom_box.isChecked(), "others": self.others_box.isChecked()}

    def set_options(self, options: dict) -> None:
        """Tick the options saved last time (unknown keys are ignored); emits nothing."""
        for key, box in (("zoom", self.zoom_box), ("others", self.others_box)):
            box.blockSignals(True)
            if key in options:  # a hand-edited "false" is false (bool("false") was True)
                box.setChecked(options[key] in (True, "true", "1", 1))
            box.blockSignals(False)
        if self.scores:
            self._fit(False)

    def _on_option_toggled(self) -> None:
        if self.scores:
            self._fit(False)
        self.optionsChanged.emit(self.options())

    def set_extra(self, extra: dict[str, list[float | None]]) -> None:
        """The other metrics of the same pass (label → one score per layer), drawn when "Other metrics" is on."""
        self.extra = {label: list(values) for label, values in extra.items() if len(values) == len(self.scores)}
        self.others_box.setEnabled(bool(self.extra))
        if self.scores:
            self._fit(False)

    def set_metric(self, label: str, measured: bool = False) -> None:
        """Name the metric in the title (on the axis, a vertical label of "Block Influence+ (measured) (partial)" was
        cut to "Block Influence+ (measured) (p" at the plot's height, and "partial" with it). ``measured``: the plan
        measures its choice (bi+), so it need not take the lowest bars."""
        self.metric_label = label
        rule = "lower = more redundant; the plan measures its choice" if measured else "lower = removed first"
        self.title.setText(f"<b>Layer importance</b> · {label} ({rule})")

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
        if new_count:
            self.extra = {}
            if self._hovered is not None and self._hovered >= len(heights):
                self._hovered = None
        self.bars.setOpts(x=list(range(len(heights))), height=heights, brushes=self._brushes(),
                          pens=self._pens())
        self._fit(new_count)
        self._update_hover_text()

    def _on_plot_resized(self, *_: object) -> None:
        self._set_layer_ticks()
        self.placeholder.setTextWidth(max(120.0, self.plot.getPlotItem().getViewBox().width() - 24))

    def _set_layer_ticks(self) -> None:
        """Layer numbers under the bars, every :func:`layer_tick_step`-th where the plot is too narrow for each (at
        the window's minimum width, or scaled by 150 %, 30 numbers ran together: "…1011121314…")."""
        n = len(self.scores)
        if not n:
            return
        metrics = QFontMetrics(self.bottom_axis.style.get("tickFont") or self.bottom_axis.font())
        label = metrics.horizontalAdvance(str(n - 1)) + metrics.horizontalAdvance("  ")
        step = layer_tick_step(n, self.plot.getPlotItem().getViewBox().width(), label)
        self.bottom_axis.setTicks([[(i, str(i)) for i in range(0, n, step)], []])

    def set_removed(self, removed: Sequence[int]) -> None:
        self.removed = set(removed)
        self.bars.setOpts(brushes=self._brushes(), pens=self._pens())
        self._update_hover_text()

    def _fit(self, new_count: bool) -> None:
        item = self.plot.getPlotItem()
        n = len(self.scores)
        if new_count:
            item.setXRange(-0.6, max(n, 1) - 0.4, padding=0)
            self._set_layer_ticks()
        known = [float(s) for s in self.scores if _finite(s)]
        if not known:
            return
        low, high = min(0.0, min(known)), max(known)
        ceiling = outlier_ceiling(self.scores) if self.zoom_box.isChecked() else None
        if ceiling is not None and ceiling > low:
            high = ceiling
        if high <= low:
            high = low + 1.0
        top = high + (high - low) * 0.08
        item.setYRange(low, top, padding=0)
        self._draw_decorations(top)

    def _draw_decorations(self, top: float) -> None:
        """Outlier values written on their cut bars, and the other metrics' lines scaled to this axis."""
        for label in self.outlier_labels:
            self.plot.removeItem(label)
        for curve in self.extra_curves:
            self.plot.removeItem(curve)
        self.outlier_labels, self.extra_curves = [], []
        text = self.palette().color(QPalette.ColorRole.WindowText)
        row, previous = 0, -2
        for i, score in enumerate(self.scores):
            if _finite(score) and score > top:  # type: ignore[operator]
                # Side by side, two cut bars' values ran into each other (".97… 0.163 ↑" on 30 layers): a neighbour's
                # goes a line lower
                row = 1 - row if i == previous + 1 else 0
                previous = i
                # the last bar's value ends at its middle, the first's starts there: centred, they were cut at the
                # chart's edges (layer 29 of 30)
                across = 1.0 if i == len(self.scores) - 1 else 0.0 if i == 0 else 0.5
                label = pg.TextItem(f"{score:.3g} ↑", color=text, anchor=(across, -1.1 * row))
                label.setPos(i, top)
                self.plot.addItem(label)
                self.outlier_labels.append(label)
        if self.others_box.isChecked() and self.scores:
            main_max = max((float(s) for s in self.scores if _finite(s)), default=1.0)
            scale_top = min(main_max, top) or 1.0
            for n, (name, values) in enumerate(self.extra.items()):
                known = [abs(float(v)) for v in values if _finite(v)]
                peak = max(known, default=0.0)
                if not peak:
                    continue
                points = [(i, float(v) * scale_top / peak) for i, v in enumerate(values) if _finite(v)]
                color = EXTRA_COLORS[n % len(EXTRA_COLORS)]
                curve = pg.PlotDataItem([p[0] for p in points], [p[1] for p in points], pen=pg.mkPen(color, width=2),
                                        symbol="o", symbolSize=5, symbolBrush=color, symbolPen=None, name=name)
                self.plot.addItem(curve)
                self.extra_curves.append(curve)
        self._update_legend()

    # ----------------------------------------------------------------------------------------------- look

    def _brushes(self) -> list[QColor]:
        pal = self.palette()
        kept = kept_color(pal)
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
        color_axes(self.plot.getPlotItem(), text)
        self.placeholder.setColor(text)
        for label in self.outlier_labels:  # written in the old palette's text colour
            label.setColor(text)
        self._update_legend()
        if self.scores:
            self.bars.setOpts(brushes=self._brushes(), pens=self._pens())

    def _update_legend(self) -> None:
        kept = kept_color(self.palette()).name()
        parts = [f'<span style="color:{kept}">■</span>&nbsp;kept',
                 f'<span style="color:{REMOVED_COLOR.name()}">■</span>&nbsp;removed']
        for n, name in enumerate(self.extra if self.extra_curves else []):
            parts.append(f'<span style="color:{EXTRA_COLORS[n % len(EXTRA_COLORS)].name()}">—</span>&nbsp;{name}')
        self.legend.setText("&nbsp; ".join(parts) + (" (scaled)" if self.extra_curves else ""))

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
        others = "".join(f"; {name} {values[index]:.4g}" for name, values in self.extra.items()
                         if index < len(values) and _finite(values[index]))
        # the state first: in a narrow window the line was cut before it ("… — rem…"), its most useful word
        return f"Layer {index}: {state}, {self.metric_label} {value}{others}"

    def _update_hover_text(self) -> None:
        self.hover_label.setText(self.hover_text(self._hovered) if self._hovered is not None else self.HINT)

    def _on_mouse_moved(self, scene_pos: QPointF) -> None:
        index = self.layer_at(scene_pos)
        if index is not None:
            self._chosen_by_keys = False
        if index != self._hovered:
            self._hovered = index
            if self.scores:
                self.bars.setOpts(pens=self._pens())
            self._update_hover_text()
            if index is None:
                QToolTip.hideText()
        if index is not None:
            QToolTip.showText(QCursor.pos(), self.hover_text(index), self.plot)

    def eventFilter(self, watched: object, event: QEvent) -> bool:
        if watched is self.plot and self.scores:
            if event.type() == QEvent.Type.FocusIn and self._hovered is None:
                self._set_hovered(0)
                self._chosen_by_keys = True
            elif event.type() == QEvent.Type.FocusOut:
                self._set_hovered(None)
            elif event.type() == QEvent.Type.Leave and not self._chosen_by_keys:
                # the pointer gone: the line kept the last bar it pointed at, outlined (a bar the keys chose stays;
                # a click gives the chart the focus, so the focus cannot tell the two apart)
                self._set_hovered(None)
                QToolTip.hideText()
            elif event.type() == QEvent.Type.KeyPress:
                return self._on_key(event)  # type: ignore[arg-type]
        return super().eventFilter(watched, event)

    def _on_key(self, event: QKeyEvent) -> bool:
        """Move between bars and toggle one; True where the key was used (others go on to the window)."""
        n, key, at = len(self.scores), event.key(), self._hovered if self._hovered is not None else 0
        moves = {Qt.Key.Key_Left: at - 1, Qt.Key.Key_Right: at + 1, Qt.Key.Key_Home: 0, Qt.Key.Key_End: n - 1}
        if key in moves:
            self._set_hovered(max(0, min(n - 1, moves[key])))
            self._chosen_by_keys = True
            return True
        if key in (Qt.Key.Key_Space, Qt.Key.Key_Return, Qt.Key.Key_Enter) and self.clickable:
            self._set_hovered(at)
            self.layerClicked.emit(at)
            return True
        return False

    def _set_hovered(self, index: int | None) -> None:
        self._hovered = index
        if self.scores:
            self.bars.setOpts(pens=self._pens())
        self._update_hover_text()

    def _on_mouse_clicked(self, event: object) -> None:
        if not self.clickable or event.button() != Qt.MouseButton.LeftButton:  # type: ignore[attr-defined]
            return
        index = self.layer_at(event.scenePos())  # type: ignore[attr-defined]
        if index is not None:
            self.layerClicked.emit(index)
