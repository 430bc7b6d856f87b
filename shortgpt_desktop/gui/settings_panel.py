"""Device, dtype, samples, sequence length, batch size and metric."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QComboBox, QFormLayout, QGroupBox, QSpinBox, QWidget

from ..core.scoring import METRICS
from .system import INITIAL_DEVICES, DeviceChoice

DTYPES = (("auto", "Auto (bf16 on GPU, fp32 on CPU)"), ("float32", "float32"), ("bfloat16", "bfloat16"),
          ("float16", "float16"))
DEFAULTS: dict[str, Any] = {
    "device": "auto", "dtype": "auto", "samples": 128, "seq_len": 512, "batch_size": 4, "metric": "bi",
}


class SettingsPanel(QGroupBox):
    """Emits :attr:`changed` with the name of the setting that changed."""

    changed = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Settings", parent)
        self._wanted_device: str | None = None  # a saved choice not offered yet (GPUs appear after the probe)
        self.device_box = QComboBox(self)
        self.set_devices(list(INITIAL_DEVICES))
        self.device_box.setToolTip("Where the model runs. GPUs appear once the PyTorch runtime has started.")
        self.dtype_box = QComboBox(self)
        for key, label in DTYPES:
            self.dtype_box.addItem(label, key)
        self.samples_box = self._spin(1, 4096, "How many calibration samples are scored")
        self.seq_len_box = self._spin(16, 32768, "Tokens per sample (and per perplexity window)")
        self.seq_len_box.setSingleStep(64)
        self.batch_box = self._spin(1, 512, "Samples per forward pass; lower it if memory runs out")
        self.metric_box = QComboBox(self)
        for name, metric in METRICS.items():
            self.metric_box.addItem(metric.label, name)
            self.metric_box.setItemData(self.metric_box.count() - 1, metric.description, 3)  # Qt.ToolTipRole
        form = QFormLayout(self)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        form.addRow("Device:", self.device_box)
        form.addRow("Dtype:", self.dtype_box)
        form.addRow("Samples:", self.samples_box)
        form.addRow("Sequence length:", self.seq_len_box)
        form.addRow("Batch size:", self.batch_box)
        form.addRow("Metric:", self.metric_box)
        self.set_values(DEFAULTS)
        self.device_box.currentIndexChanged.connect(lambda: self.changed.emit("device"))
        self.dtype_box.currentIndexChanged.connect(lambda: self.changed.emit("dtype"))
        self.samples_box.valueChanged.connect(lambda: self.changed.emit("samples"))
        self.seq_len_box.valueChanged.connect(lambda: self.changed.emit("seq_len"))
        self.batch_box.valueChanged.connect(lambda: self.changed.emit("batch_size"))
        self.metric_box.currentIndexChanged.connect(lambda: self.changed.emit("metric"))

    def _spin(self, low: int, high: int, tip: str) -> QSpinBox:
        box = QSpinBox(self)
        box.setRange(low, high)
        box.setToolTip(tip)
        box.setKeyboardTracking(False)  # one change per finished edit, not per keystroke
        return box

    def set_devices(self, choices: Sequence[DeviceChoice]) -> None:
        """Replace the device list, keeping the current choice when it is still offered."""
        current = self._wanted_device or self.device_box.currentData() or "auto"
        self.device_box.blockSignals(True)
        self.device_box.clear()
        for choice in choices:
            self.device_box.addItem(choice.label, choice.key)
        index = self.device_box.findData(current)
        self.device_box.setCurrentIndex(max(index, 0))
        self.device_box.blockSignals(False)
        self._wanted_device = current if index < 0 else None

    def values(self) -> dict[str, Any]:
        return {
            "device": self._wanted_device or self.device_box.currentData() or "auto",
            "dtype": self.dtype_box.currentData() or "auto",
            "samples": self.samples_box.value(),
            "seq_len": self.seq_len_box.value(),
            "batch_size": self.batch_box.value(),
            "metric": self.metric_box.currentData() or "bi",
        }

    def set_values(self, values: dict[str, Any]) -> None:
        """Set some or all settings; those not given keep their current values."""
        merged = {**DEFAULTS, **self.values(), **{k: v for k, v in values.items() if v is not None}}
        for box in self._boxes():
            box.blockSignals(True)
        device_index = self.device_box.findData(str(merged["device"]))
        self._wanted_device = str(merged["device"]) if device_index < 0 else None
        self.device_box.setCurrentIndex(max(device_index, 0))
        self.dtype_box.setCurrentIndex(max(self.dtype_box.findData(str(merged["dtype"])), 0))
        spins = ((self.samples_box, "samples"), (self.seq_len_box, "seq_len"), (self.batch_box, "batch_size"))
        for box, key in spins:
            try:
                box.setValue(int(merged[key]))
            except (TypeError, ValueError):
                box.setValue(int(DEFAULTS[key]))
        self.metric_box.setCurrentIndex(max(self.metric_box.findData(str(merged["metric"])), 0))
        for box in self._boxes():
            box.blockSignals(False)

    def _boxes(self) -> tuple[QWidget, ...]:
        return (self.device_box, self.dtype_box, self.samples_box, self.seq_len_box, self.batch_box,
                self.metric_box)

    def set_busy(self, busy: bool) -> None:
        """Settings are fixed while a job runs: the job uses the values it started with."""
        for box in self._boxes():
            box.setEnabled(not busy)
