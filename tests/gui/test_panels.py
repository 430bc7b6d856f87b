"""The window's panels on their own: the left pane's calibration list and settings, the chart, the plan panel,
the Before/after panel, and the job runner. Each assertion here was missing: a mutation audit of the window's logic
broke the code and every test still passed."""

from __future__ import annotations

import json
import os
import time
import urllib.parse
from pathlib import Path
from types import SimpleNamespace

import pytest
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QWheelEvent
from PySide6.QtWidgets import QApplication

from shortgpt_desktop.core import defaults
from shortgpt_desktop.core.cut.plan import PrunePlan
from shortgpt_desktop.core.engine import Checked
from shortgpt_desktop.core.errors import Cancelled
from shortgpt_desktop.core.measure import calibration
from shortgpt_desktop.core.measure.calibration import BUILTIN_TOKENS_ESTIMATE, CHARS_PER_TOKEN
from shortgpt_desktop.core.measure.quiz import Quiz
from shortgpt_desktop.format import human_bytes
from shortgpt_desktop.gui.calibration_panel import CalibrationPanel, binary_files, describe_path
from shortgpt_desktop.gui.chart import ScoreChart
from shortgpt_desktop.gui.compare_panel import ComparePanel
from shortgpt_desktop.gui.model_panel import ModelPanel
from shortgpt_desktop.gui.plan_panel import PlanPanel, count_ticks, perplexity_ticks
from shortgpt_desktop.gui.settings_panel import SettingsPanel
from shortgpt_desktop.gui.system import INITIAL_DEVICES, DeviceChoice
from shortgpt_desktop.gui.workers import JobRunner

TEXT = "Plain English prose for the calibration list. " * 200


def test_the_token_estimate_counts_the_builtin_corpus_and_the_files(qtbot, tmp_path) -> None:
    """With the built-in corpus ticked the summary said "≈ 0 tokens"; a file counts its characters' tokens."""
    panel = CalibrationPanel()
    qtbot.addWidget(panel)
    panel.set_sources(["builtin"])
    assert panel.estimated_tokens() == BUILTIN_TOKENS_ESTIMATE
    (tmp_path / "a.txt").write_text(TEXT)
    (tmp_path / "b.txt").write_text(TEXT)
    panel.add_paths([str(tmp_path / "a.txt")])
    assert not panel.builtin.isChecked(), "the first own text unticks the built-in corpus"
    assert panel.estimated_tokens() == int(len(TEXT) / CHARS_PER_TOKEN)
    panel.builtin.setChecked(True)  # the user wants both
    panel.add_paths([str(tmp_path / "b.txt")])
    assert panel.builtin.isChecked()


def test_each_file_is_listed_once_and_a_skipped_one_counts_no_tokens(qtbot, tmp_path) -> None:
    """A folder added after a file in it listed the file twice and counted its tokens twice; a binary file was listed
    at "0 B", and a skipped config.json counted its tokens."""
    panel = CalibrationPanel()
    qtbot.addWidget(panel)
    problems: list[str] = []
    panel.problem.connect(problems.append)
    texts = tmp_path / "texts"
    texts.mkdir()
    (texts / "a.txt").write_text(TEXT)
    (texts / "b.txt").write_text(TEXT)
    panel.add_paths([str(texts / "a.txt")])
    panel.add_paths([str(texts)])
    assert panel.paths() == [str(texts)]
    assert panel.estimated_tokens() == 2 * int(len(TEXT) / CHARS_PER_TOKEN)
    panel.add_paths([str(texts / "b.txt")])
    assert panel.paths() == [str(texts)]
    assert problems == [f"{texts / 'b.txt'} is already in the list, in the folder {texts}."]
    # One drop of several things that cannot be added is one sentence each in one message (a box each was shown),
    # and a file already listed is said too (it was ignored without a word)
    problems.clear()
    link = tmp_path / "texts-link"
    link.symlink_to(texts)
    panel.add_paths([str(texts), str(tmp_path / "gone.txt"), str(link)])
    assert problems == [f"{texts} is already in the list.\n{tmp_path / 'gone.txt'} does not exist.\n"
                        f"{link} is already in the list."], problems
    photo, config = tmp_path / "photo.jpg", tmp_path / "config.json"
    photo.write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 80)
    config.write_text('{"name": "not text records"}' * 20)
    panel.add_paths([str(photo), str(config)])
    for i, path in ((1, photo), (2, config)):
        item = panel.list.topLevelItem(i)
        assert item.text(1) == human_bytes(path.stat().st_size) and item.text(2) == "—", (item.text(1), item.text(2))
    assert panel.estimated_tokens() == 2 * int(len(TEXT) / CHARS_PER_TOKEN)
    # the skipped files are listed, not counted as sources ("3 sources" counted three skipped files)
    assert panel.summary.text().startswith("1 source (2 skipped)"), panel.summary.text()
    # counted by what reading found: a folder of records without "text" is no source and counts no tokens; a text
    # file too short for a token estimate is one ("0 sources (1 skipped)" for a 3-byte file)
    records = tmp_path / "records"
    records.mkdir()
    (records / "chat.jsonl").write_text('{"prompt": "Hello there", "completion": "General Kenobi"}\n' * 40)
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("Hi.")
    panel.add_paths([str(records), str(tiny)])
    assert panel.summary.text().startswith("2 sources (3 skipped)"), panel.summary.text()
    assert panel.estimated_tokens() == 2 * int(len(TEXT) / CHARS_PER_TOKEN)
    alone = CalibrationPanel()
    qtbot.addWidget(alone)
    alone.builtin.setChecked(True)
    alone.add_paths([str(records)])  # the built-in corpus stays ticked: the folder gives no text
    assert alone.builtin.isChecked() and alone.summary.text().startswith("0 sources (1 skipped) + built-in corpus")


def test_sizes_set_without_saying_whether_they_were_chosen_count_as_chosen(qtbot) -> None:
    """Quick's sizes given as such (not restored with their flag) stay Quick when a GPU appears."""
    panel = SettingsPanel()
    qtbot.addWidget(panel)
    quick = defaults.PRESETS["quick"]
    panel.set_values({"samples": quick.samples, "seq_len": quick.seq_len, "eval_windows": quick.eval_windows})
    panel.set_devices([*INITIAL_DEVICES, DeviceChoice("cuda:0", "GPU 0")])
    assert panel.values()["samples"] == quick.samples and panel.preset_box.currentData() == "quick"


def test_a_folder_is_refused_as_a_model_only_with_weights_and_as_text_only_with_text(qtbot, tmp_path) -> None:
    """A project folder with a config.json is text; a folder of nothing but binary files adds nothing."""
    panel = CalibrationPanel()
    qtbot.addWidget(panel)
    problems: list[str] = []
    panel.problem.connect(problems.append)
    project, photos = tmp_path / "project", tmp_path / "photos"
    for folder in (project, photos):
        folder.mkdir()
    (project / "config.json").write_text('{"name": "my project"}')
    (project / "notes.txt").write_text(TEXT)
    (photos / "a.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4)
    panel.add_paths([str(project), str(photos)])
    assert panel.paths() == [str(project)]
    assert problems == [f"The folder {photos} holds no text files (every file in it is binary, hidden or unreadable)."]
    # A folder of models this app saved: their cards and configs are text, left out as the job leaves them out
    # (it was said to hold only binary or unreadable files; the command line said why)
    outputs = tmp_path / "outputs"
    (outputs / "pruned").mkdir(parents=True)
    (outputs / "pruned" / "config.json").write_text('{"model_type": "llama"}')
    (outputs / "pruned" / "README.md").write_text("---\ntags:\n- shortgpt\n---\n" + TEXT)
    problems.clear()
    panel.add_paths([str(outputs)])
    assert panel.paths() == [str(project)]
    assert problems == [f"The folder {outputs} holds no text files ({(outputs / 'pruned').resolve()} holds a model "
                        "this app saved, not text)."], problems
    empty = tmp_path / "empty"
    (empty / "inner").mkdir(parents=True)  # no file, at any depth: "every file in it is binary" was said of it
    problems.clear()
    panel.add_paths([str(empty)])
    assert problems == [f"The folder {empty} is empty."]


def test_a_file_with_no_text_leaves_the_built_in_corpus_ticked(qtbot, tmp_path) -> None:
    """A binary file was the user's "first own source": it unticked the built-in corpus, the summary read
    "1 source · ≈ 0 tokens", and Score failed once pressed; the first text file still unticks it."""
    panel = CalibrationPanel()
    qtbot.addWidget(panel)
    panel.builtin.setChecked(True)
    blob = tmp_path / "blob.bin"
    blob.write_bytes(bytes(range(256)) * 16)
    panel.add_paths([str(blob)])
    assert panel.paths() == [str(blob)] and panel.builtin.isChecked()
    text = tmp_path / "notes.txt"
    text.write_text(TEXT)
    panel.add_paths([str(text)])
    assert not panel.builtin.isChecked()  # the user's first text: unticked, as ever
    # A folder of empty text files gives no text either; a JSON Lines file with one record without "text" does
    # (it was counted as no text: "—" tokens, and the built-in corpus stayed in)
    empties = tmp_path / "empties"
    empties.mkdir()
    for name in ("a.txt", "b.md"):
        (empties / name).write_text("")
    records = tmp_path / "data.jsonl"
    records.write_text("\n".join([json.dumps({"text": TEXT})] * 20 + ['{"id": 1}']))
    for path, gives_text in ((empties, False), (records, True)):
        fresh = CalibrationPanel()
        qtbot.addWidget(fresh)
        fresh.builtin.setChecked(True)
        fresh.add_paths([str(path)])
        assert fresh.paths() == [str(path)] and fresh.builtin.isChecked() != gives_text, path
        assert (fresh.list.topLevelItem(0).text(2) != "—") == gives_text, fresh.list.topLevelItem(0).text(2)


def test_a_size_typed_by_the_user_stays_when_a_gpu_appears(qtbot) -> None:
    panel = SettingsPanel()
    qtbot.addWidget(panel)
    panel.samples_box.setValue(7)
    panel.set_devices([*INITIAL_DEVICES, DeviceChoice("cuda:0", "GPU 0")])
    assert panel.values()["samples"] == 7 and panel.values()["sizes_chosen"] is True


def test_sizes_follow_the_device_until_chosen_and_a_gpu_not_found_is_dropped(qtbot) -> None:
    panel = SettingsPanel()
    qtbot.addWidget(panel)
    quick = defaults.PRESETS["quick"]
    panel.set_values({"samples": quick.samples, "seq_len": quick.seq_len, "eval_windows": quick.eval_windows,
                      "sizes_chosen": False})
    panel.set_devices([*INITIAL_DEVICES, DeviceChoice("cuda:0", "GPU 0")])
    assert panel.values()["samples"] == defaults.PRESETS["standard"].samples
    custom = SettingsPanel()
    qtbot.addWidget(custom)
    custom.set_values({"samples": 7, "seq_len": 48, "eval_windows": 3, "sizes_chosen": False})
    custom.set_devices([*INITIAL_DEVICES, DeviceChoice("cuda:0", "GPU 0")])
    assert (custom.values()["samples"], custom.values()["sizes_chosen"]) == (7, True)
    # A saved GPU is kept until the probe has run; then, not found, the job's device is the box's (Auto): it asked
    # for the missing cuda:0 and failed.
    gone = SettingsPanel()
    qtbot.addWidget(gone)
    gone.set_values({"device": "cuda:0"})
    assert gone.values()["device"] == "cuda:0"
    assert gone.set_devices(list(INITIAL_DEVICES), probed=True) == "cuda:0" and gone.values()["device"] == "auto"


def test_an_apple_gpu_chosen_by_name_gets_the_gpus_sizes(qtbot) -> None:
    panel = SettingsPanel()
    qtbot.addWidget(panel)
    panel.set_devices([*INITIAL_DEVICES, DeviceChoice("mps", "Apple GPU")])
    panel.set_values({"device": "cpu"})
    assert panel.values()["samples"] == defaults.PRESETS["quick"].samples
    panel.set_values({"device": "mps"})
    assert panel.device_is_gpu() and panel.values()["samples"] == defaults.PRESETS["standard"].samples


def _waiting(progress, cancel):
    end = time.monotonic() + 10
    while time.monotonic() < end:
        if cancel():
            raise Cancelled()
        time.sleep(0.01)
    return "timed out"


def test_cancel_stops_every_background_job(qtbot) -> None:
    """Closing the window cancels the device probe and a memory estimate alike; one left running made it wait."""
    runner = JobRunner(exclusive=False)
    outcomes: list[tuple[str, str]] = []
    runner.finished.connect(lambda name, outcome: outcomes.append((name, outcome)))
    runner.start("one", _waiting)
    runner.start("two", _waiting)
    runner.cancel()
    qtbot.waitUntil(lambda: len(outcomes) == 2, timeout=5000)
    assert sorted(outcomes) == [("one", "cancelled"), ("two", "cancelled")]
    single = JobRunner()
    finished, called = [], []
    single.finished.connect(lambda name, outcome: finished.append(outcome))
    single.start("one", _waiting, on_cancel=lambda: called.append(1))
    single.cancel()
    qtbot.waitUntil(lambda: bool(finished), timeout=5000)
    assert finished == ["cancelled"] and called == [1]


def test_the_chart_tells_unscored_kept_and_removed_layers_apart(qtbot) -> None:
    chart = ScoreChart()
    qtbot.addWidget(chart)
    chart.set_scores([1.0, None, 2.0], removed=[2])
    brushes = chart.bars.opts["brushes"]
    assert brushes[1] != brushes[0] and brushes[2] != brushes[0] and brushes[1] != brushes[2]
    assert chart.hover_text(2).startswith("Layer 2: removed, ") and chart.hover_text(0).startswith("Layer 0: kept, ")
    chart.set_options({"zoom": False})
    chart.set_scores([0.10, 0.11, 0.12, 0.10, 0.13, 0.11, 5.0])
    assert chart.plot.getPlotItem().vb.viewRange()[1][1] >= 5.0
    chart.set_options({"zoom": True})
    assert chart.plot.getPlotItem().vb.viewRange()[1][1] < 5.0


def _plan(**over) -> PrunePlan:
    values = dict(n_layers=6, removed=[2, 3], params_before=600, params_after=400, bytes_before=6000,
                  bytes_after=4000)
    return PrunePlan(**{**values, **over})


def test_the_plan_panel_fits_the_windows_right_pane_at_its_minimum_size(qtbot) -> None:
    """The count's line and "Save as" beside the size held the panel at 595 px, wider than the window's right pane
    at 860 × 600 (about 460): the count and the format box were cut off its edge, with no sideways scroll."""
    panel = PlanPanel()
    qtbot.addWidget(panel)
    panel.set_formats(["gguf", "safetensors"], "gguf")
    panel.set_maximum(5)
    panel.show_plan(_plan(n_layers=30, removed=[3, 4, 5], metric="bi+", bytes_before=98_000_000,
                          bytes_after=85_000_000, bytes_reencoded=1_900_000, chosen_later=True,
                          notes=["not yet checked: bi+ measures its choice"]))
    assert panel.minimumSizeHint().width() < 440, panel.minimumSizeHint()


def test_the_plan_panel_says_how_the_plan_was_made_and_what_it_weighs(qtbot) -> None:
    panel = PlanPanel()
    qtbot.addWidget(panel)
    assert not panel.format_box.isEnabled()  # empty before a model's formats are known, it looked ready to use
    panel.show_plan(_plan(notes=["not yet checked: bi+ measures its choice"]), manual=True)
    assert "chosen by hand" in panel.count_label.text()
    panel.show_plan(_plan(notes=["not yet checked: bi+ measures its choice"], chosen_later=True,
                          bytes_reencoded=100))
    assert "measured on Check or Save" in panel.count_label.text()
    assert "may remove others" in panel.layers_label.text() and panel.size_note.text().endswith("for the layers shown")
    panel.show_plan(_plan(notes=["not yet checked: bi+ measures its choice"], chosen_later=True), manual=True)
    assert "may remove others" not in panel.layers_label.text()  # by hand: the layers shown are the ones cut
    assert "more than half" not in panel.count_label.text()
    panel.show_plan(_plan(n_layers=6, removed=[1, 2, 3]))
    assert "more than half" not in panel.count_label.text()  # half is not more
    panel.show_plan(_plan(n_layers=6, removed=[1, 2, 3, 4]))  # the command line says it before the job; so here
    assert "<b>more than half</b>: a model rarely still answers" in panel.count_label.text()
    assert "removed</b>" not in panel.count_label.text()
    panel.show_plan(_plan(n_layers=6, removed=[0, 2]))  # plain BI's own plan did so without a word
    assert panel.count_label.text().endswith(" · <b>the first layer removed</b>: that usually breaks a model")
    # bi+'s measured choice of an end is said as measured, not as a hand's mistake; by hand it is warned of again
    panel.show_plan(_plan(n_layers=6, removed=[2, 5], measured=True))
    assert panel.count_label.text().endswith(" · <b>the last layer removed</b>: measured to cost least here, where it "
                                             "usually breaks a model")
    panel.show_plan(_plan(n_layers=6, removed=[2, 5], measured=True), manual=True)
    assert panel.count_label.text().endswith("removed</b>: that usually breaks a model")
    panel.show_plan(_plan(n_layers=6, removed=[0, 5]))
    assert "<b>the first and last layers removed</b>" in panel.count_label.text()
    panel.show_plan(_plan(removed=[]))
    assert panel.layers_label.text() == "none"
    panel.show_plan(_plan(reencoded_at_most=True, bytes_reencoded=100))
    assert "up to" in panel.size_label.text() and panel.size_note.text().startswith("of which up to")
    panel.show_plan(_plan())
    assert "→ ≈ <b>" in panel.size_label.text()  # an estimate: the file's header is not counted
    panel.show_plan(_plan(bytes_reencoded=1000))
    assert not panel.size_note.text().endswith("larger than the original")
    panel.show_plan(_plan(bytes_after=7000, bytes_reencoded=5000))  # a healed Q4 file: its weights at 8 bits
    assert panel.size_note.text().endswith("written at 8 bits or more: larger than the original")
    panel.set_formats(["gguf", "safetensors"], "safetensors")  # a GGUF saved as safetensors: not its size on disk
    panel.show_plan(_plan())
    assert " as safetensors → ≈ <b>" in panel.size_label.text()
    panel.set_formats(["gguf", "safetensors"], "gguf")
    panel.show_plan(_plan())
    assert " as " not in panel.size_label.text()
    panel.show_curve([(0, 10.0, 1.0), (1, 12.0, 0.9)], "bi+ repaired", 4, 512, quizzes={1: (3, 4)})
    assert "and the quiz" in panel.curve_note.text()
    # under 1,024 tokens the curve is rough, as the check and the card say
    assert "(512 tokens, few for a steady figure: " in panel.curve_note.toolTip()
    assert "more check windows (Advanced)" in panel.curve_note.toolTip()
    panel.show_curve([(0, 10.0, 1.0), (1, 12.0, 0.9)], "bi+ repaired", 2, 512, text_ran_out=True)
    assert "more calibration text gives" in panel.curve_note.toolTip()
    assert "check windows (Advanced)" not in panel.curve_note.toolTip()
    panel.show_curve([(0, 10.0, 1.0), (1, 12.0, 0.9)], "bi+ repaired", 8, 2048)
    assert "(2,048 tokens);" in panel.curve_note.toolTip()
    # the dashed line is named only where it can be seen: plain BI unrepaired as the recipe lies under the solid one
    panel.show_curve([(0, 10.0, 1.0), (1, 12.0, 0.9)], "bi + repair", 8, 2048, baseline=[(0, 10.0), (1, 15.0)])
    assert panel.curve_note.text().startswith("bi + repair (solid) and plain BI (dashed, no repair): ")
    panel.show_curve([(0, 10.0, 1.0), (1, 12.0, 0.9)], "bi", 8, 2048, baseline=[(0, 10.0), (1, 12.0)])
    assert panel.curve_note.text().startswith("bi (plain BI without the repair: the same line): ")
    panel.set_maximum(5)
    assert panel.curve_max.value() == 3 and panel.curve_max.maximum() == 5


def test_the_plan_panel_gives_the_share_removed_and_the_parameters_before_and_after(qtbot) -> None:
    panel = PlanPanel()
    qtbot.addWidget(panel)
    panel.show_plan(_plan(removed=[4], params_before=6_000_000, params_after=5_000_000))
    assert panel.count_label.text() == "<b>1</b> of 6 layers (17 %)"
    assert panel.params_label.text() == "6.0 M → <b>5.0 M</b> (−17 %)"
    assert panel.layers_label.text() == "4"


def test_the_curves_axes_are_labelled_at_round_values_and_at_most_twelve_counts() -> None:
    assert [label for _, label in perplexity_ticks([10.0, 50.0])] == ["10", "20", "50"]
    assert [label for _, label in count_ticks(list(range(13)))] == [str(k) for k in range(0, 13, 2)]


def test_the_download_bar_and_line_say_how_much_is_in(qtbot) -> None:
    panel = ModelPanel()
    qtbot.addWidget(panel)
    panel.show_download(250_000_000, 1_000_000_000)
    assert panel.download_bar.value() == 250 and panel.download_bar.maximum() == 1000
    assert panel.download_label.text() == "Downloading: 250.0 MB of 1.0 GB"


def test_the_wheel_over_a_box_without_the_focus_leaves_its_value(qtbot) -> None:
    """The wheel scrolls the settings: it must not change a box that passes under the pointer."""
    panel = SettingsPanel()
    qtbot.addWidget(panel)
    box = panel.samples_box
    before = box.value()
    wheel = QWheelEvent(QPointF(5, 5), QPointF(5, 5), QPoint(0, 0), QPoint(0, 120), Qt.MouseButton.NoButton,
                        Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(box, wheel)
    assert not box.hasFocus() and box.value() == before


def test_the_wheel_scrolling_the_plan_past_its_slider_leaves_the_plan(qtbot) -> None:
    """At 1024 × 600 after a Check the chart and plan scroll: a wheel turned as the pointer passed the slider moved the
    plan from 7 layers to 6 and marked the check's figures stale (a walkthrough). Clicked first, the wheel moves it."""
    panel = PlanPanel()
    qtbot.addWidget(panel)
    panel.show()
    panel.set_maximum(29)
    panel.set_count(7)
    panel.curve_max.setEnabled(True)

    def wheel(widget) -> None:
        QApplication.sendEvent(widget, QWheelEvent(
            QPointF(5, 5), QPointF(5, 5), QPoint(0, 0), QPoint(0, -120), Qt.MouseButton.NoButton,
            Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False))

    before = panel.curve_max.value()
    for widget in (panel.slider, panel.curve_max):
        wheel(widget)
    assert panel.count == 7 and panel.curve_max.value() == before
    panel.slider.setFocus()
    qtbot.waitUntil(panel.slider.hasFocus, timeout=3000)
    wheel(panel.slider)
    assert panel.count != 7  # focused, the wheel is the user's way to move it

def test_the_recent_models_keep_the_newest_twelve(qtbot) -> None:
    panel = ModelPanel()
    qtbot.addWidget(panel)
    panel.set_recent([f"org/model-{i}" for i in range(20)])
    assert panel.recent() == [f"org/model-{i}" for i in range(12)]


def test_the_recent_list_is_as_wide_as_its_longest_path_and_names_it_in_full_on_hover(qtbot) -> None:
    """The popup was the box's width: a path deep in a home folder showed without the model's own name."""
    panel = ModelPanel()
    qtbot.addWidget(panel)
    panel.resize(300, 200)
    deep = "/home/someone/" + "/".join(["models-kept-for-later"] * 4) + "/SmolLM2-135M-Instruct.Q4_1.gguf"
    panel.set_recent(["org/model", deep])
    view = panel.field.view()
    metrics = view.fontMetrics()
    room = panel.screen().availableGeometry().width() - 40
    assert view.minimumWidth() == min(metrics.horizontalAdvance(deep) + 40, room) > panel.field.width()
    assert view.textElideMode() == Qt.TextElideMode.ElideMiddle  # what is still cut keeps the file's name
    assert panel.field.itemData(1, Qt.ItemDataRole.ToolTipRole) == deep


def test_the_memory_tooltip_says_what_a_gpu_holds_and_what_ram_holds_while_loading(qtbot) -> None:
    panel = ModelPanel()
    qtbot.addWidget(panel)
    memory = SimpleNamespace(peak_bytes=3 * 10**9, batch_working_bytes=2 * 10**8, loading_bytes=5 * 10**8,
                             in_memory_ram_bytes=10**9, runtime_bytes=4 * 10**8, weights_bytes=2 * 10**9,
                             on_cpu=False)
    panel.set_memory(SimpleNamespace(memory=memory, device="cuda:0", dtype="bfloat16"))
    label = panel.values["memory"]
    assert label.text() == "3.0 GB on cuda:0, bfloat16"
    assert label.toolTip() == ("3.0 GB on cuda:0, bfloat16\nthe program 400.0 MB + weights 2.0 GB + working memory "
                               "200.0 MB on cuda:0, and in RAM while loading 1.0 GB")
    memory.on_cpu = True
    panel.set_memory(SimpleNamespace(memory=memory, device="cpu", dtype="float32"))
    # The parts add up to the figure shown (12.4 TB shown against 10.2 TB listed at 4,096 × 32,768 tokens)
    assert label.toolTip().endswith("the larger of working memory 200.0 MB (for the chosen batch size and sequence "
                                    "length) and what loading holds for a moment 500.0 MB + the samples' hidden "
                                    "states, the measured choice's caches, the repair and healing 100.0 MB")
    memory.loading_bytes = 0  # "what loading holds for a moment 0 B"
    panel.set_memory(SimpleNamespace(memory=memory, device="cpu", dtype="float32"))
    assert label.toolTip() == ("3.0 GB on cpu, float32\nthe program 400.0 MB + weights 2.0 GB + working memory "
                               "200.0 MB (for the chosen batch size and sequence length) + the samples' hidden states, "
                               "the measured choice's caches, the repair and healing 400.0 MB")
    # one layer at a time, that way's figure (it showed the whole model's, 2.0 GB where the job used 0.8 GB)
    memory.streamed_total = 6 * 10**8
    panel.set_memory(SimpleNamespace(memory=memory, device="cpu", dtype="float32"), streamed=True)
    assert label.text() == "1.0 GB on cpu, float32, one layer at a time"
    label.resize(label.fontMetrics().horizontalAdvance("1.0 GB on cpu, float32, one"), label.height())
    # cut mid-word with no mark ("…, one layer at a ti") on a narrow left column: elided, the parts still its tooltip
    assert label.shown_text().endswith("…") and label.toolTip().startswith(
        "1.0 GB on cpu, float32, one layer at a time\nthe program 400.0 MB + one layer at a time")
    assert label.toolTip().startswith("1.0 GB on cpu, float32, one layer at a time\nthe program 400.0 MB + one layer "
                                      "at a time 600.0 MB (")


def _checked(**over) -> Checked:
    values = dict(removed=[3, 4], ppl_before=10.0, ppl_after=12.5, eval_tokens=2048, prompt="Hi",
                  generation_before=" a", generation_after=" b", seconds=1.0)
    return Checked(**{**values, **over})


def test_the_before_after_panel_gives_the_checks_figures_and_calls_them_stale(qtbot) -> None:
    panel = ComparePanel()
    qtbot.addWidget(panel)
    panel.show_checked(_checked())
    assert "(× 1.25)" in panel.result.text()
    panel.show_checked(_checked(quiz=Quiz(answers=[])))
    assert "Quiz" not in panel.result.text()
    # asked, and the original knew none: said (it said nothing, as if no quiz had been asked; a walkthrough)
    from shortgpt_desktop.core.measure.quiz import QuizAnswer

    wrong = [QuizAnswer(f"q{i}", "no idea", "none", False, False) for i in range(3)]
    panel.show_checked(_checked(quiz=Quiz(answers=wrong)))
    assert " Quiz: the original answers none of the 3 questions of fact right, so it says nothing of this cut." \
        in panel.result.text()
    panel.set_prompt("")
    panel.show_checked(_checked(prompt="", chat_template=True))  # a chat model, asked nothing
    assert not panel.before.toPlainText() and "chat template" not in panel.result.text()
    assert panel.result.text().endswith(" No text was generated and no quiz asked: the prompt was empty.")
    panel.mark_stale()
    assert "pruned <b>" not in panel.result.text() and "changed since the last check" in panel.result.text()


def test_the_before_after_panel_says_what_a_check_one_layer_at_a_time_left_out_and_a_rough_figure(qtbot) -> None:
    """In low-memory mode the quiz was gone and the text cut to 8 tokens without a word; under 1,024 tokens the
    figure is rough, as the command line and the card say."""
    panel = ComparePanel()
    qtbot.addWidget(panel)
    panel.show_checked(_checked(streamed_tokens=8))
    assert panel.result.text().endswith(" One layer at a time, the check writes 8 tokens of the prompt and asks no "
                                        "quiz: each new token runs every layer again; run it in memory for the "
                                        "whole check.")
    assert "steady figure" not in panel.result.text()  # 2,048 tokens
    panel.show_checked(_checked(streamed_tokens=8, prompt="", eval_tokens=500))  # nothing written: nothing left out
    assert "One layer at a time" not in panel.result.text()
    assert "Perplexity on 500 held-out tokens (few for a steady figure: " in panel.result.text()
    assert "more check windows (Advanced) give a steadier one" in panel.result.text()
    # The calibration text gave fewer windows than asked: more windows would measure no more (it said they would)
    panel.show_checked(_checked(prompt="", eval_tokens=500, text_ran_out=True))
    assert "check windows" not in panel.result.text()
    assert "more calibration text gives a steadier one" in panel.result.text()


def test_the_curve_box_keeps_the_users_count_through_a_plan_dropped_for_a_while(qtbot) -> None:
    """A rescore that failed (a new dtype: the scores and the plan dropped, the slider's maximum 0) put the curve box
    back to half the layers when the next score came in; another model still starts at half its layers."""
    panel = PlanPanel()
    qtbot.addWidget(panel)
    panel.set_maximum(29)
    assert (panel.curve_max.maximum(), panel.curve_max.value()) == (29, 15)
    panel.curve_max.setValue(4)
    panel.set_maximum(0)
    panel.set_maximum(29)
    assert panel.curve_max.value() == 4
    panel.set_maximum(17)
    assert (panel.curve_max.maximum(), panel.curve_max.value()) == (17, 9)
    panel.curve_max.setValue(4)
    panel.forget_curve_range()  # another model opened: not the last one's count, greyed, until it is scored
    assert panel.curve_max.text() == "to —"
    panel.set_maximum(17)  # a model of as many layers starts at half its layers too
    assert (panel.curve_max.maximum(), panel.curve_max.value(), panel.curve_max.text()) == (17, 9, "to 9")


def test_a_question_defaults_to_no_and_only_yes_answers_yes(qtbot, monkeypatch) -> None:
    """Enter on "Replace folder?" must not replace it."""
    from PySide6.QtWidgets import QMessageBox

    from shortgpt_desktop.gui import dialogs

    asked: list[tuple] = []
    answer = QMessageBox.StandardButton.Yes
    monkeypatch.setattr(QMessageBox, "question", lambda *args: asked.append(args) or answer)
    assert dialogs.ask_yes_no(None, "Replace folder?", "Replace it?") is True
    assert asked[0][-1] == QMessageBox.StandardButton.No
    answer = QMessageBox.StandardButton.No
    assert dialogs.ask_yes_no(None, "Replace folder?", "Replace it?") is False


def test_only_a_folder_with_something_in_it_is_asked_about_before_saving(tmp_path) -> None:
    from shortgpt_desktop.gui.dialogs import folder_is_nonempty

    assert not folder_is_nonempty(str(tmp_path / "new"))
    assert not folder_is_nonempty(str(tmp_path))
    (tmp_path / "config.json").write_text("{}")
    assert folder_is_nonempty(str(tmp_path))


def test_the_devices_offered_are_auto_each_gpu_by_name_apple_and_the_cpu_last(monkeypatch) -> None:
    import sys

    from shortgpt_desktop.gui import system

    gpus = [SimpleNamespace(name="RTX 4090", total_memory=24 * 10**9), SimpleNamespace(name="A100", total_memory=8e10)]
    torch = SimpleNamespace(
        cuda=SimpleNamespace(is_available=lambda: True, device_count=lambda: 2, current_device=lambda: 0,
                             get_device_properties=gpus.__getitem__, memory_allocated=lambda i: [5, 7][i]),
        backends=SimpleNamespace(mps=SimpleNamespace(is_available=lambda: True)))
    monkeypatch.setitem(sys.modules, "torch", torch)
    assert system.probe_devices() == [
        DeviceChoice("auto", "Auto (best available)"), DeviceChoice("cuda:0", "GPU 0: RTX 4090 (24.0 GB)"),
        DeviceChoice("cuda:1", "GPU 1: A100 (80.0 GB)"), DeviceChoice("mps", "Apple GPU (MPS)"),
        DeviceChoice("cpu", "CPU")]
    # The status bar's GPU memory: the device's own, and none for a device that is not CUDA or no model at all.
    assert system.gpu_memory("cuda:1") == (7, 8 * 10**10)
    assert system.gpu_memory("cuda") == (5, 24 * 10**9)
    assert system.gpu_memory("mps") is None and system.gpu_memory("") is None


def test_the_log_shortens_a_long_error_keeps_a_long_warning_and_stops_listening_when_detached(qtbot) -> None:
    import logging

    from shortgpt_desktop.gui.log_panel import LogPanel

    panel = LogPanel()
    qtbot.addWidget(panel)
    lines = [f"line {i}" for i in range(20)]
    panel.append("\n".join(lines), logging.ERROR)
    assert panel.view.toPlainText().splitlines() == [*lines[:3], "  …", *lines[-6:]]
    panel.view.clear()
    panel.append("\n".join(lines), logging.WARNING)
    assert panel.view.toPlainText().splitlines() == lines
    logger = logging.getLogger("shortgpt_desktop.test_log_panel")
    panel.attach(logger.name)
    # A dialog's sentence in the same columns as the records around it (it had the time alone)
    panel.view.clear()
    logger.warning("a record")
    panel.note("Cannot save: a sentence.")
    record, note = panel.view.toPlainText().splitlines()
    assert record[8:] == "  WARNING shortgpt_desktop.test_log_panel: a record"
    assert note[8:] == "  ERROR   shortgpt_desktop.gui: Cannot save: a sentence.", note
    panel.detach()
    assert panel.handler not in logger.handlers


def test_a_label_of_three_lines_shows_the_first_two_whole_and_follows_its_width(qtbot) -> None:
    from shortgpt_desktop.gui.elided_label import ElidedLabel

    label = ElidedLabel(max_lines=3)
    qtbot.addWidget(label)
    label.resize(120, 100)
    label.show()
    words = " ".join(f"word{i}" for i in range(60))
    label.setText(words)
    shown = label.shown_text().split("\n")
    assert len(shown) == 3 and shown[2].endswith("…") and label.toolTip() == words
    assert words.startswith(" ".join(shown[:2]) + " ")
    label.resize(8000, 100)
    qtbot.waitUntil(lambda: label.shown_text() == words, timeout=2000)
    assert label.toolTip() == ""


def test_the_list_does_not_count_a_file_this_run_writes_its_output_to(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The window's calibration list counted the file (its size, its tokens, "2 text files") that the job skips."""
    (tmp_path / "a.txt").write_text("The quick brown fox jumps over the lazy dog. " * 40)
    log_file = tmp_path / "err.txt"
    log_file.write_text("a line of the log\n" * 40)
    with open(log_file, "a") as stream:
        monkeypatch.setattr(calibration, "OUTPUT_STREAMS", ((stream.fileno(), "standard error"),))
        size, files, _ = describe_path(str(tmp_path))
        assert (size, files) == ((tmp_path / "a.txt").stat().st_size, 1)
        assert binary_files(tmp_path) == [f"Skipped {log_file.resolve()}: this run writes its standard error to it."]



def test_a_folders_count_of_text_files_leaves_out_those_it_says_it_skips(qtbot, tmp_path: Path) -> None:
    """"mixed/ (4 text files)" beside a tooltip saying two of them were skipped (an empty file, a JSON that is not
    a list of strings; a window walkthrough): the count is of the files that give text."""
    panel = CalibrationPanel()
    qtbot.addWidget(panel)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "ok.txt").write_text(TEXT)
    (mixed / "empty.txt").write_text("")
    (mixed / "dict.json").write_text('{"a": 1}')
    (mixed / "bad.jsonl").write_text('{"text": "one record"}\nnot json\n')
    panel.add_paths([str(mixed)])
    item = panel.list.topLevelItem(0)
    assert item.text(0) == "mixed/  (2 text files)"
    assert len([s for s in panel.skipped() if "empty.txt" in s or "dict.json" in s or "bad.jsonl" in s]) == 3
    # ... and so are its size and tokens: a folder of JSON reports and a 3-byte note read "≈ 3.2 k tokens", then
    # Score said the text was too short (3 bytes)
    reports = tmp_path / "reports"
    reports.mkdir()
    for i in range(4):
        (reports / f"report{i}.json").write_text('{"scores": [' + ", ".join(["0.123456"] * 500) + "]}")
    (reports / "notes.txt").write_text("ok\n")
    panel.add_paths([str(reports)])
    item = panel.list.topLevelItem(1)
    assert item.text(0) == "reports/  (1 text file)"
    assert item.text(1) == "3 B" and item.data(2, Qt.ItemDataRole.UserRole) == 0, (item.text(1), item.text(2))


def test_the_advanced_tab_names_what_on_it_changes_a_jobs_work(qtbot) -> None:
    """Heal steps 2 came back with the settings on the Advanced tab, not shown, and the next Check healed with only
    its time estimate saying so."""
    panel = SettingsPanel()
    qtbot.addWidget(panel)
    assert panel.tabs.tabText(1) == "Advanced"
    panel.set_values({"heal_steps": 2})  # as restored: no signal
    assert panel.tabs.tabText(1) == "Advanced (heal 2)"
    panel.low_memory_box.setChecked(True)
    panel.refit_box.setChecked(True)
    assert panel.tabs.tabText(1) == "Advanced (heal 2, refit, low memory)"
    panel.repair_box.setChecked(False)  # no refit without the repair
    panel.heal_box.setValue(0)
    assert panel.tabs.tabText(1) == "Advanced (low memory)"


def test_the_low_memory_tooltip_says_what_the_check_generates_that_way(qtbot) -> None:
    """It said "no generated text in this mode", while the check writes a few tokens of its prompt per model."""
    from shortgpt_desktop.core.backends.base import Streamed

    panel = SettingsPanel()
    qtbot.addWidget(panel)
    tip = panel.low_memory_box.toolTip()
    assert "no generated text" not in tip
    assert f"the check writes only {Streamed.MAX_NEW_TOKENS} tokens of its prompt per model and asks no quiz" in tip


def test_the_removed_layers_line_keeps_its_height_from_one_line_to_two(qtbot) -> None:
    """The removed layers' text going from one line to two as the slider moved changed the plan's height, which moved
    the slider 34 px under the pointer; the next press missed its handle (a window walkthrough)."""
    from PySide6.QtCore import QRect

    from shortgpt_desktop.gui.plan_panel import PlanPanel

    panel = PlanPanel()
    qtbot.addWidget(panel)
    panel.resize(420, panel.sizeHint().height())
    panel.show()
    qtbot.waitExposed(panel)
    label = panel.layers_label
    width, metrics = label.width(), label.fontMetrics()

    def lines(text: str) -> int:
        wrapped = metrics.boundingRect(QRect(0, 0, width, 10_000), Qt.TextFlag.TextWordWrap, text)
        return round(wrapped.height() / metrics.lineSpacing())

    layers = 1
    while lines(", ".join(str(i) for i in range(layers))) < 2:
        layers += 1
    heights = []
    for text in ("3", ", ".join(str(i) for i in range(layers))):
        label.setText(text)
        heights.append(label.heightForWidth(width))
    assert heights[0] == heights[1], heights


def test_a_format_greyed_out_while_chosen_gives_way_and_comes_back_when_offered_again(qtbot) -> None:
    """Low memory ticked with safetensors chosen for a GGUF model: the greyed-out format stayed chosen, its size under
    the plan, and Save was refused at the click."""
    panel = PlanPanel()
    qtbot.addWidget(panel)
    panel.set_formats(["gguf", "safetensors"], "safetensors")
    chosen: list[str] = []
    panel.formatChanged.connect(chosen.append)
    assert panel.refuse_format("safetensors", "Not one layer at a time.") is True
    assert panel.output_format == "gguf" and chosen == ["gguf"]
    assert panel.refuse_format("safetensors", "Not one layer at a time.") is False  # said once
    assert panel.refuse_format("safetensors", "") is True and panel.output_format == "safetensors"
    assert chosen == ["gguf", "safetensors"]
    # while a job runs its format stays (the box is greyed then too)
    assert panel.refuse_format("safetensors", "Not one layer at a time.", switch=False) is False
    assert panel.output_format == "safetensors"
    panel.set_formats(["gguf", "safetensors"], "gguf")  # chosen by hand while greyed: not brought back later
    panel.refuse_format("safetensors", "Not one layer at a time.")
    assert panel.refuse_format("safetensors", "") is False and panel.output_format == "gguf"


def _focused_box_with_recent_entries(qtbot) -> tuple[ModelPanel, list[str]]:
    """A Model box shown with two recent entries and the focus (Qt completes only in a box that has it), and the
    list the models it chooses go to."""
    panel = ModelPanel()
    qtbot.addWidget(panel)
    panel.set_recent(["/models/g1-st", "Qwen/Qwen2.5-0.5B-Instruct"])
    panel.field.setEditText("")
    chosen: list[str] = []
    panel.modelChosen.connect(chosen.append)
    panel.show()
    panel.activateWindow()
    panel.field.setFocus()
    qtbot.waitUntil(panel.field.hasFocus)
    return panel, chosen


@pytest.mark.parametrize("typed", ["/models/g1", "Qwen/Qwen2.5-0.5B", "qwen/qwen2.5-0.5b-instruct-x"])
def test_enter_opens_what_was_typed_not_a_recent_entry_it_begins(qtbot, typed: str) -> None:
    """Qt's inline completion filled in the rest of the first recent entry the typed text began (in any case) and
    Enter opened that entry: a typed path to g1 opened the g1-st beside it (a walkthrough)."""
    panel, chosen = _focused_box_with_recent_entries(qtbot)
    qtbot.keyClicks(panel.field, typed)
    qtbot.keyClick(panel.field, Qt.Key.Key_Return)
    assert chosen == [typed] and panel.field.currentText() == typed


@pytest.mark.skipif(os.name == "nt", reason="Windows names files in UTF-16: no name is other bytes there")
def test_a_dropped_file_whose_name_is_not_utf8_is_said_so(qtbot, tmp_path: Path) -> None:
    """A file manager sends ``caf%E9.txt`` for a Latin-1 name: Qt decodes it with U+FFFD, and the dropped file "does
    not exist" was said of a file the user could see (a walkthrough). Said for what it is; its folder is taken."""
    from PySide6.QtCore import QMimeData
    from PySide6.QtGui import QDropEvent

    folder = tmp_path / "latin1"
    folder.mkdir()
    raw = os.fsencode(folder) + b"/caf\xe9.txt"
    with open(raw, "w", encoding="utf-8") as stream:
        stream.write(TEXT)
    panel = CalibrationPanel()
    qtbot.addWidget(panel)
    said: list[str] = []
    panel.problem.connect(said.append)
    mime = QMimeData()
    mime.setData("text/uri-list", b"file://" + urllib.parse.quote_from_bytes(raw).encode() + b"\r\n")
    panel.list.dropEvent(QDropEvent(QPointF(5, 5), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                                    Qt.KeyboardModifier.NoModifier))
    assert panel.paths() == []
    assert len(said) == 1 and said[0].endswith(": its name is not UTF-8, which the window cannot keep; rename the "
                                               "file, or add the folder that holds it."), said
    panel.add_paths([str(folder)])
    assert panel.paths() == [str(folder)]
    # a link that is there, its name written with U+FFFD itself, is said as the dangling link it is
    link = tmp_path / "notes\ufffd.txt"
    link.symlink_to(tmp_path / "gone.txt")
    said.clear()
    panel.add_paths([str(link)])
    assert said == [f"{link} is a link to {tmp_path / 'gone.txt'}, which does not exist."], said


def test_a_recent_entry_picked_from_the_list_under_the_box_opens_once(qtbot) -> None:
    """Down and Enter in the list of recent entries under the box came as Enter in the box and as the entry's
    activation: the model was chosen twice, and "Open …?" came back after its No (a review)."""
    panel, chosen = _focused_box_with_recent_entries(qtbot)
    qtbot.keyClicks(panel.field, "/models/g")
    popup = panel.field.completer().popup()
    qtbot.waitUntil(popup.isVisible)
    qtbot.keyClick(popup, Qt.Key.Key_Down)
    qtbot.keyClick(popup, Qt.Key.Key_Return)
    assert chosen == ["/models/g1-st"]
    qtbot.wait(10)  # a later choice of the same model is a choice again (Enter to reopen it says it is open)
    qtbot.keyClick(panel.field, Qt.Key.Key_Return)
    assert chosen == ["/models/g1-st", "/models/g1-st"]


@pytest.mark.skipif(os.name == "nt", reason="Windows names files in UTF-16: no name is other bytes there")
def test_a_dropped_model_whose_name_is_not_utf8_is_said_so(qtbot, tmp_path: Path) -> None:
    """A .gguf named in Latin-1 reaches the Model box as ``mod\ufffdle.gguf``: the drag was refused and the drop
    ignored without a word. It is said for what it is, and nothing is opened."""
    from PySide6.QtCore import QMimeData
    from PySide6.QtGui import QDragEnterEvent, QDropEvent

    raw = os.fsencode(tmp_path) + b"/mod\xe8le.gguf"
    with open(raw, "wb") as stream:
        stream.write(b"GGUF")
    panel = ModelPanel()
    qtbot.addWidget(panel)
    said: list[str] = []
    chosen: list[str] = []
    panel.problem.connect(said.append)
    panel.modelChosen.connect(chosen.append)
    mime = QMimeData()
    mime.setData("text/uri-list", b"file://" + urllib.parse.quote_from_bytes(raw).encode() + b"\r\n")
    enter = QDragEnterEvent(QPoint(5, 5), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                            Qt.KeyboardModifier.NoModifier)
    panel.dragEnterEvent(enter)
    assert enter.isAccepted()
    panel.dropEvent(QDropEvent(QPointF(5, 5), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                               Qt.KeyboardModifier.NoModifier))
    assert chosen == []
    assert len(said) == 1 and said[0].endswith("le.gguf: its name is not UTF-8, which the window cannot keep; rename "
                                               "it, then drop or open it again."), said
    picture = os.fsencode(tmp_path) + b"/caf\xe9.png"  # not a model, whatever its name: no drop, no word
    with open(picture, "wb") as stream:
        stream.write(b"\x89PNG")
    mime.setData("text/uri-list", b"file://" + urllib.parse.quote_from_bytes(picture).encode() + b"\r\n")
    enter = QDragEnterEvent(QPoint(5, 5), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                            Qt.KeyboardModifier.NoModifier)
    panel.dragEnterEvent(enter)
    assert not enter.isAccepted() and len(said) == 1


def test_the_checks_texts_are_marked_as_the_earlier_prompts_once_it_is_edited(qtbot) -> None:
    """The two answers stayed under an edited prompt, unmarked: they read as its answers (a walkthrough)."""
    panel = ComparePanel()
    qtbot.addWidget(panel)
    panel.set_prompt("Hi")
    panel.show_checked(_checked(prompt="Hi"))
    assert "earlier prompt" not in panel.result.text()
    qtbot.keyClicks(panel.prompt, " there")
    assert panel.result.text().endswith(" <b>The texts below answer the earlier prompt</b> “Hi”; press <b>Check "
                                        "perplexity</b> for the new one.")
    assert panel.before.toPlainText() and "pruned <b>12.50</b>" in panel.result.text()  # the figures stand
    panel.set_prompt("Hi")
    assert "earlier prompt" not in panel.result.text()
    panel.after.verticalScrollBar().setValue(panel.after.verticalScrollBar().maximum())
    scrolled = panel.after.verticalScrollBar().value()
    qtbot.keyClicks(panel.prompt, "!!")  # each keystroke drew the texts again, back at their top
    assert panel.after.verticalScrollBar().value() == scrolled and "earlier prompt" in panel.result.text()
    long = "Tell me, in many words and at length, everything there is to know about the capital of France. " * 3
    panel.set_prompt(long)
    panel.show_checked(_checked(prompt=long))
    panel.set_prompt("Hi")  # the earlier prompt quoted in a line, not whole
    assert f"“{long[:79]}…”" in panel.result.text()
    panel.show_checked(_checked(prompt="Hi"))
    panel.set_prompt("   ")  # blank: the check would generate nothing, as a check with an empty prompt
    assert "earlier prompt" in panel.result.text()
    panel.show_checked(_checked(prompt=""))
    assert "edited since" not in panel.result.text()
    panel.set_prompt("Tell me")
    assert "<b>The prompt has been edited since</b>; press <b>Check perplexity</b> for the new one." in \
        panel.result.text()


def test_the_charts_options_come_before_its_bars_in_the_tab_order(qtbot) -> None:
    """Zoom past outliers and Other metrics stand above the bars, and came after them on Tab (a walkthrough)."""
    from shortgpt_desktop.gui.chart import ScoreChart

    chart = ScoreChart()
    qtbot.addWidget(chart)
    assert chart.zoom_box.nextInFocusChain() is chart.others_box
    assert chart.others_box.nextInFocusChain() is chart.plot


def test_the_folder_dialog_starts_in_the_open_ggufs_folder(qtbot, tmp_path: Path, monkeypatch) -> None:
    """With a .gguf open, Choose a model folder had the file's name in its box, and Enter took a file for a folder."""
    from PySide6.QtWidgets import QFileDialog

    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    panel = ModelPanel()
    qtbot.addWidget(panel)
    panel.set_text(str(gguf))
    started: list[str] = []
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda parent, title, start: started.append(start) or "")
    panel.browse_folder()
    assert started == [str(tmp_path)]
