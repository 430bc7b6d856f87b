"""What the window reads at start and writes at close survives what a hobbyist's machine holds: a settings file
from another version or edited by hand, one that cannot be written, a model field no file system can look up."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import QSettings

from shortgpt_desktop.gui.settings_panel import DEFAULTS


def ini(path: Path, text: str) -> QSettings:
    path.write_text(text, encoding="utf-8")
    return QSettings(str(path), QSettings.Format.IniFormat)


@pytest.mark.parametrize(("value", "expected", "said"), [
    ("Infinity", DEFAULTS["seq_len"], "seq_len inf"), ("1e300", "most", "seq_len 1e+300 → 32,768"),
    ("-1e30", "least", "seq_len -1e+30 → 16"),
    ('\\"many\\"', DEFAULTS["seq_len"], "seq_len 'many'")])
def test_a_size_no_box_can_hold_falls_back_and_the_window_starts(make_window, tmp_path: Path, value: str,
                                                                 expected: object, said: str | None) -> None:
    """``"seq_len": Infinity`` (which Python's JSON writes and reads) or 1e300 was an OverflowError while the
    window was built: the app could not start until the file was found and deleted."""
    settings = ini(tmp_path / "s.ini", f'[job]\nsettings="{{\\"seq_len\\": {value}, \\"samples\\": 24}}"\n')
    window = make_window(settings, fast=False)
    values, box = window.settings_panel.values(), window.settings_panel.seq_len_box
    assert values["samples"] == 24  # the other keys are kept
    assert values["seq_len"] == {"most": box.maximum(), "least": box.minimum()}.get(expected, expected)
    message = window.statusBar().currentMessage()
    assert (said in message) if said else not message, message


def test_numbers_brought_into_range_and_ticks_neither_true_nor_false_are_said_in_the_log(make_window,
                                                                                         tmp_path: Path) -> None:
    """A settings file edited by hand: heal 1e9 came back as "Advanced (heal 100000)", -3 samples as 1 and repair
    "maybe" as unticked, without a word; what was said went to the status bar only, which the next message replaced
    within a second (the Log was attached after the settings were read)."""
    settings = ini(tmp_path / "s.ini", '[job]\nsettings="{\\"heal_steps\\": 1000000000, \\"samples\\": -3, '
                                       '\\"repair\\": \\"maybe\\", \\"low_memory\\": \\"false\\"}"\n')
    window = make_window(settings, fast=False)
    values = window.settings_panel.values()
    assert values["heal_steps"] == window.settings_panel.heal_box.maximum() and values["samples"] == 1
    assert values["repair"] is DEFAULTS["repair"] and values["low_memory"] is False
    logged = window.log_panel.view.toPlainText()
    assert "Saved settings this version cannot use were set to their defaults: repair 'maybe'." in logged, logged
    assert ("Saved settings out of range were brought within it: samples -3 → 1, heal_steps 1,000,000,000 → "
            f"{window.settings_panel.heal_box.maximum():,}.") in logged, logged


def test_values_this_version_does_not_know_are_said(make_window, tmp_path: Path) -> None:
    """A metric or dtype from another version, and a job settings value that is not JSON at all, became the
    defaults without a word (a saved device the probe does not find is said)."""
    settings = ini(tmp_path / "s.ini", '[job]\nsettings="{\\"metric\\": \\"future-metric\\", \\"dtype\\": '
                                       '\\"float8\\", \\"seq_len\\": Infinity}"\n[models]\nrecent="{not json"\n')
    window = make_window(settings, fast=False)
    said = window.statusBar().currentMessage()
    assert said.startswith("Saved settings this version cannot use were set to their defaults: "), said
    for part in ("dtype 'float8'", "metric 'future-metric'", "seq_len inf", "models/recent"):
        assert part in said, (part, said)
    assert window.settings_panel.values()["metric"] == DEFAULTS["metric"]


def test_a_calibration_value_written_by_hand_is_kept_and_one_that_cannot_be_read_is_the_built_in_corpus(
        make_window, tmp_path: Path) -> None:
    """``sources=/home/me/notes.txt`` (not a JSON list) became no calibration text at all, and that was saved
    over the user's path at close."""
    notes = tmp_path / "notes.txt"
    notes.write_text("Some prose. " * 50, encoding="utf-8")
    window = make_window(ini(tmp_path / "a.ini", f"[calibration]\nsources={notes}\n"), fast=False)
    assert window.calibration_panel.sources() == [str(notes)]
    window = make_window(ini(tmp_path / "b.ini", '[calibration]\nsources="{}"\n'), fast=False)
    assert window.calibration_panel.sources() == ["builtin"]
    assert "calibration/sources" in window.statusBar().currentMessage()


def test_a_chart_option_saved_as_the_text_false_is_off(make_window, tmp_path: Path) -> None:
    window = make_window(ini(tmp_path / "s.ini", '[chart]\noptions="{\\"zoom\\": \\"false\\"}"\n'), fast=False)
    assert not window.chart.zoom_box.isChecked()


def test_closing_with_a_model_name_no_file_system_can_look_up_saves_everything(make_window, tmp_path: Path) -> None:
    """A name past the file system's limits in the Model field (pasted by mistake, or restored): closing raised
    OSError (File name too long) in save_state, and the last model, the calibration sources and the prompt were
    not saved."""
    path = tmp_path / "s.ini"
    window = make_window(QSettings(str(path), QSettings.Format.IniFormat), fast=False)
    window.model_panel.set_text("/gone" + "/abcdefgh" * 600)
    window.compare_panel.set_prompt("my new prompt")
    window.close()
    assert "my new prompt" in path.read_text(encoding="utf-8")


def test_settings_that_cannot_be_saved_are_said_in_a_folder_that_is_a_file(make_window, tmp_path: Path) -> None:
    """A settings file under a file (or any place it cannot be written) lost every change of the session without
    a word; root can write a read-only file, so the test blocks the folder instead."""
    (tmp_path / "afile").write_text("x", encoding="utf-8")
    settings = QSettings(str(tmp_path / "afile" / "s.ini"), QSettings.Format.IniFormat)
    window = make_window(settings, fast=False)
    assert "Settings cannot be saved: " in window.statusBar().currentMessage()
    assert window.store.sync() is False


def test_text_written_by_hand_with_commas_is_read_as_written(make_window, tmp_path: Path) -> None:
    """QSettings hands an unquoted value with commas back as a list, which the window showed as "['a', 'b']"."""
    window = make_window(ini(tmp_path / "s.ini", "[compare]\nprompt=Name three colours, then stop\n"), fast=False)
    assert window.compare_panel.prompt_text() == "Name three colours, then stop"


def test_a_newer_versions_settings_keys_survive_a_session_of_this_one(make_window, tmp_path: Path) -> None:
    path = tmp_path / "s.ini"
    window = make_window(ini(path, '[job]\nsettings="{\\"samples\\": 24, \\"future_knob\\": 3}"\n'), fast=False)
    window.settings_panel.samples_box.setValue(40)
    window.close()
    from shortgpt_desktop.gui.settings_store import Store

    saved = Store(QSettings(str(path), QSettings.Format.IniFormat)).settings()
    assert saved["samples"] == 40 and saved["future_knob"] == 3


def test_calibration_paths_written_by_hand_with_commas_are_each_a_source(tmp_path: Path) -> None:
    """QSettings hands ``sources=a, b`` back as a list: each item is a path, not one path "['a', 'b']"."""
    from shortgpt_desktop.gui.settings_store import Store

    store = Store(ini(tmp_path / "s.ini", "[calibration]\nsources=/home/me/a.txt, /home/me/b.txt\n"))
    assert store.calibration() == ["/home/me/a.txt", "/home/me/b.txt"]


def test_json_lists_written_by_hand_without_quotes_keep_their_paths(tmp_path: Path) -> None:
    """``recent=["/a/m.gguf", "/b/n.gguf"]`` in the INI, unquoted: QSettings split it at the comma, the list was
    reported unreadable and saved back empty, the valid model in it lost."""
    from shortgpt_desktop.gui.settings_store import Store

    store = Store(ini(tmp_path / "s.ini", '[models]\nrecent=["/a/m.gguf", "/b/n.gguf"]\n'
                                          '[calibration]\nsources=["/t/a.txt", "/t/b.txt"]\n'))
    assert store.recent_models() == ["/a/m.gguf", "/b/n.gguf"]
    assert store.calibration() == ["/t/a.txt", "/t/b.txt"]
    assert store.unreadable == []
    one = Store(ini(tmp_path / "one.ini", '[models]\nrecent=["/a/m.gguf"]\n'))
    assert one.recent_models() == ["/a/m.gguf"] and one.unreadable == []
