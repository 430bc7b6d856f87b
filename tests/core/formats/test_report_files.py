"""An earlier report of this tool is known again by the fields its writers write (the command line replaces only
such a file): each file kind, written by its real writer, is recognised as itself, and other files are not."""

from __future__ import annotations

from pathlib import Path

from shortgpt_desktop.core.formats.report_files import (
    CURVE,
    CURVE_CSV,
    EVAL_REPORT,
    SAVED_REPORT,
    SCORE_REPORT,
    earlier_report,
)
from shortgpt_desktop.core.measure.sweep import CurvePoint, QualityCurve
from shortgpt_desktop.core.report import Report


def test_each_file_a_job_writes_is_known_as_its_own_kind(tmp_path: Path) -> None:
    report = Report(model="m", n_layers=4, removed_layers=[1], metric="")
    report.write_json(tmp_path / "eval.json")  # eval scores nothing: no metric
    report.metric, report.ppl_before = "bi", 12.5
    report.write_json(tmp_path / "old-eval.json")  # eval named a metric before it left it empty
    report.metric, report.ppl_before = "bi+", None
    report.write_json(tmp_path / "score.json")
    report.output = str(tmp_path / "pruned")
    report.write_json(tmp_path / "prune.json")
    curve = QualityCurve(label="bi", order=[1])
    curve.points.append(CurvePoint(k=0, layer=None, removed=[], perplexity=9.0, nll=2.2, tokens=10))
    curve.write_json(tmp_path / "curve.json")
    curve.write_csv(tmp_path / "curve.csv")
    assert earlier_report(tmp_path / "eval.json") == earlier_report(tmp_path / "old-eval.json") == EVAL_REPORT
    assert earlier_report(tmp_path / "score.json") == SCORE_REPORT
    assert earlier_report(tmp_path / "prune.json") == SAVED_REPORT
    assert earlier_report(tmp_path / "curve.json") == CURVE
    assert earlier_report(tmp_path / "curve.csv") == CURVE_CSV


def test_other_files_are_not_reports(tmp_path: Path) -> None:
    (tmp_path / "empty.json").write_text("  \n")
    (tmp_path / "notes.txt").write_text("k,layer,removed\nmy own table, not a curve\n")
    (tmp_path / "config.json").write_text('{"model_type": "llama", "num_hidden_layers": 4}')
    (tmp_path / "list.json").write_text('["model", "n_layers", "removed_layers"]')
    assert earlier_report(tmp_path / "empty.json") == ""  # nothing to lose
    assert earlier_report(tmp_path / "notes.txt") is None
    assert earlier_report(tmp_path / "config.json") is None
    assert earlier_report(tmp_path / "list.json") is None
    assert earlier_report(tmp_path / "missing.json") is None
