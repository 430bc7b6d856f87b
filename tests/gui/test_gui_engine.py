"""One engine under both faces: the command line's job and the window's clicks give the same report."""

from __future__ import annotations

from pathlib import Path

import pytest

from shortgpt_desktop.core.engine import Engine, JobSpec
from shortgpt_desktop.jobs import run_prune

SIZES = {"samples": 8, "seq_len": 32, "eval_windows": 4, "batch_size": 4, "metric": "bi+"}
PROMPT = "The history of"


def test_cli_path_and_window_path_give_the_same_report(qtbot, opened, gui_model: Path, calib_text: Path,
                                                        tmp_path: Path) -> None:
    spec = JobSpec(model=str(gui_model), calib=[str(calib_text)], count=2, out=str(tmp_path / "cli"),
                   prompt=PROMPT, device="cpu", dtype="float32", **SIZES)
    from_cli = run_prune(Engine(), spec)

    window = opened
    window.settings_panel.set_values(SIZES)
    window.compare_panel.prompt.setText(PROMPT)
    with qtbot.waitSignal(window.jobFinished, timeout=60_000):
        window.start_scoring()
    window.plan_panel.set_count(2, emit=True)
    with qtbot.waitSignal(window.jobFinished, timeout=60_000) as checked:
        window.check()
    assert checked.args == ["check", "ok"]
    with qtbot.waitSignal(window.jobFinished, timeout=60_000) as saved:
        window.save_to(tmp_path / "window")
    assert saved.args == ["save", "ok"]
    from_window = window.engine.report(window.plan)

    assert from_window.removed_layers == from_cli.removed_layers and len(from_cli.removed_layers) == 2
    assert from_window.selection == from_cli.selection and from_cli.selection  # bi+ measured its choice in both
    assert from_window.repair == from_cli.repair == "linear"
    assert from_window.repair_runs == from_cli.repair_runs
    assert from_window.scores == pytest.approx(from_cli.scores, abs=1e-12)
    assert from_window.other_scores.keys() == from_cli.other_scores.keys()
    assert from_window.ppl_before == pytest.approx(from_cli.ppl_before, rel=1e-9)
    assert from_window.ppl_after == pytest.approx(from_cli.ppl_after, rel=1e-9)
    assert from_window.eval_tokens == from_cli.eval_tokens > 0
    assert from_window.generation_after == from_cli.generation_after
    assert from_window.calibration == from_cli.calibration
    assert (from_window.params_before, from_window.params_after) == (from_cli.params_before, from_cli.params_after)
    card_cli = (tmp_path / "cli" / "README.md").read_text(encoding="utf-8")
    card_window = (tmp_path / "window" / "README.md").read_text(encoding="utf-8")
    assert card_cli == card_window
