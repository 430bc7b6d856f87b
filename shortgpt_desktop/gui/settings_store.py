"""What survives a restart: settings, recent models, calibration sources, window geometry (QSettings)."""

from __future__ import annotations

import json
from typing import Any

from PySide6.QtCore import QByteArray, QSettings

ORGANIZATION = "ShortGPT Desktop"
APPLICATION = "shortgpt-desktop"


#: What :meth:`Store._decoded` gives for a saved text that is not JSON (None means nothing is saved).
NOT_JSON = object()


def default_settings() -> QSettings:
    return QSettings(QSettings.Format.IniFormat, QSettings.Scope.UserScope, ORGANIZATION, APPLICATION)


class Store:
    """Typed access to the QSettings keys the window uses. Lists and dicts are stored as JSON text, because
    QSettings round-trips a one-element list as a plain string on some back ends."""

    def __init__(self, settings: QSettings | None = None) -> None:
        self.qs = settings if settings is not None else default_settings()
        #: Keys whose saved value could not be read (not JSON, or not the kind of value the key holds): the window
        #: says so once, instead of putting defaults in their place without a word.
        self.unreadable: list[str] = []

    def _decoded(self, key: str) -> Any:
        """The JSON value saved under ``key``; :data:`NOT_JSON` where the text does not parse, None where nothing
        is saved."""
        raw = self.qs.value(key)
        if raw is None:
            return None
        try:
            return json.loads(str(raw))
        except (TypeError, ValueError):
            return NOT_JSON

    def _unreadable(self, key: str) -> None:
        if key not in self.unreadable:
            self.unreadable.append(key)

    def _json(self, key: str, default: Any) -> Any:
        value = self._decoded(key)
        if value is None:
            return default
        if not isinstance(value, type(default)):
            self._unreadable(key)
            return default
        return value

    def _set_json(self, key: str, value: Any) -> None:
        self.qs.setValue(key, json.dumps(value))

    # values -------------------------------------------------------------------------------------------

    def settings(self) -> dict[str, Any]:
        return self._json("job/settings", {})

    def set_settings(self, values: dict[str, Any]) -> None:
        """``values`` over the saved settings: keys this version does not know (a newer version's) are kept, so
        going back a version and forward again does not lose them."""
        saved = self._decoded("job/settings")
        self._set_json("job/settings", {**(saved if isinstance(saved, dict) else {}), **values})

    def _written_by_hand(self, key: str) -> list[str] | None:
        """The items of a list written by hand in the INI without its quotes (``recent=["/a/m.gguf", "/b/n.gguf"]``),
        which QSettings reads as the texts ``[/a/m.gguf`` and ``/b/n.gguf]`` (its own quotes taken, split at the
        commas): reported unreadable, it was saved back empty and the valid paths in it were lost. None for anything
        else."""
        raw = self.qs.value(key)
        items = [str(x) for x in raw] if isinstance(raw, list) else [str(raw)] if raw is not None else []
        if not items or not items[0].lstrip().startswith("[") or not items[-1].rstrip().endswith("]"):
            return None
        items[0] = items[0].lstrip()[1:]
        items[-1] = items[-1].rstrip()[:-1]  # the same item where there is one
        return [item.strip().strip('"') for item in items if item.strip().strip('"')]

    def recent_models(self) -> list[str]:
        if self._decoded("models/recent") is NOT_JSON:
            by_hand = self._written_by_hand("models/recent")
            if by_hand is not None:
                return by_hand
        return [str(x) for x in self._json("models/recent", []) if isinstance(x, str)]

    def set_recent_models(self, items: list[str]) -> None:
        self._set_json("models/recent", items)

    def _text(self, key: str) -> str | None:
        """A text value; one written by hand with commas (``prompt=a, b``) QSettings hands back as a list, which
        ``str`` made ``"['a', 'b']"``: joined again as it was written."""
        value = self.qs.value(key)
        if value is None:
            return None
        return ", ".join(map(str, value)) if isinstance(value, list) else str(value)

    def last_model(self) -> str:
        return self._text("models/last") or ""

    def set_last_model(self, text: str) -> None:
        self.qs.setValue("models/last", text)

    def calibration(self) -> list[str] | None:
        """The saved sources, or None when nothing was ever saved or the value cannot be read (then the built-in
        corpus is ticked: a value that was not a JSON list became no text at all, saved so at close). A path
        written by hand (``sources=/home/me/notes.txt``, or several with commas, which QSettings splits) is kept."""
        raw = self.qs.value("calibration/sources")
        if raw is None:
            return None
        by_hand = self._written_by_hand("calibration/sources")
        if by_hand is not None and self._decoded("calibration/sources") is NOT_JSON:
            return by_hand
        if isinstance(raw, list):
            return [str(x) for x in raw]
        value = self._decoded("calibration/sources")
        if value is NOT_JSON:
            return [str(raw)] if str(raw).strip() else None
        if isinstance(value, str):
            return [value]
        if not isinstance(value, list):
            self._unreadable("calibration/sources")
            return None
        return [str(x) for x in value if isinstance(x, str)]

    def set_calibration(self, sources: list[str]) -> None:
        self._set_json("calibration/sources", sources)

    def chart_options(self) -> dict[str, bool]:
        return self._json("chart/options", {})

    def set_chart_options(self, options: dict[str, bool]) -> None:
        self._set_json("chart/options", options)

    def prompt(self) -> str | None:
        return self._text("compare/prompt")

    def set_prompt(self, text: str) -> None:
        self.qs.setValue("compare/prompt", text)

    def save_dir(self) -> str:
        return self._text("save/dir") or ""

    def set_save_dir(self, path: str) -> None:
        self.qs.setValue("save/dir", path)

    def scores_dir(self) -> str:
        """Where scores were last exported or imported (else the last save's folder): Export and Import opened in the
        home folder each time, and "export here, import in a new window" meant browsing back to it."""
        return self._text("scores/dir") or self.save_dir()

    def set_scores_dir(self, path: str) -> None:
        self.qs.setValue("scores/dir", path)

    def bytes(self, key: str) -> QByteArray | None:
        value = self.qs.value(key)
        return value if isinstance(value, QByteArray) and not value.isEmpty() else None

    def set_bytes(self, key: str, value: QByteArray) -> None:
        self.qs.setValue(key, value)

    def writable(self) -> bool:
        return self.qs.isWritable()

    def sync(self) -> bool:
        """Write the settings out; False where they could not be (a read-only file or folder, a full disk)."""
        self.qs.sync()
        return self.qs.isWritable() and self.qs.status() == QSettings.Status.NoError
