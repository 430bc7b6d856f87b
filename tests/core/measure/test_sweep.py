"""The quality curve: each point is the perplexity of an independently pruned model on the same windows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from shortgpt_desktop.core.backends.layerwise import InMemoryStack
from shortgpt_desktop.core.cut.plan import lowest
from shortgpt_desktop.core.cut.surgery import pruned_view
from shortgpt_desktop.core.errors import Cancelled, PlanError
from shortgpt_desktop.core.measure.calibration import TokenSet
from shortgpt_desktop.core.measure.evaluation import perplexity_of
from shortgpt_desktop.core.measure.sweep import QualityCurve, quality_curve, read_curve_csv, removal_order
from shortgpt_desktop.core.model.families import family_for_model_type, get_submodule
from shortgpt_desktop.core.testing.tiny_models import TINY_FAMILIES

LLAMA = family_for_model_type("llama")


@pytest.fixture(scope="module")
def model():
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    config = AutoConfig.for_model("llama", **TINY_FAMILIES["llama"][1])
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def tokens() -> TokenSet:
    generator = torch.Generator().manual_seed(5)
    ids = torch.randint(3, 512, (14, 24), generator=generator).tolist()
    ids[-1] = ids[-1][:10]  # a short window: padding must not count
    return TokenSet(ids[:4], ids[4:], 24, None, 0)


SCORES = [0.5, 0.1, 0.3, 0.1, 0.9, 0.2]


def test_points_equal_independent_measurements(model, tokens) -> None:
    seen: list[tuple[str, int, int, list]] = []
    curve = quality_curve(InMemoryStack(model, LLAMA), tokens, SCORES, max_removed=4, eval_windows=6, label="bi",
                          progress=lambda s, d, t, p: seen.append((s, d, t, p)))
    windows = tokens.eval_windows[:6]
    full = perplexity_of(model, windows, tokens.pad_id, 4)
    assert curve.points[0].perplexity == full.perplexity
    assert curve.points[0].removed == [] and curve.points[0].layer is None
    for k in range(1, 5):
        expected = lowest(SCORES, k)
        with pruned_view(model, LLAMA, expected):
            reference = perplexity_of(model, windows, tokens.pad_id, 2)  # another batch size on purpose
        point = curve.points[k]
        assert point.removed == expected
        assert point.perplexity == pytest.approx(reference.perplexity, rel=1e-5)
        assert point.tokens == reference.tokens == full.tokens
    # Ties go the later layer first, as plan.lowest decides.
    assert curve.order == [3, 1, 5, 2] == removal_order(SCORES)[:4]
    assert curve.windows == 6 and curve.tokens == full.tokens == 6 * 23
    assert "subset" in curve.data
    assert [s for s, *_ in seen] == ["sweep"] * 6
    assert seen[-1][1:3] == (5, 5) and seen[-1][3] == curve.perplexities
    assert seen[2][3][2] is None and seen[2][3][1] == curve.perplexities[1], "the partial curve grows"
    assert len(get_submodule(model, LLAMA.layers_path)) == 6


def test_explicit_order_and_limits(model, tokens) -> None:
    curve = quality_curve(InMemoryStack(model, LLAMA), tokens, [4, 0, 2], eval_windows=3)
    assert [p.layer for p in curve.points] == [None, 4, 0, 2]
    assert [p.removed for p in curve.points][-1] == [0, 2, 4]
    with pytest.raises(PlanError):
        quality_curve(InMemoryStack(model, LLAMA), tokens, [4, 4])
    with pytest.raises(PlanError):
        quality_curve(InMemoryStack(model, LLAMA), tokens, [0, 1, 2, 3, 4, 5], max_removed=6)  # removes every layer
    curve = quality_curve(InMemoryStack(model, LLAMA), tokens, [0, 1, 2, 3, 4, 5], eval_windows=1)
    assert len(curve.points) == 6, "up to 5"
    with pytest.raises(PlanError):
        quality_curve(InMemoryStack(model, LLAMA), tokens, [1, 2], max_removed=3)
    with pytest.raises(Cancelled):
        quality_curve(InMemoryStack(model, LLAMA), tokens, [1, 2], cancel=lambda: True)


def test_csv_and_json_round_trip(model, tokens, tmp_path: Path) -> None:
    curve = quality_curve(InMemoryStack(model, LLAMA), tokens, SCORES, max_removed=3, eval_windows=2, label="bi")
    points = read_curve_csv(curve.write_csv(tmp_path / "curve.csv"))
    assert points == curve.points
    data = json.loads(curve.write_json(tmp_path / "curve.json").read_text(encoding="utf-8"))
    assert QualityCurve.from_json(data) == curve
    assert QualityCurve.from_json(json.loads(json.dumps(curve.to_json()))) == curve
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curve.csv", "curve.json"], "no temporary files left"


def test_an_unwritable_curve_path_is_a_sentence_and_leaves_nothing(model, tokens, tmp_path: Path) -> None:
    """``sweep --json/--csv`` to a folder, a missing folder or a full disk: an OutputError, no temporary file."""
    from shortgpt_desktop.core.errors import OutputError
    from shortgpt_desktop.core.measure import sweep

    curve = quality_curve(InMemoryStack(model, LLAMA), tokens, SCORES, max_removed=1, eval_windows=1, label="bi")
    (tmp_path / "a-folder").mkdir()
    for target in (tmp_path / "a-folder", tmp_path / "missing" / "curve.csv"):
        with pytest.raises(OutputError, match=r"^Cannot write .*\.$"):
            curve.write_csv(target)
        with pytest.raises(OutputError, match=r"^Cannot write .*\.$"):
            curve.write_json(target)

    def disk_full(stream: object) -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(OutputError, match="no space left on device"):
        sweep._write_atomically(tmp_path / "curve.csv", disk_full)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-folder"], "no temporary files left"
