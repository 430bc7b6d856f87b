"""The quality curve's points as files: CSV and JSON written whole or not at all, and read back as written."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from shortgpt_desktop.core.measure.sweep import CurvePoint, QualityCurve


def _curve() -> QualityCurve:
    """A curve as the engine builds one: nested counts with each point's fidelity, plain BI's beside it."""
    points = [CurvePoint(0, None, [], 31.5, math.log(31.5), 138, 1.0, 0.0),
              CurvePoint(1, 3, [3], 33.25, math.log(33.25), 138, 0.91, 0.042, 3, 4),
              CurvePoint(2, 1, [1, 3], 40.125, math.log(40.125), 138, 0.8, 0.17, 2, 4,
                         ["layer 1 not repaired: no plain MLP output projection to refit"])]
    baseline = QualityCurve("bi", [3, 1], [CurvePoint(0, None, [], 31.5, math.log(31.5), 138, 1.0, 0.0),
                                           CurvePoint(1, 3, [3], 33.25, math.log(33.25), 138, 0.91, 0.042),
                                           CurvePoint(2, 5, [3, 5], 52.0, math.log(52.0), 138, 0.7, 0.3)])
    return QualityCurve("bi+ + repair", [3, 1], points, windows=6, tokens=138, baseline=baseline, model="m",
                        calibration=["calib.txt"], samples=8, seq_len=24)


def read_curve_csv(path: Path) -> list[CurvePoint]:
    """The points of a written CSV, read as a user's script would read them."""
    def number(cell: str, kind: type) -> object:
        return kind(cell) if cell else None

    with open(path, newline="", encoding="utf-8") as stream:
        return [CurvePoint(int(row["k"]), number(row["layer"], int), [int(x) for x in row["removed"].split()],
                           float(row["perplexity"]), float(row["nll"]), int(row["tokens"]),
                           number(row["same_top"], float), number(row["mean_kl"], float),
                           number(row["quiz_kept"], int), number(row["quiz_known"], int),
                           [note for note in row["not_repaired"].split("; ") if note])
                for row in csv.DictReader(stream)]


def test_csv_and_json_round_trip(tmp_path: Path) -> None:
    curve = _curve()
    assert read_curve_csv(curve.write_csv(tmp_path / "curve.csv")) == curve.points
    with open(tmp_path / "curve.csv", newline="", encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    assert [row["baseline_removed"] for row in rows] == ["", "3", "3 5"]
    assert [row["baseline_perplexity"] for row in rows] == ["31.5", "33.25", "52.0"]
    assert [row["baseline_same_top"] for row in rows] == ["1.0", "0.91", "0.7"]
    assert [row["baseline_mean_kl"] for row in rows] == ["0.0", "0.042", "0.3"]
    data = json.loads(curve.write_json(tmp_path / "curve.json").read_text(encoding="utf-8"))
    assert QualityCurve.from_json(data) == curve
    assert QualityCurve.from_json(json.loads(json.dumps(curve.to_json()))) == curve
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curve.csv", "curve.json"], "no temporary files left"


def test_an_unwritable_curve_path_is_a_sentence_and_leaves_nothing(tmp_path: Path) -> None:
    """``sweep --json/--csv`` to a folder, below a file or on a full disk: an OutputError, no temporary file."""
    from shortgpt_desktop.core.errors import OutputError
    from shortgpt_desktop.core.measure import sweep

    curve = _curve()
    (tmp_path / "a-folder").mkdir()
    (tmp_path / "a-file").write_text("notes")
    for target in (tmp_path / "a-folder", tmp_path / "a-file" / "curve.csv"):
        with pytest.raises(OutputError, match=r"^Cannot write .*\.$"):
            curve.write_csv(target)
        with pytest.raises(OutputError, match=r"^Cannot write .*\.$"):
            curve.write_json(target)

    def disk_full(stream: object) -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(OutputError, match="no space left on device"):
        sweep._write_atomically(tmp_path / "curve.csv", disk_full)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "a-folder"], "no temporary files left"


def test_a_curve_without_a_baseline_has_no_baseline_columns_and_round_trips(tmp_path: Path) -> None:
    from shortgpt_desktop.core.formats.report_files import CSV_FIELDS

    curve = QualityCurve("bi", [3, 1], _curve().points)
    with open(curve.write_csv(tmp_path / "curve.csv"), newline="", encoding="utf-8") as stream:
        assert tuple(next(csv.reader(stream))) == CSV_FIELDS
    assert read_curve_csv(tmp_path / "curve.csv") == curve.points
    assert QualityCurve.from_json(json.loads(json.dumps(curve.to_json()))) == curve


def test_the_unpruned_point_agrees_with_the_original_on_every_token() -> None:
    """The point k = 0 is the original itself: no fidelity is measured, and it is the whole of it."""
    from types import SimpleNamespace

    from shortgpt_desktop.core.measure.sweep import curve_point

    result = SimpleNamespace(perplexity=31.5, nll=math.log(31.5), tokens=138)
    assert curve_point(0, None, [], result, None) == CurvePoint(0, None, [], 31.5, math.log(31.5), 138, 1.0, 0.0)
    pruned = curve_point(2, 1, [1, 3], result, SimpleNamespace(same_top=0.8, mean_kl=0.17))
    assert (pruned.removed, pruned.same_top, pruned.mean_kl) == ([1, 3], 0.8, 0.17)
