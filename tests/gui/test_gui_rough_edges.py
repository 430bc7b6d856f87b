"""Rough edges a user hit: settings a screenshot run overwrote, recent models, layout at 1024 × 600, the chart's
scale and hints, the calibration panel's skipped files, scores as JSON, missing xcb libraries."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSettings

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
    assert settings_for(parse_args([])) == (None, None)


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
        scroll.ensureWidgetVisible(row)  # what Tab does, with Qt's default margins
        qtbot.wait(10)
        assert _visible_in_scroll(scroll, row), row
    # A short message takes one line, and clearing it gives the room back.
    window.model_panel.set_message("Opening was cancelled.")
    qtbot.wait(10)
    assert message.shown_text() == "Opening was cancelled." and message.toolTip() == ""
    assert message.height() <= line + 4


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
