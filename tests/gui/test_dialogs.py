"""The output folder dialog: an existing folder can be chosen, not only opened."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QFileDialog

from shortgpt_desktop.gui import dialogs


def _stock_save_dialog(suggestion: str) -> QFileDialog:
    """What ``ask_output_folder`` used before: Qt's save dialog, folders only."""
    dialog = QFileDialog(None, "stock", suggestion, "Model folder (*)")
    dialog.setAcceptMode(QFileDialog.AcceptMode.AcceptSave)
    dialog.setFileMode(QFileDialog.FileMode.AnyFile)
    dialog.setOption(QFileDialog.Option.ShowDirsOnly)
    dialog.setOption(QFileDialog.Option.DontUseNativeDialog)
    return dialog


@pytest.fixture
def earlier_output(tmp_path: Path) -> Path:
    folder = tmp_path / "SmolLM2-pruned"
    folder.mkdir()
    (folder / "config.json").write_text("{}", encoding="utf-8")
    return folder


def test_save_on_an_existing_folder_chooses_it_where_qts_own_dialog_opened_it(qtbot, tmp_path: Path,
                                                                              earlier_output: Path) -> None:
    stock = _stock_save_dialog(str(tmp_path / "new-name"))
    qtbot.addWidget(stock)
    stock.selectFile(earlier_output.name)
    stock.accept()
    # the user's complaint, reproduced: the folder is opened, the dialog stays, nothing is chosen
    assert stock.result() != QDialog.DialogCode.Accepted
    assert Path(stock.directory().absolutePath()) == earlier_output

    dialog = dialogs.OutputFolderDialog(None, str(tmp_path / "new-name"))
    qtbot.addWidget(dialog)
    dialog.selectFile(earlier_output.name)
    dialog.accept()
    assert dialog.result() == QDialog.DialogCode.Accepted
    assert [Path(p) for p in dialog.selectedFiles()] == [earlier_output]


def test_a_new_name_is_chosen_and_save_with_no_name_chooses_nothing(qtbot, tmp_path: Path,
                                                                    earlier_output: Path) -> None:
    dialog = dialogs.OutputFolderDialog(None, str(tmp_path / "new-name"))
    qtbot.addWidget(dialog)
    dialog.accept()  # the suggested name, which does not exist yet
    assert dialog.result() == QDialog.DialogCode.Accepted
    assert [Path(p) for p in dialog.selectedFiles()] == [tmp_path / "new-name"]

    empty = dialogs.OutputFolderDialog(None, str(tmp_path / "new-name"))
    qtbot.addWidget(empty)
    _type(empty, "")
    empty.accept()  # the folder shown, with no name typed: not taken as the answer
    assert empty.result() != QDialog.DialogCode.Accepted and empty.chosen_folder() is None


def test_a_new_name_typed_with_spaces_around_it_names_the_folder_without_them(qtbot, tmp_path: Path) -> None:
    """Typed "  spaced  ", a folder of that name, spaces and all, was made."""
    dialog = dialogs.OutputFolderDialog(None, str(tmp_path / "new-name"))
    qtbot.addWidget(dialog)
    _type(dialog, "  spaced  ")
    dialog.accept()
    assert dialog.result() == QDialog.DialogCode.Accepted
    assert dialogs.new_folder_path(dialog.selectedFiles()[0]) == str(tmp_path / "spaced")
    assert dialogs.new_folder_path(str(tmp_path / "   ")) is None and dialogs.new_folder_path("") is None


def _type(dialog: QFileDialog, text: str) -> None:
    """Text typed in the dialog's name box (``selectFile`` would complete it)."""
    from PySide6.QtWidgets import QLineEdit

    dialog.findChild(QLineEdit, "fileNameEdit").setText(text)


def _accept_label(dialog: QFileDialog) -> str:
    box = dialog.findChild(QDialogButtonBox)
    return next(b.text() for b in box.buttons() if box.buttonRole(b) == QDialogButtonBox.ButtonRole.AcceptRole)


def test_the_button_says_save_on_a_folder_and_dot_dot_still_goes_up(qtbot, tmp_path: Path,
                                                                     earlier_output: Path) -> None:
    """Qt relabels Save "Open" on a folder, where Save now chooses it; ``..`` typed went up, and would have been
    taken as the folder to replace."""
    stock = _stock_save_dialog(str(tmp_path / "new-name"))
    qtbot.addWidget(stock)
    stock.selectFile(earlier_output.name)
    assert _accept_label(stock) == "&Open"  # what the user saw on the folder they meant to replace

    dialog = dialogs.OutputFolderDialog(None, str(tmp_path / "new-name"))
    qtbot.addWidget(dialog)
    dialog.selectFile(earlier_output.name)
    assert _accept_label(dialog) == "&Save"
    inside = dialogs.OutputFolderDialog(None, str(earlier_output / "new-name"))
    qtbot.addWidget(inside)
    _type(inside, "..")
    assert inside.chosen_folder() is None
    inside.accept()  # up one folder, as in any file dialog
    assert inside.result() != QDialog.DialogCode.Accepted
    assert Path(inside.directory().absolutePath()) == tmp_path


def test_an_earlier_output_suggested_again_is_shown_selected_in_its_folder(qtbot, tmp_path: Path,
                                                                           earlier_output: Path) -> None:
    """The same cut saved again suggests the earlier output's name: Qt opened the dialog inside that folder, with
    no name and Save greyed out."""
    stock = _stock_save_dialog(str(earlier_output))
    qtbot.addWidget(stock)
    assert Path(stock.directory().absolutePath()) == earlier_output  # inside it: nothing to pick

    dialog = dialogs.OutputFolderDialog(None, str(earlier_output))
    qtbot.addWidget(dialog)
    assert Path(dialog.directory().absolutePath()) == tmp_path
    dialog.accept()
    assert dialog.result() == QDialog.DialogCode.Accepted and dialog.chosen_folder() == str(earlier_output)


def _open_dialog() -> dialogs.OutputFolderDialog:
    from PySide6.QtWidgets import QApplication

    return next(w for w in QApplication.topLevelWidgets()
                if isinstance(w, dialogs.OutputFolderDialog) and w.isVisible())


def test_ask_output_folder_returns_the_existing_folder_picked(qtbot, tmp_path: Path, earlier_output: Path) -> None:
    """The function the window calls, driven as a user drives it: the folder picked, then Save; or Cancel."""

    def pick_and_save() -> None:
        dialog = _open_dialog()
        dialog.selectFile(earlier_output.name)
        dialog.accept()

    QTimer.singleShot(0, pick_and_save)
    assert dialogs.ask_output_folder(None, str(tmp_path / "new-name")) == str(earlier_output)

    QTimer.singleShot(0, lambda: _open_dialog().reject())
    assert dialogs.ask_output_folder(None, str(tmp_path / "new-name")) is None


def test_a_files_name_typed_in_the_folder_dialog_gets_no_question_of_qts(qtbot, tmp_path: Path) -> None:
    """Qt asked "short.txt already exists. Do you want to replace it?", and after Yes the save said the path "exists
    and is a file; choose a folder" (a walkthrough): the save's own sentence alone."""
    from PySide6.QtWidgets import QApplication, QMessageBox

    (tmp_path / "short.txt").write_text("mine", encoding="utf-8")
    asked: list[str] = []

    def answer_questions() -> None:
        for widget in QApplication.allWidgets():  # Qt's question is the file dialog's child
            if isinstance(widget, QMessageBox) and widget.isVisible():
                asked.append(widget.text())
                widget.button(QMessageBox.StandardButton.Yes).click()

    def type_the_file_and_save() -> None:
        dialog = _open_dialog()
        dialog.selectFile("short.txt")
        QTimer.singleShot(300, answer_questions)
        dialog.accept()

    QTimer.singleShot(0, type_the_file_and_save)
    assert dialogs.ask_output_folder(None, str(tmp_path / "new-name")) == str(tmp_path / "short.txt")
    assert asked == [] and (tmp_path / "short.txt").read_text(encoding="utf-8") == "mine"
