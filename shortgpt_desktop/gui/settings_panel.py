"""Device, dtype, sizes (with presets), batch size, metric, and whether the model's own code may run.

Two tabs keep the panel short enough for a 1280 × 720 window without scrolling: *Basic* (device, preset, sizes,
metric, repair) and *Advanced* (dtype, check windows, batch size, healing, low memory, the model's own code).
The preset follows the device (Quick on a CPU, Standard on a GPU) until the user picks a preset or a size.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QSpinBox,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from ..core import defaults
from ..core.measure.metrics import METRICS
from .system import INITIAL_DEVICES, DeviceChoice
from .wheel_guard import WheelGuard

DTYPES = (("auto", "Auto (bf16 on GPU, fp32 on CPU)"), ("float32", "float32"), ("bfloat16", "bfloat16"),
          ("float16", "float16"))
DEFAULTS: dict[str, Any] = {
    "device": "auto", "dtype": "auto", "samples": defaults.SAMPLES, "seq_len": defaults.SEQ_LEN,
    "eval_windows": defaults.EVAL_WINDOWS, "batch_size": defaults.BATCH_SIZE, "metric": defaults.METRIC,
    "trust_remote_code": False, "low_memory": False, "repair": True, "refit": False, "heal_steps": 0,
    "sizes_chosen": False,
}
SIZE_KEYS = ("samples", "seq_len", "eval_windows")
CUSTOM = "custom"


class SettingsPanel(QGroupBox):
    """Emits :attr:`changed` with the name of the setting that changed."""

    changed = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Settings", parent)
        self._wanted_device: str | None = None  # a saved choice not offered yet (GPUs appear after the probe)
        self._sizes_chosen = False  # the user picked a preset or a size: the device no longer decides them
        self.out_of_range: list[str] = []  # the numbers the last set_values brought into their boxes' ranges
        self.device_box = QComboBox(self)
        self.set_devices(list(INITIAL_DEVICES))
        self.device_box.setToolTip("Where the model runs. GPUs appear once the PyTorch runtime has started.")
        self.dtype_box = QComboBox(self)
        for key, label in DTYPES:
            self.dtype_box.addItem(label, key)
        self.dtype_box.setToolTip("The number format the model runs in: bfloat16 halves the memory on a GPU; a CPU "
                                  "runs float32 fastest")
        self.preset_box = QComboBox(self)
        for preset in defaults.PRESETS.values():
            self.preset_box.addItem(preset.label, preset.name)
            self.preset_box.setItemData(self.preset_box.count() - 1,
                                        f"{preset.samples} × {preset.seq_len} tokens, {preset.eval_windows} "
                                        f"perplexity windows: {preset.trade_off}", Qt.ItemDataRole.ToolTipRole)
        self.preset_box.addItem("Custom", CUSTOM)
        self.preset_box.setToolTip("Sizes in one choice; Quick suits a CPU")
        self.samples_box = self._spin(1, 4096, "How many calibration samples are scored")
        self.seq_len_box = self._spin(16, 32768, "Tokens per sample (and per perplexity window)")
        self.seq_len_box.setSingleStep(64)
        self.eval_box = self._spin(1, 4096, "Held-out windows for the perplexity check: fewer is faster, "
                                   "noisier")
        self.batch_box = self._spin(1, 512, "Samples per forward pass; lower it if memory runs out")
        self.metric_box = QComboBox(self)
        for name, metric in METRICS.items():
            self.metric_box.addItem(metric.label, name)
            self.metric_box.setItemData(self.metric_box.count() - 1, metric.description, Qt.ItemDataRole.ToolTipRole)
        self.metric_box.setToolTip("How each layer's importance is scored; Block Influence+ (the default) also "
                                   "measures which set of layers to remove")
        self.repair_box = QCheckBox("Repair the pruned model (training-free)", self)
        self.repair_box.setToolTip("Refit the MLP output projection of the layers before and after each run of "
                                   "removed layers on the calibration text, in closed form: no new parameters, much "
                                   "better text")
        self.refit_box = QCheckBox("Refit the MLP before each cut", self)
        self.refit_box.setToolTip("Then train that kept layer's MLP on the calibration activations to give what the "
                                  "original gave after the cut: closer to the original (SmolLM2, 8 of 30 layers: "
                                  "mean KL 0.49 → 0.45), a few minutes more on a CPU; the time is estimated first")
        self.heal_box = self._spin(0, 100_000, "LoRA steps on the calibration text, distilled from the original and "
                                   "merged into the weights before saving (0: off). Computed in bfloat16 where the "
                                   "CPU or GPU is faster at it. Minutes on a GPU, slow on a CPU: the time is "
                                   "estimated first")
        self.heal_box.setSpecialValueText("off")
        self.low_memory_box = QCheckBox("Low memory: one layer at a time", self)
        self.low_memory_box.setToolTip("Score and check perplexity with one decoder layer in memory at a time, for "
                                       "models bigger than memory (chosen by itself when a model would not fit). "
                                       "Each new token runs every layer again, so the check writes only 8 tokens of "
                                       "its prompt per model and asks no quiz; healing cannot run")
        self.trust_box = QCheckBox("Run the model's own code", self)
        self.trust_box.setToolTip("Some models ship Python code of their own; allow it only for models you trust")
        self.tabs = QTabWidget(self)
        self.tabs.setDocumentMode(True)
        basic = QWidget(self.tabs)
        form = QFormLayout(basic)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        form.addRow("Device:", self.device_box)
        form.addRow("Preset:", self.preset_box)
        form.addRow("Samples:", self._row(self.samples_box, "×", self.seq_len_box, "tokens"))
        form.addRow("Metric:", self.metric_box)
        form.addRow(self.repair_box)
        advanced = QWidget(self.tabs)
        more = QFormLayout(advanced)
        more.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        more.addRow("Dtype:", self.dtype_box)
        more.addRow("Check windows:", self._row(self.eval_box, "Batch:", self.batch_box))
        more.addRow(self.refit_box)
        more.addRow("Heal steps:", self.heal_box)
        more.addRow(self.low_memory_box)
        more.addRow(self.trust_box)
        self.tabs.addTab(basic, "Basic")
        self.tabs.addTab(advanced, "Advanced")
        # Read to a screen reader by these names: the row's label ("Samples:") names the row, not each box in it.
        for box, name in ((self.samples_box, "Calibration samples"), (self.seq_len_box, "Tokens per sample"),
                          (self.eval_box, "Check windows"), (self.batch_box, "Batch size"),
                          (self.heal_box, "Heal steps")):
            box.setAccessibleName(name)
        # The tab bar first, then the page it shows: the fields were made before the tabs, so Tab went from the
        # Basic page past the tab bar, and the Advanced page's fields were reached only with Shift+Tab.
        chain = [self.tabs, self.device_box, self.preset_box, self.samples_box, self.seq_len_box, self.metric_box,
                 self.repair_box, self.dtype_box, self.eval_box, self.batch_box, self.refit_box, self.heal_box,
                 self.low_memory_box, self.trust_box]
        for first, second in itertools.pairwise(chain):
            QWidget.setTabOrder(first, second)
        self.tabs.setTabToolTip(1, "Dtype, perplexity windows, batch size, MLP refit, healing, low memory, the "
                                  "model's own code")
        outer = QVBoxLayout(self)
        outer.setContentsMargins(6, 4, 6, 6)
        outer.addWidget(self.tabs)
        for box in (self.device_box, self.dtype_box, self.preset_box, self.metric_box):
            # A long item (a GPU's name, "Auto (bf16 on GPU, fp32 on CPU)") must not widen the left column
            # past a 1024-px window's share: the box shrinks, the open list still shows items whole.
            box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            box.setMinimumContentsLength(12)
        self._wheel_guard = WheelGuard(self)
        self._wheel_guard.guard(self.device_box, self.dtype_box, self.preset_box, self.metric_box, self.samples_box,
                                self.seq_len_box, self.eval_box, self.batch_box, self.heal_box)
        self.set_values(DEFAULTS)
        self.device_box.currentIndexChanged.connect(self._device_changed)
        self.dtype_box.currentIndexChanged.connect(lambda: self.changed.emit("dtype"))
        self.preset_box.currentIndexChanged.connect(self._apply_preset)
        for box, name in ((self.samples_box, "samples"), (self.seq_len_box, "seq_len"),
                          (self.eval_box, "eval_windows")):
            box.valueChanged.connect(lambda _=0, name=name: self._size_changed(name))
        self.batch_box.valueChanged.connect(lambda: self.changed.emit("batch_size"))
        self.metric_box.currentIndexChanged.connect(lambda: self.changed.emit("metric"))
        self.trust_box.toggled.connect(lambda: self.changed.emit("trust_remote_code"))
        self.low_memory_box.toggled.connect(lambda: self.changed.emit("low_memory"))
        self.repair_box.toggled.connect(lambda: self.changed.emit("repair"))
        self.repair_box.toggled.connect(self.refit_box.setEnabled)
        self.refit_box.toggled.connect(lambda: self.changed.emit("refit"))
        self.heal_box.valueChanged.connect(lambda: self.changed.emit("heal_steps"))
        for signal in (self.heal_box.valueChanged, self.refit_box.toggled, self.repair_box.toggled,
                       self.low_memory_box.toggled):
            signal.connect(self._name_advanced)
        self._name_advanced()

    def _name_advanced(self) -> None:
        """The Advanced tab's title names what on it changes a job's work: healing 2 steps came back with the
        settings, on a tab not shown, and the next Check healed with only its time estimate saying so."""
        on = [f"heal {self.heal_box.value()}" if self.heal_box.value() else "",
              "refit" if self.refit_box.isChecked() and self.repair_box.isChecked() else "",
              "low memory" if self.low_memory_box.isChecked() else ""]
        named = ", ".join(word for word in on if word)
        self.tabs.setTabText(1, f"Advanced ({named})" if named else "Advanced")

    def _row(self, *parts: QWidget | str) -> QWidget:
        """Widgets and words side by side in one form row (spin boxes share the width)."""
        row = QWidget(self)
        layout = QHBoxLayout(row)
        layout.setContentsMargins(0, 0, 0, 0)
        for part in parts:
            if isinstance(part, str):
                layout.addWidget(QLabel(part, row))
            else:
                layout.addWidget(part, 1)
        return row

    # ------------------------------------------------------------------------------------ preset by device

    def device_is_gpu(self) -> bool:
        """Whether the chosen device is a GPU: a CUDA or Apple GPU by name, or Auto when one is offered."""
        key = self._wanted_device or self.device_box.currentData() or "auto"
        if key == "auto":
            return any(str(self.device_box.itemData(i)).startswith(("cuda", "mps"))
                       for i in range(self.device_box.count()))
        return str(key).startswith(("cuda", "mps"))

    def suggested_preset(self) -> str:
        return "standard" if self.device_is_gpu() else "quick"

    def follow_device(self) -> bool:
        """Set the preset the device suggests (Quick on a CPU, Standard on a GPU) unless the user chose sizes;
        returns whether anything changed."""
        if self._sizes_chosen or not hasattr(self, "eval_box"):  # (set_devices runs before the boxes exist)
            return False
        preset = defaults.PRESETS[self.suggested_preset()]
        if (self.samples_box.value(), self.seq_len_box.value(), self.eval_box.value()) == \
                (preset.samples, preset.seq_len, preset.eval_windows):
            return False
        for box, value in ((self.samples_box, preset.samples), (self.seq_len_box, preset.seq_len),
                           (self.eval_box, preset.eval_windows)):
            box.blockSignals(True)
            box.setValue(value)
            box.blockSignals(False)
        self._sync_preset()
        return True

    def _device_changed(self) -> None:
        self.changed.emit("device")
        if self.follow_device():
            self.changed.emit("preset")

    def _apply_preset(self) -> None:
        preset = defaults.PRESETS.get(self.preset_box.currentData())
        if preset is None:
            return
        self._sizes_chosen = True
        for box, value in ((self.samples_box, preset.samples), (self.seq_len_box, preset.seq_len),
                           (self.eval_box, preset.eval_windows)):
            box.blockSignals(True)
            box.setValue(value)
            box.blockSignals(False)
        self.changed.emit("preset")

    def _size_changed(self, name: str) -> None:
        self._sizes_chosen = True
        self._sync_preset()
        self.changed.emit(name)

    def _sync_preset(self) -> None:
        """Show the preset the sizes match, or Custom."""
        sizes = (self.samples_box.value(), self.seq_len_box.value(), self.eval_box.value())
        name = next((p.name for p in defaults.PRESETS.values()
                     if (p.samples, p.seq_len, p.eval_windows) == sizes), CUSTOM)
        self.preset_box.blockSignals(True)
        self.preset_box.setCurrentIndex(max(self.preset_box.findData(name), 0))
        self.preset_box.blockSignals(False)

    def _spin(self, low: int, high: int, tip: str) -> QSpinBox:
        box = QSpinBox(self)
        box.setRange(low, high)
        box.setToolTip(tip)
        box.setKeyboardTracking(False)  # one change per finished edit, not per keystroke
        return box

    def set_devices(self, choices: Sequence[DeviceChoice], probed: bool = False) -> str | None:
        """Replace the device list, keeping the current choice when it is still offered.

        Before the probe (``probed`` False) a saved GPU not listed yet is kept for when it appears; once the probe
        has listed the devices there are, it is dropped and returned, so that what the box shows is what a job
        uses (the box said Auto while the jobs asked for the missing ``cuda:0``, and failed).
        """
        current = self._wanted_device or self.device_box.currentData() or "auto"
        self.device_box.blockSignals(True)
        self.device_box.clear()
        for choice in choices:
            self.device_box.addItem(choice.label, choice.key)
        index = self.device_box.findData(current)
        self.device_box.setCurrentIndex(max(index, 0))
        self.device_box.blockSignals(False)
        missing = current if index < 0 else None
        self._wanted_device = missing if not probed else None
        if self.follow_device():  # a GPU appeared (or went): the suggested preset changes with it
            self.changed.emit("preset")
        return missing if probed else None

    def device_label(self) -> str:
        """The chosen device as the box shows it (e.g. "GPU 0: NVIDIA …")."""
        return self.device_box.currentText()

    def values(self) -> dict[str, Any]:
        return {
            "device": self._wanted_device or self.device_box.currentData() or "auto",
            "dtype": self.dtype_box.currentData() or "auto",
            "samples": self.samples_box.value(),
            "seq_len": self.seq_len_box.value(),
            "eval_windows": self.eval_box.value(),
            "batch_size": self.batch_box.value(),
            "metric": self.metric_box.currentData() or defaults.METRIC,
            "trust_remote_code": self.trust_box.isChecked(),
            "low_memory": self.low_memory_box.isChecked(),
            "repair": self.repair_box.isChecked(),
            "refit": self.refit_box.isChecked(),
            "heal_steps": self.heal_box.value(),
            "sizes_chosen": self._sizes_chosen,
        }

    def set_values(self, values: dict[str, Any]) -> list[str]:
        """Set some or all settings; those not given keep their current values.

        Sizes given without ``sizes_chosen`` count as chosen (the device no longer changes them); restored
        settings carry the flag, so a preset the device suggested keeps following the device. Returns the values
        that could not be used (``metric 'future-metric'``: one this version does not know, a size that is not a
        number, a tick that is neither true nor false), which keep their defaults; a number out of its box's range
        is brought into it, and said in :attr:`out_of_range` (``heal_steps 1,000,000,000 → 100,000``: a settings
        file edited by hand came back as "Advanced (heal 100000)" without a word).
        """
        unusable: list[str] = []
        self.out_of_range = []
        merged = {**DEFAULTS, **self.values(), **{k: v for k, v in values.items() if v is not None}}
        if "sizes_chosen" in values:
            self._sizes_chosen = values["sizes_chosen"] in (True, "true", "1", 1)
        elif any(k in values for k in SIZE_KEYS):
            self._sizes_chosen = True
        for box in self._boxes():
            box.blockSignals(True)
        device_index = self.device_box.findData(str(merged["device"]))
        self._wanted_device = str(merged["device"]) if device_index < 0 else None
        self.device_box.setCurrentIndex(max(device_index, 0))
        for box, key in ((self.dtype_box, "dtype"), (self.metric_box, "metric")):
            index = box.findData(str(merged[key]))
            if index < 0:  # from another version of the app, or edited by hand
                unusable.append(f"{key} {merged[key]!r}")
                index = max(box.findData(str(DEFAULTS[key])), 0)
            box.setCurrentIndex(index)
        spins = ((self.samples_box, "samples"), (self.seq_len_box, "seq_len"), (self.eval_box, "eval_windows"),
                 (self.batch_box, "batch_size"), (self.heal_box, "heal_steps"))
        for box, key in spins:
            try:
                value = int(merged[key])
            except (TypeError, ValueError, OverflowError):  # OverflowError: Infinity, which JSON allows
                unusable.append(f"{key} {merged[key]!r}")
                value = int(DEFAULTS[key])
            kept = min(max(value, box.minimum()), box.maximum())  # 1e300 overflowed Qt's int
            if kept != value:
                raw = merged[key]
                shown = f"{raw:,}" if isinstance(raw, int) else f"{raw:g}" if isinstance(raw, float) else str(raw)
                self.out_of_range.append(f"{key} {shown} → {kept:,}")
            box.setValue(kept)
        for box, key in ((self.trust_box, "trust_remote_code"), (self.low_memory_box, "low_memory"),
                         (self.repair_box, "repair"), (self.refit_box, "refit")):
            value = merged[key]
            if value not in (True, False, "true", "false", "1", "0", 1, 0):  # QSettings may hand back strings
                unusable.append(f"{key} {value!r}")  # "maybe" unticked the repair without a word
                value = DEFAULTS[key]
            box.setChecked(value in (True, "true", "1", 1))
        self.refit_box.setEnabled(self.repair_box.isChecked())
        self._sync_preset()
        if self.preset_box.currentData() == CUSTOM:
            self._sizes_chosen = True  # sizes no preset has are always someone's choice
        self.follow_device()
        for box in self._boxes():
            box.blockSignals(False)
        self._name_advanced()
        return unusable

    def _boxes(self) -> tuple[QWidget, ...]:
        return (self.device_box, self.dtype_box, self.preset_box, self.samples_box, self.seq_len_box,
                self.eval_box, self.batch_box, self.metric_box, self.repair_box, self.refit_box,
                self.heal_box, self.low_memory_box, self.trust_box)

    def set_busy(self, busy: bool) -> None:
        """Settings are fixed while a job runs: the job uses the values it started with."""
        for box in self._boxes():
            box.setEnabled(not busy)
        self.refit_box.setEnabled(not busy and self.repair_box.isChecked())  # a refit is on top of the repair
