"""The metric registry: every shipped metric follows its rules, and a new one needs one class and one register."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from shortgpt_desktop import cli
from shortgpt_desktop.core.engine import Engine, JobSpec
from shortgpt_desktop.core.errors import UserError
from shortgpt_desktop.core.measure.metrics import METRICS, ScoringContext, get_metric
from shortgpt_desktop.core.measure.scoring import measure_layers


def test_shipped_metrics_and_an_unknown_name() -> None:
    assert list(METRICS)[:2] == ["bi+", "bi"]  # the default first, then the paper's metric
    assert set(METRICS) >= {"relative_magnitude", "angular", "sequential", "reverse", "ppl"}
    assert all(m.label and m.description for m in METRICS.values())
    with pytest.raises(UserError, match="Unknown metric 'nope': choose one of bi\\+, bi"):
        get_metric("nope")


def test_a_metric_added_by_one_class_and_one_register_runs_from_the_command_line(
    extra_metric, tiny_model: Path, small_calib: Path, tmp_path: Path
) -> None:
    """The command line offers it, the engine scores with it and removes its lowest layers; nothing else
    changed. Its scores are checked against the same formula on a separately measured pass."""
    score_json = tmp_path / "score.json"
    argv = ["--calib", str(small_calib), "--samples", "4", "--seq-len", "32", "--batch-size", "2", "-q"]
    assert cli.main(["score", str(tiny_model), "--metric", "last_token_bi", "--json", str(score_json), *argv]) == 0
    report = json.loads(score_json.read_text())
    assert report["metric"] == "last_token_bi"

    engine = Engine()
    spec = JobSpec(model=str(tiny_model), calib=[str(small_calib)], samples=4, seq_len=32, batch_size=2)
    loaded = engine.load(spec)
    tokens = engine.tokens_for(spec)  # the command line's samples: same text, settings and seed
    ctx = ScoringContext(loaded.model, loaded.family, tokens, batch_size=2)
    expected = extra_metric.values(ctx)
    states = measure_layers(loaded.model, loaded.family, tokens, batch_size=2).last_token_states.double()
    by_hand = [1.0 - float(torch.nn.functional.cosine_similarity(states[i], states[i + 1], dim=-1).mean())
               for i in range(6)]
    assert expected == pytest.approx(by_hand, abs=1e-9)
    assert report["scores"] == pytest.approx(expected, abs=1e-5)

    prune_json = tmp_path / "prune.json"
    assert cli.main(["prune", str(tiny_model), "--metric", "last_token_bi", "--layers", "2", "--out",
                     str(tmp_path / "pruned"), "--repair", "none", "--no-eval", "--json", str(prune_json), *argv]) == 0
    lowest_two = sorted(sorted(range(6), key=lambda i: report["scores"][i])[:2])
    assert json.loads(prune_json.read_text())["removed_layers"] == lowest_two


def test_bi_plus_before_its_measurement_keeps_the_ends_too() -> None:
    """The plan shown before bi+'s choice is measured (sizes, time estimate) already keeps the first and last
    layers out, as the measured choice will."""
    scores = [0.01, 0.5, 0.4, 0.3, 0.2, 0.02]
    assert METRICS["bi+"].removal(scores, 2) == [3, 4]
    assert METRICS["bi"].removal(scores, 2) == [0, 5]


def test_each_hooked_metric_reads_its_own_figures_of_the_pass() -> None:
    """One pass, three metrics: each scores with its own figures and says the tokens they came from; only the block
    metric names a block size (the model card's "(block of 2)"), and it removes the block starting at its lowest
    score, not its lowest layers one by one."""
    from shortgpt_desktop.core.measure.scoring import HookStats

    states = torch.randn(5, 3, 8, generator=torch.Generator().manual_seed(0))  # 4 layers' inputs and the output
    stats = HookStats(4, bi=[0.4, 0.1, 0.3, 0.2], relative_magnitude=[0.2, 0.6, 0.1, 0.5], last_token_states=states,
                      tokens=12)
    bi, magnitude = METRICS["bi"].from_stats(stats), METRICS["relative_magnitude"].from_stats(stats)
    angular = METRICS["angular"].from_stats(stats, 2)
    assert bi.scores == [0.4, 0.1, 0.3, 0.2] and magnitude.scores == [0.2, 0.6, 0.1, 0.5]
    assert bi.extra["relative_magnitude"] == magnitude.scores and magnitude.extra["bi"] == bi.scores
    assert angular.scores == stats.angular(2) and angular.scores[3] is None
    assert (bi.tokens, magnitude.tokens, angular.tokens) == (12, 12, 12)
    assert (bi.block_size, magnitude.block_size, angular.block_size) == (None, None, 2)
    assert METRICS["angular"].removal([0.2, 0.5, 0.1, 0.3, None], 2) == [2, 3]  # the two lowest are 0 and 2


@pytest.mark.parametrize("repaired", [False, True], ids=["plain", "repaired"])
def test_bi_plus_judges_its_finalists_as_the_job_will_save_them(monkeypatch: pytest.MonkeyPatch,
                                                                repaired: bool) -> None:
    """A job that repairs has bi+ compare its finalists repaired, with the saved model's repair and the job's chat
    prompts, for one count as for several (the quality curve); one that does not repair compares them plain."""
    from shortgpt_desktop.core.cut import selection

    asked: list[tuple[bool, object, object]] = []

    def spy(*args, **kwargs):
        asked.append((kwargs["judge_repaired"], kwargs["probe"], kwargs["repair_for"]))
        return {}

    monkeypatch.setattr(selection, "choose_layers_safely", spy)
    monkeypatch.setattr(selection, "choose_for_counts", spy)
    probe, repair_for = object(), object()
    ctx = ScoringContext(model=None, family=None, tokens=object(), stack=object(), repaired=repaired,  # type: ignore[arg-type]
                         probe=probe, repair_for=repair_for)
    scores = [0.01, 0.5, 0.4, 0.3, 0.2, 0.02]
    METRICS["bi+"].refine(ctx, scores, 2)
    METRICS["bi+"].refine_counts(ctx, scores, [1, 2])
    assert asked == [(repaired, probe, repair_for)] * 2


def test_single_removal_perplexity_shows_each_layer_as_it_is_measured_and_stops_when_cancelled(
        tiny_model: Path, small_calib: Path) -> None:
    """Its pass, one perplexity per layer, is the longest scoring: the bar and the live chart follow it layer by
    layer, and Cancel stops it."""
    from shortgpt_desktop.core.errors import Cancelled
    from shortgpt_desktop.core.measure.calibration import build_token_set
    from shortgpt_desktop.core.measure.metrics import score_model
    from shortgpt_desktop.core.model.loading import load_model
    from shortgpt_desktop.core.model.sources import resolve

    loaded = load_model(resolve(str(tiny_model)), "cpu", "float32")
    tokens = build_token_set(loaded.tokenizer, [small_calib.read_text()], samples=2, seq_len=16, seed=0)
    seen: list[tuple[str, int, int, list]] = []
    result = score_model(loaded.model, loaded.family, tokens, "ppl", batch_size=2,
                         progress=lambda stage, done, total, partial: seen.append((stage, done, total, partial)))
    assert [(stage, done, total) for stage, done, total, _ in seen] == [("scoring", done, 6) for done in range(7)]
    assert [score is not None for score in seen[2][3]] == [True, True, False, False, False, False]
    assert seen[-1][3] == result.scores
    with pytest.raises(Cancelled):
        score_model(loaded.model, loaded.family, tokens, "ppl", batch_size=2, cancel=lambda: True)
