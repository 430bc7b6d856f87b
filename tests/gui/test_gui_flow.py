"""The whole flow through the widgets, as a user does it: model, dropped text, Score, slider, click, save,
reload, check."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
from PySide6.QtCore import QPoint, Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QApplication

from shortgpt_desktop.format import human_bytes, layer_list
from shortgpt_desktop.gui import dialogs
from shortgpt_desktop.gui.chart import REMOVED_COLOR


def bar_colors(chart) -> list[QColor]:
    return [brush.color() for brush in chart.bars._brushes]


def removed_bars(chart) -> set[int]:
    return {i for i, c in enumerate(bar_colors(chart)) if c == REMOVED_COLOR}


def test_full_flow(qtbot, window, drop_paths, gui_model: Path, calib_text: Path, tmp_path: Path, monkeypatch) -> None:
    # The model: typed into the field, Enter.
    field = window.model_panel.field
    field.setEditText(str(gui_model))
    with qtbot.waitSignal(window.jobFinished, timeout=60_000) as opened:
        qtbot.keyClick(field.lineEdit(), Qt.Key.Key_Return)
    assert opened.args == ["open", "ok"]
    assert window.model_panel.values["layers"].text() == "6"
    assert "Llama" in window.model_panel.values["architecture"].text()
    assert window.model_panel.recent()[0] == str(gui_model)

    # The calibration text: a real drop of a file URL on the drop zone.
    zone = window.calibration_panel.list
    assert drop_paths(zone.viewport(), [calib_text])
    assert window.calibration_panel.paths() == [str(calib_text)]
    assert zone.topLevelItem(0).text(0) == calib_text.name

    # Score: the bars fill in while the worker runs.
    partial_updates: list[list] = []
    window.jobs.progressed.connect(
        lambda job, stage, done, total, partial: partial_updates.append(partial) if stage == "scoring" else None
    )
    with qtbot.waitSignal(window.jobFinished, timeout=60_000) as scored:
        qtbot.mouseClick(window.score_button, Qt.MouseButton.LeftButton)
    assert scored.args == ["score", "ok"]
    partial_updates = [p for p in partial_updates if p is not None]  # the first report has no scores yet
    assert partial_updates and all(len(p) == 6 for p in partial_updates)
    chart = window.chart
    assert chart.n_layers == 6
    assert all(s is not None and math.isfinite(s) for s in chart.scores)
    heights = list(chart.bars.opts["height"])
    assert heights == [float(s) for s in chart.scores]

    # The slider starts at a quarter of the layers, rounded down (1 of 6); moved to three, the three
    # lowest-scored go and are drawn in the "removed" colour.
    slider = window.plan_panel.slider
    assert slider.maximum() == 5 and slider.value() == 1
    with qtbot.waitSignal(window.plan_panel.countChanged, timeout=2000):
        slider.setValue(3)
    lowest = sorted(sorted(range(6), key=lambda i: chart.scores[i])[:3])
    assert window.plan.removed == lowest
    assert removed_bars(chart) == set(lowest)
    assert "3</b> of 6" in window.plan_panel.count_label.text()
    assert "→" in window.plan_panel.params_label.text()

    # Click a kept bar: it is removed too (chosen by hand).
    kept = next(i for i in range(6) if i not in lowest)
    qtbot.mouseClick(chart.plot.viewport(), Qt.MouseButton.LeftButton, pos=chart.bar_position(kept))
    assert window.plan.removed == sorted([*lowest, kept])
    assert removed_bars(chart) == {*lowest, kept}
    assert window.manual and "by hand" in window.plan_panel.count_label.text()
    assert slider.value() == 4
    # ... and clicking it again keeps it.
    qtbot.mouseClick(chart.plot.viewport(), Qt.MouseButton.LeftButton, pos=chart.bar_position(kept))
    assert window.plan.removed == lowest

    # Save through the button; the folder dialog is replaced by a chosen path.
    out = tmp_path / "pruned"
    monkeypatch.setattr(dialogs, "ask_output_folder", lambda parent, suggestion: str(out))
    with qtbot.waitSignal(window.jobFinished, timeout=60_000) as saved:
        qtbot.mouseClick(window.save_button, Qt.MouseButton.LeftButton)
    assert saved.args == ["save", "ok"]
    assert window.last_saved == out
    # What was written stays said under the buttons (a status-bar line for 15 s was all), and File opens the folder.
    line = window.progress_label.text()
    assert line.startswith("Saved the pruned model (3 layers removed, ") and f"to {out}" in line, line
    assert line.endswith("File → Open the saved folder") and window.open_saved_action.isEnabled()
    from PySide6.QtGui import QDesktopServices

    opened: list[str] = []
    monkeypatch.setattr(QDesktopServices, "openUrl", lambda url: opened.append(url.toLocalFile()) or True)
    window.open_saved_action.trigger()
    assert opened == [str(out)] and window.dialogs == []
    window.last_saved = tmp_path / "moved-away"
    window.open_saved_action.trigger()
    assert window.dialogs[-1].text() == f"{tmp_path / 'moved-away'} is no longer there."
    window.dialogs.pop().close()
    window.last_saved = out
    assert not window._saved_line or window.open_saved_action.isEnabled()
    card = (out / "README.md").read_text(encoding="utf-8")
    assert f"Removed layers (0-based, original numbering): {', '.join(map(str, lowest))}" in card

    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(out)
    assert reloaded.config.num_hidden_layers == 3
    assert len(reloaded.model.layers) == 3

    # Check perplexity: both numbers and both generations, side by side.
    window.compare_panel.prompt.setText("The history of")
    with qtbot.waitSignal(window.jobFinished, timeout=60_000) as checked:
        qtbot.mouseClick(window.check_button, Qt.MouseButton.LeftButton)
    assert checked.args == ["check", "ok"]
    result = window.engine.checked
    assert result is not None and result.removed == lowest
    assert math.isfinite(result.ppl_before) and math.isfinite(result.ppl_after)
    assert f"{result.ppl_before:.2f}" in window.compare_panel.result.text()
    assert window.compare_panel.before.toPlainText().startswith("The history of")
    assert window.compare_panel.after.toPlainText().startswith("The history of")
    assert window.tabs.currentWidget() is window.compare_panel
    assert window.dialogs == []


def test_metric_switch_needs_no_new_pass(qtbot, opened) -> None:
    window = opened
    with qtbot.waitSignal(window.jobFinished, timeout=60_000):
        window.start_scoring()
    bi = list(window.chart.scores)
    assert "Relative Magnitude" in window.chart.extra  # the other metrics' lines are named as the Metric box names them
    started: list[str] = []
    window.jobs.started.connect(started.append)
    box = window.settings_panel.metric_box
    box.setCurrentIndex(box.findData("relative_magnitude"))
    assert started == []  # no job: the same pass measured it
    assert window.engine.scores.metric == "relative_magnitude"
    assert window.chart.scores != bi
    assert window.chart.metric_label == "Relative Magnitude"
    box.setCurrentIndex(box.findData("angular"))
    with qtbot.waitSignal(window.plan_panel.countChanged, timeout=2000):
        window.plan_panel.slider.setValue(3)
    removed = window.plan.removed
    assert removed == list(range(removed[0], removed[0] + 3))  # a contiguous block of three
    assert window.engine.scores.block_size == 3
    box.setCurrentIndex(box.findData("ppl"))
    assert started == []
    assert "press Score to measure Single-layer removal perplexity" in window.statusBar().currentMessage()
    # Layers picked by hand stay picked under another metric: only the slider plans by the metric's order.
    magnitude = window.engine.rescore("relative_magnitude", 1).scores
    most_important = max(range(6), key=lambda i: magnitude[i])
    window.plan_panel.set_count(0, emit=True)
    window.toggle_layer(most_important)
    box.setCurrentIndex(box.findData("relative_magnitude"))
    assert window.engine.scores.metric == "relative_magnitude"
    assert window.plan.removed == [most_important]


def test_model_drop_opens_it(qtbot, window, drop_paths, gui_model: Path, tmp_path: Path, calib_text: Path) -> None:
    not_a_model = tmp_path / "notes.txt"
    not_a_model.write_text("hello", encoding="utf-8")
    assert not drop_paths(window.model_panel, [not_a_model])
    with qtbot.waitSignal(window.jobFinished, timeout=60_000) as opened:
        assert drop_paths(window.model_panel, [gui_model])
    assert opened.args == ["open", "ok"]
    assert window.model_panel.text == str(gui_model)
    assert window.chart.placeholder.toPlainText() == "6 layers. Press Score to measure each one's importance."
    # exported scores dropped there are imported for the open model (it refused them without a word; a walkthrough)
    window.calibration_panel.add_paths([str(calib_text)])
    window.settings_panel.set_values({"samples": 8, "seq_len": 32, "metric": "bi"})
    with qtbot.waitSignal(window.jobFinished, timeout=60_000):
        window.start_scoring()
    exported = window.export_scores(tmp_path / "scores.json")
    scores = window.engine.scores
    with qtbot.waitSignal(window.jobFinished, timeout=60_000) as imported:
        assert drop_paths(window.model_panel, [exported])
    assert imported.args == ["import", "ok"] and window.engine.scores is not scores
    assert window.engine.scores.scores == scores.scores
    assert window.statusBar().currentMessage().startswith("Imported the scores of 6 layers from scores.json")


def test_a_file_dropped_on_the_model_text_box_opens_and_types_nothing(qtbot, window, gui_model: Path,
                                                                      tmp_path: Path) -> None:
    """A file manager's drag carries the file's address as text beside its link: dropped on the Model text box
    (whose tooltip says to drop there), the box typed "file:///…" into the path it showed and nothing opened."""
    from PySide6.QtCore import QMimeData, QPointF, QUrl
    from PySide6.QtGui import QDragEnterEvent, QDropEvent

    def drop_on_text_box(path: Path) -> bool:
        mime = QMimeData()
        mime.setUrls([QUrl.fromLocalFile(str(path))])
        mime.setText(QUrl.fromLocalFile(str(path)).toString())
        box = window.model_panel.field.lineEdit()
        centre, action = QPoint(box.width() // 2, box.height() // 2), Qt.DropAction.CopyAction
        buttons, mods = Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier
        enter = QDragEnterEvent(centre, action, mime, buttons, mods)
        QApplication.sendEvent(box, enter)
        drop = QDropEvent(QPointF(centre), action, mime, buttons, mods)
        QApplication.sendEvent(box, drop)
        return enter.isAccepted() and drop.isAccepted()

    window.model_panel.field.setEditText("/some/earlier/model")
    notes = tmp_path / "notes.txt"
    notes.write_text("hello", encoding="utf-8")
    assert not drop_on_text_box(notes)  # not a model: refused, and its address not typed in either
    assert window.model_panel.text == "/some/earlier/model"
    with qtbot.waitSignal(window.jobFinished, timeout=60_000) as opened:
        assert drop_on_text_box(gui_model)
    assert opened.args == ["open", "ok"]
    assert window.model_panel.text == str(gui_model)
    assert "file:" not in window.model_panel.field.currentText()
    # A Hub page's address dragged from a browser is text for the box (typed_model reads it), not a file refused.
    from PySide6.QtCore import QEvent

    hub = QMimeData()
    hub.setUrls([QUrl("https://huggingface.co/HuggingFaceTB/SmolLM2-135M")])
    box = window.model_panel.field.lineEdit()
    enter = QDragEnterEvent(QPoint(2, 2), Qt.DropAction.CopyAction, hub, Qt.MouseButton.LeftButton,
                            Qt.KeyboardModifier.NoModifier)
    assert enter.type() == QEvent.Type.DragEnter and not window.model_panel.eventFilter(box, enter)


def test_calibration_folder_and_remove(qtbot, window, drop_paths, calib_text: Path, tmp_path: Path) -> None:
    folder = tmp_path / "texts"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("alpha " * 400, encoding="utf-8")
    (folder / "sub" / "b.md").write_text("beta " * 400, encoding="utf-8")
    (folder / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 100)
    panel = window.calibration_panel
    assert drop_paths(panel.list.viewport(), [folder, calib_text])
    assert panel.paths() == [str(folder), str(calib_text)]
    assert "2 text files" in panel.list.topLevelItem(0).text(0)  # the PNG is not counted
    assert int(panel.list.topLevelItem(0).data(2, Qt.ItemDataRole.UserRole)) == (2400 + 2000) // 4
    # Dropping the same file again adds nothing.
    assert drop_paths(panel.list.viewport(), [calib_text])
    assert len(panel.paths()) == 2
    panel.list.topLevelItem(0).setSelected(True)
    qtbot.mouseClick(panel.remove_button, Qt.MouseButton.LeftButton)
    assert panel.paths() == [str(calib_text)]
    panel.builtin.setChecked(True)
    assert panel.sources() == [str(calib_text), "builtin"]
    assert "built-in corpus" in panel.summary.text()


def test_hover_shows_layer_and_score(qtbot, opened) -> None:
    window = opened
    with qtbot.waitSignal(window.jobFinished, timeout=60_000):
        window.start_scoring()
    chart = window.chart
    point = chart.bar_position(3)
    chart._on_mouse_moved(chart.plot.mapToScene(point))  # what pyqtgraph's scene reports on a mouse move
    text = chart.hover_label.text()
    state = "removed" if 3 in window.plan.removed else "kept"
    assert text.startswith(f"Layer 3: {state}, Block Influence ") and f"{chart.scores[3]:.4g}" in text


def test_memory_estimate_follows_settings(qtbot, opened) -> None:
    window = opened
    label = window.model_panel.values["memory"]
    assert label.text().endswith("on cpu, float32")
    engine_info = window.engine.info
    before = engine_info.memory_needed_bytes
    box = window.settings_panel.dtype_box
    box.setCurrentIndex(box.findData("bfloat16"))
    qtbot.waitUntil(lambda: label.text().endswith("on cpu, bfloat16"), timeout=10_000)
    assert window.memory_view.info.memory_needed_bytes < before
    assert window.engine.info is engine_info, "an estimate beside the jobs never writes the engine"
    assert window.memory_view.info.memory.heal_step_bytes == 0
    window.settings_panel.heal_box.setValue(5)  # healing holds a step's activations and the weights it changed
    qtbot.waitUntil(lambda: window.memory_view.info.memory.heal_step_bytes > 0, timeout=10_000)


def test_the_size_before_save_follows_the_weights_the_settings_change(qtbot, window, tiny_q4_gguf: Path,
                                                                       calib_text: Path) -> None:
    """A 4-bit GGUF: healing (every kept layer's projections) and the repair (the MLP output projections beside
    each cut) rewrite weights as Q8_0, and the size Save will write says so as soon as they are set, at most what
    the repair can change until Check has fitted it, then what it changed."""
    with qtbot.waitSignal(window.jobFinished, timeout=60_000):
        window.open_model(str(tiny_q4_gguf))
    window.calibration_panel.add_paths([str(calib_text)])
    window.settings_panel.repair_box.setChecked(False)
    with qtbot.waitSignal(window.jobFinished, timeout=60_000):
        window.start_scoring()
    window.plan_panel.slider.setValue(0)
    window.plan_panel.flush()
    window.toggle_layer(2)
    window.toggle_layer(4)  # two runs: the MLP output projection after the second (layer 5) may be refitted
    assert window.plan.removed == [2, 4] and window.plan_panel.format_box.currentData() == "gguf"

    def after(bound: str = "≈ ") -> int:
        """The size Save will write, as the label shows it, with what the changed weights add (none: no note),
        ``bound`` ("up to ") where the repair is not fitted yet (else an estimate, "≈")."""
        plan, panel = window.plan, window.plan_panel
        assert panel.size_label.text().endswith(f"→ {bound}<b>{human_bytes(plan.bytes_after)}</b>")
        assert panel.size_note.text().endswith(": larger than the original") == (plan.bytes_after > plan.bytes_before)
        note = f"of which {bound}{human_bytes(plan.bytes_reencoded)} for the weights the repair or healing changes, "
        assert panel.size_note.text().startswith(note) if plan.bytes_reencoded else not panel.size_note.text()
        assert panel.size_note.isVisibleTo(panel) == bool(plan.bytes_reencoded)
        return plan.bytes_after

    plain = after()
    assert window.plan.bytes_reencoded == 0
    narrow = window.plan_panel.minimumSizeHint().width()
    window.settings_panel.heal_box.setValue(3)
    healed = after()  # exact: healing changes every kept weight
    assert window.plan.bytes_reencoded == healed - plain
    # The note wraps on its own line: the panel's narrowest width hardly grows (447 to 730 px on the size's line).
    assert window.plan_panel.minimumSizeHint().width() <= 1.1 * narrow
    window.settings_panel.heal_box.setValue(0)
    window.settings_panel.repair_box.setChecked(True)
    at_most = after("up to ")
    assert plain < at_most and healed > 1.15 * plain
    assert healed > window.plan.bytes_before  # said as larger than the original while healing was set
    with qtbot.waitSignal(window.jobFinished, timeout=120_000):
        window.check()
    # The weights the fitted repair changed: on 8 samples it folds a map into the projection before each run
    # (layers 1 and 3) and refits none after a run, so layer 5's is not counted any more.
    fitted = after()
    assert window.plan.removed == [2, 4] and plain < fitted < at_most
    window.settings_panel.repair_box.setChecked(False)
    assert after() == plain


def test_the_size_says_up_to_until_the_check_has_fitted_the_repair(qtbot, window, tiny_q4_gguf: Path,
                                                                   calib_text: Path, monkeypatch) -> None:
    """After Check the size is exact; where the fitted repair came to the bound's bytes (the last layer removed:
    the one projection before it), the label kept 'up to', since only a changed size redrew it."""
    with qtbot.waitSignal(window.jobFinished, timeout=60_000):
        window.open_model(str(tiny_q4_gguf))
    window.calibration_panel.add_paths([str(calib_text)])
    box = window.settings_panel.metric_box
    box.setCurrentIndex(box.findData("bi"))
    with qtbot.waitSignal(window.jobFinished, timeout=60_000):
        window.start_scoring()
    offered: list[str] = []
    monkeypatch.setattr(dialogs, "ask_scores_save_path", lambda parent, suggestion: offered.append(suggestion) or "")
    assert window.export_scores() is None
    assert Path(offered[0]).name == f"{tiny_q4_gguf.stem}-bi.json"  # the file's name without .gguf
    window.plan_panel.slider.setValue(0)
    window.plan_panel.flush()
    window.toggle_layer(window.engine.n_layers - 1)
    assert window.plan.reencoded_at_most and "up to" in window.plan_panel.size_label.text()
    bound = window.plan.bytes_after
    with qtbot.waitSignal(window.jobFinished, timeout=60_000):
        window.check()
    assert window.plan.bytes_after == bound  # the case: the same bytes, now known exactly
    assert not window.plan.reencoded_at_most and "up to" not in window.plan_panel.size_label.text()


def test_a_failed_rescore_leaves_the_plan_and_the_settings_usable(qtbot, opened, monkeypatch) -> None:
    """A rescore with a new dtype forgets the scores, then fails to load: the plan drawn from them goes with them
    (Save and Check had nothing behind it), and a repair or healing setting changed then neither re-plans nor
    raises (it raised PlanError in a Qt slot)."""
    from shortgpt_desktop.core import engine as engine_module
    from shortgpt_desktop.core.errors import UserError

    window = opened
    with qtbot.waitSignal(window.jobFinished, timeout=60_000):
        window.start_scoring()
    window.plan_panel.slider.setValue(2)
    window.plan_panel.flush()
    assert window.plan is not None

    def no_room(*args, **kwargs):
        raise UserError("No room for the model.")

    monkeypatch.setattr(engine_module, "open_backend", no_room)
    monkeypatch.setattr(dialogs, "error_dialog", lambda *args, **kwargs: dialogs.QMessageBox())
    box = window.settings_panel.dtype_box
    box.setCurrentIndex(box.findData("bfloat16"))
    with qtbot.waitSignal(window.jobFinished, timeout=60_000):
        window.start_scoring()
    assert window.engine.sizes is None and window.plan is None and not window.save_button.isEnabled()
    window.settings_panel.heal_box.setValue(2)
    window.settings_panel.repair_box.setChecked(not window.settings_panel.repair_box.isChecked())
    assert window.plan is None


def test_device_probe_lists_devices(qtbot, make_window) -> None:
    window = make_window(probe=True)
    with qtbot.waitSignal(window.devicesProbed, timeout=60_000):
        pass
    assert window.probe_error is None  # the probe ran; a failing probe emits devicesProbed too
    import torch

    box = window.settings_panel.device_box
    keys = [box.itemData(i) for i in range(box.count())]
    assert keys[0] == "auto" and keys[-1] == "cpu"
    assert len(keys) == 2 + torch.cuda.device_count() + int(torch.backends.mps.is_available())
    assert window.settings_panel.values()["device"] == "cpu"  # the chosen device survives the new list


def test_hub_download_progress_and_cancel(qtbot, window, monkeypatch) -> None:
    """A Hub download (faked: no network in tests) shows bytes and speed, and its Cancel button stops it."""
    import time

    from shortgpt_desktop.core import pipeline
    from shortgpt_desktop.core.errors import Cancelled

    total = 10_000_000  # decimal units: 10.0 MB

    def fake_resolve_source(model, revision, progress, cancel):
        done = 0
        while not cancel():
            done = min(total, done + 256 * 1024)
            progress("download", done, total, None)
            time.sleep(0.02)
        raise Cancelled()

    monkeypatch.setattr(pipeline, "resolve_source", fake_resolve_source)
    panel = window.model_panel
    window.open_model("someone/some-model")
    qtbot.waitUntil(lambda: panel.download_box.isVisible() and "MB/s" in panel.download_label.text(),
                    timeout=10_000)
    assert "of 10.0 MB" in panel.download_label.text()
    with qtbot.waitSignal(window.jobFinished, timeout=10_000) as finished:
        panel.download_cancel.click()
    assert finished.args == ["open", "cancelled"]
    assert not panel.download_box.isVisible()
    assert "cancelled" in panel.message.text() and window.dialogs == []


def test_single_layer_perplexity_metric_fills_bar_by_bar(qtbot, opened) -> None:
    window = opened
    box = window.settings_panel.metric_box
    box.setCurrentIndex(box.findData("ppl"))
    partials: list[list] = []
    window.jobs.progressed.connect(
        lambda job, stage, done, total, partial: partials.append(partial) if stage == "scoring" and partial else None
    )
    with qtbot.waitSignal(window.jobFinished, timeout=60_000) as scored:
        window.start_scoring()
        assert window.chart.scores == [None] * 6  # no bars until a layer is measured, not bars of 0
    assert scored.args == ["score", "ok"]
    assert any(None in p for p in partials)  # bars appear one layer at a time
    assert all(s is not None and s > 1 for s in window.chart.scores)
    assert window.chart.metric_label == "Single-layer removal perplexity"
    assert len(window.plan.removed) == 1  # a quarter of 6, rounded down
    assert window.statusBar().currentMessage().startswith("Scored 6 layers in ")


def test_a_metric_one_layer_at_a_time_cannot_score_is_refused_at_the_click(qtbot, opened) -> None:
    """Single-layer removal perplexity with Low memory loaded the model for 20 s on Gemma 3, then said "Scoring
    failed"; the README says it is refused before the job starts."""
    window = opened
    box = window.settings_panel.metric_box
    box.setCurrentIndex(box.findData("ppl"))
    window.settings_panel.low_memory_box.setChecked(True)
    window.start_scoring()
    assert not window.busy and window.engine.loaded is None
    box_shown = window.dialogs[-1]
    assert box_shown.windowTitle().endswith("Cannot score")
    assert box_shown.text().startswith("Single-layer removal perplexity needs the whole model in memory; in low-memory "
                                       "mode choose Block Influence"), box_shown.text()
    assert "untick “Low memory” in Settings" in box_shown.text()


def test_low_memory_mode_scores_the_same_one_layer_at_a_time(qtbot, opened) -> None:
    """The checkbox says how the model will run before anything loads, and gives the same scores streamed."""
    window = opened
    label = window.model_panel.values["mode"]
    qtbot.waitUntil(lambda: label.text().startswith("whole, in memory"), timeout=20_000)
    assert "one layer at a time" in label.toolTip()
    with qtbot.waitSignal(window.jobFinished, timeout=60_000):
        window.start_scoring()
    whole = list(window.engine.scores.scores)
    assert not window.engine.is_streamed
    window.settings_panel.low_memory_box.setChecked(True)
    # Check and Save keep the way it was scored until the next Score
    qtbot.waitUntil(lambda: label.text() == "whole, in memory until the next Score, then one layer at a time (as "
                    "asked)", timeout=20_000)
    with qtbot.waitSignal(window.jobFinished, timeout=60_000) as scored:
        window.start_scoring()
    assert scored.args == ["score", "ok"] and window.engine.is_streamed
    assert window.engine.scores.scores == pytest.approx(whole, abs=1e-6)
    window.plan_panel.set_count(2, emit=True)
    with qtbot.waitSignal(window.jobFinished, timeout=60_000) as checked:
        window.check()
    assert checked.args == ["check", "ok"]
    logged = window.log_panel.view.toPlainText()
    assert "Checking perplexity took " in logged  # as a scoring says its own
    # and each job's start: a Score pressed again right after one, then cancelled, read as a cancel of the first
    assert logged.index("Checking perplexity started") < logged.index("Checking perplexity took ")
    # One layer at a time the check is whole too: fidelity to the original and a (short) generation.
    checked = window.engine.checked
    assert checked.ppl_after > 1 and checked.fidelity is not None and checked.generation_after


def scored_with(qtbot, window, metric: str):
    """``window`` with ``metric`` chosen in the Metric box and the layers scored."""
    box = window.settings_panel.metric_box
    box.setCurrentIndex(box.findData(metric))
    with qtbot.waitSignal(window.jobFinished, timeout=60_000):
        window.start_scoring()
    return window


def test_quality_curve_draws_the_recipe_and_plain_bi_and_agrees_with_check(qtbot, opened) -> None:
    window = scored_with(qtbot, opened, "bi+")
    window.resize(1024, 600)  # the curve drawn below the fold is scrolled into view
    window.show()
    with qtbot.waitSignal(window.jobFinished, timeout=120_000) as done:
        window.plan_panel.curve_button.click()
        # as Check and Save do, it says the whole curve's time as it starts (it said each step's only)
        said = window.progress_label.toolTip()
    assert done.args == ["curve", "ok"]
    assert "Said as the job started: Quality curve: about" in said and "choosing" in said, said
    for _ in range(3):
        QApplication.processEvents()
    plot, scroll = window.plan_panel.curve_plot, window.top_scroll
    top = plot.mapTo(scroll.widget(), QPoint(0, 0)).y()
    seen = scroll.verticalScrollBar().value()
    assert seen <= top and top + plot.height() <= seen + scroll.viewport().height(), (
        top, plot.height(), seen, scroll.viewport().height())
    panel = window.plan_panel
    ks = [k for k, _ in panel.curve_points]
    assert ks == list(range(len(ks))) and len(ks) == window.engine.n_layers // 2 + 1
    assert len(panel.baseline_line.getData()[0]) == len(ks)
    assert "plain BI (dashed, no repair)" in panel.curve_note.text() and "same top token" in panel.curve_note.toolTip()
    # each count gives the dashed line's figure beside the solid one's (only the solid one's were listed)
    xs, ys = panel.baseline_line.getData()
    tip = panel.curve_plot.toolTip()
    assert tip.startswith("0 removed: perplexity ") and "(plain" not in tip.splitlines()[0]
    said = re.search(rf"^2 removed: perplexity {dict(panel.curve_points)[2]:.2f} \(plain BI ([\d.]+)\)", tip, re.M)
    assert said and float(said[1]) == pytest.approx(10 ** ys[list(xs).index(2)], abs=0.006)  # drawn on a log axis
    window.plan_panel.set_count(2, emit=True)
    with qtbot.waitSignal(window.jobFinished, timeout=60_000):
        window.check()
    assert dict(panel.curve_points)[2] == pytest.approx(window.engine.checked.ppl_after, rel=1e-9)


def test_the_curve_goes_as_far_as_asked(qtbot, opened) -> None:
    """As sweep's --max: the window's curve always went to half the layers (a quarter of an hour for SmolLM2 on a
    CPU with plain BI, far longer with bi+), though the README advises a small first curve."""
    window = opened
    with qtbot.waitSignal(window.jobFinished, timeout=60_000):
        window.start_scoring()
    spin = window.plan_panel.curve_max
    assert spin.isEnabled() and spin.value() == window.engine.n_layers // 2
    assert spin.maximum() == window.engine.max_removable
    spin.setValue(2)
    with qtbot.waitSignal(window.jobFinished, timeout=120_000):
        window.plan_panel.curve_button.click()
    assert [k for k, _ in window.plan_panel.curve_points] == [0, 1, 2]
    # named as the Metric box names the metric ("bi + repair (solid)" read as Block Influence+ under plain BI)
    from shortgpt_desktop.core.measure.metrics import METRICS

    label, note = METRICS[window.engine.scores.metric].label, window.plan_panel.curve_note.text()
    assert note.startswith(f"{label} + repair (solid)"), note


def test_a_long_quality_curve_is_asked_about_before_it_starts(qtbot, opened, monkeypatch) -> None:
    """Its time was said only once it ran: 34 min for a 135M model's default count at the smallest sizes (a
    walkthrough), and a cancelled curve draws nothing. A curve said to take long is asked about first; No starts
    nothing."""
    from shortgpt_desktop.gui import dialogs, main_window

    window = opened
    with qtbot.waitSignal(window.jobFinished, timeout=60_000):
        window.start_scoring()
    asked: list[tuple[str, str]] = []
    monkeypatch.setattr(dialogs, "ask_yes_no", lambda parent, title, text: asked.append((title, text)) or False)
    started: list[str] = []
    window.jobs.started.connect(started.append)
    window.plan_panel.curve_max.setValue(2)
    monkeypatch.setattr(main_window, "ASK_BEFORE_A_LONG_CURVE_SECONDS", 1e-9)  # as if it took an hour
    window.plan_panel.curve_button.click()
    assert started == [] and [title for title, _ in asked] == ["Draw the quality curve?"]
    text = asked[0][1]
    assert text.startswith("The quality curve to 2 layers removed will take about ") and text.endswith("Start it?")
    monkeypatch.setattr(main_window, "ASK_BEFORE_A_LONG_CURVE_SECONDS", 1e9)  # a short one starts unasked
    with qtbot.waitSignal(window.jobFinished, timeout=120_000):
        window.plan_panel.curve_button.click()
    assert started == ["curve"] and len(asked) == 1


def test_after_the_curve_the_plan_on_screen_is_bi_plus_measured_choice(qtbot, opened) -> None:
    """The curve measures bi+'s choice at every count; the slider's plan still showed the unmeasured layers (red
    bars, 'not yet checked'), where the curve's point, Check and Save use the measured ones."""
    window = scored_with(qtbot, opened, "bi+")
    window.plan_panel.set_count(3, emit=True)
    assert any("not yet checked" in note for note in window.plan.notes)
    shown = list(window.plan.removed)
    with qtbot.waitSignal(window.jobFinished, timeout=120_000):
        window.plan_panel.curve_button.click()
    measured = window.engine.selections[3]
    assert window.plan.removed == list(measured.removed)
    assert not any("not yet checked" in note for note in window.plan.notes), window.plan.notes
    said = window.statusBar().currentMessage()  # the layers on screen changed: said, as Check and Save say it
    assert shown != window.plan.removed and said == (
        f"Quality curve drawn; bi+ measured its candidates and removed layers {layer_list(window.plan.removed)}, "
        f"not the lowest scores shown before ({layer_list(shown)}).")


def test_check_says_what_it_will_cost_before_it_runs(qtbot, opened, monkeypatch) -> None:
    """The ETA before a job: from the scoring pass's measured speed and the steps the recipe will run."""
    window = scored_with(qtbot, opened, "bi+")
    window.plan_panel.set_count(2, emit=True)
    counts: list[int] = []
    estimate = window.session.next_job_estimate
    monkeypatch.setattr(window.session, "next_job_estimate",
                        lambda spec, count, check, layers=None: counts.append(count) or estimate(spec, count, check,
                                                                                               layers))
    said: list[str] = []
    window.jobs.started.connect(lambda name: said.append(window.progress_label.text()))
    tips: list[str] = []  # the tooltip as each step's progress replaces the line
    window.jobs.progressed.connect(lambda *args: tips.append(window.progress_label.toolTip()))
    lines: list[str] = []  # and the line itself: the whole job's time beside the step's
    window.jobs.progressed.connect(lambda *args: lines.append(window.progress_label.text()))
    with qtbot.waitSignal(window.jobFinished, timeout=60_000):
        window.check()
        said.append(window.progress_label.text())
        tip = window.progress_label.toolTip()  # the step's progress replaces the line; the whole job's stays here
    assert any("Checking perplexity: about" in text and "choosing" in text for text in said), said
    assert tip.startswith("Said as the job started: Checking perplexity: about") and "choosing" in tip, tip
    assert tips and all(t.endswith(tip) for t in tips), tips
    assert lines and all(re.search(r" · [\d.]+ m?s (of about .+ in all|so far, past the .+ said)", line)
                         for line in lines if line), lines
    assert window.progress_label.toolTip() == ""  # not once the job is over
    assert counts == [2]  # the cost of removing the plan's 2 layers, not of the 4 it keeps


def test_a_slider_move_just_before_the_curve_or_a_score_is_planned_before_the_job(qtbot, opened,
                                                                                  monkeypatch) -> None:
    """The slider's move is delivered 40 ms late; started within that, the curve (or a score) ran the plan on the
    window's thread while its job used the engine from another. Check and Save already delivered it first."""
    import threading

    window = scored_with(qtbot, opened, "bi")
    planned_while_busy: list[int] = []
    real_plan = window.engine.plan

    def plan(*args, **kwargs):
        if window.busy and threading.current_thread() is threading.main_thread():  # not the job's own plans
            planned_while_busy.append(kwargs.get("count", -1))
        return real_plan(*args, **kwargs)

    monkeypatch.setattr(window.engine, "plan", plan)
    for start in (window.quality_curve, window.start_scoring):
        window.plan_panel.slider.setValue(3 if start == window.quality_curve else 1)  # as a drag: throttled
        with qtbot.waitSignal(window.jobFinished, timeout=60_000):
            start()
        qtbot.wait(100)  # past the throttle: nothing late is delivered
    assert planned_while_busy == []
    assert window.plan is not None and len(window.plan.removed) == 1


def test_the_plan_says_bi_plus_may_remove_other_layers_and_the_check_says_it_did(qtbot, opened) -> None:
    """Save wrote layers 3, 5, 7, 12, 13, 17, 25 of SmolLM2 where 12–15, 17, 25, 26 were shown, its size above the
    'up to' figure shown, and nothing said either could happen, or had."""
    window = scored_with(qtbot, opened, "bi+")
    changed = []
    for count in (1, 2, 3):
        window.plan_panel.set_count(count, emit=True)
        shown = list(window.plan.removed)
        assert window.plan.chosen_later and "may remove others" in window.plan_panel.layers_label.text()
        # the ends are not among the lowest scores shown, though one of them may score lower
        assert 0 not in shown and 5 not in shown
        assert "the lowest scores apart from the first and last layers" in window.plan_panel.layers_label.text()
        assert "up to" not in window.plan_panel.size_label.text()  # the layers shown are no bound
        with qtbot.waitSignal(window.jobFinished, timeout=60_000):
            window.check()
        assert not window.plan.chosen_later and "may remove others" not in window.plan_panel.layers_label.text()
        # said beside the layers for as long as they are shown, not only in the status bar for 15 s
        assert "chosen by measuring candidates" in window.plan_panel.layers_label.text()
        assert window.plan.notes[0] in window.plan_panel.count_label.toolTip()
        said = window.statusBar().currentMessage()
        if window.plan.removed != shown:
            changed.append(count)
            layers = "layer" if count == 1 else "layers"  # "removed layers 1."
            assert said == (f"Checked; bi+ measured its candidates and removed {layers} "
                            f"{layer_list(window.plan.removed)}, not the lowest scores shown before "
                            f"({layer_list(shown)}).")
        else:
            assert "bi+ measured" not in said
    assert changed, "no count where bi+ chose other layers than the lowest scores: the case is not tested"
    # A bar clicked off and on again gives back bi+'s measured plan, not one "chosen by hand": Save's card said
    # "picked by hand", metric "manual", for the very layers bi+ had chosen (a walkthrough)
    measured = list(window.plan.removed)
    window.toggle_layer(measured[0])
    assert window.manual and "chosen by hand" in window.plan_panel.count_label.text()
    window.toggle_layer(measured[0])
    assert window.plan.removed == measured and window.plan.measured and not window.manual
    assert "chosen by hand" not in window.plan_panel.count_label.text()
    assert "chosen by measuring candidates" in window.plan_panel.layers_label.text()
    # a set bi+ has still to measure stays as clicked: those are the layers the user chose to cut
    window.plan_panel.set_count(4, emit=True)
    shown = list(window.plan.removed)
    assert window.plan.chosen_later
    window.toggle_layer(shown[0])
    window.toggle_layer(shown[0])
    assert window.plan.removed == shown and window.manual and not window.plan.chosen_later


def test_a_curve_hidden_by_another_metric_or_repair_setting_comes_back_with_it(qtbot, opened) -> None:
    """Switching the metric to Block Influence and back to Block Influence+, or unticking and ticking the repair,
    hid a drawn curve (ten minutes of measuring on SmolLM2) without a word; it is drawn again when the setting it was
    drawn for is back, and a new Score forgets it."""
    window = scored_with(qtbot, opened, "bi+")
    panel = window.plan_panel
    with qtbot.waitSignal(window.jobFinished, timeout=120_000):
        panel.curve_button.click()
    drawn = list(panel.curve_points)
    assert drawn and panel.curve_plot.isVisibleTo(window)
    box = window.settings_panel.metric_box
    box.setCurrentIndex(box.findData("bi"))
    assert panel.curve_points == [] and not panel.curve_plot.isVisibleTo(window)  # bi+'s curve is not BI's
    box.setCurrentIndex(box.findData("bi+"))
    assert panel.curve_points == drawn and panel.curve_plot.isVisibleTo(window)
    window.settings_panel.repair_box.setChecked(False)
    assert panel.curve_points == []
    window.settings_panel.repair_box.setChecked(True)
    assert panel.curve_points == drawn
    with qtbot.waitSignal(window.jobFinished, timeout=60_000):
        window.start_scoring()
    window.settings_panel.repair_box.setChecked(False)
    window.settings_panel.repair_box.setChecked(True)
    assert panel.curve_points == []  # made on the scores before
