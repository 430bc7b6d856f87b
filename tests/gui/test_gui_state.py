"""What the window shows and offers stays true to what the engine holds: after a job that failed or was cancelled,
after a setting that changes the recipe, and while a job runs."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest
from PySide6.QtWidgets import QApplication, QLineEdit

from shortgpt_desktop.core.errors import UserError


def run(qtbot, window, start, *args) -> list:
    with qtbot.waitSignal(window.jobFinished, timeout=60_000) as finished:
        start(*args)
    return finished.args


def scored_with_plan(qtbot, window, count: int = 2):
    assert run(qtbot, window, window.start_scoring) == ["score", "ok"]
    window.plan_panel.slider.setValue(count)
    window.plan_panel.flush()
    assert window.plan is not None and len(window.plan.removed) == count
    return window


def test_a_rescore_that_reloads_and_fails_leaves_nothing_to_save(qtbot, opened, monkeypatch) -> None:
    """Low memory ticked and a metric that needs the whole model: the engine loads the model the other way (its
    scores go) and then refuses the metric. Save, Check, the slider and the curve must not act on the plan still
    drawn from the old scores (Save raised "Score the layers first." with no dialog at all)."""
    window = scored_with_plan(qtbot, opened)
    errors: list[BaseException] = []
    monkeypatch.setattr(sys, "excepthook", lambda kind, value, tb: errors.append(value))
    window.settings_panel.low_memory_box.setChecked(True)
    window.settings_panel.metric_box.setCurrentIndex(window.settings_panel.metric_box.findData("ppl"))
    # Score refuses this at the click now (test_gui_flow); a refusal only the loaded model can tell still comes
    # after the reload, which this stands in for
    monkeypatch.setattr(window.engine, "refusal", lambda *args, **kwargs: None)
    assert run(qtbot, window, window.start_scoring) == ["score", "failed"]
    assert window.engine.scores is None  # the premise: the reload dropped them
    assert window.plan is None and not window.plan_is_usable
    for control in (window.save_button, window.check_button, window.save_action, window.check_action,
                    window.plan_panel.slider, window.plan_panel.curve_button):
        assert not control.isEnabled(), control
    window.save()
    window.check()
    window.quality_curve()
    assert not window.busy and not errors


def test_a_failed_check_says_so_and_drops_the_last_checks_figures(qtbot, opened, monkeypatch) -> None:
    window = scored_with_plan(qtbot, opened)
    window.tabs.setCurrentWidget(window.log_panel)
    with qtbot.waitSignal(window.jobFinished, timeout=60_000) as checked:
        window.check()
        window.set_count(3)  # a slider move delivered late: the engine is the check's until it ends
        assert len(window.plan.removed) == 2
    assert checked.args == ["check", "ok"]
    assert window.tabs.currentWidget() is window.compare_panel  # the figures come into view, not under the Log tab
    assert "· perplexity" in window.compare_panel.after_title.text()
    assert "changed since the last check" not in window.compare_panel.result.text()
    window.plan_panel.slider.setValue(3)
    window.plan_panel.flush()
    assert "changed since the last check" in window.compare_panel.result.text()  # its figures are for 2 layers
    # Back at the plan it checked, its figures again without a job (a 9-minute check was run again for them).
    window.plan_panel.slider.setValue(2)
    window.plan_panel.flush()
    assert not window.busy and "· perplexity" in window.compare_panel.after_title.text()
    assert "changed since the last check" not in window.compare_panel.result.text()
    assert window.compare_panel.result.text().count("pruned <b>") == 1
    # Under another prompt its figures stand (perplexity, fidelity and the quiz do not read the prompt; moving the
    # slider away and back threw a 4-minute check away), and its texts are marked as the earlier prompt's at once:
    # they read as the answers to the prompt in the box.
    asked = window.engine.checked.prompt
    window.compare_panel.set_prompt("Another question?")
    earlier = f"The texts below answer the earlier prompt</b> “{asked}”; press <b>Check perplexity</b> for the new one."
    assert earlier in window.compare_panel.result.text()
    for count in (3, 2):
        window.plan_panel.slider.setValue(count)
        window.plan_panel.flush()
    assert "changed since the last check" not in window.compare_panel.result.text()
    assert earlier in window.compare_panel.result.text() and "· perplexity" in window.compare_panel.after_title.text()
    window.compare_panel.set_prompt(asked)  # the prompt checked again: no mark
    assert "earlier prompt" not in window.compare_panel.result.text()

    def refused(*args, **kwargs):
        raise UserError("Not enough memory for the check.")

    monkeypatch.setattr(window.engine, "check", refused)
    assert run(qtbot, window, window.check) == ["check", "failed"]
    panel = window.compare_panel
    assert panel.result.text() == "The check failed; nothing was measured."  # not "Measuring…" for good
    assert "perplexity" not in panel.before_title.text() + panel.after_title.text()
    assert not panel.before.toPlainText() and not panel.after.toPlainText()
    monkeypatch.undo()
    window.plan_panel.slider.setValue(3)  # a plan never checked: a check to run
    window.plan_panel.flush()
    with qtbot.waitSignal(window.jobFinished, timeout=60_000) as cancelled:
        window.check()
        window.cancel()
    assert cancelled.args == ["check", "cancelled"] and panel.result.text() == "Check cancelled."


def test_a_second_check_cancelled_leaves_the_first_checks_figures(qtbot, opened) -> None:
    """Check, then Check again for the same plan and Cancel: the panel said "Check cancelled." with both texts
    empty, though the first check's figures still stood (moving the slider away and back brought them back)."""
    window = scored_with_plan(qtbot, opened)
    assert run(qtbot, window, window.check) == ["check", "ok"]
    panel = window.compare_panel
    figures, before = panel.result.text(), panel.before.toPlainText()
    assert "pruned <b>" in figures
    with qtbot.waitSignal(window.jobFinished, timeout=60_000) as cancelled:
        window.check()
        window.cancel()
    assert cancelled.args == ["check", "cancelled"]
    assert panel.result.text() == figures and panel.before.toPlainText() == before
    assert window.statusBar().currentMessage().startswith("Check cancelled; the figures shown are the earlier")
    # For another plan there are none to show.
    window.plan_panel.slider.setValue(3)
    window.plan_panel.flush()
    with qtbot.waitSignal(window.jobFinished, timeout=60_000) as cancelled:
        window.check()
        window.cancel()
    assert cancelled.args == ["check", "cancelled"] and panel.result.text() == "Check cancelled."


def _in_view(scroll, widget) -> bool:
    """Whether ``widget`` is wholly inside the scroll area's viewport."""
    from PySide6.QtCore import QPoint, QRect

    viewport = scroll.viewport()
    return viewport.rect().contains(QRect(widget.mapTo(viewport, QPoint(0, 0)), widget.size()))


def test_the_checks_figures_get_the_height_they_need_at_1280_by_720(qtbot, opened) -> None:
    """At 1280 × 720 the check's paragraph was cut mid-line (its advice to remove fewer layers unread, no tooltip
    holding it) and each model's text showed two lines: the pane under the buttons now grows to hold them."""
    window = opened
    assert (window.width(), window.height()) == (1280, 720)
    window = scored_with_plan(qtbot, window)
    before = window.right_splitter.sizes()
    assert run(qtbot, window, window.check) == ["check", "ok"]
    QApplication.processEvents()
    panel = window.compare_panel
    after = window.right_splitter.sizes()
    assert after[1] > before[1] and sum(after) == sum(before)
    assert panel.result.height() >= panel.result.heightForWidth(panel.result.width()), panel.result.text()
    assert panel.before.viewport().height() >= 4 * panel.before.fontMetrics().lineSpacing()
    assert after[0] >= sum(after) // 3 and window.score_button.isVisible()
    # The Quality curve button, which the paragraph names, in view above them (it was half scrolled away)
    qtbot.waitUntil(lambda: _in_view(window.top_scroll, window.plan_panel.curve_button), timeout=3000)
    # A pane the user made larger stays as it is.
    window.right_splitter.setSizes([sum(after) // 3, sum(after) - sum(after) // 3])
    kept = window.right_splitter.sizes()
    assert run(qtbot, window, window.check) == ["check", "ok"]
    assert window.right_splitter.sizes() == kept
    # The window made smaller after the check: the paragraph gets its height again (it was cut mid-line at 1024 ×
    # 600, a walkthrough), within the share the chart and buttons keep; the chart and plan stay scrolled where the
    # user left them (each shrink scrolled them back to the Quality curve button)
    window.right_splitter.setSizes([sum(kept) - 60, 60])  # as small as a shrinking window may leave it
    bar = window.top_scroll.verticalScrollBar()
    qtbot.wait(50)  # the second check's own scroll done
    bar.setValue(0)
    window.resize(1024, 600)
    qtbot.waitUntil(lambda: window.height() == 600, timeout=3000)
    qtbot.waitUntil(lambda: panel.result.height() >= panel.result.heightForWidth(panel.result.width()),
                    timeout=3000)
    sizes = window.right_splitter.sizes()
    assert sizes[0] >= max(sum(sizes) // 3, window.top_minimum()) - 1
    qtbot.wait(50)
    QApplication.processEvents()
    assert bar.maximum() > 0 and bar.value() == 0
    assert not _in_view(window.top_scroll, window.plan_panel.curve_button)  # where a scroll would have brought it
    # Made larger again: the chart gets back the room the check took (both panes grew alike, the chart staying
    # cramped), the figures keeping the height they need, and the share they had before the first check
    small = window.right_splitter.sizes()
    window.resize(1280, 1000)
    qtbot.waitUntil(lambda: window.height() == 1000, timeout=3000)

    def given_back() -> bool:
        sizes = window.right_splitter.sizes()
        return sum(sizes) > sum(small) and sizes[1] <= max(window._check_room_needed(),
                                                           round(sum(sizes) * before[1] / sum(before))) + 1

    qtbot.waitUntil(given_back, timeout=3000)
    sizes = window.right_splitter.sizes()
    assert sizes[0] - small[0] > (sum(sizes) - sum(small)) * small[0] / sum(small) + 20, (small, sizes)
    assert panel.result.height() >= panel.result.heightForWidth(panel.result.width()), panel.result.text()


def test_the_repair_switch_marks_the_check_stale_and_drops_the_curve(qtbot, opened) -> None:
    window = scored_with_plan(qtbot, opened)
    window.compare_panel.set_prompt("")  # no generation: a quicker check
    assert run(qtbot, window, window.check) == ["check", "ok"]
    assert "No text was generated and no quiz asked: the prompt was empty." in window.compare_panel.result.text()
    assert run(qtbot, window, window.quality_curve) == ["curve", "ok"]
    assert window.plan_panel.curve_points
    window.settings_panel.repair_box.setChecked(not window.settings_panel.repair_box.isChecked())
    assert "changed since the last check" in window.compare_panel.result.text()
    assert not window.plan_panel.curve_points and not window.plan_panel.curve_plot.isVisibleTo(window)
    # Set back as it was, the check's figures are this recipe's again (they were called changed)
    window.settings_panel.repair_box.setChecked(not window.settings_panel.repair_box.isChecked())
    assert "No text was generated and no quiz asked: the prompt was empty." in window.compare_panel.result.text()


def test_another_metric_from_the_same_pass_drops_the_curve_of_the_first(qtbot, opened) -> None:
    window = scored_with_plan(qtbot, opened)
    assert run(qtbot, window, window.quality_curve) == ["curve", "ok"]
    box = window.settings_panel.metric_box
    box.setCurrentIndex(box.findData("relative_magnitude"))  # from the same hooked pass: no new job
    assert window.engine.scores.metric == "relative_magnitude"
    assert not window.plan_panel.curve_points
    # A metric that needs its own pass: the chart keeps what it shows, and says so until another metric is shown
    # ("Press Score to measure …" stayed after Block Influence was shown again)
    box.setCurrentIndex(box.findData("ppl"))
    assert window.engine.scores.metric == "relative_magnitude"
    assert window.statusBar().currentMessage() == ("The chart still shows Relative Magnitude, which Check and Save "
                                                   "use; press Score to measure Single-layer removal perplexity.")
    box.setCurrentIndex(box.findData("bi"))
    assert window.statusBar().currentMessage() == "Showing Block Influence."


def test_a_failed_import_leaves_the_metric_box_as_it_was(qtbot, opened, monkeypatch, tmp_path: Path) -> None:
    window = scored_with_plan(qtbot, opened)
    exported = window.export_scores(tmp_path / "scores.json")
    box = window.settings_panel.metric_box
    box.setCurrentIndex(box.findData("relative_magnitude"))

    def refused(*args, **kwargs):
        raise UserError("The model cannot be loaded.")

    monkeypatch.setattr(window.engine, "use_imported_scores", refused)
    assert run(qtbot, window, window.import_scores, exported) == ["import", "failed"]
    assert box.currentData() == window.engine.scores.metric == "relative_magnitude"
    monkeypatch.undo()
    assert run(qtbot, window, window.import_scores, exported) == ["import", "ok"]
    assert box.currentData() == window.engine.scores.metric == "bi"


def test_the_open_actions_are_off_while_a_job_runs(qtbot, opened) -> None:
    """Picked then, a model filled the Model field while the window and the engine went on with the other one."""
    window = opened
    assert all(act.isEnabled() for act in window.open_actions)
    with qtbot.waitSignal(window.jobFinished, timeout=60_000):
        window.start_scoring()
        assert window.busy and not any(act.isEnabled() for act in window.open_actions)
    assert all(act.isEnabled() for act in window.open_actions)


def test_calibration_changed_after_scoring_is_said(qtbot, opened, tmp_path: Path) -> None:
    """Check and Save keep the text the layers were scored on (the repair is fitted on it): the user is told."""
    window = scored_with_plan(qtbot, opened)
    extra = tmp_path / "more.txt"
    extra.write_text("More prose, of another kind. " * 200, encoding="utf-8")
    window.calibration_panel.add_paths([str(extra)])
    assert "calibration text changed" in window.statusBar().currentMessage()
    window.statusBar().clearMessage()
    window.settings_panel.samples_box.setValue(window.settings_panel.samples_box.value() + 4)
    assert "Changed after scoring: samples " in window.statusBar().currentMessage()


def test_a_cancelled_rescore_that_reloaded_does_not_say_nothing_changed(qtbot, opened, monkeypatch) -> None:
    """Cancelled after the model loaded the other way: the old scores are gone, so is the plan, and the message
    does not claim that nothing changed."""
    window = scored_with_plan(qtbot, opened)
    window.settings_panel.low_memory_box.setChecked(True)  # the rescore loads the model the other way first
    real = window.engine.score

    def cancelled_at_once(spec, progress, cancel):
        window.jobs.cancel()
        return real(spec, progress, cancel)

    monkeypatch.setattr(window.engine, "score", cancelled_at_once)
    assert run(qtbot, window, window.start_scoring) == ["score", "cancelled"]
    assert window.engine.scores is None  # the premise: the reload dropped them
    assert "nothing changed" not in window.statusBar().currentMessage()
    assert window.plan is None and not window.save_button.isEnabled()


def test_the_refit_box_stays_off_after_a_job_while_the_repair_is_off(qtbot) -> None:
    """A job ending enabled every setting, the refit too although it refits on top of a repair that was off; a
    click on it then marked the check stale for a setting that changed nothing."""
    from shortgpt_desktop.gui.settings_panel import SettingsPanel

    panel = SettingsPanel()
    qtbot.addWidget(panel)
    panel.repair_box.setChecked(False)
    assert not panel.refit_box.isEnabled()
    panel.set_busy(True)
    panel.set_busy(False)
    assert not panel.refit_box.isEnabled() and panel.repair_box.isEnabled()
    panel.repair_box.setChecked(True)
    assert panel.refit_box.isEnabled()


def test_the_prompt_cannot_be_edited_while_a_job_runs(qtbot, opened) -> None:
    """The check generates from the prompt it started with: an edit meanwhile showed that continuation under
    another prompt."""
    window = opened
    prompt = window.compare_panel.prompt
    with qtbot.waitSignal(window.jobFinished, timeout=60_000):
        window.start_scoring()
        assert window.busy and prompt.isReadOnly() and prompt.isEnabled()
    assert not prompt.isReadOnly()


def test_healing_one_layer_at_a_time_is_refused_at_the_click(qtbot, opened, tmp_path: Path, monkeypatch) -> None:
    """Low memory and heal steps: Check ran bi+'s measured choice (long on a big streamed model) before failing,
    and Save started its job and then failed as "Saving failed"; the command line refuses before scoring."""
    from shortgpt_desktop.gui import dialogs

    window = opened
    window.settings_panel.low_memory_box.setChecked(True)
    window = scored_with_plan(qtbot, window)
    assert window.engine.is_streamed
    window.settings_panel.heal_box.setValue(2)
    started: list[str] = []
    window.jobs.started.connect(started.append)
    folders: list[str] = []  # Save asked for a folder first, and then refused
    monkeypatch.setattr(dialogs, "ask_output_folder",
                        lambda parent, suggestion: folders.append(suggestion) or str(tmp_path / "out"))
    for act, title in ((window.check, "Cannot check"), (window.save, "Cannot save")):
        with qtbot.waitSignal(window.errorShown, timeout=10_000) as shown:
            act()
        assert "Healing" in shown.args[0] and window.dialogs[-1].windowTitle() == title
        window.last_dialog.close()
    assert started == [] and folders == [] and not window.busy and not (tmp_path / "out").exists()


def test_a_gguf_saved_as_safetensors_one_layer_at_a_time_is_refused_before_the_folder_is_asked(
        qtbot, window, tiny_q4_gguf: Path, calib_text: Path, tmp_path: Path, monkeypatch) -> None:
    """Low memory on a GGUF model: Save as safetensors asked for a folder, then said a GGUF is saved as GGUF that
    way; the format's tooltip says so before anything is asked."""
    from shortgpt_desktop.gui import dialogs

    window.settings_panel.low_memory_box.setChecked(True)
    assert run(qtbot, window, window.open_model, str(tiny_q4_gguf)) == ["open", "ok"]
    window.calibration_panel.add_paths([str(calib_text)])
    window = scored_with_plan(qtbot, window)
    assert window.engine.is_streamed
    box = window.plan_panel.format_box
    item = box.model().item(box.findData("safetensors"))
    qtbot.waitUntil(lambda: not item.isEnabled(), timeout=20_000)  # greyed out, and why in its tooltip
    assert item.toolTip().startswith("Not one layer at a time: a GGUF model is then saved as GGUF")
    box.setCurrentIndex(box.findData("safetensors"))  # as chosen before Low memory was ticked
    folders: list[str] = []
    monkeypatch.setattr(dialogs, "ask_output_folder",
                        lambda parent, suggestion: folders.append(suggestion) or str(tmp_path / "out"))
    with qtbot.waitSignal(window.errorShown, timeout=10_000) as shown:
        window.save()
    assert "a GGUF model is saved as GGUF" in shown.args[0] and folders == []
    window.last_dialog.close()
    box.setCurrentIndex(box.findData("gguf"))
    assert run(qtbot, window, window.save) == ["save", "ok"] and len(folders) == 1
    window.settings_panel.low_memory_box.setChecked(False)  # whole until the next Score, then whole: offered again
    assert run(qtbot, window, window.start_scoring) == ["score", "ok"] and not window.engine.is_streamed
    qtbot.waitUntil(item.isEnabled, timeout=20_000)
    assert not item.toolTip().startswith("Not one layer")


@pytest.mark.parametrize("fails", [False, True])
def test_an_estimate_made_for_settings_changed_while_it_ran_is_not_shown(
        qtbot, window, tiny_q4_gguf: Path, calib_text: Path, fails: bool) -> None:
    """Low memory unticked while the Runs line's estimate for the ticked box was running: its answer came back
    after the change and showed "one layer at a time until the next Score, then one layer at a time (as asked)"
    (the way the box no longer asks), until the next estimate replaced it (a test caught it once in CI's load)."""
    import threading

    assert run(qtbot, window, window.open_model, str(tiny_q4_gguf)) == ["open", "ok"]
    window.calibration_panel.add_paths([str(calib_text)])
    window.settings_panel.low_memory_box.setChecked(True)
    window = scored_with_plan(qtbot, window)
    qtbot.waitUntil(lambda: not window.background.busy, timeout=10_000)
    release = threading.Event()
    real_job = window.session.memory_job

    def held_job(spec):
        work = real_job(spec)

        def held(progress, cancel):
            release.wait(10)
            if fails and spec.low_memory:  # the error for the settings before (a device gone) is not shown either
                raise UserError("The device chosen is not here.")
            return work(progress, cancel)

        return held

    shown: list[str] = []
    errors: list[str] = []
    real_set_mode = window.model_panel.set_mode
    window.session.memory_job = held_job
    window.model_panel.set_mode = lambda mode, details: (shown.append(mode), real_set_mode(mode, details))
    window.model_panel.set_memory_error = errors.append
    window._update_memory_estimate()  # the estimate for the ticked box, held until the box is unticked
    assert window.background.busy and window.background.current == "memory"
    window.settings_panel.low_memory_box.setChecked(False)
    release.set()
    qtbot.waitUntil(lambda: bool(shown), timeout=10_000)
    assert shown == ["one layer at a time until the next Score, then whole, in memory"], shown
    assert errors == []


def test_low_memory_unticked_after_scoring_is_said_and_check_and_save_keep_the_scored_way(
        qtbot, window, tiny_q4_gguf: Path, calib_text: Path, tmp_path: Path, monkeypatch) -> None:
    """Check and Save run the model as it was scored (its scores, repair and caches were made so). Unticking Low
    memory afterwards showed "whole, in memory" under Runs while Check ran one layer at a time, said nothing, and a
    GGUF's safetensors save was refused "in low-memory mode" with the box unticked and no way out given."""
    from shortgpt_desktop.gui import dialogs

    assert run(qtbot, window, window.open_model, str(tiny_q4_gguf)) == ["open", "ok"]
    window.calibration_panel.add_paths([str(calib_text)])
    window.settings_panel.low_memory_box.setChecked(True)
    window = scored_with_plan(qtbot, window)
    assert window.engine.is_streamed
    window.settings_panel.low_memory_box.setChecked(False)
    said = window.statusBar().currentMessage()
    assert "keep running the model as it was scored (one layer at a time, on cpu in float32)" in said, said
    mode = window.model_panel.values["mode"]
    qtbot.waitUntil(lambda: "until the next Score" in mode.text(), timeout=10_000)
    assert mode.text().startswith("one layer at a time until the next Score, then whole"), mode.text()
    # Memory needed is the figure of the way Check and Save run until then, not the whole model's
    assert window.model_panel.values["memory"].text().endswith(", one layer at a time")
    window.set_output_format("safetensors")
    monkeypatch.setattr(dialogs, "ask_output_folder", lambda parent, suggestion: str(tmp_path / "out"))
    with qtbot.waitSignal(window.errorShown, timeout=10_000) as shown:
        window.save()
    assert "press Score to use the new settings" in shown.args[0], shown.args[0]
    window.last_dialog.close()
    window.settings_panel.heal_box.setValue(2)  # "…or untick 'Low memory'" was said with it unticked already
    with qtbot.waitSignal(window.errorShown, timeout=10_000) as shown:
        window.check()
    assert shown.args[0].startswith("Healing trains the whole model at once, which low-memory mode cannot hold; turn "
                                    "healing off (the repair still runs). Check and Save run the model as it was "
                                    "scored (one layer at a time"), shown.args[0]
    assert "untick" not in shown.args[0], shown.args[0]
    window.last_dialog.close()
    window.settings_panel.heal_box.setValue(0)
    window.settings_panel.low_memory_box.setChecked(True)  # back to the scored way: nothing to say
    qtbot.waitUntil(lambda: "until the next Score" not in mode.text(), timeout=10_000)
    window.settings_panel.low_memory_box.setChecked(False)
    assert run(qtbot, window, window.start_scoring) == ["score", "ok"]  # scored whole now
    assert not window.engine.is_streamed
    qtbot.waitUntil(lambda: mode.text() == "whole, in memory", timeout=10_000)


@pytest.mark.parametrize("then", [None, "score"])
def test_cancel_while_another_model_is_read_keeps_the_scored_one(qtbot, opened, tmp_path: Path, monkeypatch,
                                                                 then: str | None) -> None:
    """Cancel pressed while another model's description was read said "Cancelling…", then the open went on: the
    scored model, its plan and check were dropped without a word. And with Score pressed before the model was
    opened, the score still started after the Cancel."""
    import threading

    from shortgpt_desktop.core.engine import Engine
    from shortgpt_desktop.core.testing.tiny_models import build_tiny_model

    window = scored_with_plan(qtbot, opened)
    scored_source, scores = window.engine.source, window.engine.scores
    other = build_tiny_model(tmp_path / "other", "llama", seed=1)
    real_inspect = Engine._inspect
    pressed = threading.Event()

    def slow_inspect(source, spec):
        pressed.wait(30)  # the description is read until the user has pressed Cancel
        return real_inspect(source, spec)

    def cancel_at_inspect(job: str, stage: str, *rest) -> None:
        if stage == "inspect":
            window.cancel()
            pressed.set()

    monkeypatch.setattr(Engine, "_inspect", staticmethod(slow_inspect))
    window.jobs.progressed.connect(cancel_at_inspect)
    started: list[str] = []
    window.jobs.started.connect(started.append)
    assert run(qtbot, window, window.open_model, str(other), then) == ["open", "cancelled"]
    qtbot.wait(200)
    assert started == ["open"], "nothing started after the Cancel"
    assert window.engine.source is scored_source and window.engine.scores is scores
    assert window.plan is not None and len(window.plan.removed) == 2


def test_a_rescore_that_fails_without_reloading_keeps_the_check_and_the_other_metrics_lines(
        qtbot, opened, tmp_path: Path, monkeypatch) -> None:
    """Score, Other metrics, Check, then a rescore that fails (its calibration file deleted): the Before/after
    panel said "The plan or its settings changed since the last check", though nothing had, while Save still put
    those figures in the card; the other metrics' lines were gone and their box disabled."""
    from shortgpt_desktop.gui import dialogs

    monkeypatch.setattr(dialogs, "error_dialog", lambda *args, **kwargs: dialogs.QMessageBox())
    window = scored_with_plan(qtbot, opened)
    window.chart.others_box.setChecked(True)
    lines = len(window.chart.extra_curves)
    assert lines and run(qtbot, window, window.check) == ["check", "ok"]
    shown = window.compare_panel.result.text()
    assert "pruned <b>" in shown
    engine = window.engine
    real_score = engine.score

    def failing(*args, **kwargs):
        raise UserError("The calibration path calib.txt does not exist.")

    monkeypatch.setattr(engine, "score", failing)
    assert run(qtbot, window, window.start_scoring) == ["score", "failed"]
    monkeypatch.setattr(engine, "score", real_score)
    assert window.compare_panel.result.text() == shown
    assert len(window.chart.extra_curves) == lines and window.chart.others_box.isEnabled()
    # A change of recipe still calls the figures stale.
    window.settings_panel.repair_box.setChecked(not window.settings_panel.repair_box.isChecked())
    assert "changed since the last check" in window.compare_panel.result.text()


def test_devices_found_while_a_score_runs_change_the_sizes_only_after_it(qtbot, opened) -> None:
    """First start, sizes left to the device: the probe found a GPU while the first Score ran, the panel switched to
    the GPU's larger preset under the job, which scored (and Check and Save went on) with the CPU's, and nothing
    was said. The devices are listed when the job ends, and the change of sizes is said then."""
    from shortgpt_desktop.gui.system import INITIAL_DEVICES, DeviceChoice

    window = opened
    panel = window.settings_panel
    panel.set_values({"device": "auto", "samples": 32, "seq_len": 256, "eval_windows": 16, "sizes_chosen": False})
    before = {k: panel.values()[k] for k in ("samples", "seq_len", "eval_windows")}
    during: list[dict] = []

    def probe_answers(name: str, stage: str, *rest) -> None:
        if name == "score" and not during:
            window._on_probed([INITIAL_DEVICES[0], DeviceChoice("cuda:0", "GPU 0: Fake (8 GB)"), INITIAL_DEVICES[1]])
            during.append({k: panel.values()[k] for k in before})

    window.jobs.progressed.connect(probe_answers)
    assert run(qtbot, window, window.start_scoring) == ["score", "ok"]
    assert during == [before], "the sizes stay while the job runs"
    scored = window.engine.scored_spec
    assert (scored.samples, scored.seq_len) == (32, 256)
    assert panel.device_box.findData("cuda:0") >= 0, "listed once the job ended"
    if {k: panel.values()[k] for k in before} != before:
        assert "Changed after scoring: " in window.statusBar().currentMessage()


def _slow_score(window, monkeypatch) -> None:
    """Scoring with a pause at each progress event, so that the window can be looked at while it runs."""
    import time

    from shortgpt_desktop.core.errors import Cancelled

    real = window.engine.score

    def slow(spec, progress, cancel):
        def paused(stage, done, total, partial=None):
            time.sleep(0.03)
            if cancel():
                raise Cancelled()
            progress(stage, done, total, partial)
        return real(spec, paused, cancel)

    monkeypatch.setattr(window.engine, "score", slow)


def test_bars_fill_in_while_scoring_and_cancel_says_so_at_once(qtbot, opened, monkeypatch) -> None:
    """The bars grow from each progress event, not only at the end; Cancel says "Cancelling…" as it is pressed. No
    test looked at the chart during a job, nor at the label after Cancel (a mutation audit)."""
    window = opened
    _slow_score(window, monkeypatch)
    seen: list[int] = []
    window.jobs.progressed.connect(lambda *a: seen.append(sum(s is not None for s in window.chart.scores)))
    assert run(qtbot, window, window.start_scoring) == ["score", "ok"]
    assert any(seen), seen
    window.start_scoring()
    qtbot.waitUntil(lambda: window.busy)
    with qtbot.waitSignal(window.jobFinished, timeout=60_000):
        window.cancel()
        assert window.progress_label.text() == "Cancelling…"


def test_a_rescore_keeps_the_slider_and_a_failed_one_the_red_bars(qtbot, opened, monkeypatch) -> None:
    """A rescore keeps the count the slider shows; after a rescore that fails, the plan's layers are red again."""
    window = opened
    assert run(qtbot, window, window.start_scoring) == ["score", "ok"]
    window.plan_panel.set_count(3, emit=True)
    assert run(qtbot, window, window.start_scoring) == ["score", "ok"]
    assert window.plan_panel.count == 3 and len(window.plan.removed) == 3
    removed = list(window.plan.removed)

    def fail(spec, progress, cancel):
        raise UserError("no")

    from shortgpt_desktop.gui import dialogs

    monkeypatch.setattr(dialogs, "error_dialog", lambda *args, **kwargs: dialogs.QMessageBox())
    monkeypatch.setattr(window.engine, "score", fail)
    assert run(qtbot, window, window.start_scoring) == ["score", "failed"]
    assert window.plan.removed == removed and window.chart.removed == set(removed)


def test_a_rescore_keeps_the_layers_picked_by_hand_where_the_new_scores_allow(qtbot, opened) -> None:
    """Score again after bars were clicked: the layers picked stay planned, and the window says so (the slider's
    plan replaced them without a word); where the new scores do not cover a picked layer it says what replaced it."""
    from types import SimpleNamespace

    from shortgpt_desktop.format import layer_list

    window = scored_with_plan(qtbot, opened, 2)
    by_count = list(window.plan.removed)
    picked = sorted({*by_count[:1], next(i for i in range(1, window.engine.n_layers) if i not in by_count)})
    for index in sorted(set(by_count) ^ set(picked)):
        window.toggle_layer(index)
    assert window.manual and window.plan.removed == picked
    assert run(qtbot, window, window.start_scoring) == ["score", "ok"]
    assert window.manual and window.plan.removed == picked and window.chart.removed == set(picked)
    said = window.statusBar().currentMessage()
    assert said.startswith("Scored ") and said.endswith(
        f"The plan picked by hand stays: layers {layer_list(picked)} (move the slider for the new scores' own).")
    window.plan_panel.set_count(2, emit=True)
    window.plan_panel.flush()
    assert not window.manual and window.plan.removed == by_count  # the slider gives the scores' own back

    scores = [0.5] * window.engine.n_layers
    scores[picked[-1]] = None
    partial = SimpleNamespace(scores=SimpleNamespace(scores=scores))
    assert window._keep_picked((picked, window.manual_by, ""), partial) == (
        f"The plan picked by hand, layers {layer_list(picked)}, gave way to the slider's: the new scores do not "
        f"cover layer {picked[1]}.")
    assert window._keep_picked(([picked[1]], window.manual_by, ""), partial).startswith(
        f"The plan picked by hand, layer {picked[1]}, gave way")  # one layer: "layer", as everywhere
    scores[picked[-1]] = float("nan")  # no score either (the slider's maximum leaves such layers out)
    assert "gave way" in window._keep_picked((picked, window.manual_by, ""), partial)


def test_a_cancelled_rescore_says_what_became_of_the_layers_picked_by_hand(qtbot, opened, monkeypatch) -> None:
    """The cancelled scoring's own status line replaced the sentence at once: where a scoring cancelled one layer
    at a time leaves a picked layer unscored, which is where the picked plan gives way, the user never saw why."""
    import dataclasses

    from shortgpt_desktop.core.measure.scoring import LayerScores

    window = scored_with_plan(qtbot, opened, 2)
    last = window.engine.n_layers - 2
    picked = [1, last]
    for index in sorted(set(window.plan.removed) ^ set(picked)):
        window.toggle_layer(index)
    assert window.plan.removed == picked
    scored = window.engine.scored
    cut_short = [*scored.scores.scores[:last], *[None] * (scored.n_layers - last)]  # the later layers unscored
    monkeypatch.setattr(window.engine, "scored", dataclasses.replace(
        scored, partial=True, scores=LayerScores(scored.scores.metric, cut_short)))
    window._on_score_cancelled()
    said = window.statusBar().currentMessage()
    assert said.startswith(f"Scoring cancelled: {last} of {scored.n_layers} layers were scored (partial)")
    assert said.endswith(f"The plan picked by hand, layers 1, {last}, gave way to the slider's: the new scores do not "
                         f"cover layer {last}."), said
    assert not window.manual and window.plan.removed != picked  # the slider's plan, from the layers scored
    assert window.plan.removed == window.engine.plan(count=window.plan_panel.count).removed


def test_the_next_save_is_offered_beside_the_last(qtbot, opened, tmp_path: Path, monkeypatch) -> None:
    """After a save, the next one (and Export scores) is offered in the folder the last went to, not inside it."""
    window = scored_with_plan(qtbot, opened)
    announced: list[tuple[int, bool]] = []
    estimate = window.session.next_job_estimate
    monkeypatch.setattr(window.session, "next_job_estimate",
                        lambda spec, count, check, layers=None: announced.append((count, check))
                        or estimate(spec, count, check, layers))
    with qtbot.waitSignal(window.jobFinished, timeout=120_000):
        window.save_to(tmp_path / "out" / "pruned")
    assert announced == [(2, False)]  # the cost said before the save: its 2 layers, no check
    assert window.store.save_dir() == str(tmp_path / "out")
    assert Path(window.suggested_output()).parent == tmp_path / "out"
    said = window.statusBar().currentMessage()
    assert said.startswith("Saved the pruned model (2 layers removed, ") and said.endswith(f") to {window.last_saved}")



def test_the_curve_from_the_engine_says_the_quiz_only_at_the_counts_where_it_was_asked(window) -> None:
    from types import SimpleNamespace as Measured

    from shortgpt_desktop.core.measure.sweep import CurvePoint

    points = [CurvePoint(0, None, [], 10.0, 2.3, 1024, 1.0, 0.0, 9, 9),
              CurvePoint(1, 3, [3], 12.0, 2.5, 1024, 0.8, 0.1, 0, 0),
              CurvePoint(2, 4, [3, 4], 20.0, 3.0, 1024, 0.6, 0.3, 4, 9)]
    window._on_curve(Measured(points=points, baseline=None, label="bi+", windows=4, tokens=1024, warnings=[],
                              text_ran_out=False))
    tip = window.plan_panel.curve_plot.toolTip().splitlines()
    assert tip[0].endswith("quiz 9 of 9") and "quiz" not in tip[1] and tip[2].endswith("quiz 4 of 9"), tip


def test_a_curve_measured_one_layer_at_a_time_says_why_it_has_no_quiz(window, caplog) -> None:
    """Streamed, the curve asks no quiz (each answer would run every layer again): the window said nothing of it,
    and the tooltip's quiz column was simply missing."""
    from types import SimpleNamespace as Measured

    from shortgpt_desktop.core.engine import STREAMED_CURVE_NOTE
    from shortgpt_desktop.core.measure.sweep import CurvePoint

    points = [CurvePoint(k, None, list(range(k)), 10.0 + k, 2.3, 1024, 1.0 - k / 10, 0.1 * k, 0, 0) for k in range(3)]
    with caplog.at_level(logging.WARNING):
        window._on_curve(Measured(points=points, baseline=None, label="bi+", windows=4, tokens=1024,
                                  warnings=[STREAMED_CURVE_NOTE], text_ran_out=False))
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [STREAMED_CURVE_NOTE]
    assert window.statusBar().currentMessage() == STREAMED_CURVE_NOTE  # where it is seen, not the Log's tab alone
    assert "quiz" not in window.plan_panel.curve_plot.toolTip()


def test_a_cancelled_quality_curve_says_so(qtbot, opened) -> None:
    """Check and Save said they were cancelled; the curve left "Cancelled." beside the buttons and "Scored 6 layers"
    below."""
    window = scored_with_plan(qtbot, opened)

    def start_and_cancel() -> None:
        window.quality_curve()
        window.cancel()

    assert run(qtbot, window, start_and_cancel) == ["curve", "cancelled"]
    assert window.statusBar().currentMessage() == "The quality curve was cancelled; no curve was drawn."
    assert not window.plan_panel.curve_points
    # a second curve cancelled: "no curve was drawn" was said beside the first, which stays on screen
    assert run(qtbot, window, window.quality_curve) == ["curve", "ok"]
    assert run(qtbot, window, start_and_cancel) == ["curve", "cancelled"]
    assert window.statusBar().currentMessage() == "The quality curve was cancelled; the earlier curve stays."
    assert window.plan_panel.curve_points


def test_a_format_switch_held_back_while_a_job_ran_is_made_when_it_ends(qtbot, opened, monkeypatch) -> None:
    """A memory estimate that ends while a job runs leaves the format box as it is (the job's format must not change
    under it); the box follows the settings once the job ends (it stayed greyed and chosen until a setting changed)."""
    import threading

    window = scored_with_plan(qtbot, opened)
    qtbot.waitUntil(lambda: not window.background.busy, timeout=20_000)
    switches: list[bool] = []
    monkeypatch.setattr(window.plan_panel, "refuse_format",
                        lambda name, why, switch=True: switches.append(switch) or False)
    release = threading.Event()
    check = window.engine.check

    def held(*args, **kwargs):
        release.wait(30)
        return check(*args, **kwargs)

    monkeypatch.setattr(window.engine, "check", held)
    window.check()
    assert window.busy
    window._update_memory_estimate()
    qtbot.waitUntil(lambda: bool(switches), timeout=20_000)
    assert set(switches) == {False}  # held back while the check runs
    with qtbot.waitSignal(window.jobFinished, timeout=60_000) as finished:
        release.set()
    assert finished.args == ["check", "ok"]
    qtbot.waitUntil(lambda: switches[-1:] == [True], timeout=20_000)


def test_the_room_a_check_made_for_its_figures_is_not_the_next_starts(qtbot, make_window, gui_model: Path,
                                                                    calib_text: Path) -> None:
    """The split a check moved to make room for its figures was saved at close, and every later start showed the
    plan scrolled, its Save as and Quality curve out of view (a walkthrough, at 1280 × 720); a split the user dragged
    stays theirs."""
    first = make_window()
    with qtbot.waitSignal(first.jobFinished, timeout=60_000):
        first.open_model(str(gui_model))
    first.calibration_panel.add_paths([str(calib_text)])
    before = first.right_splitter.sizes()
    scored_with_plan(qtbot, first)
    assert run(qtbot, first, first.check) == ["check", "ok"]
    assert first.right_splitter.sizes()[1] > before[1]
    first.close()
    second = make_window(fast=False)
    assert second.right_splitter.sizes() == before
    # a check again, then the split dragged (moveSplitter is what a drag of the handle calls: splitterMoved)
    with qtbot.waitSignal(second.jobFinished, timeout=60_000):
        second.open_model(str(gui_model))
    scored_with_plan(qtbot, second)
    assert run(qtbot, second, second.check) == ["check", "ok"]
    with qtbot.waitSignal(second.right_splitter.splitterMoved, timeout=3000):
        second.right_splitter.moveSplitter(before[0] - 40, 1)
    dragged = second.right_splitter.sizes()
    assert dragged != before
    second.close()
    assert make_window(fast=False).right_splitter.sizes() == dragged


def test_the_chart_comes_back_into_view_once_the_check_it_made_room_for_is_gone(qtbot, opened) -> None:
    """At 1024 × 600, after a check, scoring again (or another model) showed only the bars' bottom edge: the pane
    stayed scrolled to the check's Quality curve button, and the check's room was kept (a walkthrough)."""
    window = opened
    window.resize(1024, 600)
    qtbot.waitUntil(lambda: window.height() == 600, timeout=3000)
    before = window.right_splitter.sizes()
    scored_with_plan(qtbot, window)
    assert run(qtbot, window, window.check) == ["check", "ok"]
    bar = window.top_scroll.verticalScrollBar()
    qtbot.waitUntil(lambda: bar.value() > 0, timeout=3000)  # scrolled to the Quality curve button
    assert window.right_splitter.sizes()[1] > before[1]
    assert run(qtbot, window, window.start_scoring) == ["score", "ok"]
    assert abs(window.right_splitter.sizes()[1] - before[1]) <= 2 and bar.value() == 0


def test_removing_the_first_or_last_layer_by_hand_is_warned_at_the_click(qtbot, opened) -> None:
    """Layers 0 and 29 clicked away said nothing until the check's gibberish (perplexity 121.7 -> 279,892.6)."""
    window = scored_with_plan(qtbot, opened)
    last = window.engine.n_layers - 1
    for index, end in ((0, "first"), (last, "last")):
        if index in window.plan.removed:
            window.toggle_layer(index)
        window.toggle_layer(index)
        assert index in window.plan.removed
        assert window.statusBar().currentMessage() == (
            f"Layer {index} is the {end} layer: removing it usually breaks the model (the paper found that removing "
            "the first or the last layers destroys it).")
    window.statusBar().clearMessage()
    window.toggle_layer(0)  # kept again: nothing to say
    middle = next(i for i in range(1, last) if i not in window.plan.removed)
    window.toggle_layer(middle)
    assert window.statusBar().currentMessage() == ""


def test_a_size_changed_after_scoring_is_named_with_the_one_that_holds(qtbot, opened) -> None:
    """Check windows lowered after a Score to make Check quicker: "The sample sizes changed" was said for a moment,
    the field showed 4, and each Check measured the scores' windows. The size is named, with the one that holds."""
    window = scored_with_plan(qtbot, opened)
    scored = window.engine.scored_spec.eval_windows
    window.settings_panel.eval_box.setValue(scored + 2)
    said = window.statusBar().currentMessage()
    assert said.startswith(f"Changed after scoring: check windows {scored + 2}, where the layers were scored with "
                           f"{scored}. Check, Save and the quality curve keep the scored sizes"), said
    window.statusBar().clearMessage()
    window.settings_panel.eval_box.setValue(scored)  # back as scored: nothing to say
    assert not window.statusBar().currentMessage()


def test_the_curve_says_what_of_the_recipe_it_leaves_out_and_logs_its_figures(qtbot, opened) -> None:
    """Heal steps set: the curve read 524.93 and Check 525.34 at the same count, and nothing said the curve is the
    unhealed recipe. Each count's figures were in tooltips only, out of the keyboard's reach and the Log's."""
    window = scored_with_plan(qtbot, opened)
    panel = window.settings_panel
    assert run(qtbot, window, window.quality_curve) == ["curve", "ok"]
    QApplication.processEvents()
    logged = window.log_panel.view.toPlainText()
    first = window.plan_panel.curve_plot.toolTip().splitlines()[1]
    assert first.startswith("1 removed: perplexity ") and first in logged and "Quality curve, " in logged
    assert "point at it" not in logged  # the note's words for the mouse, not the Log's
    note = window.plan_panel.curve_note.text
    assert "ithout" not in note()
    panel.heal_box.setValue(2)
    assert note().startswith("Without the healing, which Check and Save add. ")
    panel.refit_box.setChecked(True)
    assert note().startswith("Without the healing and the MLP refit, which Check and Save add. ")
    panel.heal_box.setValue(0)
    panel.refit_box.setChecked(False)
    assert "ithout" not in note() and window.plan_panel.curve_plot.isVisible()


def test_another_model_opened_shows_the_chart_title_of_a_model_not_scored(qtbot, opened, tmp_path: Path) -> None:
    """The last model's metric stayed in the chart's title ("· Block Influence+ (measured)") over a model not scored
    yet, where a fresh start says "Layer importance (lower = removed first)"."""
    import shutil

    from shortgpt_desktop.gui.chart import UNSCORED_TITLE

    window = scored_with_plan(qtbot, opened)
    assert window.chart.title.text() != UNSCORED_TITLE
    other = tmp_path / "other"
    shutil.copytree(window.engine.source.folder, other)
    with qtbot.waitSignal(window.jobFinished, timeout=60_000) as opened_other:
        window.open_model(str(other))
    assert opened_other.args == ["open", "ok"]
    assert window.chart.title.text() == UNSCORED_TITLE


def test_a_job_started_as_a_dialog_closes_gives_the_focus_back_to_the_control_it_was_on(qtbot, opened) -> None:
    """Save's folder dialog, or Ctrl+O's, closes and the job starts before the window is active again: the focus
    went to the chart or the prompt when the job ended, and a Space there removed a layer from the plan just saved (a
    walkthrough). It comes back to the control the user was on."""
    window = scored_with_plan(qtbot, opened)
    window.show()
    qtbot.waitExposed(window)
    window.activateWindow()
    slider = window.plan_panel.slider
    slider.setFocus()
    qtbot.waitUntil(lambda: QApplication.focusWidget() is slider, timeout=2000)
    dialog = QLineEdit()  # a dialog's field, in a window of its own, has the focus
    qtbot.addWidget(dialog)
    dialog.show()
    dialog.activateWindow()
    dialog.setFocus()
    qtbot.waitUntil(lambda: QApplication.focusWidget() is dialog, timeout=2000)

    def closed_then_checked() -> None:
        dialog.close()
        window.check()

    assert run(qtbot, window, closed_then_checked) == ["check", "ok"]
    window.activateWindow()
    qtbot.waitUntil(lambda: QApplication.focusWidget() is slider, timeout=2000)
