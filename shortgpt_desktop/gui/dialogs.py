"""Dialogs: errors in plain words (details on request), yes/no questions, the output folder.

The question and folder functions are module-level so tests can replace them (``monkeypatch.setattr``)
instead of driving a native file dialog.
"""

from __future__ import annotations

import os
from pathlib import Path

from PySide6.QtWidgets import QDialog, QDialogButtonBox, QFileDialog, QLineEdit, QMessageBox, QWidget

from .session import folder_is_nonempty  # noqa: F401 (asked here, beside the folder dialog)
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


class OutputFolderDialog(QFileDialog):
    """Qt's save dialog, except that Save on an existing folder chooses it instead of opening it.

    A stock save dialog treats a folder as a place to go into: picking the folder of an earlier output and pressing
    Save opened it, so it could never be chosen (its name could only be typed anew). Double-clicking a folder still
    opens it, and so do ``..`` and a name of a folder above; Save with no name typed (the folder shown itself) still
    does nothing. The button keeps its Save label where Qt relabels it Open on a folder. The save then asks before
    replacing a folder that holds an earlier output and refuses one that holds anything else. Qt's own dialog, not
    the platform's: a native one cannot be told this."""

    def __init__(self, parent: QWidget | None, suggestion: str) -> None:
        suggested = Path(suggestion)
        # The suggested name is an earlier output (the same cut saved again): Qt opened the dialog inside it, with
        # no name and Save greyed out; it is shown in its parent, selected.
        earlier = suggested.is_dir() and suggested.name
        super().__init__(parent, "Save the pruned model as a folder", str(suggested.parent) if earlier else suggestion,
                         "Model folder (*)")
        self.setAcceptMode(QFileDialog.AcceptMode.AcceptSave)
        self.setFileMode(QFileDialog.FileMode.AnyFile)
        self.setOption(QFileDialog.Option.ShowDirsOnly)
        self.setOption(QFileDialog.Option.DontUseNativeDialog)
        # a file's name typed: Qt asked "short.txt already exists. Do you want to replace it?", and after Yes the save
        # said it "exists and is a file; choose a folder" (a walkthrough); the save's own sentence alone
        self.setOption(QFileDialog.Option.DontConfirmOverwrite)
        name_edit = self.findChild(QLineEdit, "fileNameEdit")
        if name_edit is not None:  # after Qt's own slot, which relabels the button Open on a folder
            name_edit.textChanged.connect(self._keep_save_label)
        if earlier:
            self.selectFile(suggested.name)
        self._keep_save_label()

    def _keep_save_label(self) -> None:
        box = self.findChild(QDialogButtonBox)
        for button in box.buttons() if box is not None else []:
            if box.buttonRole(button) == QDialogButtonBox.ButtonRole.AcceptRole:
                button.setText("&Save")

    def chosen_folder(self) -> str | None:
        """The existing folder the name typed or picked points at (None: a new name, a file, no name, or the folder
        shown or one above it: ``..`` goes up, as in any file dialog)."""
        chosen = self.selectedFiles()
        if not chosen or not chosen[0]:
            return None
        folder = Path(os.path.normpath(chosen[0]))
        here = Path(os.path.normpath(self.directory().absolutePath()))
        if folder == here or here.is_relative_to(folder) or not folder.is_dir():
            return None
        return str(folder)

    def accept(self) -> None:
        if self.chosen_folder() is not None:
            QDialog.accept(self)  # Qt's accept would open the folder
            return
        super().accept()


def ask_output_folder(parent: QWidget | None, suggestion: str) -> str | None:
    """The folder for the pruned model: a new name, or an existing folder (an earlier output, to replace)."""
    dialog = OutputFolderDialog(parent, suggestion)
    if dialog.exec() != QDialog.DialogCode.Accepted:
        return None
    return dialog.chosen_folder() or new_folder_path(next(iter(dialog.selectedFiles()), ""))


def new_folder_path(selected: str) -> str | None:
    """The new folder a name typed in the dialog means: without the spaces around the name (typed "  spaced  ", a
    folder of that name, spaces and all, was made), None where no name is left."""
    if not selected:
        return None
    path = Path(selected)
    name = path.name.strip()
    return str(path.with_name(name)) if name else None


def ask_scores_save_path(parent: QWidget | None, suggestion: str) -> str | None:
    """Where to export the scores (a .json file)."""
    path, _ = QFileDialog.getSaveFileName(parent, "Export scores", suggestion, "Scores (*.json)")
    return path or None


def ask_scores_open_path(parent: QWidget | None, start: str) -> str | None:
    """A scores file to import (written by Export scores… or the command line's --json)."""
    path, _ = QFileDialog.getOpenFileName(parent, "Import scores", start, "Scores (*.json);;All files (*)")
    return path or None
