"""The ratio slider and, beside it, what the current plan removes and what the model weighs after."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar

import pyqtgraph as pg
from PySide6.QtCore import QEvent, Qt, QTimer, Signal
from PySide6.QtGui import QPalette, QStandardItemModel
from PySide6.QtWidgets import (
    QComboBox,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QSlider,
    QSpinBox,
    QWidget,
)

from ..core import defaults
from ..core.cut.plan import PrunePlan, more_than_half
from ..format import change, human_bytes, human_count, layer_list
from .chart import color_axes, kept_color
from .elided_label import ElidedLabel
from .wheel_guard import WheelGuard

#: Who chose a plan that no count of the scores gives, as the count line says it.
BY_HAND = "chosen by hand"
FROM_FILE = "as the imported file lists"


def perplexity_ticks(values: list[float], most: int = 4) -> list[tuple[float, str]]:
    """Ticks for the curve's logarithmic perplexity axis, as (log10 of the value, label): values of the 1-2-5
    series within the curve's range, thinned to ``most``. pyqtgraph's own log ticks labelled the minor ticks too,
    and on a 110-pixel plot their labels piled up into one smear ("9·10¹8·10¹…")."""
    finite = [v for v in values if v > 0 and math.isfinite(v)]
    if not finite:
        return []
    low, high = min(finite), max(finite)
    series = [m * 10.0**e for e in range(math.floor(math.log10(low)) - 1, math.ceil(math.log10(high)) + 1)
              for m in (1, 2, 5)]
    inside = [v for v in series if low <= v <= high]
    if len(inside) < 2:  # a narrow range: its two ends, rounded inwards to three digits (outside, none shows)
        inside = sorted({_round_to_3(low, math.ceil), _round_to_3(high, math.floor)})
    step = max(1, math.ceil(len(inside) / most))
    return [(math.log10(v), f"{v:,.0f}" if v >= 10 else f"{v:g}") for v in inside[::step]]


def _round_to_3(value: float, rounding: Callable[[float], int]) -> float:
    scale = 10.0 ** (math.floor(math.log10(value)) - 2)
    return rounding(value / scale) * scale


def count_ticks(counts: list[int], most: int = 12) -> list[tuple[int, str]]:
    """Whole layer counts for the curve's x-axis, every few where there are many (pyqtgraph's own ticks said
    "0.5, 1.5, 2.5 layers removed" on a short curve)."""
    if not counts:
        return []
    low, high = min(counts), max(counts)
    step = max(1, math.ceil((high - low + 1) / most))
    return [(k, str(k)) for k in range(low, high + 1, step)]


class PlanPanel(QGroupBox):
    """Emits :attr:`countChanged` (throttled) when the user moves the slider."""

    countChanged = Signal(int)
    formatChanged = Signal(str)
    curveRequested = Signal()

    #: What each output format is, in the words of the "Save as" box: (item, its tooltip).
    FORMATS: ClassVar[dict[str, tuple[str, str]]] = {
        "gguf": ("GGUF, for llama.cpp & Ollama",
                 "One .gguf file in the source's own quantization, for llama.cpp, Ollama and LM Studio"),
        "safetensors": ("safetensors, for transformers",
                        "A model folder that transformers' from_pretrained loads (float weights)"),
    }

    #: Slider-driven replans are coalesced to at most one per this many milliseconds.
    THROTTLE_MS = 40

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Layers to remove", parent)
        self.slider = QSlider(Qt.Orientation.Horizontal, self)
        self.slider.setRange(0, 0)
        self.slider.setTickPosition(QSlider.TickPosition.TicksBelow)
        self.slider.setPageStep(1)
        # "the lowest-scored go first" beside bi+, the default, which measures and may remove others
        self.slider.setToolTip("How many layers to remove; the line below says which")
        self.slider.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.count_label = QLabel(self)
        # Wrapped where the pane is narrow: "1 of 6 layers (17 %) · measured on Check/Save" on one line held the
        # window's right pane wider than the window at its minimum size (860 × 600), its end cut off
        self.count_label.setWordWrap(True)
        self.count_label.setMinimumWidth(150)
        self.layers_label = QLabel(self)
        self.layers_label.setWordWrap(True)
        self.layers_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        # Two lines high from the start: going from one line to two as the slider moved, it moved the slider itself
        # 34 px under the pointer, and the next press missed the handle (a window walkthrough)
        self.layers_label.setMinimumHeight(2 * self.layers_label.fontMetrics().lineSpacing())
        self.layers_label.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        self.params_label = QLabel(self)
        self.size_label = QLabel(self)
        # What the weights the job changes add, on a line of its own that wraps (on the size's line it widened the
        # window's narrowest width from 447 to 730 px).
        self.size_note = QLabel(self)
        self.size_note.setWordWrap(True)
        self.size_note.setVisible(False)
        for label in (self.size_label, self.size_note):
            label.setToolTip("What Save will write in the format chosen. A GGUF keeps its quantization; a "
                             "weight the repair, the MLP refit or healing changes is written as Q8_0 where it "
                             "was 4 to 6 bits, and counted so here (healing changes every kept layer). Before "
                             "Check or Save has fitted the repair, this is the most it can be")
        self._source_format: str | None = None  # the first of set_formats (a GGUF source: GGUF)
        self.format_box = QComboBox(self)
        #: A format chosen, then greyed out (:meth:`refuse_format`): chosen again once it is offered again.
        self._format_wanted: str | None = None
        self.format_box.setEnabled(False)  # empty until a model's formats are known: it looked ready to use
        self.format_box.setToolTip("What Save writes; the size above is for this format")
        self.format_box.currentIndexChanged.connect(
            lambda: self.formatChanged.emit(self.format_box.currentData() or ""))
        grid = QGridLayout(self)
        grid.addWidget(self.slider, 0, 0, 1, 2)
        grid.addWidget(self.count_label, 0, 2)
        grid.addWidget(QLabel("Removed layers:", self), 1, 0)
        grid.addWidget(self.layers_label, 1, 1, 1, 2)
        grid.addWidget(QLabel("Parameters:", self), 2, 0)
        grid.addWidget(self.params_label, 2, 1, 1, 2)
        grid.addWidget(QLabel("Size on disk:", self), 3, 0)
        grid.addWidget(self.size_label, 3, 1, 1, 2)
        # "Save as" with the box as wide as its longest item ("GGUF, for llama.cpp & Ollama" was clipped).
        self.format_box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        # On a row of its own: beside the size it held the pane wider than the window at 860 × 600 ("Save as:
        # safetensors, fo" cut off the edge)
        save_as = QHBoxLayout()
        save_as.addWidget(self.format_box)
        save_as.addStretch(1)
        self.curve_button = QPushButton("Quality curve", self)
        self.curve_button.setToolTip("Held-out perplexity for 0, 1, 2… layers removed by the recipe Save uses "
                                     "(measured choice and repair), with plain BI for reference, on the check's "
                                     "windows: how far you can cut before the model breaks (Ctrl+Shift+P)")
        self.curve_button.clicked.connect(self.curveRequested.emit)
        self.curve_button.setEnabled(False)
        # As sweep's --max: each count is a measured choice, a fit and a pass, so a first curve of a few layers on
        # a CPU takes minutes where half the layers of SmolLM2 took a quarter of an hour.
        self.curve_max = QSpinBox(self)
        self._curve_for = 0  # the slider maximum the curve box's range was set for
        self.curve_max.setRange(1, 1)
        self.curve_max.setPrefix("to ")
        self.curve_max.setToolTip("How many layers removed the quality curve goes up to: each count is measured, so "
                                  "fewer is faster")
        self.curve_max.setEnabled(False)
        self.curve_max.setAccessibleName("Quality curve up to this many layers removed")  # not the group's title
        self.curve_plot = pg.PlotWidget(self, background=None)
        self.curve_plot.setAccessibleName("Quality curve: perplexity by layers removed")
        self.curve_plot.setFixedHeight(110)
        self.curve_plot.setMouseEnabled(x=False, y=False)
        self.curve_plot.hideButtons()
        item = self.curve_plot.getPlotItem()
        item.setLogMode(y=True)
        item.setLabel("bottom", "layers removed")
        item.setLabel("left", "perplexity")
        self.curve_line = item.plot([], [], symbol="o", symbolSize=5, symbolPen=None)
        self.baseline_line = item.plot([], [])
        self.curve_marker = pg.InfiniteLine(angle=90, movable=False, pen=pg.mkPen("r", width=1))
        # out of the range's bounds: the slider at 7 over a curve to 2 stretched the axis to 7, the curve in its left
        # third (a walkthrough); past the curve's counts the marker is out of view
        item.addItem(self.curve_marker, ignoreBounds=True)
        self.curve_plot.setVisible(False)
        # Two lines at most, elided, with every count's figures in its tooltip (and the plot's): at 1280 × 720 a
        # plain label was cut off mid-sentence, before the word that said where those figures are.
        self.curve_note = ElidedLabel(self, max_lines=2)
        self.curve_note.setVisible(False)
        self._apply_curve_palette()
        grid.addWidget(self.size_note, 4, 1, 1, 2)
        grid.addWidget(QLabel("Save as:", self), 5, 0)
        grid.addLayout(save_as, 5, 1, 1, 2)
        curve_row = QHBoxLayout()
        curve_row.addWidget(self.curve_button)
        curve_row.addWidget(self.curve_max)
        grid.addLayout(curve_row, 6, 0)
        grid.addWidget(self.curve_note, 6, 1, 1, 2)
        grid.addWidget(self.curve_plot, 7, 0, 1, 3)
        self.curve_points: list[tuple[int, float]] = []
        grid.setColumnStretch(1, 1)
        grid.setColumnStretch(2, 1)  # room for the count's line where there is room (wrapped, it took two lines)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(self.THROTTLE_MS)
        self._timer.timeout.connect(self._emit_count)
        self.slider.valueChanged.connect(self._on_value_changed)
        self._wheel_guard = WheelGuard(self)  # the chart and plan scroll past these: the wheel scrolls them
        self._wheel_guard.guard(self.slider, self.format_box, self.curve_max)
        self.show_plan(None)

    @property
    def count(self) -> int:
        return self.slider.value()

    def set_maximum(self, maximum: int) -> None:
        """The slider's range; the curve box goes to half the layers (as sweep's) for another maximum, but keeps the
        user's count through a rescore that dropped the plan for a while (0), as a failed one with a new dtype does."""
        if maximum and maximum != self._curve_for:
            self._curve_for = maximum
            self.curve_max.setSpecialValueText("")
            self.curve_max.setRange(1, maximum)
            self.curve_max.setValue(max(1, (maximum + 1) // 2))
        self.slider.blockSignals(True)
        self.slider.setRange(0, max(0, maximum))
        self.slider.setTickInterval(1 if maximum <= 40 else max(1, maximum // 20))
        self.slider.blockSignals(False)

    def forget_curve_range(self) -> None:
        """Another model opened: the curve box said the last model's count ("to 15", greyed) until the new one was
        scored; it says none ("to —") until then, and the new scores set it afresh."""
        self._curve_for = 0
        self.curve_max.setRange(0, 0)
        self.curve_max.setSpecialValueText("to —")

    def set_count(self, count: int, emit: bool = False) -> None:
        """Move the slider without (by default) asking for a new plan (used for hand-picked layers)."""
        self.slider.blockSignals(not emit)
        self.slider.setValue(count)
        self.slider.blockSignals(False)
        if emit:
            self._timer.stop()
            self._emit_count()

    def _on_value_changed(self, value: int) -> None:
        self.curve_marker.setValue(value)
        if not self._timer.isActive():
            self._timer.start()

    def show_curve(self, points: list[tuple[int, float, float | None]], label: str, windows: int, tokens: int,
                   baseline: list[tuple[int, float]] | None = None,
                   quizzes: dict[int, tuple[int, int]] | None = None, baseline_label: str = "bi",
                   text_ran_out: bool = False, unrepaired: dict[int, list[str]] | None = None,
                   leaves_out: str = "") -> None:
        """The quality curve: (layers removed, perplexity, same top token) of the recipe, plain BI dashed beside
        it, with the slider's place marked; ``quizzes``: the check's quiz at each count, (kept, known);
        ``text_ran_out``: the text gave fewer held-out windows than asked for; ``unrepaired``: at a count whose cut
        the repair could not wholly reach, what it left (the label says "repair" of the whole line); ``leaves_out``:
        what of the recipe set now the curve does not hold, in words ("without the healing, which Check and Save
        add")."""
        quizzes, unrepaired = quizzes or {}, unrepaired or {}
        self.curve_points = [(k, v) for k, v, _ in points]
        self.curve_line.setData([k for k, _, _ in points], [max(v, 1e-9) for _, v, _ in points])
        base = baseline or []
        self.baseline_line.setData([k for k, _ in base], [max(v, 1e-9) for _, v in base])
        self.curve_plot.getPlotItem().getAxis("left").setTicks(
            [perplexity_ticks([v for _, v, _ in points] + [v for _, v in base]), []])
        counts = [k for k, _, _ in points] + [k for k, _ in base]
        self.curve_plot.getPlotItem().getAxis("bottom").setTicks([count_ticks(counts), []])
        self._apply_curve_palette()
        self.curve_marker.setValue(self.slider.value())
        plain = "BI" if baseline_label == "bi" else baseline_label
        rough = defaults.rough_figure(tokens, text_ran_out, window=True)
        rough = f", {rough}" if rough else ""
        # where the recipe is plain BI unrepaired the dashed line lies under the solid one: the note named a line
        # nobody could see
        same = bool(base) and [(k, v) for k, v, _ in points] == list(base)
        lines = (f"{label} (solid) and plain {plain} (dashed, no repair)" if base and not same
                 else f"{label} (plain {plain} without the repair: the same line)" if same else label)
        # first, in a sentence of its own: "(dashed, no repair) (without …)" ran two asides together (a review)
        ahead = f"{leaves_out[:1].upper()}{leaves_out[1:]}. " if leaves_out else ""
        note = (f"{ahead}{lines}: perplexity on the check's {windows} held-out "
                f"windows ({tokens:,} tokens{rough}); point at it for same top token"
                + (" and the quiz" if quizzes else "") + " at each count")
        # The dashed line's figures too: it fell below the solid one on a tiny model, and only the solid one's were
        # listed.
        plain_at = dict(base)
        details = "\n".join(
            f"{k} removed: perplexity {v:.2f}" + (f" (plain {plain} {plain_at[k]:.2f})" if k and k in plain_at else "")
            + (f", same top token {top:.0%}" if top is not None else "")
            + (f", quiz {quizzes[k][0]} of {quizzes[k][1]}" if k in quizzes else "")
            + "".join(f"; {note}" for note in unrepaired.get(k, []))
            for k, v, top in points)
        self.curve_note.setText(note)
        self.curve_note.set_details(f"{note}\n\n{details}")
        self.curve_plot.setToolTip(details)
        self.curve_plot.setVisible(True)
        self.curve_note.setVisible(True)

    def _apply_curve_palette(self) -> None:
        """The recipe's line in the kept bars' colour, plain BI's dashed in a quieter one, the axes in the text's
        colour (pyqtgraph's default grey drew the recipe's line pale, close to the baseline)."""
        pal = self.palette()
        kept, text = kept_color(pal), pal.color(QPalette.ColorRole.WindowText)
        quiet = pal.color(QPalette.ColorRole.PlaceholderText)
        self.curve_line.setPen(pg.mkPen(kept, width=2))
        self.curve_line.setSymbolBrush(kept)
        self.baseline_line.setPen(pg.mkPen(quiet, width=1, style=Qt.PenStyle.DashLine))
        color_axes(self.curve_plot.getPlotItem(), text)

    def changeEvent(self, event: QEvent) -> None:
        """Follow a light/dark switch while the window is open (the curve kept the old palette's axes till the next
        curve)."""
        if event.type() in (QEvent.Type.PaletteChange, QEvent.Type.ApplicationPaletteChange):
            self._apply_curve_palette()
        super().changeEvent(event)

    def clear_curve(self) -> None:
        self.curve_points = []
        self.curve_line.setData([], [])
        self.baseline_line.setData([], [])
        self.curve_plot.setVisible(False)
        self.curve_note.setVisible(False)

    def _emit_count(self) -> None:
        self.countChanged.emit(self.slider.value())

    def flush(self) -> None:
        """Deliver a pending slider change now (before saving or checking)."""
        if self._timer.isActive():
            self._timer.stop()
            self._emit_count()

    def show_plan(self, plan: PrunePlan | None, manual: bool = False, by: str = BY_HAND) -> None:
        """``plan`` on screen; ``manual``: one no count of the scores chose, given ``by`` whom (:data:`BY_HAND`,
        :data:`FROM_FILE`)."""
        if plan is None:
            self.count_label.setText("Score the layers first")
            for label in (self.layers_label, self.params_label, self.size_label):
                label.setText("—")
            self.size_note.setVisible(False)
            return
        k, n = len(plan.removed), plan.n_layers
        how = f" · {by}" if manual else ""
        later = plan.chosen_later and not manual and k > 0
        if later:
            how = " · measured on Check or Save"  # "Check/ Save" broke at the slash at 150 %
        # as the command line's note: 17 of 18 layers went without a word
        half = " · <b>more than half</b>: a model rarely still answers" if more_than_half(k, n) else ""
        # plain BI's own plan removed layer 0 of a small model without a word (said only where a bar was clicked)
        ends = [name for i, name in ((0, "first"), (n - 1, "last")) if i in plan.removed] if n > 1 else []
        if ends:
            half += f" · <b>the {' and '.join(ends)} layer{'s' if len(ends) > 1 else ''} removed</b>: "
            # bi+'s measured choice of an end was warned of as if clicked by hand: the measurement says otherwise
            half += ("measured to cost least here, where it usually breaks a model" if plan.measured and not manual
                     else "that usually breaks a model")
        self.count_label.setText(f"<b>{k}</b> of {n} layers ({100 * k / n:.0f} %){how}{half}")
        self.count_label.setToolTip("\n".join(plan.notes))
        # Save wrote 3, 5, 7, 12, 13, 17, 25 where 12–15, 17, 25, 26 were shown, and nothing said that it could.
        muted = self.palette().color(QPalette.ColorRole.PlaceholderText).name()  # the disabled text's was too pale
        # bi+ leaves the first and last layers out: "the lowest scores" beside a red bar above a blue one at layer 0
        # read as a fault.
        ends = n > 2 and 0 not in plan.removed and n - 1 not in plan.removed
        which = "the lowest scores apart from the first and last layers" if ends else "the lowest scores"
        if later:
            note = f"{which} for now; Check or Save measures and may remove others"
        elif plan.measured and not manual and k > 0:
            # said in the status bar for 15 s alone: the bars marked beside lower unmarked ones read as a fault
            note = "chosen by measuring candidates (point at the count for how)"
        else:
            note = ""
        self.layers_label.setText((layer_list(plan.removed) if k else "none") + (
            f" <span style='color: {muted}'>· {note}</span>" if note else ""))
        self.layers_label.setToolTip(", ".join(map(str, plan.removed)))
        self.params_label.setText(
            f"{human_count(plan.params_before)} → <b>{human_count(plan.params_after)}</b> "
            f"({change(plan.params_before, plan.params_after) or '±0 %'})"
        )
        # An estimate ("≈": the file's header is not counted; 854.3 kB said, 858.3 kB written on a tiny model), or
        # the most it can come to where the repair is not fitted yet
        bound = "up to " if plan.reencoded_at_most else "≈ "
        before = human_bytes(plan.bytes_before)
        if self._source_format and self.output_format and self.output_format != self._source_format:
            before += f" as {self.output_format}"  # a GGUF's 98.4 MB on disk read "538.1 MB → 438.9 MB"
        self.size_label.setText(f"{before} → {bound}<b>{human_bytes(plan.bytes_after)}</b>")
        # part of that size ("up to 1.9 MB more", after "up to 84.8 MB", read as more than 84.8 MB)
        for_shown = ", for the layers shown" if later else ""
        # a healed Q4 GGUF comes out larger than the file it was cut from (Gemma 3: 253.1 MB → 267.8 MB) and nothing
        # said so before Save, where the command line says it before the job (a walkthrough); said on this line,
        # which wraps, not on the size's, which held the panel 150 px wider
        larger = ": larger than the original" if plan.bytes_after > plan.bytes_before > 0 else ""
        self.size_note.setText(f"of which {bound}{human_bytes(plan.bytes_reencoded)} for the weights the repair or "
                               f"healing changes, written at 8 bits or more{for_shown}{larger}"
                               if plan.bytes_reencoded > 0 else "")
        self.size_note.setVisible(plan.bytes_reencoded > 0)

    def set_formats(self, formats: list[str], current: str) -> None:
        """The formats this model can be saved in (a GGUF source: GGUF first)."""
        self._format_wanted = None
        self._source_format = formats[0] if formats else None
        self.format_box.blockSignals(True)
        self.format_box.clear()
        for name in formats:
            label, tooltip = self.FORMATS.get(name, (name, ""))
            self.format_box.addItem(label, name)
            self.format_box.setItemData(self.format_box.count() - 1, tooltip, Qt.ItemDataRole.ToolTipRole)
        self.format_box.setCurrentIndex(max(self.format_box.findData(current), 0))
        self.format_box.setEnabled(len(formats) > 1)
        self.format_box.blockSignals(False)

    def refuse_format(self, name: str, why: str, switch: bool = True) -> bool:
        """Grey out the format ``name`` where the way the model runs cannot write it, ``why`` in its tooltip (""
        offers it again). One already chosen gives way to the first format still offered until it is offered again
        (it stayed chosen, greyed, with its size under it, and Save was refused at the click); True where the
        choice changed so. ``switch``: False while a job runs, whose format must not change under it (Save says
        ``why`` at the click, as before)."""
        index = self.format_box.findData(name)
        model = self.format_box.model()
        if index < 0 or not isinstance(model, QStandardItemModel):
            return False
        item = model.item(index)
        item.setEnabled(not why)
        item.setToolTip(why or self.FORMATS.get(name, (name, ""))[1])
        if not switch:
            return False
        if why and self.format_box.currentIndex() == index:
            offered = [i for i in range(self.format_box.count()) if i != index and model.item(i).isEnabled()]
            if offered:
                self._format_wanted = name
                self.format_box.setCurrentIndex(offered[0])  # formatChanged: the sizes follow
                return True
        elif not why and self._format_wanted == name:
            self._format_wanted = None
            self.format_box.setCurrentIndex(index)
            return True
        return False

    @property
    def output_format(self) -> str | None:
        return self.format_box.currentData()

    def set_busy(self, busy: bool) -> None:
        self.slider.setEnabled(not busy and self.slider.maximum() > 0)
        self.curve_button.setEnabled(not busy and self.slider.maximum() > 0)
        self.curve_max.setEnabled(self.curve_button.isEnabled())
        self.format_box.setEnabled(not busy and self.format_box.count() > 1)
