"""Fixtures for the window's tests: offscreen Qt, one tiny model per session, a window with fast settings."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before anything imports Qt

from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtCore import QMimeData, QPoint, QPointF, QSettings, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDragMoveEvent, QDropEvent
from PySide6.QtWidgets import QApplication, QWidget

#: Small enough for a 2-core machine: a scoring pass over the tiny model takes well under a second.
FAST_SETTINGS = {"device": "cpu", "dtype": "float32", "samples": 8, "seq_len": 32, "batch_size": 4,
                 "metric": "bi"}


@pytest.fixture(scope="session")
def gui_model(tiny_model: Path) -> Path:
    """The session's tiny 6-layer Llama (built once, by the root conftest's ``tiny_model``); read-only."""
    return tiny_model


@pytest.fixture(scope="session")
def calib_text(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """English prose from Python's docstrings (always present, unlike the shared WikiText files)."""
    from shortgpt_desktop.core.measure.calibration import builtin_corpus

    path = tmp_path_factory.mktemp("gui-calib") / "prose.txt"
    path.write_text("\n\n".join(builtin_corpus()[:12])[:40_000], encoding="utf-8")
    return path


@pytest.fixture
def settings(tmp_path: Path) -> QSettings:
    return QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)


@pytest.fixture
def make_window(qtbot, settings: QSettings, monkeypatch: pytest.MonkeyPatch):
    """A factory of shown windows with fast settings and no calibration text; all are torn down cleanly."""
    from shortgpt_desktop.gui import dialogs
    from shortgpt_desktop.gui.main_window import MainWindow

    monkeypatch.setattr(dialogs, "ask_yes_no", lambda *a, **k: True)
    made: list[MainWindow] = []

    def make(qsettings: QSettings | None = None, probe: bool = False, fast: bool = True) -> MainWindow:
        window = MainWindow(qsettings if qsettings is not None else settings, probe=probe)
        qtbot.addWidget(window)
        if fast:  # otherwise the window keeps what it restored from ``qsettings``
            window.settings_panel.set_values(FAST_SETTINGS)
            window.calibration_panel.set_sources([])
            window.resize(1280, 720)
        window.show()
        qtbot.waitExposed(window)
        made.append(window)
        return window

    yield make
    for window in made:
        for dialog in list(window.dialogs):
            dialog.close()
        window.jobs.cancel()
        window.jobs.wait(30_000)
        window.background.wait(30_000)
        window.close()
    from shortgpt_desktop.gui.workers import wait_all

    assert wait_all(30_000)
    QApplication.processEvents()


@pytest.fixture
def window(make_window):
    return make_window()


def _drop_paths(widget: QWidget, paths: list[Path]) -> bool:
    """A real drag-and-drop: enter, move and drop events carrying a QMimeData with file URLs."""
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    center = QPoint(widget.width() // 2, widget.height() // 2)
    action = Qt.DropAction.CopyAction
    buttons, mods = Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier
    enter = QDragEnterEvent(center, action, mime, buttons, mods)
    QApplication.sendEvent(widget, enter)
    if not enter.isAccepted():
        return False
    QApplication.sendEvent(widget, QDragMoveEvent(center, action, mime, buttons, mods))
    drop = QDropEvent(QPointF(center), action, mime, buttons, mods)
    QApplication.sendEvent(widget, drop)
    return drop.isAccepted()


@pytest.fixture
def drop_paths():
    """``drop_paths(widget, [paths]) -> accepted``: a real QMimeData drag-and-drop onto ``widget``."""
    return _drop_paths


@pytest.fixture
def opened(qtbot, window, gui_model: Path, calib_text: Path) -> Iterator:
    """A window with the tiny model opened and the calibration file listed."""
    with qtbot.waitSignal(window.jobFinished, timeout=60_000):
        window.open_model(str(gui_model))
    window.calibration_panel.add_paths([str(calib_text)])
    yield window
