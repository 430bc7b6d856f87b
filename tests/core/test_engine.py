"""The engine's quality curve is the recipe Save uses: its point at a count is what Check gives for it."""

from __future__ import annotations

from pathlib import Path

import pytest

from shortgpt_desktop.core.engine import Engine
from shortgpt_desktop.core.pipeline import JobSpec


def test_the_quality_curve_point_at_a_count_is_the_check_at_that_count(tiny_model: Path, small_calib: Path) -> None:
    spec = JobSpec(model=str(tiny_model), calib=[str(small_calib)], samples=8, seq_len=32, eval_windows=4,
                   batch_size=4, device="cpu", dtype="float32", prompt="")
    engine = Engine()
    engine.score(spec)
    curve = engine.quality_curve(spec, max_removed=3)
    assert [p.k for p in curve.points] == [0, 1, 2, 3]
    assert curve.label == "bi+ + repair"
    assert curve.baseline is not None and [p.k for p in curve.baseline.points] == [0, 1, 2, 3]
    assert curve.points[0].perplexity == curve.baseline.points[0].perplexity
    assert curve.points[0].same_top == 1.0
    for k in (2, 3):
        plan = engine.prepare(spec, engine.plan(count=k))
        checked = engine.check(spec, plan.removed)
        point = curve.points[k]
        assert point.removed == plan.removed
        assert point.perplexity == pytest.approx(checked.ppl_after, rel=1e-9)
        assert point.same_top == pytest.approx(checked.fidelity.same_top, rel=1e-9)
        assert checked.ppl_before == pytest.approx(curve.points[0].perplexity, rel=1e-9)
    # Plain BI is plain removal in BI order, measured on the same windows.
    bi = engine.stats.bi
    order = sorted(range(len(bi)), key=lambda i: (bi[i], -i))
    assert curve.baseline.points[1].removed == [order[0]]


def test_the_rest_of_a_job_is_estimated_from_the_scoring_speed(tiny_model: Path, small_calib: Path) -> None:
    spec = JobSpec(model=str(tiny_model), calib=[str(small_calib)], samples=8, seq_len=32, eval_windows=4,
                   batch_size=4, device="cpu", dtype="float32", prompt="")
    engine = Engine()
    assert engine.job_estimate(spec, 2, check=True) is None  # nothing measured yet
    engine.score(spec)
    estimate = engine.job_estimate(spec, 2, check=True)
    assert list(estimate.steps) == ["choosing", "repairing", "checking"] and estimate.total > 0
    assert "checking" not in engine.job_estimate(spec, 2, check=False).steps
    engine.prepare(spec, engine.plan(count=2))
    assert list(engine.job_estimate(spec, 2, check=True).steps) == ["checking"]  # chosen and repaired already
