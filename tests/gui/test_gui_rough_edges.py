"""Rough edges a user hit: settings a screenshot run overwrote, recent models, layout at 1024 × 600, the chart's
scale and hints, the calibration panel's skipped files, scores as JSON, missing xcb libraries."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from PySide6.QtCore import QSettings, Qt
from PySide6.QtWidgets import QApplication, QWidget

from shortgpt_desktop.format import layer_list
from shortgpt_desktop.gui import dialogs
from shortgpt_desktop.gui.model_panel import model_key

# ------------------------------------------------------------------------------------------- 1. settings


def test_settings_for_gives_a_screenshot_run_a_throwaway_store(tmp_path: Path) -> None:
    from shortgpt_desktop.app import parse_args, settings_for
    from shortgpt_desktop.gui.settings_store import default_settings

    qs, scratch = settings_for(parse_args(["m", "--screenshot", "x.png"]))
    assert scratch is not None and qs.fileName().startswith(scratch.name)
    assert qs.fileName() != default_settings().fileName()
    scratch.cleanup()
    named, none = settings_for(parse_args(["--settings-file", str(tmp_path / "s.ini")]))
    assert none is None and named.fileName() == str(tmp_path / "s.ini")
    timed, scratch = settings_for(parse_args(["--measure-startup"]))  # also closes the window, which saves
    assert scratch is not None and timed.fileName().startswith(scratch.name)
    scratch.cleanup()
    assert settings_for(parse_args([])) == (None, None)


def test_the_settings_file_is_never_a_file_of_the_user(qtbot, make_window, settings: QSettings, gui_model: Path,
                                                      tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--settings-file`` replaced whatever it named on closing (Qt writes the file anew): a model's tokenizer.json
    (the model no longer opened), a read-only file of notes. Only a new, empty or window-written file is taken."""
    import re
    import shutil

    from shortgpt_desktop.app import SETTINGS_GROUPS, not_a_settings_file, parse_args

    window = make_window()
    with qtbot.waitSignal(window.jobFinished, timeout=60_000):
        window.open_model(str(gui_model))
    window.close()  # what the window keeps, written as it closes
    settings.sync()
    written = Path(settings.fileName())
    groups = set(re.findall(r"^\[(.+)\]$", written.read_text(), flags=re.MULTILINE))
    assert {"window", "job"} <= groups <= set(SETTINGS_GROUPS)
    assert not_a_settings_file(written) is None and parse_args(["--settings-file", str(written)])
    empty = tmp_path / "empty.ini"
    empty.write_text("")
    assert parse_args(["--settings-file", str(empty)]) and parse_args(["--settings-file", str(tmp_path / "new.ini")])

    model = tmp_path / "model"
    shutil.copytree(gui_model, model)
    notes = tmp_path / "notes.txt"
    notes.write_text("[my notes]\nprecious\n")
    notes.chmod(0o444)
    ini = tmp_path / "other-app.ini"
    ini.write_text("[General]\nx=1\n")
    cases = {model / "tokenizer.json": "is not a settings file of this window", notes: "is read-only",
             ini: "is not a settings file of this window", tmp_path: "is not a regular file",
             Path("/dev/null"): "is not a regular file"}
    before = {path: path.read_bytes() for path in cases if path.is_file()}
    for path, said in cases.items():
        with pytest.raises(SystemExit) as exited:
            parse_args(["--settings-file", str(path)])
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert exited.value.code == 2 and said in err and "give a new file name" in err, err
    assert {path: path.read_bytes() for path in before} == before


def test_recent_models_are_absolute_and_unique(qtbot, make_window, settings: QSettings, gui_model: Path,
                                              tmp_path: Path, monkeypatch) -> None:
    window = make_window()
    monkeypatch.chdir(gui_model.parent)
    relative = f"./{gui_model.name}/"
    with qtbot.waitSignal(window.jobFinished, timeout=60_000) as opened:
        window.open_model(relative)
    assert opened.args == ["open", "ok"]
    window.model_panel.remember("HuggingFaceTB/SmolLM2-135M")  # a Hub id stays as typed
    window.model_panel.remember(str(gui_model))  # the same folder typed another way
    window.model_panel.remember(f"{gui_model.parent}/../{gui_model.parent.name}/{gui_model.name}")
    assert window.model_panel.recent() == [str(gui_model.resolve()), "HuggingFaceTB/SmolLM2-135M"]
    window.close()
    monkeypatch.chdir(tmp_path)  # another working directory: what was stored still names the model
    again = make_window(fast=False)
    assert again.model_panel.recent()[0] == str(gui_model.resolve())
    assert Path(again.model_panel.text) == gui_model.resolve()
    stored = again.store.recent_models()
    assert len(stored) == len(set(stored)) == 2


# ---------------------------------------------------------------------------------------------- 2. layout


def _visible_in_scroll(scroll, widget) -> bool:
    """Whether ``widget`` lies wholly inside the scroll area's viewport now."""
    from PySide6.QtCore import QRect

    top_left = widget.mapTo(scroll.viewport(), widget.rect().topLeft())
    return scroll.viewport().rect().contains(QRect(top_left, widget.size()))


def test_the_window_and_its_frame_are_kept_inside_the_screen(qtbot, window, monkeypatch) -> None:
    """Sized to the screen's room, the window manager's title bar pushed the status bar off the bottom of a 1366 ×
    768 screen at 150 % (911 × 512 of room, the frame 913 × 528; a window walkthrough): the window, frame and all,
    is moved and shrunk into the room once shown, never below its minimum."""
    from PySide6.QtCore import QRect, QSize

    from shortgpt_desktop.gui.main_window import frame_on_screen

    room = QRect(0, 0, 911, 512)
    # the frame: 1 pixel each side, a 13-pixel title bar and 3 below; the window itself fills the room
    placed = frame_on_screen(room, QRect(0, 0, 913, 528), QRect(1, 13, 911, 512), QSize(400, 300))
    assert placed == QRect(1, 13, 909, 496)
    assert frame_on_screen(room, QRect(0, 0, 911, 512), QRect(1, 13, 909, 496), QSize(400, 300)) is None
    # off the right and the bottom edge, small enough: moved only
    assert frame_on_screen(room, QRect(700, 400, 402, 316), QRect(701, 413, 400, 300), QSize(400, 300)) == \
        QRect(510, 209, 400, 300)
    # placed across two screens side by side: left there; on one screen of the two, fitted as on one
    two = QRect(0, 0, 1822, 512)
    assert frame_on_screen(room, QRect(600, 0, 602, 316), QRect(601, 13, 600, 300), QSize(400, 300), two) is None
    assert frame_on_screen(room, QRect(0, 0, 913, 528), QRect(1, 13, 911, 512), QSize(400, 300), two) == \
        QRect(1, 13, 909, 496)
    # a window larger than the room by itself was sized so by someone: left alone
    assert frame_on_screen(room, QRect(0, 0, 1282, 736), QRect(1, 13, 1280, 720), QSize(400, 300)) is None
    # the minimum wins over the room
    assert frame_on_screen(room, QRect(0, 0, 913, 528), QRect(1, 13, 911, 512), QSize(911, 512)).size() == \
        QSize(911, 512)
    # once shown, the window asks it with its own frame and room
    asked: list[tuple] = []
    monkeypatch.setattr("shortgpt_desktop.gui.main_window.frame_on_screen", lambda *a: asked.append(a) or None)
    window._keep_frame_on_screen()
    assert asked and asked[0][1] == window.frameGeometry() and asked[0][2] == window.geometry()


def test_a_window_restored_maximized_leaves_its_title_bar_room(qtbot, window, monkeypatch) -> None:
    """Closed maximized on a 1024 × 600 screen, the next start was held at its 600-pixel minimum under a 19-pixel
    title bar: the status bar below the screen, and made normal it still could not fit (a window walkthrough;
    openbox under Xvfb then measured 1024 × 581 at y = 19 with this)."""
    from PySide6.QtCore import QRect

    room = window.screen().availableGeometry()
    client = QRect(room.x(), room.y() + 19, room.width(), window.minimumHeight())
    states: list[bool] = []
    monkeypatch.setattr(window, "isMaximized", lambda: True)
    monkeypatch.setattr(window, "frameGeometry", lambda: client.adjusted(0, -19, 0, 0))
    monkeypatch.setattr(window, "geometry", lambda: client)
    monkeypatch.setattr(window, "setWindowState", lambda state: states.append(
        bool(state & Qt.WindowState.WindowMaximized)))
    window.setMinimumSize(860, room.height())
    window._keep_frame_on_screen()
    assert window.minimumHeight() == room.height() - 19 and states == [False, True]  # maximized again, to fit
    window._keep_frame_on_screen()  # fitted: asked once
    assert states == [False, True]


def test_every_setting_is_reachable_at_1024_by_600_with_a_long_error(qtbot, window) -> None:
    window.resize(1024, 600)
    qtbot.waitUntil(lambda: window.size().width() == 1024 and window.size().height() == 600, timeout=3000)
    scroll = window.left_scroll
    left_width = scroll.width()
    error = ("The model cannot be opened: " + "a very long explanation of what went wrong and why, " * 12).strip()
    window.model_panel.set_message(error)
    qtbot.wait(50)
    message = window.model_panel.message
    assert message.text() == error and message.toolTip() == error  # all of it, on request
    line = message.fontMetrics().lineSpacing()
    assert message.height() <= 3 * line + 4 and message.shown_text().count("\n") <= 2
    assert message.shown_text().endswith("…")
    assert scroll.width() == left_width  # the column did not grow
    assert scroll.widget().width() <= scroll.viewport().width()  # nothing cut off on the right
    panel = window.settings_panel
    rows = [panel.device_box, panel.dtype_box, panel.preset_box, panel.samples_box, panel.seq_len_box,
            panel.eval_box, panel.batch_box, panel.metric_box, panel.trust_box]
    for row in rows:
        tab = panel.tabs.indexOf(next(p for p in panel.tabs.findChildren(QWidget) if p.isAncestorOf(row)
                                      and panel.tabs.indexOf(p) >= 0))
        panel.tabs.setCurrentIndex(tab)  # the Basic or the Advanced tab
        scroll.ensureWidgetVisible(row)  # what Tab does, with Qt's default margins
        qtbot.wait(10)
        assert _visible_in_scroll(scroll, row), row
    # A short message takes one line, and clearing it gives the room back.
    window.model_panel.set_message("Opening was cancelled.")
    qtbot.wait(10)
    assert message.shown_text() == "Opening was cancelled." and message.toolTip() == ""
    assert message.height() <= line + 4


@pytest.mark.parametrize("tab", [0, 1])
def test_nothing_scrolls_or_is_clipped_at_the_default_1280_by_720(qtbot, window, tab: int) -> None:
    """The left column fits without a scroll bar (either settings tab), and the Save-as box shows its longest
    item whole ("GGUF, for llama.cpp & Ollama" was clipped)."""
    assert (window.width(), window.height()) == (1280, 720)
    window.settings_panel.tabs.setCurrentIndex(tab)
    qtbot.wait(50)
    scroll = window.left_scroll
    assert scroll.widget().minimumSizeHint().height() <= scroll.viewport().height()
    assert scroll.verticalScrollBar().maximum() == 0
    for widget in (window.model_panel, window.calibration_panel, window.settings_panel):
        assert _visible_in_scroll(scroll, widget), widget
    box = window.plan_panel.format_box
    window.plan_panel.set_formats(["gguf", "safetensors"], "gguf")
    qtbot.wait(50)
    longest = max(box.fontMetrics().horizontalAdvance(box.itemText(i)) for i in range(box.count()))
    assert box.width() >= box.sizeHint().width() and box.width() > longest
    right = box.mapTo(window, box.rect().topRight()).x()
    assert right <= window.width()


def test_enter_in_the_model_field_keeps_it_in_view(qtbot, window, gui_model: Path) -> None:
    """Opening disabled the focused field; Qt passed the focus down the pane, which scrolled the field away."""
    from PySide6.QtCore import Qt
    from PySide6.QtTest import QTest

    window.resize(1024, 600)
    qtbot.waitUntil(lambda: window.height() == 600, timeout=3000)
    scroll = window.left_scroll
    assert scroll.verticalScrollBar().maximum() > 0  # a small window does scroll: the case that went wrong
    edit = window.model_panel.field.lineEdit()
    edit.setFocus()
    edit.setText(str(gui_model))
    with qtbot.waitSignal(window.jobFinished, timeout=60_000):
        QTest.keyClick(edit, Qt.Key.Key_Return)
    qtbot.wait(20)
    assert scroll.verticalScrollBar().value() == 0
    assert _visible_in_scroll(scroll, window.model_panel.field)
    assert window.model_panel.field.hasFocus() or edit.hasFocus()


def test_preset_follows_the_device_until_the_user_picks_one(qtbot) -> None:
    from shortgpt_desktop.gui.settings_panel import SettingsPanel
    from shortgpt_desktop.gui.system import INITIAL_DEVICES, DeviceChoice

    panel = SettingsPanel()
    qtbot.addWidget(panel)
    gpu = [INITIAL_DEVICES[0], DeviceChoice("cuda:0", "GPU 0: test"), INITIAL_DEVICES[1]]
    assert panel.preset_box.currentData() == "quick" and panel.values()["samples"] == 32  # Auto, no GPU known
    with qtbot.waitSignal(panel.changed, timeout=1000):
        panel.set_devices(gpu)  # the probe found a GPU: Auto means it
    assert panel.preset_box.currentData() == "standard" and panel.values()["samples"] == 128
    panel.device_box.setCurrentIndex(panel.device_box.findData("cpu"))
    assert panel.preset_box.currentData() == "quick"
    assert panel.values()["sizes_chosen"] is False
    panel.preset_box.setCurrentIndex(panel.preset_box.findData("standard"))  # the user's own choice
    panel.device_box.setCurrentIndex(panel.device_box.findData("cpu"))
    panel.set_devices(gpu)
    panel.device_box.setCurrentIndex(panel.device_box.findData("auto"))
    panel.device_box.setCurrentIndex(panel.device_box.findData("cpu"))
    assert panel.preset_box.currentData() == "standard" and panel.values()["sizes_chosen"] is True
    # Restored settings keep following the device when the preset was the device's, not the user's.
    again = SettingsPanel()
    qtbot.addWidget(again)
    again.set_values({**panel.values(), "sizes_chosen": False})
    assert again.preset_box.currentData() == "quick"
    again.set_values({"samples": 8})  # sizes set without the flag (tests, imports) count as chosen
    again.set_devices(gpu)
    assert again.values()["samples"] == 8


def test_a_long_progress_text_is_elided_and_does_not_squeeze_the_left_column(qtbot, window) -> None:
    window.resize(1024, 600)
    qtbot.waitUntil(lambda: window.size().width() == 1024, timeout=3000)
    left_width = window.left_scroll.width()
    long_text = "Tokenising the calibration text: " + ", ".join(f"/some/long/folder/file-{i}.txt" for i in range(40))
    window.progress_label.setText(long_text)
    qtbot.wait(50)
    label = window.progress_label
    assert window.left_scroll.width() == left_width
    assert label.text() == long_text and label.toolTip() == long_text
    shown = label.shown_text()
    assert shown.endswith("…") and "\n" not in shown
    assert label.fontMetrics().horizontalAdvance(shown) <= label.width()
    assert window.frameGeometry().width() <= 1024 + 50 and window.width() == 1024


def test_enter_presses_the_focused_button_tab_skips_the_scroll_areas_and_every_control_says_what_it_does(
        qtbot, opened) -> None:
    """A keyboard user: Enter on a focused button did nothing (only Space), Tab stopped twice on the scroll areas
    with nothing to show it, and some controls had no tooltip (Folder…, Add files…, Metric); the slider's said "the
    lowest-scored go first" beside bi+, which may remove others."""
    from PySide6.QtWidgets import QCheckBox, QComboBox, QPushButton, QScrollArea

    window = opened
    window.score_button.setFocus()
    with qtbot.waitSignal(window.jobFinished, timeout=60_000) as scored:
        qtbot.keyClick(window.score_button, Qt.Key.Key_Return)
        if not window.busy:  # nothing started: fail now, not after the wait
            window.jobFinished.emit("none", "not pressed")
    assert scored.args == ["score", "ok"]
    assert all(area.focusPolicy() == Qt.FocusPolicy.NoFocus for area in window.findChildren(QScrollArea))
    silent = [w.text() if hasattr(w, "text") else w.currentText()
              for kind in (QPushButton, QComboBox, QCheckBox) for w in window.findChildren(kind) if not w.toolTip()]
    assert silent == [], silent
    assert "lowest-scored go first" not in window.plan_panel.slider.toolTip()
    assert "Ctrl+P" in window.check_button.toolTip()


def test_every_button_takes_enter_and_the_focus_comes_back_to_the_control_a_job_was_started_from(qtbot, opened) -> None:
    """A keyboard user (a walkthrough): Enter did nothing on 7 of the 11 buttons (Open, Add files…, Quality
    curve…), and after a check started with Ctrl+P from the slider the focus stayed in the prompt, where Qt passed it
    as the slider was disabled, its text selected: the next arrow key moved the text cursor, not the slider, and a
    letter replaced the prompt. The focus comes back where the user left it, unless they moved it meanwhile."""
    from PySide6.QtWidgets import QApplication, QPushButton

    window = opened
    assert all(button.autoDefault() for button in window.findChildren(QPushButton))
    with qtbot.waitSignal(window.jobFinished, timeout=60_000):
        window.start_scoring()
    slider = window.plan_panel.slider
    slider.setFocus()
    qtbot.waitUntil(lambda: QApplication.focusWidget() is slider, timeout=3000)
    with qtbot.waitSignal(window.jobFinished, timeout=60_000) as checked:
        qtbot.keyClick(window, Qt.Key.Key_P, Qt.KeyboardModifier.ControlModifier)
        if not window.busy:
            window.jobFinished.emit("none", "not started")
        # not passed on to the read-only prompt meanwhile, its text selected (keys went nowhere visible)
        assert QApplication.focusWidget() is not window.compare_panel.prompt
    assert checked.args == ["check", "ok"]
    assert QApplication.focusWidget() is slider
    value = slider.value()
    qtbot.keyClick(slider, Qt.Key.Key_Right)
    assert slider.value() == value + 1
    # Return on the curve button starts the curve (its job from the keyboard; Ctrl+Shift+P too)
    window.plan_panel.curve_button.setFocus()
    with qtbot.waitSignal(window.jobFinished, timeout=60_000) as curve:
        qtbot.keyClick(window.plan_panel.curve_button, Qt.Key.Key_Return)
        if not window.busy:
            window.jobFinished.emit("none", "not started")
        window.log_panel.findChild(QPushButton).setFocus()  # moved by hand while the curve runs: it stays there
    assert curve.args == ["curve", "ok"]
    assert QApplication.focusWidget() is window.log_panel.findChild(QPushButton)


def test_check_started_or_cancelled_from_the_keyboard_gives_the_focus_back_to_its_button(qtbot, opened) -> None:
    """Check pressed with Enter ended with the focus nowhere (the next Tab went to the Model box, scrolled out of
    view), as Check was still off when the focus came back; Cancel pressed during it left the focus in the prompt,
    its text selected, where the next key typed replaced the prompt (a window walkthrough)."""
    from PySide6.QtWidgets import QApplication

    window = opened
    with qtbot.waitSignal(window.jobFinished, timeout=60_000):
        window.start_scoring()
    check = window.check_button
    for cancelled in (False, True):
        check.setFocus()
        qtbot.waitUntil(lambda: QApplication.focusWidget() is check, timeout=3000)
        with qtbot.waitSignal(window.jobFinished, timeout=60_000) as ended:
            qtbot.keyClick(check, Qt.Key.Key_Return)
            assert window.busy
            if cancelled:
                window.cancel_button.setFocus()
                qtbot.keyClick(window.cancel_button, Qt.Key.Key_Space)
                assert QApplication.focusWidget() is not window.compare_panel.prompt
        assert ended.args[0] == "check", ended.args
        assert QApplication.focusWidget() is check, (cancelled, QApplication.focusWidget())


def test_the_model_box_has_the_focus_at_start_and_a_focused_control_is_scrolled_into_view(qtbot, window) -> None:
    """Tab from the right pane into the Model box left the left pane scrolled down, the focused box out of view (a
    walkthrough at 1024 × 600); a wheel turn over the box does not give it the focus (the pane was scrolled back to
    it, against the user's scroll: a review). (At start the focus is put in the box: the walkthrough found it on the
    settings' tab bar, which these fresh settings do not reproduce.)"""
    from PySide6.QtWidgets import QApplication

    field = window.model_panel.field
    assert not field.focusPolicy() & Qt.FocusPolicy.WheelFocus & ~Qt.FocusPolicy.StrongFocus
    window.resize(1024, 600)
    qtbot.waitUntil(lambda: window.height() == 600, timeout=3000)
    bar = window.left_scroll.verticalScrollBar()
    assert bar.maximum() > 0
    window.plan_panel.slider.setFocus()
    bar.setValue(bar.maximum())
    field.setFocus(Qt.FocusReason.TabFocusReason)
    qtbot.waitUntil(lambda: QApplication.focusWidget() is field, timeout=3000)
    top = field.mapTo(window.left_scroll.widget(), field.rect().topLeft()).y()
    assert bar.value() <= top, (bar.value(), top)


def test_each_job_and_text_to_open_has_a_shortcut_and_no_two_share_one(window) -> None:
    """Open .gguf file…, the calibration text and the quality curve were reached only through many Tabs or the
    menu, and Quit had no key where the platform binds none (Windows, the offscreen platform)."""
    from PySide6.QtGui import QAction

    keys = {a.text().replace("&", ""): [k.toString() for k in a.shortcuts()] for a in window.findChildren(QAction)
            if a.shortcuts()}
    for name in ("Open .gguf file…", "Add calibration text files…", "Add calibration text folder…", "Quality curve",
                 "Quit", "Export scores…", "Import scores…"):
        assert keys.get(name), (name, keys)
    taken = [k for ks in keys.values() for k in ks]
    assert len(taken) == len(set(taken)), keys
    # not Ctrl+E: on X11 a text box takes it (the end of the line), and Export did nothing with the focus in one
    assert (keys["Export scores…"], keys["Import scores…"]) == (["Ctrl+Shift+E"], ["Ctrl+Shift+I"])
    # each panel button says its menu action's key, as Folder… said Ctrl+O (.gguf… and the two Add buttons did not)
    buttons = (window.model_panel.folder_button, window.model_panel.gguf_button,
               window.calibration_panel.add_files_button, window.calibration_panel.add_folder_button)
    for button, act in zip(buttons, window.open_actions, strict=True):
        assert button.toolTip().endswith(f"({act.shortcut().toString()})"), (button.toolTip(), act.text())
    window.plan_panel.curve_button.setEnabled(False)
    window._update_buttons()
    assert not window.curve_action.isEnabled()  # as its button: no scores yet


def test_a_model_this_app_pruned_before_says_so_when_opened(qtbot, window, gui_model: Path, calib_text: Path,
                                                            tmp_path: Path) -> None:
    """Opening a saved model to prune it again, the window said "4 layers" and nothing more: that it lacks layers of
    its original, and that its layer numbers are its own, was said only by the card of its next prune."""
    from shortgpt_desktop import cli

    out = tmp_path / "once"
    assert cli.main(["prune", str(gui_model), "--remove", "0,5", "--repair", "none", "--no-eval", "--calib",
                     str(calib_text), "--samples", "2", "--seq-len", "32", "--out", str(out), "-q"]) == 0
    with qtbot.waitSignal(window.jobFinished, timeout=60_000):
        window.open_model(str(out))
    layers = window.model_panel.values["layers"]
    assert layers.text() == "4 (pruned before, of 6)"
    said = ("This app pruned it before: its original had 6 layers, and it lacks layers 0, 5 of them. The layers here "
            "are numbered as this model's own 4; a saved model's card gives both numberings.")
    assert layers.toolTip() == said
    assert said in window.chart.placeholder.textItem.toPlainText()
    with qtbot.waitSignal(window.jobFinished, timeout=60_000):
        window.open_model(str(gui_model))
    assert layers.text() == "6" and not layers.toolTip()


# ----------------------------------------------------------------------------------------------- 3. chart

#: A real model's shape: layer 0 far above the rest (SmolLM2-135M's BI: 0.98, then 0.025–0.07).
OUTLIER_SCORES = [0.98] + [0.025 + 0.045 * ((i * 7) % 29) / 28 for i in range(29)]


def _chart(qtbot):
    from shortgpt_desktop.gui.chart import ScoreChart

    chart = ScoreChart()
    qtbot.addWidget(chart)
    chart.resize(800, 400)
    chart.show()
    qtbot.waitExposed(chart)
    return chart


def _hue_distance(a, b) -> float:
    distance = abs(a.hslHueF() - b.hslHueF()) * 360.0
    return min(distance, 360.0 - distance)


@pytest.mark.parametrize(("highlight", "own"), [("#e95420", False), ("#d13438", False), ("#e3008c", False),
                                                ("#0078d7", True), ("#3daee9", True), ("#8e8e8e", True)])
def test_kept_and_removed_bars_differ_whatever_the_highlight(qtbot, highlight: str, own: bool) -> None:
    """Kept bars took the system's highlight and removed ones a fixed red: on Ubuntu's default theme (orange
    highlight) or with a red or pink accent, every bar and both legend squares looked alike. A highlight close to
    the red gives way to a blue; others (Windows' and KDE's blues, a grey) are kept."""
    from PySide6.QtGui import QColor, QPalette

    from shortgpt_desktop.gui.chart import REMOVED_COLOR

    chart = _chart(qtbot)
    palette = chart.palette()
    palette.setColor(QPalette.ColorRole.Highlight, QColor(highlight))
    chart.setPalette(palette)
    chart.set_scores([0.3, 0.1, 0.2, 0.4], removed=[1])
    brushes = chart.bars.opts["brushes"]
    removed, kept = QColor(brushes[1]), QColor(brushes[0])
    assert removed == REMOVED_COLOR and (kept == QColor(highlight)) == own
    assert _hue_distance(kept, removed) >= 50 or kept.hslSaturationF() < 0.25
    assert f"color:{kept.name()}" in chart.legend.text() and f"color:{removed.name()}" in chart.legend.text()


def test_a_light_dark_switch_while_open_recolours_the_curve_and_the_outlier_labels(qtbot) -> None:
    """The curve kept the old palette's axes and line, and an outlier's value label its old text colour, until the
    next curve: black on a dark window."""
    from PySide6.QtGui import QColor, QPalette

    from shortgpt_desktop.gui.plan_panel import PlanPanel

    chart = _chart(qtbot)
    chart.zoom_box.setChecked(True)
    chart.set_scores(OUTLIER_SCORES, removed=[])
    panel = PlanPanel()
    qtbot.addWidget(panel)
    panel.show_curve([(1, 60.0, 0.5), (2, 70.0, 0.4)], "bi+ + repair", 2, 1024, [(1, 65.0), (2, 90.0)], {})
    dark = QPalette(chart.palette())
    dark.setColor(QPalette.ColorRole.WindowText, QColor("#eeeeee"))
    dark.setColor(QPalette.ColorRole.Highlight, QColor("#3daee9"))
    for widget in (chart, panel):
        widget.setPalette(dark)
    assert chart.outlier_labels[0].color == QColor("#eeeeee")
    assert panel.curve_line.opts["pen"].color() == QColor("#3daee9")
    axis = panel.curve_plot.getPlotItem().getAxis("left")
    assert axis.textPen().color() == QColor("#eeeeee")


def test_the_pointer_leaving_the_chart_leaves_no_bar_described(qtbot) -> None:
    """"Layer 12: … — kept" stayed under the chart, bar 12 outlined, after the pointer had gone to the slider; and
    in a narrow window the line was cut before its state ("— rem…"), which now comes first (a window walkthrough).
    A bar chosen with the keys stays while the chart has the focus."""
    from PySide6.QtCore import QEvent

    chart = _chart(qtbot)
    chart.set_scores([0.3, 0.1, 0.2, 0.4], removed=[1])
    chart._on_mouse_moved(chart.plot.mapToScene(chart.bar_position(1)))
    assert chart.hover_label.text().startswith("Layer 1: removed, ")
    assert chart.bars.opts["pens"][1] != chart.bars.opts["pens"][0]
    QApplication.sendEvent(chart.plot, QEvent(QEvent.Type.Leave))
    assert chart.hover_label.text() == chart.HINT and chart.bars.opts["pens"][1] == chart.bars.opts["pens"][0]
    chart.plot.setFocus()
    qtbot.waitUntil(chart.plot.hasFocus)
    qtbot.keyClick(chart.plot, Qt.Key.Key_Right)
    QApplication.sendEvent(chart.plot, QEvent(QEvent.Type.Leave))
    assert chart.hover_label.text().startswith("Layer 1: ")
    # a click gives the chart the focus: the bar pointed at after it still goes with the pointer (the reviewer)
    chart._on_mouse_moved(chart.plot.mapToScene(chart.bar_position(3)))
    assert chart.plot.hasFocus() and chart.hover_label.text().startswith("Layer 3: ")
    QApplication.sendEvent(chart.plot, QEvent(QEvent.Type.Leave))
    assert chart.hover_label.text() == chart.HINT


def test_the_chart_is_used_from_the_keyboard(qtbot) -> None:
    """Tab stopped on the chart, and nothing showed it or answered a key: keeping or removing one layer took a
    mouse click, and a layer's score showed only under the pointer. The arrow keys, Home and End now move an
    outlined bar, its score written below as the pointer writes it, and Space or Enter keeps or removes it."""
    chart = _chart(qtbot)
    chart.set_scores([0.3, 0.1, 0.2, 0.4], removed=[1])
    chart.clickable = True
    chart.plot.setFocus()
    qtbot.waitUntil(chart.plot.hasFocus)
    assert chart.hover_label.text().startswith("Layer 0: ")
    qtbot.keyClick(chart.plot, Qt.Key.Key_Right)
    assert chart.hover_label.text() == chart.hover_text(1) and chart.hover_text(1).startswith("Layer 1: removed, ")
    assert chart.bars.opts["pens"][1] != chart.bars.opts["pens"][0], "the bar in hand is outlined"
    with qtbot.waitSignal(chart.layerClicked) as clicked:
        qtbot.keyClick(chart.plot, Qt.Key.Key_Space)
    assert clicked.args == [1]
    qtbot.keyClick(chart.plot, Qt.Key.Key_End)
    assert chart.hover_label.text().startswith("Layer 3: ")
    qtbot.keyClick(chart.plot, Qt.Key.Key_Right)  # stays on the last bar
    assert chart.hover_label.text().startswith("Layer 3: ")


def test_the_left_key_moves_back_and_no_key_toggles_a_layer_while_the_chart_is_not_clickable(qtbot) -> None:
    """While a job runs the chart is not clickable: Space must not keep or remove a layer then."""
    chart = _chart(qtbot)
    chart.set_scores([0.3, 0.1, 0.2, 0.4])
    chart.plot.setFocus()
    qtbot.waitUntil(chart.plot.hasFocus)
    qtbot.keyClick(chart.plot, Qt.Key.Key_End)
    qtbot.keyClick(chart.plot, Qt.Key.Key_Left)
    assert chart.hover_label.text().startswith("Layer 2: ")
    clicked: list[int] = []
    chart.layerClicked.connect(clicked.append)
    for key in (Qt.Key.Key_Space, Qt.Key.Key_Return):
        qtbot.keyClick(chart.plot, key)
    assert clicked == []


def test_the_pointer_between_two_bars_is_on_neither(qtbot) -> None:
    """A click in the gap between two bars toggles neither."""
    from PySide6.QtCore import QPointF

    chart = _chart(qtbot)
    chart.set_scores([0.3, 0.1, 0.2, 0.4])
    view = chart.plot.getPlotItem().vb
    y = view.viewRange()[1][1] / 2
    assert chart.layer_at(view.mapViewToScene(QPointF(1.0, y))) == 1
    assert chart.layer_at(view.mapViewToScene(QPointF(1.4, y))) == 1
    assert chart.layer_at(view.mapViewToScene(QPointF(1.5, y))) is None


def test_zoom_past_outliers_shows_the_bulk_of_the_layers(qtbot) -> None:
    chart = _chart(qtbot)
    chart.set_scores(OUTLIER_SCORES, removed=[])
    y_low, y_high = chart.plot.getPlotItem().vb.viewRange()[1]
    assert y_high > 0.98  # unzoomed: layer 0 sets the scale, the others are slivers under 7 %
    with qtbot.waitSignal(chart.optionsChanged) as changed:
        chart.zoom_box.setChecked(True)
    assert changed.args == [{"zoom": True, "others": False}]
    y_low, y_high = chart.plot.getPlotItem().vb.viewRange()[1]
    bulk = max(OUTLIER_SCORES[1:])
    assert bulk < y_high < bulk * 1.2 and y_low == 0.0
    assert [label.toPlainText() for label in chart.outlier_labels] == ["0.98 ↑"]  # the cut bar says its value
    chart.zoom_box.setChecked(False)
    assert chart.plot.getPlotItem().vb.viewRange()[1][1] > 0.98 and chart.outlier_labels == []


def test_neighbouring_cut_bars_write_their_values_on_two_lines(qtbot) -> None:
    """SmolLM2's layers 0 and 1 are both cut when zoomed: their values ran into each other (".97… 0.163 ↑")."""
    chart = _chart(qtbot)
    scores = OUTLIER_SCORES[:]
    scores[1], scores[10] = 0.16, 0.9
    chart.set_scores(scores, removed=[])
    chart.zoom_box.setChecked(True)
    labels = chart.outlier_labels
    assert [label.toPlainText() for label in labels] == ["0.98 ↑", "0.16 ↑", "0.9 ↑"]
    assert [round(label.anchor.y(), 2) for label in labels] == [0.0, -1.1, 0.0]  # a lone one on the first line
    # The first and the last bar's values are kept inside the chart (centred, layer 29's was cut at its edge)
    assert [label.anchor.x() for label in labels] == [0.0, 0.5, 0.5]
    scores[-1] = 0.95
    chart.set_scores(scores, removed=[])
    assert chart.outlier_labels[-1].anchor.x() == 1.0


def test_outlier_ceiling_leaves_an_even_chart_alone() -> None:
    from shortgpt_desktop.gui.chart import outlier_ceiling

    assert outlier_ceiling([0.1, 0.2, 0.3, 0.4, 0.5, 0.6]) is None
    assert outlier_ceiling([0.9, None, 0.1]) is None  # too few to say
    # 20 is high, but within three interquartile ranges above the upper quartile (8.25 + 3 × 5.5): not cut off
    assert outlier_ceiling([*range(11), 20]) is None
    assert outlier_ceiling(OUTLIER_SCORES) == max(OUTLIER_SCORES[1:])


def test_layer_numbers_thin_out_where_the_chart_is_too_narrow_for_each(qtbot) -> None:
    """At the window's minimum width, or scaled by 150 %, 30 numbers ran together under the bars
    ("…10111213141516171819…"; a window walkthrough): every 2nd, 5th… number is written, the first step whose numbers
    do not touch, and every one again where the chart is wide."""
    from PySide6.QtGui import QFontMetrics

    from shortgpt_desktop.gui.chart import layer_tick_step

    assert layer_tick_step(30, 600, 18) == 1 and layer_tick_step(30, 300, 18) == 2
    assert layer_tick_step(30, 150, 18) == 5 and layer_tick_step(80, 150, 18) == 10
    assert layer_tick_step(30, 0, 18) == 1 and layer_tick_step(1, 10, 18) == 1
    assert layer_tick_step(3, 1, 18) == 5  # past the last layer: the first number alone

    chart = _chart(qtbot)
    chart.set_scores([0.1] * 30)

    def numbers() -> list[int]:
        return [int(label) for _, label in chart.bottom_axis._tickLevels[0]]

    def room_each() -> float:  # pixels between two written numbers, against the widest number and a gap
        view, shown = chart.plot.getPlotItem().getViewBox().width(), numbers()
        metrics = QFontMetrics(chart.bottom_axis.font())
        return (shown[1] - shown[0]) * view / 30 - metrics.horizontalAdvance("29 ")

    chart.resize(1400, 400)
    qtbot.waitUntil(lambda: numbers() == list(range(30)))
    chart.resize(330, 400)
    qtbot.waitUntil(lambda: numbers()[1] > 1)
    assert numbers() == list(range(0, 30, numbers()[1])) and room_each() >= 0
    chart.resize(1400, 400)
    qtbot.waitUntil(lambda: numbers() == list(range(30)))


def test_a_long_message_on_the_empty_chart_wraps_within_the_plot(qtbot) -> None:
    """What a model pruned before lacks ran off both sides of the empty plot on one line, neither its start nor its
    end readable (a window walkthrough): the message wraps to the plot's width, and follows it."""
    from shortgpt_desktop.gui.model_panel import pruned_before

    chart = _chart(qtbot)
    chart.resize(520, 300)
    message = f"29 layers. {pruned_before(29, [3])} Press Score to measure each one's importance."
    chart.clear(message)
    view = chart.plot.getPlotItem().getViewBox()

    def fits() -> bool:
        shown = chart.placeholder.mapRectToScene(chart.placeholder.boundingRect())
        return view.sceneBoundingRect().contains(shown)

    qtbot.waitUntil(fits)
    assert chart.placeholder.textItem.toPlainText() == message
    chart.resize(900, 300)
    qtbot.waitUntil(lambda: fits() and chart.placeholder.textItem.textWidth() > 700)


def test_empty_chart_has_no_fractional_layer_ticks(qtbot) -> None:
    chart = _chart(qtbot)
    axis = chart.bottom_axis

    def tick_labels() -> list[str]:
        levels = axis._tickLevels  # None would mean pyqtgraph's own ticks: 0, 0.2, 0.4, … on the empty chart
        assert levels is not None
        return [label for level in levels for _, label in level]

    assert tick_labels() == []
    chart.set_scores([0.5, 0.2, 0.3])
    assert tick_labels() == ["0", "1", "2"]
    chart.clear("gone")
    assert tick_labels() == []


def test_other_metrics_keep_the_chart_within_a_narrow_window_and_the_title_names_the_metric(qtbot) -> None:
    """Ticking "Other metrics" put a legend on the title's line that made the chart, and so the window's right pane,
    wider than the window at 1280 × 720 (its last bars and the plan's figures cut off the edge); and the metric's
    name on the vertical axis was cut to "Block Influence+ (measured) (p", "partial" with it."""
    chart = _chart(qtbot)
    chart.set_scores([0.2, 0.1, 0.4, 0.3, 0.2, 0.5])
    chart.set_extra({"Block Influence": [0.2] * 6, "Relative Magnitude": [0.3] * 6,
                     "Angular distance (block)": [0.1] * 6})
    chart.others_box.setChecked(True)
    assert chart.minimumSizeHint().width() < 430, chart.minimumSizeHint()  # the right pane is about 460 at 860 wide
    chart.set_metric("Block Influence+ (measured) (partial)", measured=True)
    assert chart.title.text() == ("<b>Layer importance</b> · Block Influence+ (measured) (partial) (lower = more "
                                  "redundant; the plan measures its choice)")
    assert chart.plot.getPlotItem().getAxis("left").labelText == "score"
    chart.set_metric("Block Influence")
    assert chart.title.text().endswith("· Block Influence (lower = removed first)")


def test_other_metrics_overlay_scaled_to_the_axis(qtbot) -> None:
    chart = _chart(qtbot)
    chart.set_scores([0.2, 0.1, 0.4, 0.3])
    chart.set_extra({"Angular distance": [2.0, 1.0, 4.0, 8.0], "Relative magnitude": [0.5, None, 0.5, 1.0]})
    assert chart.extra_curves == []  # off until asked for
    chart.others_box.setChecked(True)
    assert len(chart.extra_curves) == 2
    xs, ys = chart.extra_curves[0].getData()
    assert list(xs) == [0, 1, 2, 3] and [round(y, 6) for y in ys] == [0.1, 0.05, 0.2, 0.4]  # peak = bars' peak
    xs, ys = chart.extra_curves[1].getData()
    assert list(xs) == [0, 2, 3] and [round(y, 6) for y in ys] == [0.2, 0.2, 0.4]
    assert "Angular distance" in chart.legend.text() and "scaled" in chart.legend.text()
    assert "Angular distance 4" in chart.hover_text(2) and "Relative magnitude 0.5" in chart.hover_text(2)
    chart.others_box.setChecked(False)
    assert chart.extra_curves == [] and "Angular" not in chart.legend.text()


def test_other_metrics_for_another_layer_count_are_not_drawn(qtbot) -> None:
    chart = _chart(qtbot)
    chart.set_scores([0.2, 0.1, 0.4, 0.3])
    chart.set_extra({"Angular distance": [2.0, 1.0, 4.0]})
    assert chart.extra == {} and not chart.others_box.isEnabled()


def test_hover_hint_follows_clicks_and_cancel_and_options_are_remembered(qtbot, opened, make_window,
                                                                           settings: QSettings) -> None:
    from PySide6.QtCore import Qt

    window = opened
    with qtbot.waitSignal(window.jobFinished, timeout=60_000):
        window.start_scoring()
    chart = window.chart
    chart._on_mouse_moved(chart.plot.mapToScene(chart.bar_position(2)))
    state = "removed" if 2 in window.plan.removed else "kept"
    assert chart.hover_label.text().startswith(f"Layer 2: {state}, ")
    qtbot.mouseClick(chart.plot.viewport(), Qt.MouseButton.LeftButton, pos=chart.bar_position(2))
    flipped = "kept" if state == "removed" else "removed"
    assert chart.hover_label.text().startswith(f"Layer 2: {flipped}, ")  # not the state before the click
    assert "Angular" in chart.hover_label.text() or "angular" in chart.hover_label.text().lower()
    chart.clear("Press Score")  # what a failed or cancelled first pass leaves
    assert chart.hover_label.text() == chart.HINT
    chart.zoom_box.setChecked(True)
    chart.others_box.setChecked(True)
    window.close()
    again = make_window(fast=False)
    assert again.chart.options() == {"zoom": True, "others": True}


# ----------------------------------------------------------------------------------------- 4. calibration


def test_first_own_file_unticks_the_builtin_corpus(qtbot, window, calib_text: Path, tmp_path: Path) -> None:
    panel = window.calibration_panel
    panel.set_sources(["builtin"])
    assert panel.sources() == ["builtin"]
    with qtbot.waitSignal(panel.changed, timeout=1000):
        panel.add_paths([str(calib_text)])
    assert panel.sources() == [str(calib_text)]  # not mixed in silently
    panel.builtin.setChecked(True)  # the user wants both: a second file leaves the choice alone
    other = tmp_path / "more.txt"
    other.write_text("More prose for the calibration set.\n", encoding="utf-8")
    panel.add_paths([str(other)])
    assert panel.sources() == [str(calib_text), str(other), "builtin"]
    panel.set_sources([str(calib_text), "builtin"])  # restoring saved sources keeps the saved tick
    assert panel.sources() == [str(calib_text), "builtin"]


def test_files_the_engine_skips_show_in_the_panel(qtbot, window, tmp_path: Path) -> None:
    from shortgpt_desktop.core.measure.calibration import read_texts

    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "good.txt").write_text("Plain prose that the engine reads.\n", encoding="utf-8")
    (folder / "empty.txt").write_text("   \n", encoding="utf-8")
    (folder / "picture.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    lines = folder / "chat.jsonl"
    lines.write_text('{"text": "a line with text"}\n{"prompt": "no text field"}\n{"prompt": "nor here"}\n',
                     encoding="utf-8")
    panel = window.calibration_panel
    assert not panel.skipped_label.isVisible()
    panel.add_paths([str(folder)])
    expected = read_texts([folder]).skipped  # the engine's own sentences, not the panel's guess
    assert len(expected) == 3
    assert any('without a "text" field' in s for s in expected) and any("not text" in s for s in expected)
    assert panel.skipped() == expected
    label = panel.skipped_label
    assert label.isVisible() and label.text().startswith("⚠ ") and "2 more" in label.text()
    assert label.toolTip() == "\n".join(expected)
    item = panel.list.topLevelItem(0)
    assert not item.icon(0).isNull() and all(s in item.toolTip(0) for s in expected)
    panel.list.setCurrentItem(item)
    panel.remove_selected()
    assert panel.skipped() == [] and not label.isVisible()
    good = folder / "good.txt"
    panel.add_paths([str(good)])
    assert panel.skipped() == [] and panel.list.topLevelItem(0).icon(0).isNull()
    panel.set_scored_skips(["Skipped /big/file.bin: it is not text.", "Only 3 samples."])  # after a pass
    assert panel.skipped() == ["Skipped /big/file.bin: it is not text."] and label.isVisible()


@pytest.mark.parametrize("big", [False, True])
def test_a_code_folder_is_used_and_its_binaries_are_said_when_added(qtbot, window, tmp_path: Path,
                                                                   monkeypatch, big: bool) -> None:
    """Source code, HTML and files without an ending count as text; a PDF and a PNG beside them are said at
    once, before any scoring (a big folder has only its files' first bytes read)."""
    from shortgpt_desktop.gui import calibration_panel

    if big:
        monkeypatch.setattr(calibration_panel, "CHECK_BYTES", 0)
    folder = tmp_path / "code"
    folder.mkdir()
    (folder / "main.py").write_text("def add(a, b):\n    return a + b\n" * 30)
    (folder / "lib.rs").write_text("pub fn add(a: i32, b: i32) -> i32 { a + b }\n" * 30)
    (folder / "index.html").write_text("<p>Hello</p>\n" * 30)
    (folder / "README").write_text("Prose without an ending.\n" * 30)
    (folder / "paper.pdf").write_bytes(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n" + bytes(64))
    (folder / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    panel = window.calibration_panel
    panel.add_paths([str(folder)])
    item = panel.list.topLevelItem(0)
    assert "4 text files" in item.text(0)
    text_bytes = sum(p.stat().st_size for p in folder.iterdir() if p.suffix not in (".pdf", ".png"))
    assert item.data(2, Qt.ItemDataRole.UserRole) == int(text_bytes / 4)
    assert panel.skipped() == [f"Skipped {(folder / 'logo.png').resolve()}: it is a PNG image, not text.",
                               f"Skipped {(folder / 'paper.pdf').resolve()}: it is a PDF document, not text."]
    assert panel.skipped_label.isVisible() and "PNG image" in panel.skipped_label.text()


# ------------------------------------------------------------------------------------- 6. xcb libraries


def test_missing_xcb_libraries_are_named_before_qt_aborts(monkeypatch, capsys) -> None:
    from shortgpt_desktop import app

    missing = {"libxcb-icccm.so.4", "libxcb-keysyms.so.1"}  # what Debian 12 lacked after pip install
    monkeypatch.setattr(app, "_library_loads", lambda name: name not in missing)
    monkeypatch.setattr(app, "make_app", lambda: pytest.fail("Qt must not be started"))
    monkeypatch.setattr(app.sys, "platform", "linux")
    monkeypatch.setenv("QT_QPA_PLATFORM", "xcb")
    assert app.main(["--settings-file", "unused.ini"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "libxcb-icccm.so.4, libxcb-keysyms.so.1" in err
    assert "sudo apt install libxcb-icccm4 libxcb-keysyms1`" in err and "libxcb-cursor0" not in err
    # Other platforms are not checked: offscreen, Wayland by default, and xcb when all is there.
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    assert app.missing_xcb_libraries() is None
    monkeypatch.delenv("QT_QPA_PLATFORM")
    monkeypatch.setenv("WAYLAND_DISPLAY", "wayland-0")
    assert app.missing_xcb_libraries() is None
    monkeypatch.delenv("WAYLAND_DISPLAY")
    monkeypatch.delenv("XDG_SESSION_TYPE", raising=False)
    assert "libxcb-icccm4" in app.missing_xcb_libraries()
    monkeypatch.setattr(app, "_library_loads", lambda name: True)
    assert app.missing_xcb_libraries() is None


def test_one_missing_xcb_library_is_said_in_the_singular_and_a_list_of_platforms_is_read_from_its_first(
        monkeypatch) -> None:
    from shortgpt_desktop import app

    monkeypatch.setattr(app, "_library_loads", lambda name: name != "libxcb-cursor.so.0")
    monkeypatch.setattr(app.sys, "platform", "linux")
    monkeypatch.setenv("QT_QPA_PLATFORM", "xcb;offscreen")  # Qt tries xcb, then offscreen
    assert app.missing_xcb_libraries() == (
        "The window cannot open: Qt's X11 (xcb) plugin needs libxcb-cursor.so.0, which is not installed; on Debian "
        "or Ubuntu run `sudo apt install libxcb-cursor0` and start again.")
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen;xcb")
    assert app.missing_xcb_libraries() is None


def test_xcb_library_list_matches_the_installed_plugin() -> None:
    """The list is what PySide6's xcb plugin links against (on Linux, read from its ELF headers by ldd)."""
    import shutil

    import PySide6

    from shortgpt_desktop.app import XCB_LIBRARIES

    plugin = Path(PySide6.__file__).parent / "Qt" / "plugins" / "platforms" / "libqxcb.so"
    if not plugin.exists() or shutil.which("ldd") is None:
        pytest.skip("no Linux xcb plugin here")
    out = subprocess.run(["ldd", str(plugin)], capture_output=True, text=True, timeout=30).stdout
    needed = {line.split()[0] for line in out.splitlines()
              if line.strip().startswith(("libxcb", "libX11", "libxkbcommon"))}
    assert needed <= set(XCB_LIBRARIES), needed - set(XCB_LIBRARIES)


# ------------------------------------------------------------------------------------------ 5. scores JSON


def test_scores_export_and_import_for_the_same_model(qtbot, opened, make_window, gui_model: Path,
                                                     tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the File menu's actions, as a user does it: their triggered(bool) passed False as the path, and both
    raised in the slot instead of asking for a file."""
    import json

    from shortgpt_desktop.gui import dialogs

    window = opened
    with qtbot.waitSignal(window.jobFinished, timeout=60_000):
        window.start_scoring()
    window.plan_panel.set_count(2, emit=True)
    qtbot.waitUntil(lambda: window.plan is not None and len(window.plan.removed) == 2, timeout=3000)
    assert window.export_action.isEnabled()
    out = tmp_path / "export"
    out.mkdir()
    path = out / "scores.json"
    monkeypatch.setattr(dialogs, "ask_scores_save_path", lambda parent, suggestion: str(path))
    window.export_action.trigger()
    assert window.dialogs == []
    data = json.loads(path.read_text(encoding="utf-8"))
    scores = window.engine.scores
    assert data["metric"] == "bi" and data["n_layers"] == 6 and data["partial"] is False
    assert data["scores"] == scores.scores and set(data["other_scores"]) == set(scores.extra)
    assert data["model"] == str(gui_model) and data["tokens"] == scores.tokens > 0
    assert data["removed_layers"] == window.plan.removed
    assert [p.name for p in out.iterdir()] == ["scores.json"]  # no temporary file left

    # The save dialog asks before replacing a file, but no Yes replaces the open model's own file or a read-only
    # one: the export replaced the model's config.json (the model no longer opened) and read-only notes.
    config, notes = gui_model / "config.json", tmp_path / "notes.txt"
    config_before = config.read_bytes()
    notes.write_text("my notes")
    notes.chmod(0o444)
    for target, said in ((config, "inside the folder of the model"), (notes, "the file is read-only")):
        assert window.export_scores(target) is None
        assert said in window.dialogs[-1].text()
    assert config.read_bytes() == config_before and notes.read_text() == "my notes"
    # Nor one that is not scores exported before, as --json: a note and another program's JSON were replaced after
    # the dialog's Yes. An earlier export is replaced.
    todo, other_json = out / "todo.txt", out / "data.json"
    todo.write_text("buy milk\n")
    other_json.write_text('{"a": 1}\n')
    for target in (todo, other_json):
        assert window.export_scores(target) is None
        assert "is not a report of this tool" in window.dialogs[-1].text()
    assert todo.read_text() == "buy milk\n" and other_json.read_text() == '{"a": 1}\n'
    window.plan_panel.set_count(1, emit=True)
    qtbot.waitUntil(lambda: window.plan is not None and len(window.plan.removed) == 1, timeout=3000)
    assert window.export_scores(path) == path
    assert json.loads(path.read_text(encoding="utf-8"))["removed_layers"] == window.plan.removed
    todo.unlink()
    other_json.unlink()
    window.dialogs.clear()

    # A fresh window with the same model opened: import, and the chart and slider work without a pass.
    fresh = make_window()
    with qtbot.waitSignal(fresh.jobFinished, timeout=60_000):
        fresh.open_model(str(gui_model))
    fresh.settings_panel.set_values({"metric": "angular"})
    starts: list[str] = []
    monkeypatch.setattr(dialogs, "ask_scores_open_path", lambda parent, start: starts.append(start) or str(path))
    with qtbot.waitSignal(fresh.jobFinished, timeout=60_000) as imported:
        fresh.import_action.trigger()
    assert imported.args == ["import", "ok"]
    assert starts == [str(out)]  # where the export went (it opened in the home folder each time)
    assert fresh.chart.scores == scores.scores and fresh.engine.scores.metric == "bi"
    assert fresh.settings_panel.values()["metric"] == "bi"
    assert fresh.plan_panel.slider.maximum() == 5
    with qtbot.waitSignal(fresh.plan_panel.countChanged, timeout=2000):
        fresh.plan_panel.slider.setValue(3)
    assert fresh.plan.removed == sorted(sorted(range(6), key=lambda i: scores.scores[i])[:3])
    assert fresh.plan.params_after < fresh.plan.params_before and fresh.save_button.isEnabled()
    assert fresh.dialogs == []

    # Another model (a different layer count) is refused with a sentence.
    data["n_layers"], data["scores"] = 4, data["scores"][:4]
    data["other_scores"] = {k: v[:4] for k, v in data["other_scores"].items()}
    other = tmp_path / "other.json"
    other.write_text(json.dumps(data), encoding="utf-8")
    fresh.import_scores(other)
    assert "not for the opened model" in fresh.dialogs[-1].text() and "4 layers" in fresh.dialogs[-1].text()
    assert fresh.chart.scores == scores.scores  # what was shown stays
    broken = tmp_path / "broken.json"
    broken.write_text("{not json", encoding="utf-8")
    fresh.import_scores(broken)
    assert "not valid JSON" in fresh.dialogs[-1].text()


def test_an_imported_file_shows_the_plan_it_lists_and_check_removes_those(qtbot, opened, make_window,
                                                                           gui_model: Path, tmp_path: Path,
                                                                           caplog) -> None:
    """Export and Import did not round-trip a plan chosen by hand: the import showed the slider's plan for its count,
    and Check and Save then removed other layers than the file lists."""
    window = opened
    with qtbot.waitSignal(window.jobFinished, timeout=60_000):
        window.start_scoring()
    window.plan_panel.set_count(2, emit=True)
    qtbot.waitUntil(lambda: window.plan is not None and len(window.plan.removed) == 2, timeout=3000)
    own = list(window.plan.removed)
    own_file = window.export_scores(tmp_path / "own.json")
    window.toggle_layer(own[0])
    window.toggle_layer(next(i for i in range(1, 5) if i not in own))
    listed = list(window.plan.removed)
    assert len(listed) == 2 and listed != own and window.manual
    exported = window.export_scores(tmp_path / "by-hand.json")

    fresh = make_window()
    with qtbot.waitSignal(fresh.jobFinished, timeout=60_000):
        fresh.open_model(str(gui_model))
    with qtbot.waitSignal(fresh.jobFinished, timeout=60_000):
        fresh.import_scores(exported)
    assert fresh.plan.removed == listed and fresh.manual  # it showed the slider's plan, the scores' own
    assert fresh.plan_panel.slider.value() == 2
    assert "as the imported file lists" in fresh.plan_panel.count_label.text()
    said = fresh.statusBar().currentMessage()
    assert said.startswith("Imported the scores of 6 layers from by-hand.json") and said.endswith(
        f" The plan shown is the file's, layers {layer_list(listed)}; Check and Save remove those (move the slider "
        "for the scores' own)."), said
    caplog.set_level("INFO", logger="shortgpt_desktop")
    with qtbot.waitSignal(fresh.jobFinished, timeout=60_000) as checked:
        fresh.check()
    assert checked.args == ["check", "ok"] and fresh.engine.checked.removed == listed
    # no scoring timed this machine: the job said nothing of its whole time, where after a Score it does
    assert "Checking perplexity: no time said before it starts (the scores were imported, and no scoring here has " \
           "timed this machine); each step says its own as it goes" in caplog.messages
    # The card says where the layers came from: "picked by hand, after scoring with bi+" of a choice the file kept
    with qtbot.waitSignal(fresh.jobFinished, timeout=60_000) as saved:
        fresh.save_to(tmp_path / "from-file")
    assert saved.args == ["save", "ok"]
    card = (tmp_path / "from-file" / "README.md").read_text(encoding="utf-8")
    assert "as the imported scores file by-hand.json lists them" in card and "picked by hand" not in card, card
    fresh.set_count(2)  # the slider gives the scores' own plan back
    assert fresh.plan.removed == own and not fresh.manual
    fresh.toggle_layer(own[0])  # clicked after an import, a plan is the user's
    assert "chosen by hand" in fresh.plan_panel.count_label.text()

    # A file whose plan is its count's own shows that count's plan, as the scores choose it, and says nothing more.
    with qtbot.waitSignal(fresh.jobFinished, timeout=60_000):
        fresh.import_scores(own_file)
    assert fresh.plan.removed == own and not fresh.manual
    assert "The plan shown" not in fresh.statusBar().currentMessage()

    # A hand-edited plan: what is not a layer is left out and said; a plan removing every layer is not shown, and said
    data = json.loads(exported.read_text(encoding="utf-8"))
    full_scores = list(data["scores"])
    edited = tmp_path / "edited.json"

    def import_edited(**changes: object) -> str:
        data.update(changes)
        edited.write_text(json.dumps(data), encoding="utf-8")
        with qtbot.waitSignal(fresh.jobFinished, timeout=60_000):
            fresh.import_scores(edited)
        return fresh.statusBar().currentMessage()

    said = import_edited(removed_layers=[*listed, 99, -1, listed[0]])
    assert fresh.plan.removed == listed and said.endswith(
        "(move the slider for the scores' own). The file's plan lists 99 and -1, not layers of this model: left out. "
        f"It lists layer {listed[0]} more than once: once is kept."), said
    said = import_edited(removed_layers=list(range(6)))
    assert said.endswith(" The file's plan, layers 0–5, is not shown: it removes all of the 6 layers, and at most 5 "
                         "can go; the slider's plan is."), said
    assert not fresh.manual
    said = import_edited(removed_layers=[4], scores=[*data["scores"][:4], None, *data["scores"][5:]], partial=True)
    assert said.endswith(" The file's plan, layer 4, is not shown: it removes layer 4, which the file's scores do "
                         "not cover; the slider's plan is."), said

    # Partial scores listing no plan, imported over a plan picked by hand: the import's own line stays before what
    # became of that plan (a partial import was taken for a cancelled scoring, whose line replaces it)
    shown = list(fresh.plan.removed)
    fresh.toggle_layer(next(i for i in range(1, 5) if i not in shown and  # not the plan of the next count either
                            sorted([*shown, i]) != fresh.engine.plan(count=len(shown) + 1).removed))
    picked = list(fresh.plan.removed)
    said = import_edited(removed_layers=[], scores=full_scores, partial=True)
    assert said.startswith("Imported the scores of 6 layers from edited.json") and said.endswith(
        f"The plan picked by hand stays: layers {layer_list(picked)} (move the slider for the new scores' own)."), said
    # A plan a file listed, kept through the import of another that lists none, names the file that listed it
    with qtbot.waitSignal(fresh.jobFinished, timeout=60_000):
        fresh.import_scores(exported)
    said = import_edited(partial=False)
    assert fresh.plan.removed == listed and said.endswith(
        f"The plan by-hand.json listed stays: layers {layer_list(listed)} (move the slider for the new scores' "
        "own)."), said


def test_exported_scores_say_how_bi_plus_chose_the_plan_a_check_measured(qtbot, opened, tmp_path: Path) -> None:
    """After a Check had bi+ measure its choice, the export wrote "selection": "" beside the layers (a walkthrough)."""
    window = opened
    window.settings_panel.set_values({"metric": "bi+"})
    with qtbot.waitSignal(window.jobFinished, timeout=60_000):
        window.start_scoring()
    window.plan_panel.set_count(2, emit=True)
    qtbot.waitUntil(lambda: window.plan is not None and len(window.plan.removed) == 2, timeout=3000)
    with qtbot.waitSignal(window.jobFinished, timeout=120_000) as checked:
        window.check()
    assert checked.args == ["check", "ok"] and window.plan.measured
    data = json.loads(window.export_scores(tmp_path / "measured.json").read_text(encoding="utf-8"))
    assert data["removed_layers"] == window.plan.removed
    assert data["selection"] and data["selection"] == window.engine.report(window.plan).selection


def test_the_report_of_a_plan_picked_by_hand_imports_as_its_scores_and_that_plan(tiny_model: Path,
                                                                                  small_calib: Path,
                                                                                  tmp_path: Path) -> None:
    """A saved job's report whose layers were picked by hand from bi+ scores was refused by Import ("uses a metric
    this version does not know (manual)"), though it carries the scores."""
    from shortgpt_desktop.core.engine import Engine
    from shortgpt_desktop.core.pipeline import JobSpec
    from shortgpt_desktop.gui.scores_file import read_scores

    spec = JobSpec(model=str(tiny_model), calib=[str(small_calib)], samples=8, seq_len=32, repair="none")
    engine = Engine()
    engine.score(spec)
    engine.report(engine.plan(layers=[1, 4]), spec).write_json(tmp_path / "picked.json")
    imported = read_scores(tmp_path / "picked.json")
    assert imported.scores.metric == "bi+" and imported.scores.scores == engine.scores.scores
    assert imported.removed == [1, 4]


def test_imported_scores_say_what_they_were_measured_on_in_the_card(qtbot, opened, make_window, gui_model: Path,
                                                                     calib_text: Path, tmp_path: Path) -> None:
    """Scores imported, then the model saved with other calibration text in the window: the card named the window's
    text as the one the layers were scored on, and the import's own text nowhere."""
    window = opened
    with qtbot.waitSignal(window.jobFinished, timeout=60_000):
        window.start_scoring()
    window.plan_panel.set_count(2, emit=True)
    qtbot.waitUntil(lambda: window.plan is not None, timeout=3000)
    exported = window.export_scores(tmp_path / "scores.json")
    assert exported is not None
    samples = window.engine.scored.sample_count
    # The file is the plan on screen whole: it kept every layer and the whole size beside the removed ones
    data = json.loads(exported.read_text(encoding="utf-8"))
    assert len(data["removed_layers"]) == 2 and data["kept_layers"] == window.plan.kept
    assert sorted(data["removed_layers"] + data["kept_layers"]) == list(range(6))
    assert data["params_after"] == window.plan.params_after < data["params_before"]
    assert data["bytes_after"] == window.plan.bytes_after < data["bytes_before"]

    other_text = tmp_path / "other-text.txt"
    other_text.write_text(calib_text.read_text(encoding="utf-8"), encoding="utf-8")
    fresh = make_window()
    with qtbot.waitSignal(fresh.jobFinished, timeout=60_000):
        fresh.open_model(str(gui_model))
    fresh.calibration_panel.add_paths([str(other_text)])
    with qtbot.waitSignal(fresh.jobFinished, timeout=60_000):
        fresh.import_scores(exported)
    fresh.plan_panel.set_count(2, emit=True)
    qtbot.waitUntil(lambda: fresh.plan is not None, timeout=3000)
    with qtbot.waitSignal(fresh.jobFinished, timeout=60_000) as saved:
        fresh.save_to(tmp_path / "pruned")
    assert saved.args == ["save", "ok"]
    card = (tmp_path / "pruned" / "README.md").read_text(encoding="utf-8")
    line = next(x for x in card.splitlines() if x.startswith("- Calibration:"))
    assert f"layer scores imported from scores.json, measured there on {calib_text.name}; {samples} samples" in line
    assert line.endswith("; text this job read itself: other-text.txt (8 samples × 32 tokens, seed 0)"), line
    report = fresh.engine.report(fresh.plan)
    assert report.scores_imported["calibration"] == [str(calib_text)]
    assert report.calibration == [str(other_text)]

    # Exported again from the importing window, the file keeps the first measurement's record.
    again = fresh.export_scores(tmp_path / "again.json")
    from shortgpt_desktop.gui.scores_file import read_scores

    assert read_scores(again).origin["calibration"] == [str(calib_text)]
    assert read_scores(again).origin["file"] == str(exported)

    # A metric worked out from the weights after the import is not the imported scores': the card says nothing of
    # them (it named the import under "Metric: sequential").
    fresh.engine.use_scores(fresh.engine.rescore("sequential"))
    plan = fresh.engine.plan(count=2)
    assert plan.metric == "sequential" and fresh.engine.report(plan).scores_imported == {}


def test_a_hostile_scores_file_record_is_read_as_far_as_it_makes_sense(qtbot, opened, tmp_path: Path) -> None:
    """A scores file whose record of an earlier import, token count or timings had the wrong types was imported,
    and Save then failed with a traceback in the model card."""
    import json

    from shortgpt_desktop.gui.scores_file import read_scores

    window = opened
    with qtbot.waitSignal(window.jobFinished, timeout=60_000):
        window.start_scoring()
    window.plan_panel.set_count(2, emit=True)
    qtbot.waitUntil(lambda: window.plan is not None, timeout=3000)
    data = json.loads(window.export_scores(tmp_path / "scores.json").read_text(encoding="utf-8"))
    data["scores_imported"] = {"file": "x.json", "calibration": 7, "samples": "many", "seq_len": -3, "tokens": "lots"}
    data["tokens"], data["timings"] = "lots", ["not", "a", "dict"]
    hostile = tmp_path / "hostile.json"
    hostile.write_text(json.dumps(data), encoding="utf-8")
    imported = read_scores(hostile)
    assert imported.scores.tokens == 0 and imported.scores.seconds == 0.0
    assert imported.origin == {"file": "x.json", "calibration": [], "samples": None, "seq_len": None, "seed": None,
                               "tokens": None}
    with qtbot.waitSignal(window.jobFinished, timeout=60_000):
        window.import_scores(hostile)
    window.plan_panel.set_count(2, emit=True)
    qtbot.waitUntil(lambda: window.plan is not None and bool(window.plan.removed), timeout=3000)
    with qtbot.waitSignal(window.jobFinished, timeout=60_000) as saved:
        window.save_to(tmp_path / "pruned")
    assert saved.args == ["save", "ok"] and window.dialogs == []
    card = (tmp_path / "pruned" / "README.md").read_text(encoding="utf-8")
    assert "layer scores imported from x.json, measured there on text not recorded; text this job read" in card


def test_a_hub_page_address_opens_as_its_id(qtbot, window, gui_model: Path, calib_text: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Given on the command line, a Hub page's address was opened as typed, while the box reads its id: Check after
    an import asked whether to go on with the model that was open, and the title showed the whole address."""
    from shortgpt_desktop.gui import dialogs
    from tests.core.model.test_sources import fill_hub_cache

    cache = tmp_path / "hub"
    fill_hub_cache(cache, "someone/tiny-llama", gui_model)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    with qtbot.waitSignal(window.jobFinished, timeout=60_000) as opened:
        window.open_model("https://huggingface.co/someone/tiny-llama")
    assert opened.args == ["open", "ok"] and window.engine.source.spec == "someone/tiny-llama"
    assert window.windowTitle() == f"{window.engine.source.display_name} — ShortGPT Desktop"
    assert "https" not in window.windowTitle()
    asked: list[str] = []
    monkeypatch.setattr(dialogs, "ask_yes_no", lambda parent, title, text: asked.append(title) or False)
    assert window._acts_on_open_model("Check") and asked == []


def test_a_gguf_files_address_on_the_hub_opens_that_file_and_says_where_it_lies(
        qtbot, window, tiny_q4_gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The usual way to a quantized model: a ``*-GGUF`` repo's file, its address pasted from the Files page. It was
    read as the repo's id and refused (GGUF files alone); it opens that file, and the log says where it lies."""
    from PySide6.QtWidgets import QApplication

    from tests.core.model.test_sources import offline_gguf_repo

    snapshot, address = offline_gguf_repo(tmp_path, tiny_q4_gguf, monkeypatch)
    window.model_panel.set_text(address)
    with qtbot.waitSignal(window.jobFinished, timeout=60_000) as opened:
        qtbot.keyClick(window.model_panel.field.lineEdit(), Qt.Key.Key_Return)
    assert opened.args == ["open", "ok"]
    source = window.engine.source
    assert source.spec == address and source.folder == snapshot and source.gguf_file == "tiny-Q4_0.gguf"
    assert window.windowTitle() == "tiny-Q4_0.gguf — ShortGPT Desktop"
    QApplication.processEvents()
    assert f"opened tiny-Q4_0.gguf (from the Hub cache, {snapshot}): " in window.log_panel.view.toPlainText()


def test_a_hub_page_of_another_revision_names_the_model_by_its_id(qtbot, window, gui_model: Path, calib_text: Path,
                                                                   tmp_path: Path, monkeypatch) -> None:
    """``https://huggingface.co/org/name/tree/dev`` opens revision dev, and stays as typed for the jobs to open the
    same; but the title, the suggested folder and the card named the model "dev" (the card had no base_model line),
    where the command line's ``--revision dev`` names it org/name."""
    from shortgpt_desktop.gui.session import suggested_output
    from tests.core.model.test_sources import fill_hub_cache

    cache = tmp_path / "hub"
    fill_hub_cache(cache, "someone/tiny-dev", gui_model, revision="dev")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    page = "https://huggingface.co/someone/tiny-dev/tree/dev"
    with qtbot.waitSignal(window.jobFinished, timeout=60_000) as opened:
        window.open_model(page)
    assert opened.args == ["open", "ok"] and window.engine.source.spec == page and window.model_panel.text == page
    assert window.windowTitle() == "someone/tiny-dev — ShortGPT Desktop"
    window.calibration_panel.add_paths([str(calib_text)])
    with qtbot.waitSignal(window.jobFinished, timeout=60_000):
        window.start_scoring()
    window.plan_panel.set_count(2, emit=True)
    qtbot.waitUntil(lambda: window.plan is not None and len(window.plan.removed) == 2, timeout=3000)
    assert Path(suggested_output(window.engine, window.plan, str(tmp_path))).name.startswith("tiny-dev-")
    out = tmp_path / "saved"
    with qtbot.waitSignal(window.jobFinished, timeout=60_000) as saved:
        window.save_to(out)
    assert saved.args == ["save", "ok"]
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "\nbase_model: someone/tiny-dev\n" in card and "# tiny-dev, pruned with ShortGPT Desktop" in card
    assert "at revision `dev`" in card and "ORIGINAL_MODEL" not in card
    # named by its id, the revision keeps another revision's scores out (the id alone let them in)
    exported = window.export_scores(tmp_path / "dev-scores.json")
    repo = cache / "models--someone--tiny-dev"
    (repo / "refs" / "main").write_text((repo / "refs" / "dev").read_text())
    with qtbot.waitSignal(window.jobFinished, timeout=60_000):
        window.open_model("someone/tiny-dev")
    assert window.engine.source.revision is None
    with qtbot.waitSignal(window.errorShown, timeout=10_000) as refused:
        window.import_scores(exported)
    assert refused.args[0].startswith("These scores are for someone/tiny-dev at revision dev (6 layers), not for the "
                                      "opened model someone/tiny-dev at revision main")


def test_the_open_model_typed_again_clears_why_another_could_not_be_opened(qtbot, opened, tmp_path: Path) -> None:
    """After a mistyped path, the open model typed again said "open already; its scores are kept" in the status bar
    while the panel still said the mistyped path did not exist."""
    window = opened
    with qtbot.waitSignal(window.jobFinished, timeout=60_000):
        window.start_scoring()
    with qtbot.waitSignal(window.errorShown, timeout=30_000):
        window.open_model(str(tmp_path / "nope"))
    window.last_dialog.close()
    assert "does not exist" in window.model_panel.message.text() and not window.model_panel.message.isHidden()
    window.open_model(window.engine.source.spec)
    assert window.model_panel.message.isHidden() and window.engine.scores is not None
    assert "is open already" in window.statusBar().currentMessage()


def test_import_needs_an_opened_model(window, tmp_path: Path) -> None:
    window.import_scores(tmp_path / "whatever.json")
    assert "Open the model" in window.dialogs[-1].text()


def test_a_link_loop_dropped_on_the_calibration_list_is_a_sentence(qtbot, window, tmp_path: Path) -> None:
    """Resolving a link loop raised RuntimeError in the panel's slot: a traceback, not a sentence."""
    loop_a, loop_b = tmp_path / "loop-a", tmp_path / "loop-b"
    loop_a.symlink_to(loop_b)
    loop_b.symlink_to(loop_a)
    with qtbot.waitSignal(window.errorShown, timeout=10_000) as shown:
        window.calibration_panel.add_paths([str(loop_a)])
    assert shown.args == [f"{loop_a} is a link that leads back to itself (a loop of links)."]
    assert window.calibration_panel.paths() == []
    window.last_dialog.close()


def test_a_recent_model_typed_into_the_box_opens_on_enter_not_when_the_focus_leaves(qtbot, opened,
                                                                                    tmp_path: Path) -> None:
    """Qt activates the recent entry the box's text matches when the focus leaves it: a path typed, then a click
    elsewhere or Ctrl+Q, opened that model (and Ctrl+Q asked "Open …?" before "Quit?"), where the README says a typed
    path opens on Enter or Open."""
    import shutil

    other = tmp_path / "other"
    shutil.copytree(opened.engine.source.folder, other)
    opened.model_panel.set_recent([*opened.model_panel.recent(), str(other)])  # not the box's current entry
    box = opened.model_panel.field.lineEdit()
    opened.activateWindow()
    box.setFocus()
    qtbot.waitUntil(box.hasFocus, timeout=3000)
    box.clear()
    qtbot.keyClicks(box, str(other))  # typed: Qt's editingFinished wants a user's edit
    opened.score_button.setFocus()
    qtbot.waitUntil(lambda: not box.hasFocus(), timeout=3000)
    qtbot.wait(50)
    assert not opened.busy and model_key(opened.engine.source.spec) != str(other.resolve())
    with qtbot.waitSignal(opened.jobFinished, timeout=60_000) as finished:
        box.setFocus()
        qtbot.keyClick(box, Qt.Key.Key_Return)
    assert finished.args == ["open", "ok"] and model_key(opened.engine.source.spec) == str(other.resolve())


def test_a_gguf_opened_through_a_link_is_remembered_by_the_link(qtbot, window, tiny_q4_gguf: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A GGUF file without the ending (Ollama's blobs, the Hub cache's), opened through a link named model.gguf as the
    app's own sentence advises, was remembered by its target: the recent entry and the next start's reopening then
    said it is "a GGUF model without the .gguf ending"."""
    import shutil

    from shortgpt_desktop.gui.model_panel import names_one_model

    blob = tmp_path / "blobs" / "sha256-0123abcd"
    blob.parent.mkdir()
    shutil.copy(tiny_q4_gguf, blob)
    link = tmp_path / "models" / "model.gguf"
    link.parent.mkdir()
    link.symlink_to(blob)
    assert model_key(str(tmp_path / "models" / "." / "model.gguf")) == str(link)  # normalised, the link kept
    # the folders above the name resolved: ".." after a folder link leads where the link's target's parent is
    llms = tmp_path / "data" / "llms"
    for name in ("phi", "qwen"):
        (llms / name).mkdir(parents=True)
    (tmp_path / "models" / "current").symlink_to(llms / "phi")
    assert model_key(str(tmp_path / "models" / "current" / ".." / "qwen")) == str(llms / "qwen")
    assert model_key(str(tmp_path / "models" / "current" / "..")) == str(llms)
    assert names_one_model(str(link), str(blob)) and not names_one_model(str(link), str(tiny_q4_gguf))
    with qtbot.waitSignal(window.jobFinished, timeout=60_000) as opened:
        window.open_model(str(link))
    assert opened.args == ["open", "ok"] and window.model_panel.recent()[0] == str(link)
    window.save_state()
    assert window.store.last_model() == str(link)
    asked: list[str] = []
    monkeypatch.setattr(dialogs, "ask_yes_no", lambda parent, title, text: asked.append(title) or False)
    for named in (link, blob):  # the open model named either way: no reopening, no question
        window.model_panel.set_text(str(named))
        assert window._acts_on_open_model("Save") and asked == [], named
    window.model_panel.set_text(str(tiny_q4_gguf))  # another model: asked
    assert not window._acts_on_open_model("Save") and asked == [f"Save: {window.engine.source.display_name}?"]


def test_a_home_of_no_such_user_typed_as_the_model_is_a_sentence(qtbot, opened, make_window) -> None:
    """``~user/...`` of an unknown user raised RuntimeError in Score's slot (the typed model compared with the open
    one) and again when the window closed (the last model remembered), so the settings were not written."""
    typed = "~no-such-user-shortgpt/model"
    opened.model_panel.set_text(typed)
    with qtbot.waitSignal(opened.errorShown, timeout=30_000) as shown:
        opened.start_scoring()
    assert f"{typed} does not exist" in shown.args[0]
    opened.last_dialog.close()
    opened.model_panel.set_text(typed)
    opened.save_state()  # the model open is remembered, not the path typed and never opened
    assert opened.store.last_model() == model_key(opened.engine.source.spec) != typed
    fresh = make_window()  # no model open: the box's text is what is remembered, and that raised
    fresh.model_panel.set_text(typed)
    fresh.save_state()
    assert fresh.store.last_model() == typed


def test_a_scores_file_nested_too_deeply_is_a_sentence(tmp_path: Path) -> None:
    """Python's JSON parser raises RecursionError, not ValueError, on nesting this deep: a traceback."""
    from shortgpt_desktop.gui.scores_file import ScoresFileError, read_scores

    deep = tmp_path / "scores.json"
    deep.write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    with pytest.raises(ScoresFileError, match="is not valid JSON"):
        read_scores(deep)


def test_a_scores_file_must_give_one_finite_score_per_layer_and_only_layers_the_model_has(tmp_path: Path) -> None:
    """Scores for fewer layers than the file's count, or NaN (which Python's JSON reads), would be drawn and cut by;
    a removed layer past the last one is dropped."""
    import json

    from shortgpt_desktop.gui.scores_file import ScoresFileError, read_scores

    path = tmp_path / "scores.json"

    def read(**over: object):
        path.write_text(json.dumps({"n_layers": 4, "metric": "bi", "scores": [0.1, 0.2, 0.3, 0.4], **over}),
                        encoding="utf-8")
        return read_scores(path)

    assert read(removed_layers=[1, 3, 4, -1]).removed == [1, 3]
    assert read(samples=8, seq_len=32, seed=0).origin["seed"] == 0  # the default seed, said in the card
    for scores in ([0.1, 0.2, 0.3], [0.1, float("nan"), 0.3, 0.4], [0.1, float("inf"), 0.3, 0.4]):
        with pytest.raises(ScoresFileError, match="not one number per layer"):
            read(scores=scores)
    # Parts of another shape were an AttributeError or a TypeError out of the window's import, and no dialog.
    for other in ([1], "abc", 5):
        with pytest.raises(ScoresFileError, match=r"^The other metrics' scores in the file are not one list per"):
            read(other_scores=other)
    assert read(other_scores={"rm": [0.5, None, 0.25, 1]}).scores.extra == {"rm": [0.5, None, 0.25, 1.0]}
    assert read(removed_layers=5).removed == [] and read(removed_layers=[True, 2, "3"]).removed == [2]
    # Scores no metric can give (a hand-edited file: a Block Influence of -5 and of 1e9 drew a broken chart, whose
    # bars all went at the next slider move); float rounding just past a bound is kept
    for metric, bad, word in (("bi", -5, "between 0 and 2"), ("bi", 1e9, "between 0 and 2"),
                              ("ppl", 0.5, "at least 1"), ("angular", 1.5, "between 0 and 1")):
        with pytest.raises(ScoresFileError, match=rf"gives layer 1 a .* score of {re.escape(f'{bad:g}')}, which "
                                                  rf"cannot be: such scores are {word}"):
            read(metric=metric, scores=[0.1 if metric != "ppl" else 2.0, bad, 0.3, 0.4])
    with pytest.raises(ScoresFileError, match="Relative Magnitude score of -1"):
        read(other_scores={"relative_magnitude": [0.5, -1, 0.25, 1]})
    assert read(scores=[-1e-6, 0.2, 2.0 + 1e-6, 0.4]).scores.scores[0] == -1e-6
    assert read(metric="sequential", scores=[-3, 0, 1, 2]).scores.scores[0] == -3  # no bounds known there
    # what is left out is kept to be said (a hand-edited file's were dropped without a word)
    listed = read(removed_layers=[1, 3, 4, -1, 3, "x", True, 2.0, 3])
    assert listed.removed == [1, 3] and listed.left_out == ["4", "-1", '"x"', "true", "2.0"]
    assert listed.repeated == [3]  # once, though listed three times
    assert read(removed_layers=[2, 0]).left_out == [] and read(removed_layers=[2, 0]).repeated == []
    with pytest.raises(ScoresFileError, match="holds no layer scores"):
        read(n_layers=True, scores=[0.1])  # JSON's true is not one layer


def test_enter_on_the_open_model_keeps_its_scores(qtbot, opened, gui_model: Path) -> None:
    """Enter in the unchanged field, or the same model picked again, reopened it: the scores, the plan and the
    check were thrown away without a word (hours of a big model's scoring)."""
    from PySide6.QtCore import Qt
    from PySide6.QtTest import QTest

    window = opened
    with qtbot.waitSignal(window.jobFinished, timeout=60_000):
        window.start_scoring()
    window.plan_panel.set_count(2, emit=True)
    qtbot.waitUntil(lambda: window.plan is not None, timeout=3000)
    scores, plan = window.engine.scores, window.plan
    edit = window.model_panel.field.lineEdit()
    edit.setText(f"{gui_model}/")  # the same folder, typed another way
    QTest.keyClick(edit, Qt.Key.Key_Return)
    window.model_panel.modelChosen.emit(str(gui_model))  # picked again from the recent list
    qtbot.wait(50)
    assert not window.busy and window.engine.scores is scores and window.plan is plan
    assert window.save_button.isEnabled()
    assert window.statusBar().currentMessage() == f"{gui_model.name} is open already; its scores are kept."
    assert window.model_panel.text == str(gui_model)
    # A path that failed to open, then the open model again: "Opening the model failed." stayed under the buttons
    with qtbot.waitSignal(window.jobFinished, timeout=30_000) as failed:
        window.open_model(str(gui_model.parent / "no-such-model"))
    assert failed.args == ["open", "failed"] and window.progress_label.text() == "Opening the model failed."
    window.last_dialog.close()
    window.model_panel.modelChosen.emit(str(gui_model))
    assert window.progress_label.text() == "" and window.engine.scores is scores


def test_a_model_typed_but_not_opened_is_asked_about_before_check_save_or_the_curve(
        qtbot, opened, gui_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A path typed into the box without Enter or Open: Check, Save and the curve acted on the open model while the
    box named the other, so its plan and its saved folder read as the typed model's. Now each asks first; No does
    nothing, Yes goes on with the open model and the box names it again. The title names the open model."""
    from shortgpt_desktop.gui import dialogs

    window = opened
    with qtbot.waitSignal(window.jobFinished, timeout=60_000):
        window.start_scoring()
    window.plan_panel.set_count(2, emit=True)
    qtbot.waitUntil(lambda: window.plan is not None, timeout=3000)
    name = window.engine.source.display_name
    assert window.windowTitle() == f"{name} — ShortGPT Desktop"
    other = tmp_path / "another-model"
    asked: list[tuple[str, str]] = []
    answers: list[bool] = []
    monkeypatch.setattr(dialogs, "ask_yes_no",
                        lambda parent, title, text: asked.append((title, text)) or answers.pop(0))
    folders: list[str] = []
    monkeypatch.setattr(dialogs, "ask_output_folder", lambda parent, suggestion: folders.append(suggestion))

    window.model_panel.field.lineEdit().setText(str(other))  # typed, no Enter
    answers[:] = [False, False, False]
    window.check()
    window.save()
    window.quality_curve()
    assert [t for t, _ in asked] == [f"Check: {name}?", f"Save: {name}?", f"The quality curve: {name}?"]
    assert str(other) in asked[0][1] and "not open" in asked[0][1]
    assert not window.busy and not folders and window.model_panel.text == str(other)

    answers[:] = [True]
    window.save()
    assert len(folders) == 1 and window.model_panel.text == str(gui_model)
    window.save()  # the box names the open model again: nothing to ask
    assert len(asked) == 4 and len(folders) == 2
    for same in (str(gui_model) + os.sep, ""):  # the same folder typed another way, or an emptied box: not another
        window.model_panel.field.lineEdit().setText(same)
        window.save()
    assert len(asked) == 4 and len(folders) == 4


def test_a_saved_gpu_the_probe_does_not_find_is_dropped_and_said(qtbot, make_window, settings: QSettings,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings saved on a machine with a GPU (or before a driver went): the box said Auto while every job asked
    for the missing cuda:0 and failed, choosing Auto again changed nothing, and cuda:0 was saved again on close."""
    import json

    from shortgpt_desktop.gui import main_window
    from shortgpt_desktop.gui.system import INITIAL_DEVICES

    settings.setValue("job/settings", json.dumps({"device": "cuda:0"}))
    monkeypatch.setattr(main_window, "probe_devices", lambda: list(INITIAL_DEVICES))  # a CPU-only machine
    window = make_window(probe=True, fast=False)
    qtbot.waitUntil(lambda: "not here" in window.statusBar().currentMessage(), timeout=30_000)
    assert window.settings_panel.values()["device"] == "auto"
    assert "(cuda:0) is not here; jobs use Auto" in window.statusBar().currentMessage()
    window.save_state()
    assert json.loads(settings.value("job/settings"))["device"] == "auto"


def test_a_model_path_pasted_with_quotes_or_as_a_file_url_opens(qtbot, window, gui_model: Path) -> None:
    """Windows Explorer's "Copy as path" adds quotes, a browser or file manager copies a file:// URL: both were
    "does not exist" for a folder that exists."""
    from PySide6.QtCore import QUrl

    for pasted in (f'"{gui_model}"', f"'{gui_model}' ", QUrl.fromLocalFile(str(gui_model)).toString()):
        window.model_panel.set_text(pasted)
        with qtbot.waitSignal(window.jobFinished, timeout=60_000) as opened:
            window.model_panel.modelChosen.emit(window.model_panel.text)
        assert opened.args == ["open", "ok"], pasted
        assert window.model_panel.text == str(gui_model) and window.engine.source.folder == gui_model


def test_a_hub_page_address_pasted_in_the_model_field_is_its_id(tmp_path: Path, monkeypatch) -> None:
    """The Hub page's address, as the browser copies it, was "does not exist"; a page of another revision stays as
    pasted and opens that revision (the window has no revision field)."""
    from shortgpt_desktop.gui.model_panel import typed_model

    monkeypatch.chdir(tmp_path)
    assert typed_model("https://huggingface.co/HuggingFaceTB/SmolLM2-135M") == "HuggingFaceTB/SmolLM2-135M"
    assert typed_model(" hf.co/HuggingFaceTB/SmolLM2-135M/tree/main ") == "HuggingFaceTB/SmolLM2-135M"
    dev = "https://huggingface.co/org/name/tree/dev"
    assert typed_model(dev) == dev
    (tmp_path / "org" / "name").mkdir(parents=True)
    assert typed_model("org/name/") == "org/name/"  # a local folder stays a path
    # a GGUF file's address stays whole: that file opens (its repo, of GGUF files alone, was refused)
    file = "https://huggingface.co/org/name-GGUF/blob/main/name-Q4_K_M.gguf"
    assert typed_model(file) == file


def test_a_failed_open_leaves_the_open_models_name_in_the_field(qtbot, opened, gui_model: Path,
                                                               tmp_path: Path) -> None:
    """Save and Check act on the model the window holds; the field kept naming the model that failed to open, so
    its plan and its Save's suggested name looked like the other model's."""
    window = opened
    with qtbot.waitSignal(window.jobFinished, timeout=60_000):
        window.start_scoring()
    missing = tmp_path / "other-model"
    window.model_panel.set_text(str(missing))
    with qtbot.waitSignal(window.errorShown, timeout=30_000) as shown:
        window.model_panel.modelChosen.emit(window.model_panel.text)
    window.last_dialog.close()
    said = f"{missing} does not exist"
    assert said in shown.args[0] and said in window.model_panel.message.text()
    assert window.model_panel.text == str(gui_model) and window.engine.scores is not None
    # Said until the next job: it stayed under the open model's facts from then on
    with qtbot.waitSignal(window.jobFinished, timeout=60_000):
        window.start_scoring()
    assert not window.model_panel.message.isVisibleTo(window) and not window.model_panel.message.text()


def test_a_model_dropped_on_the_calibration_list_is_pointed_to_the_model_box(qtbot, window, gui_model: Path,
                                                                             tmp_path: Path) -> None:
    """A model folder was listed as text (its tokenizer.json as thousands of tokens, millions on a real model)
    and Score then failed; a .gguf file was listed with 0 tokens."""
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF" + bytes(60))
    for model in (gui_model, gguf):
        with qtbot.waitSignal(window.errorShown, timeout=10_000) as shown:
            window.calibration_panel.add_paths([str(model)])
        assert shown.args == [f"{model} is a model, not text: open it in the Model box instead."]
        window.last_dialog.close()
    assert window.calibration_panel.paths() == []


def test_at_the_smallest_window_the_chart_is_not_squeezed_below_its_minimum(qtbot, window) -> None:
    """At 860 × 600 the chart got less height than its own minimum, and its hint was drawn over the layer axis."""
    window.resize(window.minimumSize())
    qtbot.waitUntil(lambda: window.height() == window.minimumHeight(), timeout=3000)
    qtbot.wait(20)
    chart = window.chart
    assert chart.height() >= chart.minimumSizeHint().height()
    assert chart.hover_label.geometry().top() >= chart.plot.geometry().bottom()


def test_scores_of_another_model_on_this_machine_are_refused_though_its_folder_has_the_same_name(
        tmp_path: Path) -> None:
    """Two runs' folders both named ``final``, same layer count: the second accepted the first's scores on the
    name, showed them as its own (a fresh score gives others) and saved with them. A model this machine holds is
    matched by its path; one that is not here (moved, another machine) by its name; another architecture never."""
    from shortgpt_desktop.core.measure.scoring import LayerScores
    from shortgpt_desktop.gui.scores_file import ImportedScores, same_model

    first, second = tmp_path / "run1" / "final", tmp_path / "run2" / "final"
    for folder in (first, second):
        folder.mkdir(parents=True)

    def scores_of(model: str, architecture: str = "LlamaForCausalLM") -> ImportedScores:
        return ImportedScores(model, 6, architecture, LayerScores("bi", [0.1] * 6))

    assert same_model(scores_of(str(first)), str(first), "final", 6, "LlamaForCausalLM")
    assert not same_model(scores_of(str(first)), str(second), "final", 6, "LlamaForCausalLM")
    assert same_model(scores_of("/elsewhere/final"), str(second), "final", 6, "LlamaForCausalLM"), "moved: its name"
    assert not same_model(scores_of(str(first), "Qwen2ForCausalLM"), str(first), "final", 6, "LlamaForCausalLM")
    assert not same_model(scores_of(str(first)), str(first), "final", 8, "LlamaForCausalLM")


def test_scores_refused_for_a_copy_of_the_model_say_it_is_another_file(qtbot, opened, tmp_path: Path) -> None:
    """The scores of /tmp/a/m.gguf imported on a copy at /b/m.gguf were refused with "These scores are for /tmp/a/m.gguf
    (30 layers), not for the opened model m.gguf (30 layers)", which read as a contradiction (a walkthrough)."""
    import shutil

    window = opened
    with qtbot.waitSignal(window.jobFinished, timeout=60_000):
        window.start_scoring()
    exported = window.export_scores(tmp_path / "scores.json")
    original = window.engine.source.spec
    copy = tmp_path / "copy" / Path(original).name
    shutil.copytree(original, copy)
    with qtbot.waitSignal(window.jobFinished, timeout=60_000):
        window.open_model(str(copy))
    with qtbot.waitSignal(window.errorShown, timeout=10_000) as refused:
        window.import_scores(exported)
    assert refused.args[0].startswith(f"These scores were measured on {model_key(original)}, not on the opened "
                                      f"{window.engine.source.spec}, though the two have the same name")
    window.last_dialog.close()
    # a report of a cut without scores is refused alike (it said "This plan is for /a/m (6 layers), not for the
    # opened model m (6 layers)"; a review)
    plan_only = json.loads(exported.read_text(encoding="utf-8"))
    plan_only.update(scores=[], removed_layers=[2, 3], other_scores={})
    (tmp_path / "cut.json").write_text(json.dumps(plan_only), encoding="utf-8")
    with qtbot.waitSignal(window.errorShown, timeout=10_000) as refused:
        window.import_scores(tmp_path / "cut.json")
    assert refused.args[0] == (f"This plan was made for {model_key(original)}, not for the opened "
                               f"{window.engine.source.spec}, though the two have the same name: a plan is kept for "
                               "the very model it was made for (two runs' folders of one name are not one model); open "
                               "that one to import it.")
    window.last_dialog.close()


def test_scores_of_a_hub_model_fit_its_id_typed_in_other_capitals(tmp_path: Path, monkeypatch) -> None:
    """The Hub and its cache open ``huggingfacetb/smollm2-135m-instruct`` as HuggingFaceTB's model, but its exported
    scores were refused for it: "These scores are for HuggingFaceTB/SmolLM2-135M-Instruct (29 layers), not for
    the opened model huggingfacetb/smollm2-135m-instruct" (a window walkthrough). Another model's id still is not."""
    from shortgpt_desktop.core.measure.scoring import LayerScores
    from shortgpt_desktop.gui.scores_file import ImportedScores, same_model

    monkeypatch.chdir(tmp_path)
    scores = ImportedScores("HuggingFaceTB/SmolLM2-135M-Instruct", 30, "LlamaForCausalLM",
                            LayerScores("bi", [0.1] * 30))
    typed = "huggingfacetb/smollm2-135m-instruct"
    assert same_model(scores, typed, typed, 30, "LlamaForCausalLM")
    assert same_model(scores, f"https://huggingface.co/{typed}", typed, 30, "LlamaForCausalLM")
    assert not same_model(scores, "huggingfacetb/smollm2-360m-instruct", "huggingfacetb/smollm2-360m-instruct", 30,
                          "LlamaForCausalLM")
    assert not same_model(scores, "otherorg/smollm2-135m-instruct", "otherorg/smollm2-135m-instruct", 30,
                          "LlamaForCausalLM")  # the same name under another owner: its last part differs in case


@pytest.mark.parametrize("size", [(1280, 720), "minimum"])
def test_the_progress_line_and_the_buttons_keep_their_words_during_a_job(qtbot, window, size) -> None:
    """Beside the four buttons, the progress line was cut before its time left at 1280 × 720 ("Checking the candidate
    layers: 20 of 89 passes, ab…"); at 860 × 600 it was 1 pixel wide and the Save button read "ive pruned model"."""
    if size == "minimum":
        window.resize(window.minimumSize())
    else:
        window.resize(*size)
    window.progress.setVisible(True)  # as during a job
    window.progress_label.setText("Checking the candidate layers: 20 of 89 passes, about 5 min 41 s left…")
    qtbot.wait(20)
    for button in (window.score_button, window.cancel_button, window.save_button, window.check_button):
        assert button.width() >= button.sizeHint().width(), button.text()
    label = window.progress_label
    if size == (1280, 720):
        assert label.fontMetrics().horizontalAdvance(label.text()) <= label.width()  # the whole line, time left too
    else:
        assert label.width() >= 200


def test_a_text_that_gives_fewer_samples_than_asked_is_said_under_the_list_until_it_changes(
        qtbot, opened, tmp_path: Path) -> None:
    """The note that the text gave only some of the samples asked sat in the Log tab alone (a new user saw the
    scores drawn from 10 samples of the 32 asked and nothing on screen said so)."""
    window = opened
    settings = window.settings_panel
    settings.samples_box.setValue(settings.samples_box.maximum())
    with qtbot.waitSignal(window.jobFinished, timeout=60_000) as finished:
        window.start_scoring()
    assert finished.args == ["score", "ok"]
    label = window.calibration_panel.skipped_label
    assert label.isVisible() and "The calibration text gives only" in label.text(), label.text()
    assert f"({settings.samples_box.maximum():,} asked for)" in label.toolTip()
    more = tmp_path / "more.txt"
    more.write_text("Another paragraph of plain prose for the list. " * 40, encoding="utf-8")
    window.calibration_panel.add_paths([str(more)])  # the list changed: the note was about the last pass's text
    assert not label.isVisible()


def test_an_export_after_a_check_says_the_repair_and_healing_fitted_for_the_layers_it_lists(
        qtbot, opened, tmp_path: Path) -> None:
    """An export made after a repaired, healed Check listed the plan's layers beside "repair": "none" and
    "heal_steps": 0, the figures of no layers removed."""
    import json

    window = opened
    window.settings_panel.heal_box.setValue(2)
    with qtbot.waitSignal(window.jobFinished, timeout=60_000):
        window.start_scoring()
    data = json.loads(window.export_scores(tmp_path / "before.json").read_text(encoding="utf-8"))
    assert data["repair"] == "none" and data["heal_steps"] == 0  # nothing fitted yet
    window.plan_panel.set_count(2, emit=True)
    with qtbot.waitSignal(window.jobFinished, timeout=120_000):
        window.check()
    data = json.loads(window.export_scores(tmp_path / "after.json").read_text(encoding="utf-8"))
    assert data["removed_layers"] == window.plan.removed
    assert data["repair"] == "linear" and data["heal_steps"] == 2 and len(data["heal_losses"]) == 2


def test_save_check_and_the_curve_say_why_they_are_off(qtbot, window, gui_model: Path, calib_text: Path) -> None:
    """Their tooltips said what they do, never what they waited for (a walkthrough)."""
    buttons = (window.save_button, window.check_button, window.plan_panel.curve_button)
    own = {b: b.toolTip() for b in buttons}
    assert all(b.toolTip().endswith("Off now: open a model, then Score its layers.") for b in buttons)
    with qtbot.waitSignal(window.jobFinished, timeout=60_000):
        window.open_model(str(gui_model))
    window.calibration_panel.add_paths([str(calib_text)])
    assert all(b.toolTip().endswith("Off now: Score the layers first.") for b in buttons)
    with qtbot.waitSignal(window.jobFinished, timeout=60_000):
        window.start_scoring()
    assert all(b.toolTip() == own[b].split("\n\nOff now:")[0] for b in buttons)  # on: their own words alone
    window.plan_panel.slider.setValue(0)
    window.plan_panel.flush()
    qtbot.waitUntil(lambda: not window.save_button.isEnabled(), timeout=3000)
    assert window.save_button.toolTip().endswith("Off now: move the slider to remove at least one layer.")


def test_a_status_line_cut_by_the_labels_beside_it_is_whole_in_its_tooltip(window) -> None:
    """After an import of a hand-edited file the line ended "…the text listed here. The file's plan", cut by the device
    and memory labels: the part cut off was the one that mattered (a walkthrough)."""
    said = "Imported the scores of 29 layers from edited.json. " + "The file's plan lists 99, not a layer. " * 8
    window.statusBar().showMessage(said, 15000)
    assert window.statusBar().toolTip() == said
    window.statusBar().clearMessage()
    assert window.statusBar().toolTip() == ""


def test_a_command_lines_report_of_a_cut_by_hand_imports_as_its_plan(qtbot, opened, gui_model: Path,
                                                                      tmp_path: Path) -> None:
    """``shortgpt prune --remove 2,3 --json`` writes the cut's layers and no scores: the window refused its own
    program's file as "holds no layer scores: export them from ShortGPT Desktop first" (a walkthrough). Before a
    Score it says to score first; after, the file's plan is shown on the model's scores, and Check removes those."""
    from shortgpt_desktop import cli

    report = tmp_path / "cut.json"
    assert cli.main(["prune", str(gui_model), "--remove", "2,3", "--repair", "none", "--no-eval",
                     "--out", str(tmp_path / "cut"), "--json", str(report)]) == 0
    window = opened
    with qtbot.waitSignal(window.errorShown, timeout=10_000) as refused:
        window.import_scores(report)
    assert refused.args[0] == (f"{report} lists the layers a cut removed (2, 3) but no scores: score the layers, then "
                               "import it again to show that plan on them.")
    window.last_dialog.close()
    with qtbot.waitSignal(window.jobFinished, timeout=60_000):
        window.start_scoring()
    window.import_scores(report)
    assert window.plan.removed == [2, 3] and window.manual and not window.busy
    said = window.statusBar().currentMessage()
    assert said.startswith("Imported the plan of cut.json. The plan shown is the file's, layers 2, 3"), said
    with qtbot.waitSignal(window.jobFinished, timeout=60_000) as checked:
        window.check()
    assert checked.args == ["check", "ok"] and window.engine.checked.removed == [2, 3]
    # another model's report is refused as another model's scores are
    other = json.loads(report.read_text())
    other.update(model="/elsewhere/other-model", n_layers=8)
    (tmp_path / "other.json").write_text(json.dumps(other))
    with qtbot.waitSignal(window.errorShown, timeout=10_000) as refused:
        window.import_scores(tmp_path / "other.json")
    assert refused.args[0].startswith("This plan is for /elsewhere/other-model (8 layers), not for the opened model")
    window.last_dialog.close()
    one = json.loads(report.read_text())
    one["removed_layers"] = [4]  # one layer: "layers 4; Check and Save remove those"
    (tmp_path / "one.json").write_text(json.dumps(one))
    window.import_scores(tmp_path / "one.json")
    assert window.plan.removed == [4]
    assert "The plan shown is the file's, layer 4; Check and Save remove it (" in window.statusBar().currentMessage()
