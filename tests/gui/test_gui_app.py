"""Persistence, small widgets, the PySide6 guard, and the ``shortgpt-desktop`` entry point as a process."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PySide6.QtCore import QObject, QSettings, Qt, QTimer, Signal
from PySide6.QtGui import QImage, QPalette
from PySide6.QtWidgets import QApplication

from shortgpt_desktop.core.cut.plan import PrunePlan
from shortgpt_desktop.core.engine import Checked
from shortgpt_desktop.gui.compare_panel import ComparePanel
from shortgpt_desktop.gui.plan_panel import PlanPanel
from shortgpt_desktop.gui.settings_panel import SettingsPanel

REPO = Path(__file__).resolve().parents[2]


def run_app(*args: str, timeout: int = 180, **extra_env: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "PYTHONPATH": str(REPO), **extra_env}
    return subprocess.run([sys.executable, "-m", "shortgpt_desktop", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_settings_recent_models_and_geometry_persist(qtbot, make_window, settings: QSettings,
                                                     gui_model: Path, calib_text: Path) -> None:
    first = make_window()
    first.settings_panel.set_values({"samples": 12, "seq_len": 48, "batch_size": 3, "metric": "angular",
                                     "dtype": "bfloat16", "eval_windows": 7, "trust_remote_code": True,
                                     "low_memory": True, "repair": True, "refit": True, "heal_steps": 3})
    first.calibration_panel.add_paths([str(calib_text)])
    first.calibration_panel.builtin.setChecked(True)
    with qtbot.waitSignal(first.jobFinished, timeout=60_000):
        first.open_model(str(gui_model))
    first.compare_panel.prompt.setText("Once upon a time")
    # The offscreen screen is 800 px wide, so restoring clamps the width to the window's minimum: use that.
    size = (first.minimumWidth(), 650)
    first.resize(*size)
    first.close()

    second = make_window(fast=False)
    assert second.settings_panel.values() == {"device": "cpu", "dtype": "bfloat16", "samples": 12, "seq_len": 48,
                                              "eval_windows": 7, "batch_size": 3, "metric": "angular",
                                              "trust_remote_code": True, "low_memory": True, "repair": True,
                                              "refit": True, "heal_steps": 3, "sizes_chosen": True}
    assert second.calibration_panel.sources() == [str(calib_text), "builtin"]
    assert second.model_panel.recent() == [str(gui_model)]
    assert second.model_panel.text == str(gui_model)
    assert second.compare_panel.prompt.text() == "Once upon a time"
    assert (second.width(), second.height()) == size


def test_the_model_named_last_time_is_opened_again_at_start_where_it_is_on_this_machine(
        qtbot, make_window, settings: QSettings, gui_model: Path, tmp_path: Path) -> None:
    """Its fields showed "—" until Score though the box named it; its description is read again (no weights). A Hub
    id is not opened (that may download), nor a path no longer there: the box names them, as before."""
    first = make_window()
    with qtbot.waitSignal(first.jobFinished, timeout=60_000):
        first.open_model(str(gui_model))
    first.close()
    import json

    job = json.loads(str(settings.value("job/settings")))
    settings.setValue("job/settings", json.dumps({**job, "samples": -3}))  # edited by hand: said at start
    second = make_window(fast=False)
    assert second.engine.source is None and second.model_panel.values["layers"].text() == "—"
    note = second.statusBar().currentMessage()
    assert note.startswith("Saved settings out of range were brought within it: samples -3 → 1"), note
    with qtbot.waitSignal(second.jobFinished, timeout=60_000) as finished:
        second.reopen_last_model()
    assert finished.args == ["open", "ok"] and second.engine.source is not None
    assert second.statusBar().currentMessage() == note  # the reopening, nobody's job, wiped it at every start
    assert second.model_panel.values["layers"].text() == str(second.engine.n_layers)
    assert second.engine.scores is None  # opened, not scored
    second.close()

    for named in ("org/model", str(tmp_path / "gone.gguf")):
        settings.setValue("models/last", named)
        window = make_window(fast=False)
        window.reopen_last_model()
        assert not window.busy and window.engine.source is None and window.model_panel.text == named
        # a Hub id is not opened (that may download); a file no longer there is said at start, under the box
        said = window.model_panel.message.text()
        assert said == ("" if named == "org/model" else
                        f"The model opened last, {named}, is no longer there; open another."), said
        assert window.dialogs == []
        window.close()
    # one there that no longer opens is said under the box, not in a dialog at every start
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"not a gguf file at all")
    settings.setValue("models/last", str(broken))
    window = make_window(fast=False)
    with qtbot.waitSignal(window.jobFinished, timeout=60_000) as finished:
        window.reopen_last_model()
    assert finished.args == ["open", "failed"] and window.dialogs == []
    assert window.model_panel.message.text() and window.engine.source is None
    # the line under the buttons names what failed (it said "Failed." under Score)
    assert window.progress_label.text() == "Opening the model failed."
    with qtbot.waitSignal(window.errorShown, timeout=60_000):  # asked for by hand: the dialog, as before
        window.open_model(str(broken))


def test_first_start_defaults(make_window) -> None:
    window = make_window(fast=False)
    assert window.calibration_panel.sources() == ["builtin"]
    values = window.settings_panel.values()
    assert values["metric"] == "bi+" and values["device"] == "auto"
    # The preset follows the device: Quick while no GPU is known (make_window does not probe), not chosen yet.
    assert window.settings_panel.preset_box.currentData() == "quick" and not values["sizes_chosen"]
    assert (values["samples"], values["seq_len"]) == (32, 256)
    assert window.chart.n_layers == 0 and not window.save_button.isEnabled()
    assert window.windowIcon().availableSizes() or not window.windowIcon().isNull()


def test_compare_panel_shows_a_chat_answer_alone_and_a_raw_continuation_with_its_prompt(qtbot) -> None:
    panel = ComparePanel()
    qtbot.addWidget(panel)
    checked = Checked(removed=[3, 4], ppl_before=10.0, ppl_after=12.5, eval_tokens=2048, prompt="Why is the sky blue?",
                      generation_before=" Light scatters. ", generation_after=" Blue blue blue.", seconds=1.0,
                      chat_template=True)
    panel.show_checked(checked)
    assert (panel.before.toPlainText(), panel.after.toPlainText()) == ("Light scatters.", "Blue blue blue.")
    assert "chat template" in panel.result.text() and "× 1.25" in panel.result.text()
    checked.chat_template = False
    panel.show_checked(checked)
    assert panel.after.toPlainText() == "Why is the sky blue? Blue blue blue."
    assert "chat template" not in panel.result.text()


def test_a_healing_that_did_not_lower_its_loss_is_said_beside_the_figures(qtbot) -> None:
    """It was said in the Log and for 20 s in the status bar; the paragraph read "repaired and healed (2 LoRA
    steps)", and Save then wrote a file 12% larger for it."""
    from shortgpt_desktop.core.cut.healing import healing_did_not_help

    panel = ComparePanel()
    qtbot.addWidget(panel)
    note = healing_did_not_help([0.7299, 0.8329])
    checked = Checked(removed=[3, 4], ppl_before=10.0, ppl_after=12.5, eval_tokens=2048, prompt="", seconds=1.0,
                      generation_before="", generation_after="", healing_note=note)
    panel.show_checked(checked)
    assert "<b>The healing did not lower its loss (0.7299 -&gt; 0.8329 in 2 steps" in panel.result.text()
    checked.healing_note = ""
    panel.show_checked(checked)
    assert "healing" not in panel.result.text()


def test_an_answer_lost_to_the_cut_is_said_in_the_panel_and_the_report(qtbot) -> None:
    """A cut can keep perplexity and lose the chat turn (SmolLM2 at 8 of 30: the pruned model wrote nothing)."""
    from shortgpt_desktop.core.engine import LOST_ANSWER

    panel = ComparePanel()
    qtbot.addWidget(panel)
    checked = Checked(removed=[3, 4], ppl_before=10.0, ppl_after=12.5, eval_tokens=2048, prompt="Why is the sky blue?",
                      generation_before=" Light scatters. ", generation_after="  ", seconds=1.0, chat_template=True)
    assert checked.lost_answer
    panel.show_checked(checked)
    assert "ends its answer at once" in panel.after.toPlainText() and LOST_ANSWER in panel.result.text()
    checked.generation_after = " Blue."
    assert not checked.lost_answer
    panel.show_checked(checked)
    assert panel.after.toPlainText() == "Blue." and LOST_ANSWER not in panel.result.text()


def test_the_quiz_is_said_in_the_panel_with_each_answer_in_its_tooltip_and_forgotten_by_the_next_check(qtbot) -> None:
    from shortgpt_desktop.core.measure.quiz import marked

    panel = ComparePanel()
    qtbot.addWidget(panel)
    questions = (("Capital of Japan?", ("tokyo",)), ("Red planet?", ("mars",)), ("Gold's symbol?", ("au",)))
    # A long answer is shown whole: cut at 80 characters, the word that made it right was lost.
    long_right = "The capital of Japan is a densely populated city located in the Pacific Islands, Tokyo."
    quiz = marked(["Tokyo.", "Mars, the\nfourth planet.", "Gold."], [long_right, "Venus.", "Au."], True, questions)
    checked = Checked(removed=[3, 4], ppl_before=10.0, ppl_after=12.5, eval_tokens=2048, prompt="Hi",
                      generation_before="Hello.", generation_after="Hello.", seconds=1.0, chat_template=True,
                      quiz=quiz)
    panel.show_checked(checked)
    assert "answers <b>1 of the 2</b> questions of fact the original answers right" in panel.result.text()
    tip = panel.result.toolTip()
    assert f"right: Capital of Japan? → {long_right}" in tip and "wrong: Red planet? → Venus." in tip
    assert "(the original: Mars, the fourth planet.)" in tip and tip.count("the original: ") == 1
    assert "Gold's symbol?" not in tip  # the original got it wrong: it does not count
    assert "lost most" not in panel.result.text()  # 1 of 2: too few known to say
    four = (*questions[:2], ("Capital of Italy?", ("rome",)), ("Capital of Spain?", ("madrid",)))
    checked.quiz = marked(["Tokyo.", "Mars.", "Rome.", "Madrid."], ["Tokyo.", "No.", "No.", "No."], True, four)
    panel.show_checked(checked)
    assert "<b>It has lost most of what the original knows</b>" in panel.result.text()
    checked.quiz = None
    panel.show_checked(checked)
    assert "Quiz" not in panel.result.text() and "Quiz" not in panel.result.toolTip()
    assert "removed layers 3, 4." in panel.result.text()
    checked.removed = [3]
    panel.show_checked(checked)
    assert "removed layer 3." in panel.result.text()  # it said "removed layers 3."
    # how the pruned side was adjusted: a healed check's figures said nothing of the healing
    from shortgpt_desktop.core.engine import AdjustKey

    checked.key = (AdjustKey((3,), "linear", 2, None, ()), ())
    panel.show_checked(checked)
    assert "removed layer 3, repaired and healed (2 LoRA steps)." in panel.result.text()
    checked.key = (AdjustKey((3,), "refit", 0, None, ()), ())
    checked.refit_runs = [(2, True)]
    panel.show_checked(checked)
    assert "removed layer 3, repaired and MLP refitted." in panel.result.text()
    # a refit that did no better is not kept: the model is the repaired one, and "MLP refitted" was said of it
    checked.refit_runs = [(2, False)]
    panel.show_checked(checked)
    assert "removed layer 3, repaired and the MLP refit not kept." in panel.result.text()
    checked.removed, checked.refit_runs = [3, 6], [(2, True), (5, False)]
    checked.key = (AdjustKey((3, 6), "refit", 0, None, ()), ())
    panel.show_checked(checked)
    assert "removed layers 3, 6, repaired and the MLP of layer 2 refitted (not kept at 5)." in panel.result.text()
    checked.refit_runs = []  # none to make (OPT has no one MLP module): not said "not kept"
    panel.show_checked(checked)
    assert "removed layers 3, 6, repaired and no MLP refit (nothing to refit for this cut)." in panel.result.text()
    checked.removed = [3]
    checked.key = (AdjustKey((3,), "none", 0, None, ()), ())
    panel.show_checked(checked)
    assert "removed layer 3." in panel.result.text()


def test_the_curve_says_the_quiz_at_each_count_where_it_was_asked(qtbot) -> None:
    panel = PlanPanel()
    qtbot.addWidget(panel)
    points = [(0, 10.0, 1.0), (1, 12.0, 0.8), (2, 20.0, 0.6)]
    panel.show_curve(points, "bi+ + repair", 4, 1024, [(0, 10.0), (1, 15.0), (2, 30.0)], {0: (9, 9), 2: (4, 9)})
    tip = panel.curve_plot.toolTip().splitlines()  # the plot's and the note's
    assert tip[0].endswith("quiz 9 of 9") and "quiz" not in tip[1] and tip[2].endswith("quiz 4 of 9")
    assert panel.curve_note.toolTip().endswith(panel.curve_plot.toolTip())
    assert "quiz" in panel.curve_note.text()
    panel.show_curve(points, "bi+ + repair", 4, 1024)
    assert "quiz" not in panel.curve_note.toolTip() and "quiz" not in panel.curve_note.text()


def test_the_curve_says_where_the_repair_could_not_reach_a_counts_cut(qtbot) -> None:
    panel = PlanPanel()
    qtbot.addWidget(panel)
    note = "layer 0 not repaired: the run starts at layer 0, so no kept layer comes before it to refit"
    panel.show_curve([(0, 10.0, 1.0), (1, 12.0, 0.8), (2, 20.0, 0.6)], "sequential + repair", 4, 1024,
                     unrepaired={1: [note]})
    tip = panel.curve_plot.toolTip().splitlines()
    assert tip[1].endswith(f"; {note}") and "repaired" not in tip[0] + tip[2]


def test_the_slider_past_the_curves_counts_does_not_stretch_its_axis(qtbot) -> None:
    """A curve to 2 with the slider at 7: the axis ran to 7 to hold the marker, the curve in its left third."""
    panel = PlanPanel()
    qtbot.addWidget(panel)
    panel.set_maximum(10)
    panel.set_count(7)
    panel.show_curve([(0, 10.0, 1.0), (1, 12.0, 0.8), (2, 20.0, 0.6)], "bi+ + repair", 4, 1024)
    panel.show()
    qtbot.waitExposed(panel)
    item = panel.curve_plot.getPlotItem()
    item.enableAutoRange()
    QApplication.processEvents()
    assert item.viewRange()[0][1] < 3


def test_the_curve_reads_at_the_windows_default_size(qtbot) -> None:
    """At 1280 x 720 the curve's log axis labelled its minor ticks into one smear ('9·10¹8·10¹…'), its note was
    cut off mid-sentence before saying where each count's figures are, and the recipe's line was pyqtgraph's pale
    grey beside the grey baseline."""
    from shortgpt_desktop.gui.plan_panel import perplexity_ticks

    panel = PlanPanel()
    qtbot.addWidget(panel)
    panel.resize(880, 300)
    panel.show()
    recipe = [62.1, 62.9, 64.0, 66.5, 75.1, 80, 88, 97, 99, 104, 118, 125, 133, 150, 190, 195]
    plain = [62.1, 64, 70, 72, 80, 95, 120, 140, 160, 175, 260, 330, 380, 560, 980, 870]
    panel.show_curve([(k, v, 0.5) for k, v in enumerate(recipe)], "bi+ + repair", 16, 2032, list(enumerate(plain)),
                     {k: (17 - k, 17) for k in range(16)})
    ticks = panel.curve_plot.getPlotItem().getAxis("left")._tickLevels
    assert ticks is not None and [label for _, label in ticks[0]] == ["100", "200", "500"] and ticks[1] == []
    note = panel.curve_note
    assert "at each count" in note.toolTip() and "62.10" in note.toolTip()
    assert note.shown_text().count("\n") <= 1 and "point at it" in note.text()
    assert panel.curve_line.opts["pen"].color() == panel.palette().color(QPalette.ColorRole.Highlight)
    # The x-axis counts whole layers (pyqtgraph's own ticks said "0.5, 1.5" on a short curve), every few on a long one.
    assert panel.curve_plot.getPlotItem().getAxis("bottom")._tickLevels[0] == [(k, str(k)) for k in range(0, 16, 2)]
    panel.show_curve([(0, 510.0, 1.0), (1, 537.0, 0.6), (2, 524.0, 0.5), (3, 512.0, 0.5)], "bi+ + repair", 16, 496)
    assert panel.curve_plot.getPlotItem().getAxis("bottom")._tickLevels[0] == [(k, str(k)) for k in range(4)]
    # Ticks stay few, inside the range, and distinct, whatever the range.
    for values in ([524.7, 541.2], [38.8, 5444.9], [1.5, 3e6], [50.0]):
        placed = perplexity_ticks(values)
        assert 1 <= len(placed) <= 4 and len({label for _, label in placed}) == len(placed)
        assert all(math.log10(min(values)) - 1e-9 <= at <= math.log10(max(values)) + 1e-9 for at, _ in placed)


def test_plan_panel_offers_the_formats_with_what_each_is_for(qtbot) -> None:
    panel = PlanPanel()
    qtbot.addWidget(panel)
    panel.set_formats(["gguf", "safetensors"], "gguf")
    box = panel.format_box
    assert [box.itemText(i) for i in range(box.count())] == ["GGUF, for llama.cpp & Ollama",
                                                             "safetensors, for transformers"]
    assert "LM Studio" in box.itemData(0, Qt.ItemDataRole.ToolTipRole) and panel.output_format == "gguf"
    assert box.isEnabled()
    panel.set_formats(["safetensors"], "safetensors")
    assert panel.output_format == "safetensors" and not box.isEnabled()


def test_the_metric_box_offers_a_newly_registered_metric(qtbot, extra_metric) -> None:
    """The window reads the registry: a metric added by one class and one register needs no GUI change."""
    panel = SettingsPanel()
    qtbot.addWidget(panel)
    box = panel.metric_box
    index = box.findData("last_token_bi")
    assert index >= 0 and box.itemText(index) == "Last-token Block Influence"
    assert box.itemData(index, Qt.ItemDataRole.ToolTipRole) == extra_metric.description
    box.setCurrentIndex(index)
    assert panel.values()["metric"] == "last_token_bi"


def test_plan_panel_throttles_slider_moves(qtbot) -> None:
    panel = PlanPanel()
    qtbot.addWidget(panel)
    panel.set_maximum(31)
    counts: list[int] = []
    panel.countChanged.connect(counts.append)
    with qtbot.waitSignal(panel.countChanged, timeout=2000):
        for value in range(1, 21):
            panel.slider.setValue(value)
    assert counts == [20]  # twenty moves, one replan
    plan = PrunePlan(32, [20, 21, 22, 23, 25], params_before=1000, params_after=800, bytes_before=4000,
                     bytes_after=3200)
    panel.show_plan(plan)
    assert "5</b> of 32" in panel.count_label.text()
    assert panel.layers_label.text() == "20–23, 25"
    assert "−20 %" in panel.params_label.text()


def test_installed_pyside6_keeps_its_references() -> None:
    """PySide6 6.12.0 lost a reference to True/None on every emit and void call, and CPython 3.11 aborted after a
    few hundred (pyproject excludes it). Run in a child process: that failure kills the interpreter."""
    code = (
        "import sys\n"
        "from PySide6.QtCore import QObject, Signal\n"
        "class Emitter(QObject):\n"
        "    ping = Signal(int)\n"
        "emitter = Emitter()\n"
        "for i in range(20_000):\n"
        "    emitter.ping.emit(i)\n"
        "    emitter.setObjectName('x')\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-500:]


def test_the_window_shows_before_torch_is_imported(tmp_path: Path) -> None:
    """What keeps the launch fast: torch and transformers (seconds to import) load after the window shows. How
    fast it is, against an empty Qt window, is benchmarks/bench_startup.py's: a timed test fails on a busy
    machine (this one failed under load at its 5 s bound)."""
    result = run_app("--measure-startup", "--settings-file", str(tmp_path / "s.ini"), timeout=120)
    assert result.returncode == 0, result.stderr
    match = re.search(r"window shown ([\d.]+) s after process start.*torch imported: (\w+)", result.stdout)
    assert match, result.stdout
    print(f"\n{result.stdout.strip()}")
    assert match.group(2) == "False" and float(match.group(1)) > 0


def test_screenshot_mode(tmp_path: Path, gui_model: Path, calib_text: Path) -> None:
    out = tmp_path / "shot.png"
    settings = tmp_path / "s.ini"
    settings.write_text('[job]\nsettings="{\\"eval_windows\\": 4}"\n', encoding="utf-8")  # a short check
    result = run_app(str(gui_model), "--calib", str(calib_text), "--screenshot", str(out), "--samples", "8",
                     "--seq-len", "32", "--check", "--settings-file", str(settings))
    assert result.returncode == 0, result.stdout + result.stderr
    image = QImage(str(out))
    assert not image.isNull() and (image.width(), image.height()) == (1280, 720)
    # Progress on stderr while it works, each counter in its unit and finishing at its total.
    assert "job: open" in result.stderr and "job: score" in result.stderr
    assert "scoring: [" in result.stderr and "8/8 samples" in result.stderr
    # nothing of Qt's own at each start ("libpyside: addMetaMethod: Cannot add dynamic method", a walkthrough)
    assert "libpyside" not in result.stderr and "Qt" not in result.stderr, result.stderr


@pytest.mark.parametrize("args", [["--screenshot", "x.png"], ["/no/such/model", "--screenshot", "x.png"]])
def test_screenshot_mode_fails_cleanly(tmp_path: Path, args: list[str]) -> None:
    """Also: without --settings-file, a screenshot run (which resizes the window and saves state on closing)
    keeps its settings in a throwaway file, never in the user's store."""
    args = [a if a != "x.png" else str(tmp_path / "x.png") for a in args]
    config = tmp_path / "config"
    user_ini = config / "ShortGPT Desktop" / "shortgpt-desktop.ini"
    user_ini.parent.mkdir(parents=True)
    user_ini.write_text('[job]\nsettings="{\\"samples\\": 77}"\n', encoding="utf-8")
    before = user_ini.read_bytes()
    result = run_app(*args, "--samples", "8", "--size", "900x640", XDG_CONFIG_HOME=str(config),
                     HOME=str(tmp_path))
    assert result.returncode == 2, result.stderr  # the input's fault, as shortgpt exits (it exited 1, as for a bug)
    assert not (tmp_path / "x.png").exists()
    assert user_ini.read_bytes() == before
    assert sorted(p.name for p in config.rglob("*")) == ["ShortGPT Desktop", "shortgpt-desktop.ini"]


@pytest.mark.timeout(60)  # before the fix the window opened and waited for its user
def test_a_calibration_path_that_is_not_there_is_said_before_the_window_opens(
        tmp_path: Path, calib_text: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The window's list restores saved paths quietly, dropping those that are gone; ``--calib`` given now was
    dropped the same way, and the window opened as if it had never been asked for."""
    from shortgpt_desktop import app

    missing = tmp_path / "notes.txt"
    assert app.main(["--calib", str(calib_text), str(missing), "--settings-file", str(tmp_path / "s.ini")]) == 2
    assert capsys.readouterr().err.strip() == f"The calibration path {missing} does not exist."


def test_saved_calibration_that_is_not_there_now_is_said_and_kept(make_window, settings: QSettings,
                                                                  calib_text: Path, tmp_path: Path) -> None:
    """A saved source on a drive not mounted now was dropped without a word (Score then said the set was empty),
    and the list saved on closing lost it for good."""
    away = tmp_path / "usb" / "notes.txt"
    settings.setValue("calibration/sources", json.dumps([str(calib_text), str(away)]))
    first = make_window(fast=False)
    assert first.calibration_panel.sources() == [str(calib_text)]
    assert first.calibration_panel.skipped_label.isVisibleTo(first)
    assert f"{away} was not found; it is left out." in first.calibration_panel.skipped()
    first.close()
    away.parent.mkdir()
    away.write_text(calib_text.read_text(encoding="utf-8"), encoding="utf-8")  # the drive is back
    second = make_window(fast=False)
    assert second.calibration_panel.sources() == [str(calib_text), str(away)]
    assert not any("not found" in s for s in second.calibration_panel.skipped())
    # Once the user changes the list they see, what was not found is no longer kept.
    away.unlink()
    second.close()
    third = make_window(fast=False)
    third.calibration_panel.builtin.setChecked(True)
    third.close()
    assert make_window(fast=False).calibration_panel.stored_sources() == [str(calib_text), "builtin"]


@pytest.mark.parametrize(("args", "said"), [
    (["--size", "abc"], "argument --size: 'abc' is not a window size like 1280x720"),
    (["--size", "99999999999x100"], "is not a window size like 1280x720 (each side 100 to 8192 pixels)"),
    (["--ratio", "nan"], "argument --ratio: 'nan' is not a share of the layers from 0 to 1"),
    (["--ratio", "half"], "argument --ratio: 'half' is not a share of the layers from 0 to 1"),
    (["--samples", "many"], "argument --samples: 'many' is not a whole number from 1 to 1,000,000"),
    (["--samples", "100000000000000000000"], "argument --samples: '100000000000000000000' is not a whole number"),
    (["--seq-len", "0"], "argument --seq-len: '0' is not a whole number from 1 to 1,000,000"),
    (["--settings-file", ""], "argument --settings-file: an empty name; give a file or leave the option out"),
    (["--settings-file", "  "], "argument --settings-file: an empty name; give a file or leave the option out"),
])
def test_bad_window_arguments_are_one_line_before_anything_opens(args: list[str], said: str,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """A screenshot's --size was a ValueError traceback after the window was built, or an OverflowError that left
    the run waiting 30 minutes for its time-out; --ratio nan failed after scoring and waited too; --samples 1e20 was
    an OverflowError at start, and 0 was ignored without a word."""
    from shortgpt_desktop import app

    with pytest.raises(SystemExit) as exited:
        app.main(["some/model", "--screenshot", "x.png", *args])
    err = capsys.readouterr().err.strip()
    assert exited.value.code == 2 and len(err.splitlines()) == 1 and said in err, err


def test_a_calibration_link_that_leads_nowhere_is_said_before_the_screenshot_run(tmp_path: Path) -> None:
    """The window's --calib check said a dangling link or a loop of links did not exist."""
    from shortgpt_desktop.app import _missing_calibration

    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    assert _missing_calibration(["builtin", str(tmp_path / "a")]) == (
        f"The calibration path {tmp_path / 'a'} is a link that leads back to itself (a loop of links).")
    assert _missing_calibration(["builtin"]) is None


def test_a_screenshot_that_could_not_be_written_is_said_before_the_run(qapp, tmp_path: Path) -> None:
    """Its folder under a file, or a picture type Qt does not write, was found after opening and scoring (a
    FileExistsError in a slot, and the run waited for its 30-minute time-out)."""
    from shortgpt_desktop.app import _unwritable_picture

    (tmp_path / "afile").write_text("x", encoding="utf-8")
    blocked = tmp_path / "afile" / "shots" / "s.png"
    assert _unwritable_picture(blocked) == f"--screenshot cannot write {blocked} ({tmp_path / 'afile'} is a file, " \
                                           "not a folder)."
    assert _unwritable_picture(tmp_path / "s.xyz") == "--screenshot cannot write a .xyz picture; name it .png."
    assert _unwritable_picture(tmp_path / "new" / "s.png") is None and (tmp_path / "new").is_dir()
    taken = tmp_path / "taken.png"
    taken.mkdir()
    assert _unwritable_picture(taken) == f"--screenshot cannot write {taken} (a folder)."


def test_the_window_program_writes_any_path_to_a_console_in_a_legacy_encoding(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Windows console or a redirected file in cp1252: a calibration path in Japanese raised UnicodeEncodeError
    in the window program (a traceback where one sentence was due), which the command line already escaped."""
    import io

    from shortgpt_desktop import app

    raw = io.BytesIO()
    legacy = io.TextIOWrapper(raw, encoding="cp1252")
    monkeypatch.setattr("sys.stderr", legacy)
    missing = tmp_path / "東京.txt"
    assert app.main(["--calib", str(missing), "--settings-file", str(tmp_path / "s.ini")]) == 2
    legacy.flush()
    assert raw.getvalue().decode("cp1252").strip() == (
        f"The calibration path {tmp_path}/\\u6771\\u4eac.txt does not exist.")


def test_a_screenshot_run_without_stderr_works_without_progress_lines(make_window, gui_model: Path,
                                                                      tmp_path: Path, monkeypatch) -> None:
    """A windowed program on Windows has no stderr (None): ``--screenshot`` raised AttributeError before it began."""
    from shortgpt_desktop.gui.screenshot import ScreenshotRun

    monkeypatch.setattr("sys.stderr", None)
    run = ScreenshotRun(make_window(), str(gui_model), tmp_path / "shot.png")
    run.bar("scoring", 1, 8)  # drawn nowhere, and no error
    assert run.bar.quiet


def test_window_sizes_are_width_by_height_and_the_ends_of_each_range_are_allowed() -> None:
    from shortgpt_desktop.app import SIZE_RANGE, parse_args

    assert parse_args(["--size", "900x640"]).size == (900, 640)
    assert parse_args(["--size", f"{SIZE_RANGE[0]}X{SIZE_RANGE[1]}"]).size == SIZE_RANGE
    assert (parse_args(["--ratio", "0"]).ratio, parse_args(["--ratio", "1"]).ratio) == (0.0, 1.0)


def test_the_startup_measure_without_a_display_is_drawn_offscreen(
        qapp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from types import SimpleNamespace

    from shortgpt_desktop import app
    from shortgpt_desktop.gui import main_window

    monkeypatch.setattr(main_window, "MainWindow", lambda settings: SimpleNamespace(
        show=lambda: None, close=lambda: None, stop_and_close=lambda: None))
    monkeypatch.setattr(app, "make_app", lambda: SimpleNamespace(exec=lambda: QApplication.processEvents() or 0))
    monkeypatch.setattr(app.sys, "platform", "linux")
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        monkeypatch.delenv(name, raising=False)
    assert app.main(["--measure-startup", "--settings-file", str(tmp_path / "s.ini")]) == 0
    assert os.environ["QT_QPA_PLATFORM"] == "offscreen" and "window shown" in capsys.readouterr().out
    # a display set but not answering: offscreen too, not refused (the window's probe; a review)
    monkeypatch.delenv("QT_QPA_PLATFORM")
    monkeypatch.setenv("DISPLAY", f":{_free_display()}")
    if app.unreachable_x_display() is None:
        pytest.skip("no libxcb here to probe a display with")
    assert app.main(["--measure-startup", "--settings-file", str(tmp_path / "s.ini")]) == 0
    assert os.environ["QT_QPA_PLATFORM"] == "offscreen"


def _free_display() -> int:
    """An X display number no server here holds."""
    return next(n for n in range(90, 200) if not Path(f"/tmp/.X11-unix/X{n}").exists()
                and not Path(f"/tmp/.X{n}-lock").exists())


def test_the_window_without_a_display_says_so_in_one_sentence(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Over SSH without -X, Qt aborted (exit 134) blaming libxcb-cursor0, which was installed; a platform chosen by
    hand (QT_QPA_PLATFORM) is still Qt's to open."""
    from shortgpt_desktop import app

    monkeypatch.setattr(app.sys, "platform", "linux")
    monkeypatch.setattr(app, "make_app", lambda: pytest.fail("the window was opened"))
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM", "XDG_SESSION_TYPE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert app.main(["--settings-file", str(tmp_path / "s.ini")]) == 2
    assert capsys.readouterr().err.strip() == app.NO_DISPLAY
    (tmp_path / "wayland-0").touch()  # the desktop session's socket, seen from an SSH login: Qt opens X11 there
    for session in ("", "tty"):
        if session:
            monkeypatch.setenv("XDG_SESSION_TYPE", session)
        assert app._no_display_to_open() == app.NO_DISPLAY
    monkeypatch.setenv("XDG_SESSION_TYPE", "wayland")  # a Wayland session without WAYLAND_DISPLAY: Qt connects
    assert app._no_display_to_open() is None
    (tmp_path / "wayland-0").unlink()
    assert app._no_display_to_open() == app.NO_DISPLAY
    for other in ("wayland-0.lock", "wayland-1"):  # not the socket Qt connects to without WAYLAND_DISPLAY
        (tmp_path / other).touch()
    assert app._no_display_to_open() == app.NO_DISPLAY
    monkeypatch.delenv("XDG_SESSION_TYPE")
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    assert app._no_display_to_open() is None
    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.delenv("QT_QPA_PLATFORM")
    assert app._no_display_to_open() is None


def test_the_command_line_hands_the_window_its_model_sizes_and_calibration(
        qapp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """``main`` in this process, with a stand-in window (the real window's run is test_screenshot_mode's child
    process): ``~`` in --calib is the home folder, the built-in corpus is a source, and sizes given on the command
    line stay when a GPU is found later (sizes not chosen follow the device)."""
    from types import SimpleNamespace

    from shortgpt_desktop import app
    from shortgpt_desktop.gui import main_window
    from shortgpt_desktop.gui.system import INITIAL_DEVICES, DeviceChoice

    class Window:
        def __init__(self, settings: object) -> None:
            self.settings_panel = SettingsPanel()
            self.sources: list[str] = []
            self.calibration_panel = SimpleNamespace(set_sources=self.sources.extend)
            self.opened: list[str] = []
            self.reopened = 0
            made.append(self)

        def open_model(self, model: str) -> None:
            self.opened.append(model)

        def reopen_last_model(self) -> None:
            self.reopened += 1

        def show(self) -> None:
            pass

        def stop_and_close(self) -> None:
            pass

    made: list[Window] = []
    monkeypatch.setattr(main_window, "MainWindow", Window)
    monkeypatch.setattr(app, "make_app", lambda: SimpleNamespace(exec=lambda: QApplication.processEvents() or 0))
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "notes.txt").write_text("Some prose.", encoding="utf-8")
    settings = str(tmp_path / "s.ini")
    assert app.main(["org/model", "--calib", "builtin", "~/notes.txt", "--samples", "32", "--seq-len", "256",
                     "--settings-file", settings]) == 0
    window, = made
    assert window.opened == ["org/model"] and window.reopened == 0  # the model named, not the last one
    assert window.sources == ["builtin", str(tmp_path / "notes.txt")]
    window.settings_panel.set_devices([*INITIAL_DEVICES, DeviceChoice("cuda:0", "GPU 0")])
    values = window.settings_panel.values()
    assert (values["samples"], values["seq_len"], values["sizes_chosen"]) == (32, 256, True)
    assert "note:" not in capsys.readouterr().err
    # sizes the window's boxes do not reach are brought into them and said (99,999 became 32,768 without a word)
    assert app.main(["org/model", "--seq-len", "99999", "--settings-file", settings]) == 0
    assert capsys.readouterr().err.strip() == "note: the window's sizes do not go so far: seq_len 99,999 → 32,768."
    # No model named: the one named last time, where it is on this machine (MainWindow.reopen_last_model)
    assert app.main(["--settings-file", settings]) == 0
    assert made[-1].opened == [] and made[-1].reopened == 1
    # Of several paths not there, the first is named.
    assert app.main(["--calib", "~/a.txt", "~/b.txt", "--settings-file", settings]) == 2
    assert capsys.readouterr().err.strip() == "The calibration path ~/a.txt does not exist."


class _JobWindow(QObject):
    """What the self-test's driver listens to on the window."""

    jobFinished = Signal(str, str)
    errorShown = Signal(str)


def test_the_self_test_fails_a_step_whose_job_did_not_end_ok_or_showed_an_error(qapp) -> None:
    from shortgpt_desktop.gui.selftest import SelfTestError, _Driver

    window = _JobWindow()
    driver = _Driver(window)
    driver.run_job("score", lambda: window.jobFinished.emit("score", "ok"))
    with pytest.raises(SelfTestError, match=r"^the score job ended: cancelled$"):
        driver.run_job("score", lambda: window.jobFinished.emit("score", "cancelled"))
    # An error shown without a job (a refusal at the click) ends the step at once, in the error's words; a timer
    # ends the job late in case the driver kept waiting for it.
    late = QTimer()
    late.setSingleShot(True)
    late.timeout.connect(lambda: window.jobFinished.emit("save", "failed"))
    late.start(3000)
    try:
        with pytest.raises(SelfTestError, match=r"^Cannot save here$"):
            driver.run_job("save", lambda: window.errorShown.emit("Cannot save here"))
        assert late.isActive()
    finally:
        late.stop()


@pytest.mark.timeout(30, method="thread")  # were it to hang again: the test fails, the suite goes on
def test_a_self_test_step_whose_job_never_ends_fails_at_its_time_limit(qapp, monkeypatch: pytest.MonkeyPatch) -> None:
    """The event loop ended only once the job had, so the time limit was never read: a job that never reported its
    end hung --self-test forever (an installer's smoke test until CI's own limit)."""
    import time

    from shortgpt_desktop.gui import selftest

    monkeypatch.setattr(selftest, "STEP_TIMEOUT", 0.2)
    driver = selftest._Driver(_JobWindow())
    started = time.monotonic()
    with pytest.raises(selftest.SelfTestError, match=r"^the save job did not finish within 0.2 s$"):
        driver.run_job("save", lambda: None)
    assert time.monotonic() - started < 5


def test_a_failed_self_test_step_skips_the_rest_and_the_run_exits_1(
        qapp, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from shortgpt_desktop.core.testing import tiny_models
    from shortgpt_desktop.gui import application, main_window
    from shortgpt_desktop.gui.selftest import SelfTestError, run_self_test

    def no_room(*args: object) -> Path:
        raise SelfTestError("no room on the disk")

    monkeypatch.setattr(application, "make_app", QApplication.instance)  # the test's app keeps its name
    monkeypatch.setattr(tiny_models, "build_tiny_model", no_room)
    monkeypatch.setattr(main_window, "MainWindow", no_room)  # a step run after all fails too, at once
    assert run_self_test() == 1
    lines = capsys.readouterr().out.splitlines()
    assert re.fullmatch(r"FAIL  build tiny model \([\d.]+ s\): no room on the disk", lines[0])
    assert lines[1:8] == [f"skip  {step}" for step in ("open window", "open model", "load and score", "slide",
                                                        "save", "reload", "perplexity")]
    assert lines[8].startswith("self-test FAILED in ") and len(lines) == 9


def test_on_a_small_screen_the_window_fits_and_the_curve_and_buttons_are_reached(make_window, monkeypatch) -> None:
    """On a 1024 × 600 netbook, or 1366 × 768 at 150 % (911 × 512 of room), the window started at 1280 × 720 with
    a minimum of 860 × 600, larger than the screen; the chart's header held the right pane wider than it was (its
    legend and the Save as box cut off), and the quality curve shrank to a sliver, out of reach."""
    from PySide6.QtCore import QSize

    from shortgpt_desktop.gui.main_window import MainWindow

    monkeypatch.setattr(MainWindow, "_available", lambda self: QSize(911, 512))
    window = make_window(fast=False)
    assert window.width() <= 911 and window.height() <= 512
    assert window.minimumWidth() <= 911 and window.minimumHeight() <= 512
    window.resize(1024, 600)
    window.plan_panel.show_curve([(k, 60.0 + 5 * k, 0.6) for k in range(8)], "bi+ + repair", 16, 4096,
                                 [(k, 60.0 + 9 * k) for k in range(8)])
    QApplication.processEvents()
    scroll = window.top_scroll
    assert scroll.widget().width() <= scroll.viewport().width(), "nothing cut off at the right"
    scroll.ensureWidgetVisible(window.plan_panel.curve_plot)
    QApplication.processEvents()
    curve = window.plan_panel.curve_plot
    top_left = curve.mapTo(scroll.viewport(), curve.rect().topLeft())
    assert scroll.viewport().rect().contains(top_left) and curve.height() >= 100, "the curve is scrolled to"
    for button in (window.score_button, window.save_button, window.check_button):
        corner = button.mapTo(window, button.rect().bottomRight())
        assert window.rect().contains(corner) and button.isVisible(), f"{button.text()} stays in view"


def test_on_a_screen_narrower_than_the_usual_minimum_the_window_can_be_narrowed_to_fit(make_window,
                                                                                         monkeypatch) -> None:
    """1280 × 800 at 150 % leaves 853 pixels of room, less than the window's usual minimum width of 860."""
    from PySide6.QtCore import QSize

    from shortgpt_desktop.gui.main_window import MainWindow

    monkeypatch.setattr(MainWindow, "_available", lambda self: QSize(853, 533))
    window = make_window(fast=False)
    assert window.minimumWidth() <= 853 and window.width() <= 853


def test_only_a_focused_button_looks_focused(make_window) -> None:
    """Score was the default button, drawn with the focus frame at all times: with the focus elsewhere two buttons
    looked focused, and with the focus on Score nothing changed (in a main window a default button does nothing)."""
    window = make_window()
    assert not any(button.isDefault() for button in (window.score_button, window.save_button, window.check_button))


def test_a_large_font_leaves_the_left_column_reachable(make_window) -> None:
    """With a 13 pt font the left column's content is wider than its pane, and its horizontal scroll bar was forced
    off: labels cut ("el", "ings"), out of reach."""
    from PySide6.QtGui import QFont

    window = make_window()
    font = QFont(window.font())
    font.setPointSize(font.pointSize() * 2)
    window.setFont(font)
    window.splitter.setSizes([330, 950])
    QApplication.processEvents()
    left = window.left_scroll
    if left.widget().minimumSizeHint().width() > left.viewport().width():
        assert left.horizontalScrollBar().isVisible() and left.horizontalScrollBar().maximum() > 0
    else:
        pytest.fail("the font did not make the column wider than its pane")


def test_every_field_has_a_name_a_screen_reader_can_say(make_window) -> None:
    """The boxes of a two-box row (Samples × tokens, Check windows and Batch), the prompt, both models' texts, the
    curve's "to N" box (read as the group's title, "Layers to remove") and both charts had no name of their own."""
    from PySide6.QtWidgets import QLabel

    window = make_window()
    settings, compare, plan = window.settings_panel, window.compare_panel, window.plan_panel
    named = [settings.samples_box, settings.seq_len_box, settings.eval_box, settings.batch_box, compare.before,
             compare.after, plan.curve_max, window.chart.plot, plan.curve_plot]
    assert all(widget.accessibleName() for widget in named), [type(w).__name__ for w in named if not w.accessibleName()]
    assert len({widget.accessibleName() for widget in named}) == len(named)
    assert plan.curve_max.accessibleName() != "Layers to remove"
    assert any(label.buddy() is compare.prompt for label in compare.findChildren(QLabel))


def test_tab_goes_from_the_settings_tab_bar_to_the_page_it_shows(make_window) -> None:
    """The fields were made before the tabs: Tab went from the Basic page past the tab bar, and the Advanced page's
    fields (Dtype, Heal steps, Low memory) were reached only with Shift+Tab."""
    window = make_window()
    panel = window.settings_panel
    panel.tabs.setCurrentIndex(1)
    QApplication.processEvents()
    order, widget = [], panel.tabs.tabBar()
    for _ in range(12):
        widget = widget.nextInFocusChain()
        while not (widget.isVisible() and widget.isEnabled() and widget.focusPolicy() & Qt.FocusPolicy.TabFocus):
            widget = widget.nextInFocusChain()
        order.append(widget)
    assert order[0] is panel.dtype_box, type(order[0]).__name__
    assert panel.heal_box in order and panel.low_memory_box in order


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="X11 and Wayland are Linux's")
def test_a_display_that_is_set_but_not_there_is_said_in_one_sentence(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """DISPLAY set with no X server answering (ssh -X from a computer without one, stale forwarding) and a leftover
    WAYLAND_DISPLAY made Qt abort (exit 134) blaming libxcb-cursor0, installed (a walkthrough)."""
    import ctypes

    from shortgpt_desktop import app

    monkeypatch.setattr(app, "make_app", lambda: pytest.fail("the window was opened"))
    monkeypatch.setattr(app, "missing_xcb_libraries", lambda: None)  # said first where one is missing
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM", "XDG_SESSION_TYPE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    monkeypatch.setenv("WAYLAND_DISPLAY", "wayland-9")
    assert app.main(["--settings-file", str(tmp_path / "s.ini")]) == 2
    assert capsys.readouterr().err.strip() == (
        "There is no display to open the window on: WAYLAND_DISPLAY names wayland-9, which is not there, and DISPLAY "
        "is not set. Start it in a desktop session, or over ssh -X; the command line, shortgpt, needs none.")
    (tmp_path / "wayland-9").touch()  # there: Qt's to open
    assert app._no_display_to_open() is None
    monkeypatch.delenv("WAYLAND_DISPLAY")
    try:
        ctypes.CDLL("libxcb.so.1")
    except OSError:
        pytest.skip("no libxcb here to connect with")
    free = _free_display()
    monkeypatch.setenv("DISPLAY", f":{free}")  # no X server there
    assert app.main(["--settings-file", str(tmp_path / "s.ini")]) == 2
    assert capsys.readouterr().err.strip().startswith(
        f"The window cannot connect to the X display :{free} (DISPLAY): no X server answers there, or this user may "
        "not use it.")
