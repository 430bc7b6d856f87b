"""Dialogs: errors in plain words (details on request), yes/no questions, the output folder.

The question and folder functions are module-level so tests can replace them (``monkeypatch.setattr``)
instead of driving a native file dialog.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QFileDialog, QMessageBox, QWidget

from .workers import Failure

BUG_TEXT = ("Something went wrong inside ShortGPT Desktop. This is a bug, not something you did; "
            "the details below help to report it.")


def error_dialog(parent: QWidget | None, title: str, failure: Failure) -> QMessageBox:
    """A window-modal box that does not block the caller; the caller keeps it (tests close it)."""
    box = QMessageBox(parent)
    box.setWindowTitle(title)
    if failure.is_bug:
        box.setIcon(QMessageBox.Icon.Critical)
        box.setText(BUG_TEXT)
        box.setInformativeText(failure.message)
    else:
        box.setIcon(QMessageBox.Icon.Warning)
        box.setText(failure.message)
    if failure.details:
        box.setDetailedText(failure.details)
    box.setStandardButtons(QMessageBox.StandardButton.Ok)
    box.open()
    return box


def ask_yes_no(parent: QWidget | None, title: str, text: str) -> bool:
    answer = QMessageBox.question(parent, title, text,
                                  QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                                  QMessageBox.StandardButton.No)
    return answer == QMessageBox.StandardButton.Yes


def ask_output_folder(parent: QWidget | None, suggestion: str) -> str | None:
    """A new folder for the pruned model: the user names it; it need not exist yet."""
    path, _ = QFileDialog.getSaveFileName(
        parent, "Save the pruned model as a new folder", suggestion, "Model folder (*)",
        options=QFileDialog.Option.ShowDirsOnly,
    )
    return path or None


def folder_is_nonempty(path: str) -> bool:
    """False too where the folder cannot be read: the save's own check then says why, in a sentence."""
    p = Path(path)
    try:
        return p.is_dir() and any(p.iterdir())
    except OSError:
        return False


def ask_scores_save_path(parent: QWidget | None, suggestion: str) -> str | None:
    """Where to export the scores (a .json file)."""
    path, _ = QFileDialog.getSaveFileName(parent, "Export scores", suggestion, "Scores (*.json)")
    return path or None


def ask_scores_open_path(parent: QWidget | None, start: str) -> str | None:
    """A scores file to import (written by Export scores… or the command line's --json)."""
    path, _ = QFileDialog.getOpenFileName(parent, "Import scores", start, "Scores (*.json);;All files (*)")
    return path or None
