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
