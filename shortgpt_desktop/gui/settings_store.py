"""What survives a restart: settings, recent models, calibration sources, window geometry (QSettings)."""

from __future__ import annotations

import json
from typing import Any

from PySide6.QtCore import QByteArray, QSettings

ORGANIZATION = "ShortGPT Desktop"
APPLICATION = "shortgpt-desktop"


def default_settings() -> QSettings:
    return QSettings(QSettings.Format.IniFormat, QSettings.Scope.UserScope, ORGANIZATION, APPLICATION)


class Store:
    """Typed access to the QSettings keys the window uses. Lists and dicts are stored as JSON text, because
    QSettings round-trips a one-element list as a plain string on some back ends."""

    def __init__(self, settings: QSettings | None = None) -> None:
        self.qs = settings if settings is not None else default_settings()

    def _json(self, key: str, default: Any) -> Any:
        raw = self.qs.value(key)
        if raw is None:
            return default
        try:
            value = json.loads(str(raw))
        except (TypeError, ValueError):
            return default
        return value if isinstance(value, type(default)) else default

    def _set_json(self, key: str, value: Any) -> None:
        self.qs.setValue(key, json.dumps(value))

    # values -------------------------------------------------------------------------------------------

    def settings(self) -> dict[str, Any]:
        return self._json("job/settings", {})

    def set_settings(self, values: dict[str, Any]) -> None:
        self._set_json("job/settings", values)

    def recent_models(self) -> list[str]:
        return [str(x) for x in self._json("models/recent", []) if isinstance(x, str)]

    def set_recent_models(self, items: list[str]) -> None:
        self._set_json("models/recent", items)

    def last_model(self) -> str:
        return str(self.qs.value("models/last", "") or "")

    def set_last_model(self, text: str) -> None:
        self.qs.setValue("models/last", text)

    def calibration(self) -> list[str] | None:
        """The saved sources, or None when nothing was ever saved (then the built-in corpus is ticked)."""
        if self.qs.value("calibration/sources") is None:
            return None
        return [str(x) for x in self._json("calibration/sources", []) if isinstance(x, str)]

    def set_calibration(self, sources: list[str]) -> None:
        self._set_json("calibration/sources", sources)

    def chart_options(self) -> dict[str, bool]:
        return self._json("chart/options", {})

    def set_chart_options(self, options: dict[str, bool]) -> None:
        self._set_json("chart/options", options)

    def prompt(self) -> str | None:
        value = self.qs.value("compare/prompt")
        return None if value is None else str(value)

    def set_prompt(self, text: str) -> None:
        self.qs.setValue("compare/prompt", text)

    def save_dir(self) -> str:
        return str(self.qs.value("save/dir", "") or "")

    def set_save_dir(self, path: str) -> None:
        self.qs.setValue("save/dir", path)

    def bytes(self, key: str) -> QByteArray | None:
        value = self.qs.value(key)
        return value if isinstance(value, QByteArray) and not value.isEmpty() else None

    def set_bytes(self, key: str, value: QByteArray) -> None:
        self.qs.setValue(key, value)

    def sync(self) -> None:
        self.qs.sync()
