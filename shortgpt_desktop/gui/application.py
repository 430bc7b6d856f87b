"""The QApplication: named so that QSettings, the taskbar and the desktop entry agree."""

from __future__ import annotations

import sys

from .. import __version__

_QT_NOISE = ("propagateSizeHints",)  # the offscreen platform's warning on every resize: not news


def _qt_message(mode: object, context: object, message: str) -> None:
    """Qt's own warnings go to Python logging (so the log panel shows them), minus known noise."""
    import logging

    if any(noise in message for noise in _QT_NOISE):
        return
    logging.getLogger("shortgpt_desktop.qt").warning("%s", message)


def make_app() -> object:
    """The QApplication, named so that QSettings, the taskbar and the desktop entry agree."""
    from PySide6.QtCore import qInstallMessageHandler
    from PySide6.QtWidgets import QApplication

    qInstallMessageHandler(_qt_message)
    from .icons import app_icon
    from .settings_store import APPLICATION, ORGANIZATION

    QApplication.setApplicationName(APPLICATION)
    QApplication.setOrganizationName(ORGANIZATION)
    QApplication.setApplicationDisplayName("ShortGPT Desktop")
    QApplication.setApplicationVersion(__version__)
    QApplication.setDesktopFileName("shortgpt-desktop")
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setWindowIcon(app_icon())
    return app
